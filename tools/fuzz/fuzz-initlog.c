/* The first boot's init.log reader, firstboot_parse_init_log(): any bytes
 * the guest sends. The report must be a status in 0..255 (or none, -1) and
 * a printable, bounded tail. */
#include <stdlib.h>
#include <string.h>

#include "launcher/lifecycle/firstboot.h"
#include "tools/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct firstboot_init_report rep;
        memset(&rep, 0xa5, sizeof rep);
        firstboot_parse_init_log((const char *)data, size, &rep);
        if (rep.has_status ? rep.status < 0 || rep.status > 255 : rep.status != -1)
                abort();
        size_t n = strnlen(rep.tail, sizeof rep.tail);
        if (n == sizeof rep.tail)
                abort();
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)rep.tail[i] < 0x20 || rep.tail[i] == 0x7f)
                        abort();
        if (rep.has_status && !memmem(data, size, FIRSTBOOT_STATUS_PREFIX, strlen(FIRSTBOOT_STATUS_PREFIX)))
                abort();
        return 0;
}
