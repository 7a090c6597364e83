/* copy: sparse-preserving, crash-safe copy of a disk image (for instances
 * with disk=copy and for export/import). */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Called with the bytes of the source covered so far (holes count) and the
 * source size: once with done=0, after every chunk, once with done=total.
 * A non-zero return cancels the copy: a negative errno is returned as is,
 * anything else as -ECANCELED. */
typedef int (*image_copy_progress_fn)(uint64_t done, uint64_t total, void *userdata);

/* Copies the regular file src to the new file dst (mode 0644 & ~umask; a
 * copy of a protected template is writable). Tries a reflink (FICLONE)
 * first, else copies only the data extents found with SEEK_DATA/SEEK_HOLE
 * using copy_file_range (read/write where that is unsupported), so holes
 * stay holes. Crash-safe like qcow2_overlay_create(): temporary file,
 * fsync, rename without replacing (-EEXIST if dst exists), fsync of the
 * directory; on failure or cancel nothing is left. progress may be NULL.
 * Returns 0, or a negative errno with one line in err. */
int image_copy_sparse(const char *src, const char *dst, image_copy_progress_fn progress, void *userdata,
                      char *err, size_t errlen);
