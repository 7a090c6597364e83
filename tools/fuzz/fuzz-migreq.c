/* The live migration files one host reads from the root that another host
 * (or anybody who can write the root) wrote: ROOT/migrate/NAME,
 * NAME.answer, NAME.source and ROOT/hosts/HOST (migreq.h). A value that
 * comes back is one line, NUL-terminated, without control characters
 * (it goes into a one-line error message). */
#include <stdlib.h>
#include <string.h>

#include "launcher/core/migreq.h"
#include "tools/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const char *const keys[] = { "state", "host", "address", "qemu", "cpu", "error", "timeout", "total_ms" };
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
        return 0;
}
