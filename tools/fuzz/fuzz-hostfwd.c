/* hostfwd rules (tcp|udp:[hostaddr]:hostport-[guestaddr]:guestport, ';'-
 * separated) through instance_load: every input line becomes the hostfwd
 * value of one more net=user NIC, so the cross-NIC duplicate check runs
 * too. A rule set that loads is passed to QEMU, so it must not contain
 * anything that could end QEMU's option string early. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/core/config.h"
#include "tools/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *text = NULL, err[1024] = "";
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f)
                abort();
        fputs("image=debian-12\nsize=small\n", f);
        unsigned nic = 0;
        const uint8_t *p = data, *end = data + size;
        while (p < end && nic < VM_NICS_MAX) {
                const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
                size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
                char sfx[4] = "";
                if (nic)
                        snprintf(sfx, sizeof sfx, ".%u", nic);
                fprintf(f, "net%s=user\nhostfwd%s=", sfx, sfx);
                fwrite(p, 1, n, f);
                fputc('\n', f);
                nic++;
                p += n + 1;
        }
        if (fclose(f) != 0)
                abort();
        struct instance *inst = NULL;
        const char *path = fuzz_write("instance.properties", text, len);
        if (instance_load(path, "fuzz-vm", "/run/vrt", &inst, err, sizeof err) == 0) {
                for (unsigned i = 0; i < inst->n_nics; i++) {
                        const char *h = inst->nics[i].hostfwd;
                        if (h && strpbrk(h, ",\n"))
                                abort();
                }
        } else if (!err[0]) {
                abort();
        }
        instance_free(inst);
        free(text);
        return 0;
}
