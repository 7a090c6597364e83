/* The backup.state reader of vrt backup and vrt restore,
 * backup_state_parse(): any bytes as the file. Checks: a refusal comes
 * with one line naming the file; an accepted state has a valid VM name, a
 * chain id, points in ascending order below next, a full point first. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/lifecycle/backup.h"
#include "tools/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct backup_state *s = malloc(sizeof *s);
        char err[1024] = "";
        if (!s)
                return 0;
        int r = backup_state_parse("backup.state", (const char *)data, size, s, err, sizeof err);
        if (r < 0) {
                if (r != -EINVAL && r != -ENOMEM)
                        abort();
                if (r == -EINVAL && (strncmp(err, "backup.state", 12) != 0 || strchr(err, '\n')))
                        abort();
                free(s);
                return 0;
        }
        if (!s->vm[0] || strlen(s->chain) != BACKUP_CHAIN_LEN || s->n > BACKUP_POINTS_MAX ||
            (s->n && s->points[0].kind != BACKUP_FULL))
                abort();
        for (size_t i = 0; i < s->n; i++)
                if (s->points[i].n >= s->next || (i && s->points[i].n <= s->points[i - 1].n))
                        abort();
        free(s);
        return 0;
}
