/* The live migration files one host reads from the root that another host
 * (or anybody who can write the root) wrote: ROOT/migrate/NAME,
 * NAME.answer, NAME.source and ROOT/hosts/HOST (migreq.h). A value that
 * comes back is one line, NUL-terminated, without control characters
 * (it goes into a one-line error message). Each input is also a request
 * ROOT/migrate/vm1 for migreq_check_migrating(), whose refusal is one line. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launcher/core/migreq.h"
#include "tools/fuzz/fuzz.h"

static char root[64];

static void remove_root(void) {
        char p[128];
        snprintf(p, sizeof p, "%s/%s/vm1", root, MIGREQ_DIR);
        unlink(p);
        snprintf(p, sizeof p, "%s/%s", root, MIGREQ_DIR);
        rmdir(p);
        rmdir(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const char *const keys[] = { "state", "host", "from", "address", "qemu", "cpu", "error", "timeout", "total_ms" };
        char text[MIGREQ_TEXT_MAX + 1], buf[128];

        if (size > MIGREQ_TEXT_MAX)
                size = MIGREQ_TEXT_MAX;
        memcpy(text, data, size);
        text[size] = '\0';
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
                if (migreq_get(text, keys[i], buf, sizeof buf) < 0)
                        continue;
                size_t n = strlen(buf);
                if (n >= sizeof buf)
                        abort();
                for (size_t k = 0; k < n; k++)
                        if ((unsigned char)buf[k] < 0x20 || buf[k] == 0x7f)
                                abort();
        }
        if (!root[0]) {
                snprintf(root, sizeof root, "/tmp/vrt-fuzz-migreq.XXXXXX");
                if (!mkdtemp(root))
                        abort();
                atexit(remove_root);
        }
        if (migreq_write(root, MIGREQ_DIR, "vm1", text) == 0) {
                char err[512] = "";
                int r = migreq_check_migrating(root, "vm1", "not started", err, sizeof err);
                if (r > 0 || (r < 0 && (!err[0] || strchr(err, '\n'))))
                        abort();
                for (const char *p = err; *p; p++)
                        if ((unsigned char)*p < 0x20 || *p == 0x7f)
                                abort();
        }
        return 0;
}
