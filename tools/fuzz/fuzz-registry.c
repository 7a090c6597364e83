/* The registry lists, ROOT/install/installed.txt and mac-addresses.txt,
 * through registry_load(). The input up to the first "\n@@\n" is the
 * names list, the rest the MAC list. Every name and MAC that loads must be
 * found again by registry_has_name()/registry_has_mac() with a line
 * number inside the file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "launcher/lifecycle/registry.h"
#include "tools/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const uint8_t *names, *macs;
        size_t names_len, macs_len;
        char root[512], err[1024] = "";
        fuzz_split(data, size, "\n@@\n", &names, &names_len, &macs, &macs_len);

        snprintf(root, sizeof root, "%s/root", fuzz_dir());
        mkdir(root, 0755);
        fuzz_remove("root/install");
        snprintf(err, sizeof err, "%s/install", root);
        if (mkdir(err, 0755) < 0)
                abort();
        err[0] = '\0';
        fuzz_write("root/install/installed.txt", names, names_len);
        fuzz_write("root/install/mac-addresses.txt", macs, macs_len);

        struct registry *r = NULL;
        if (registry_load(root, &r, err, sizeof err) == 0) {
                for (size_t i = 0; i < r->n_names; i++) {
                        unsigned line = 0;
                        if (!registry_has_name(r, r->names[i].name, &line) || line == 0 || line > r->names_lines)
                                abort();
                }
                for (size_t i = 0; i < r->n_macs; i++) {
                        unsigned line = 0;
                        if (!registry_has_mac(r, r->macs[i].mac, &line) || line == 0 || line > r->macs_lines)
                                abort();
                }
        } else if (!err[0]) {
                abort();
        }
        registry_free(r);
        return 0;
}
