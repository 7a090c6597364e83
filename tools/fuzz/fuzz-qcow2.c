/* The qcow2 header decoder and the backing chain walker. The input up to
 * the first "\n@@\n" is the top image, the rest the file "base" next to it
 * (what a header naming "base" as its backing file gets). Checks:
 * qcow2_header_decode() on the bytes, image_chain_inspect() on the files,
 * and the encoder against the decoder: an overlay encoded with a backing
 * name taken from the input decodes to the same name, format and size. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "images/chain.h"
#include "images/qcow2.h"
#include "tools/fuzz/fuzz.h"

static void check_header(const uint8_t *data, size_t len) {
        struct qcow2_header h;
        char err[512] = "";
        int r = qcow2_header_decode(data, len, &h, err, sizeof err);
        if (r == 0) {
                if (strnlen(h.backing_file, sizeof h.backing_file) == sizeof h.backing_file ||
                    strnlen(h.backing_format, sizeof h.backing_format) == sizeof h.backing_format)
                        abort();        /* strings are terminated */
        } else if ((r != -EINVAL && r != -ENODATA) || !err[0]) {
                abort();
        }
}

static void check_roundtrip(const uint8_t *data, size_t len) {
        char name[QCOW2_BACKING_FILE_MAX + 1];
        size_t n = 0;
        for (size_t i = 8; i < len && n < sizeof name - 1; i++)
                if (data[i])
                        name[n++] = (char)data[i];
        name[n] = '\0';
        uint64_t size = 0;
        for (size_t i = 0; i < 8 && i < len; i++)
                size = size << 8 | data[i];
        struct qcow2_overlay_spec spec = {
                .backing_file = name,
                .backing_format = size & 1 ? "raw" : "qcow2",
                .virtual_size = size,
        };
        uint8_t *buf = NULL;
        size_t buf_len = 0;
        char err[512];
        if (qcow2_overlay_encode(&spec, &buf, &buf_len, err, sizeof err) < 0)
                return;
        struct qcow2_header h;
        if (qcow2_header_decode(buf, buf_len, &h, err, sizeof err) < 0) {
                fprintf(stderr, "an encoded overlay does not decode: %s\n", err);
                abort();
        }
        if (strcmp(h.backing_file, name) != 0 || strcmp(h.backing_format, spec.backing_format) != 0 ||
            h.size != size || !h.has_backing_format || h.version != 3)
                abort();
        free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const uint8_t *top, *base;
        size_t top_len, base_len;
        fuzz_split(data, size, "\n@@\n", &top, &top_len, &base, &base_len);

        check_header(top, top_len);
        check_header(data, size);
        check_roundtrip(data, size);

        const char *path = fuzz_write("base", base, base_len);
        (void)path;
        path = fuzz_write("top", top, top_len);
        struct image_chain *c = NULL;
        char err[1024] = "";
        if (image_chain_inspect(path, &c, err, sizeof err) == 0) {
                if (c->n_layers < 1 || c->n_layers > IMAGE_CHAIN_MAX_DEPTH)
                        abort();
                struct json_object *j = NULL;
                if (image_chain_to_json(c, &j) < 0)
                        abort();
                json_object_put(j);
        } else if (!err[0]) {
                abort();
        }
        image_chain_free(c);
        return 0;
}
