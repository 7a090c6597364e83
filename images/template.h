/* template: protection of template images. A template backs many overlays;
 * writing to it would silently corrupt every one of them, so templates are
 * kept read-only (0444) and the chain check reports writable layers. */
#pragma once

/* Makes the regular file path read-only for everybody (chmod 0444). The
 * file is opened without following a final symlink and changed through the
 * fd. Returns 0 or a negative errno (-EINVAL: not a regular file, -EMLINK:
 * a hard link, whose other name would change too). */
int image_template_protect(const char *path);
