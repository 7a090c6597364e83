/* vrt.conf, instance.properties and image sidecars through the real
 * loaders (host_config_load, instance_load + instance_check,
 * image_meta_load). The first byte picks the loader, the rest is the file.
 * A loaded instance must survive instance_to_string(): the text it gives
 * loads again to the same text. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/core/config.h"
#include "tools/fuzz/fuzz.h"

static struct host_config *defaults;

static void check_instance(const char *path) {
        struct instance *inst = NULL, *again = NULL;
        char err[1024];
        if (instance_load(path, "fuzz-vm", "/run/vrt", &inst, err, sizeof err) < 0)
                return;
        (void)instance_check(inst, defaults, err, sizeof err);
        char *text = instance_to_string(inst);
        if (!text)
                abort();
        const char *p = fuzz_write("again.properties", text, strlen(text));
        if (instance_load(p, "fuzz-vm", "/run/vrt", &again, err, sizeof err) < 0) {
                fprintf(stderr, "instance_to_string() output does not load: %s\n---\n%s---\n", err, text);
                abort();
        }
        char *text2 = instance_to_string(again);
        if (!text2 || strcmp(text, text2) != 0) {
                fprintf(stderr, "instance_to_string() is not stable:\n---\n%s---\n%s---\n", text, text2 ? text2 : "(null)");
                abort();
        }
        free(text2);
        free(text);
        instance_free(again);
        instance_free(inst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char err[1024];
        if (!defaults && host_config_load("/nonexistent/vrt.conf", &defaults, err, sizeof err) < 0)
                abort();
        if (size < 1)
                return 0;
        const char *path;
        err[0] = '\0';
        switch (data[0] % 3) {
        case 0: {
                struct host_config *c = NULL;
                path = fuzz_write("vrt.conf", data + 1, size - 1);
                if (host_config_load(path, &c, err, sizeof err) == 0) {
                        for (size_t i = 0; i < c->n_sizes; i++)
                                if (host_config_find_size(c, c->sizes[i].name) == NULL)
                                        abort();
                } else if (!err[0]) {
                        abort();        /* every refusal says why */
                }
                host_config_free(c);
                break;
        }
        case 1:
                path = fuzz_write("instance.properties", data + 1, size - 1);
                check_instance(path);
                break;
        case 2: {
                struct image_meta *m = NULL;
                path = fuzz_write("template.properties", data + 1, size - 1);
                if (image_meta_load(path, &m, err, sizeof err) == 0) {
                        if ((m->kernel && m->kernel[0] != '/') || (m->initrd && m->initrd[0] != '/'))
                                abort();        /* relative paths are made absolute */
                } else if (!err[0]) {
                        abort();
                }
                image_meta_free(m);
                break;
        }
        }
        return 0;
}
