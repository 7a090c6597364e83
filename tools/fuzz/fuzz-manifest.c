/* The manifest.json reader of vrt import, export_parse_manifest(): any
 * bytes as the first member's content. Checks: a refusal comes with one
 * line that names the archive and the member; an accepted manifest has a
 * valid name, at least the instance.properties member, and counts within
 * their caps. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/lifecycle/export.h"
#include "tools/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct export_manifest_info info;
        char err[1024] = "";
        int r = export_parse_manifest("in.tar", (const char *)data, size, &info, err, sizeof err);
        if (r < 0) {
                if (r != -EINVAL && r != -ENOMEM)
                        abort();
                if (r == -EINVAL && (strncmp(err, "in.tar: " EXPORT_MANIFEST ": ", strlen("in.tar: " EXPORT_MANIFEST ": ")) != 0 ||
                                     strchr(err, '\n')))
                        abort();
                return 0;
        }
        if (!info.name[0] || info.n_members < 1 || info.n_members > 24 || info.n_macs > VM_NICS_MAX ||
            (info.n_template_layers && !info.has_disk))
                abort();
        return 0;
}
