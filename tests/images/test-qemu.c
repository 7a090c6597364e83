/* Differential tests of our overlays against independent readers: qemu-img
 * check/info, qemu-io writes compared with an overlay qemu-img made, and
 * libqcow reading through overlay -> template. Only tests run qemu-img;
 * the product code never does. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>
#include <libqcow.h>

#include "helpers.h"
#include "images/chain.h"
#include "images/qcow2.h"

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define TiB (UINT64_C(1) << 40)
#define BASE_SIZE (64 * MiB)

static int setup(void **state) {
        *state = test_tmpdir();
        return 0;
}

static int teardown(void **state) {
        test_rmtree(*state);
        free(*state);
        return 0;
}

static void run_ok(const char *const argv[]) {
        char *out = NULL;
        int st = test_run(argv, &out);

        if (st != 0)
                fail_msg("%s %s exited %d: %s", argv[0], argv[1], st, out);
        free(out);
}

static char *make_raw(const char *dir, const char *name, uint64_t size) {
        char *p = test_path(dir, name);
        FILE *f = fopen(p, "w");

        assert_non_null(f);
        assert_int_equal(ftruncate(fileno(f), (off_t)size), 0);
        fclose(f);
        return p;
}

static void create_overlay(const char *path, const char *backing, const char *fmt, uint64_t min_size) {
        char err[1024] = "";
        int r = qcow2_overlay_create(path, backing, fmt, min_size, err, sizeof err);

        if (r < 0)
                fail_msg("qcow2_overlay_create %s: %d %s", path, r, err);
}

static void qemu_img_check(const char *path) {
        char *out = NULL;
        int st = test_run((const char *const[]){ "qemu-img", "check", "-f", "qcow2", path, NULL }, &out);

        if (st != 0 || !strstr(out, "No errors were found"))
                fail_msg("qemu-img check %s: exit %d: %s", path, st, out);
        free(out);
}

/* qemu-img info --backing-chain as parsed JSON (an array, top first). */
static struct json_object *qemu_img_info(const char *path) {
        char *out = NULL;
        struct json_object *j;
        int st = test_run((const char *const[]){ "qemu-img", "info", "--backing-chain", "--output=json", "-f",
                                                 "qcow2", path, NULL },
                          &out);

        if (st != 0)
                fail_msg("qemu-img info %s: exit %d: %s", path, st, out);
        j = json_tokener_parse(out);
        if (!j || !json_object_is_type(j, json_type_array))
                fail_msg("qemu-img info %s: not a JSON array: %s", path, out);
        free(out);
        return j;
}

static const char *jstr(struct json_object *o, const char *key) {
        struct json_object *v;

        if (!json_object_object_get_ex(o, key, &v))
                fail_msg("no %s in %s", key, json_object_to_json_string(o));
        return json_object_get_string(v);
}

static uint64_t jint(struct json_object *o, const char *key) {
        struct json_object *v;

        if (!json_object_object_get_ex(o, key, &v))
                fail_msg("no %s in %s", key, json_object_to_json_string(o));
        return (uint64_t)json_object_get_int64(v);
}

/* Checks one overlay with both oracles and our own chain inspection. */
static void check_overlay(const char *ov, const char *backing, const char *fmt, uint64_t size,
                          const char *full_backing, size_t chain_len) {
        struct json_object *info = qemu_img_info(ov), *top;
        struct image_chain *c = NULL;
        char err[1024] = "";

        qemu_img_check(ov);
        assert_int_equal(json_object_array_length(info), chain_len);
        top = json_object_array_get_idx(info, 0);
        assert_string_equal(jstr(top, "format"), "qcow2");
        assert_int_equal(jint(top, "virtual-size"), size);
        assert_int_equal(jint(top, "cluster-size"), 65536);
        assert_string_equal(jstr(top, "backing-filename"), backing);
        assert_string_equal(jstr(top, "backing-filename-format"), fmt);
        assert_string_equal(jstr(top, "full-backing-filename"), full_backing);
        assert_string_equal(jstr(json_object_array_get_idx(info, 1), "format"), fmt);
        json_object_put(info);

        assert_int_equal(image_chain_inspect(ov, &c, err, sizeof err), 0);
        assert_int_equal(c->n_layers, chain_len);
        assert_int_equal(c->layers[0].virtual_size, size);
        assert_string_equal(c->layers[1].path, full_backing);
        image_chain_free(c);
}

static void test_check_and_info(void **state) {
        const char *dir = *state;
        char *tmpl = test_path(dir, "tmpl.qcow2");
        char *raw = make_raw(dir, "base.raw", GiB);
        char *ov1 = test_path(dir, "ov1.qcow2");
        char *ov2 = test_path(dir, "ov2.qcow2");
        char *ov3 = test_path(dir, "ov3.qcow2");
        char *ov4 = test_path(dir, "ov4.qcow2");

        run_ok((const char *const[]){ "qemu-img", "create", "-q", "-f", "qcow2", tmpl, "10G", NULL });
        /* Same size as the template; larger; over raw; absolute name; an
         * overlay over our own overlay (three layers). */
        create_overlay(ov1, "tmpl.qcow2", "qcow2", 0);
        check_overlay(ov1, "tmpl.qcow2", "qcow2", 10 * GiB, tmpl, 2);
        create_overlay(ov2, tmpl, "qcow2", 20 * GiB);
        check_overlay(ov2, tmpl, "qcow2", 20 * GiB, tmpl, 2);
        create_overlay(ov3, "base.raw", "raw", 5 * TiB);
        check_overlay(ov3, "base.raw", "raw", 5 * TiB, raw, 2);
        create_overlay(ov4, "ov1.qcow2", "qcow2", 0);
        check_overlay(ov4, "ov1.qcow2", "qcow2", 10 * GiB, ov1, 3);
        free(tmpl);
        free(raw);
        free(ov1);
        free(ov2);
        free(ov3);
        free(ov4);
}

/* Spaces and commas in every name; a relative backing name resolved by
 * QEMU against the overlay's directory, from another working directory. */
static void test_awkward_paths(void **state) {
        const char *dir = *state;
        char *tdir = test_path(dir, "templates, v1");
        char *odir = test_path(dir, "vm dir,x");
        char *tmpl = test_path(tdir, "deb 12, amd64.qcow2");
        char *ov = test_path(odir, "hdd ovl,1.qcow2");
        char *full = test_path(odir, "../templates, v1/deb 12, amd64.qcow2");
        char cwd[4096];

        assert_int_equal(mkdir(tdir, 0755), 0);
        assert_int_equal(mkdir(odir, 0755), 0);
        run_ok((const char *const[]){ "qemu-img", "create", "-q", "-f", "qcow2", tmpl, "100M", NULL });
        assert_non_null(getcwd(cwd, sizeof cwd));
        assert_int_equal(chdir("/"), 0);
        create_overlay(ov, "../templates, v1/deb 12, amd64.qcow2", "qcow2", 0);
        check_overlay(ov, "../templates, v1/deb 12, amd64.qcow2", "qcow2", 100 * MiB, full, 2);
        run_ok((const char *const[]){ "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 64k", "-c",
                                     "read -P 0x5a 1M 64k", ov, NULL });
        qemu_img_check(ov);
        assert_int_equal(chdir(cwd), 0);
        free(tdir);
        free(odir);
        free(tmpl);
        free(ov);
        free(full);
}

/* ---- data: qemu-io writes, libqcow reads --------------------------------- */

/* What the template holds: written with qemu-io, mirrored in memory. */
static const struct {
        uint64_t off, len;
        uint8_t pattern;
} base_writes[] = {
        { 0, MiB, 0x11 },
        { 10 * MiB + 512, 3 * MiB, 0x22 },
        { 33 * MiB, 65536, 0x33 },
        { BASE_SIZE - MiB, MiB, 0x44 },
};

static uint8_t *make_template(const char *path) {
        uint8_t *model = calloc(1, BASE_SIZE);
        const char *argv[64] = { "qemu-io", "-f", "qcow2" };
        char cmds[8][64];
        size_t n = 3;
        char size[32];

        snprintf(size, sizeof size, "%llu", (unsigned long long)BASE_SIZE);
        run_ok((const char *const[]){ "qemu-img", "create", "-q", "-f", "qcow2", path, size, NULL });
        for (size_t i = 0; i < sizeof base_writes / sizeof base_writes[0]; i++) {
                snprintf(cmds[i], sizeof cmds[i], "write -P 0x%02x %llu %llu", base_writes[i].pattern,
                         (unsigned long long)base_writes[i].off, (unsigned long long)base_writes[i].len);
                argv[n++] = "-c";
                argv[n++] = cmds[i];
                memset(model + base_writes[i].off, base_writes[i].pattern, base_writes[i].len);
        }
        argv[n++] = path;
        argv[n] = NULL;
        run_ok(argv);
        return model;
}

static libqcow_file_t *lq_open(const char *path, const char *parent, libqcow_file_t **ret_parent) {
        libqcow_file_t *f = NULL, *p = NULL;
        libqcow_error_t *e = NULL;

        assert_int_equal(libqcow_file_initialize(&f, &e), 1);
        assert_int_equal(libqcow_file_open(f, path, LIBQCOW_OPEN_READ, &e), 1);
        if (parent) {
                assert_int_equal(libqcow_file_initialize(&p, &e), 1);
                assert_int_equal(libqcow_file_open(p, parent, LIBQCOW_OPEN_READ, &e), 1);
                assert_int_equal(libqcow_file_set_parent_file(f, p, &e), 1);
        }
        *ret_parent = p;
        return f;
}

static void lq_close(libqcow_file_t *f) {
        if (f) {
                libqcow_file_close(f, NULL);
                libqcow_file_free(&f, NULL);
        }
}

/* Reads the whole virtual disk of path through libqcow, with parent as its
 * backing file when given, and compares it with model. One
 * cluster per read: libqcow 20201213 returns the parent's data for
 * allocated clusters that follow an unallocated one within a single
 * multi-cluster read, with qemu-img's overlays just as with ours. */
static void libqcow_compare(const char *path, const char *parent, const uint8_t *model, uint64_t size) {
        const size_t chunk = 65536;
        libqcow_file_t *p = NULL;
        libqcow_file_t *f = lq_open(path, parent, &p);
        libqcow_error_t *e = NULL;
        size64_t media = 0;
        uint8_t *buf = malloc(chunk);

        assert_int_equal(libqcow_file_get_media_size(f, &media, &e), 1);
        assert_int_equal(media, size);
        for (uint64_t off = 0; off < size; off += chunk) {
                assert_int_equal(libqcow_file_read_buffer_at_offset(f, buf, chunk, (off64_t)off, &e), chunk);
                if (memcmp(buf, model + off, chunk) != 0) {
                        for (size_t i = 0; i < chunk; i++)
                                if (buf[i] != model[off + i])
                                        fail_msg("%s: libqcow reads 0x%02x at %llu, expected 0x%02x", path, buf[i],
                                                 (unsigned long long)(off + i), model[off + i]);
                }
        }
        lq_close(f);
        lq_close(p);
        libqcow_error_free(&e);
        free(buf);
}

/* libqcow reads through our overlay to the template: fresh, and after
 * data writes (sub-cluster, unaligned, across clusters) made by QEMU. */
static void test_libqcow_read_through(void **state) {
        const char *dir = *state;
        char *tmpl = test_path(dir, "tmpl.qcow2");
        char *ov = test_path(dir, "ov.qcow2");
        uint8_t *model = make_template(tmpl);

        create_overlay(ov, "tmpl.qcow2", "qcow2", 0);
        libqcow_compare(tmpl, NULL, model, BASE_SIZE);
        libqcow_compare(ov, tmpl, model, BASE_SIZE);

        run_ok((const char *const[]){ "qemu-io", "-f", "qcow2", "-c", "write -P 0xa1 512 512", "-c",
                                      "write -P 0xa2 65000 1000", "-c", "write -P 0xa3 10M 64k", "-c",
                                      "write -P 0xa4 40M 300k", ov, NULL });
        memset(model + 512, 0xa1, 512);
        memset(model + 65000, 0xa2, 1000);
        memset(model + 10 * MiB, 0xa3, 65536);
        memset(model + 40 * MiB, 0xa4, 300 * 1024);
        libqcow_compare(ov, tmpl, model, BASE_SIZE);
        free(model);
        free(tmpl);
        free(ov);
}

static uint64_t xorshift(uint64_t *s) {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

/* The same random writes into our overlay and into one made by qemu-img:
 * the two must read back identical (qemu-img compare) and equal to an
 * in-memory model. */
static void test_differential_writes(void **state) {
        const char *dir = *state;
        char *tmpl = test_path(dir, "tmpl.qcow2");
        char *ours = test_path(dir, "ours.qcow2");
        char *theirs = test_path(dir, "theirs.qcow2");
        char *raw = test_path(dir, "ours.raw");
        uint8_t *model = make_template(tmpl);
        static const uint64_t lens[] = { 512, 4096, 65536, 65536 + 512, 200 * 1024, MiB + 4096 };
        enum { N = 80 };
        static char cmds[N][80];
        const char *argv[2 * N + 8];
        uint64_t seed = 0x9e3779b97f4a7c15ULL;
        size_t n = 0;
        size_t len;
        uint8_t *flat;
        char *out = NULL;

        create_overlay(ours, "tmpl.qcow2", "qcow2", 0);
        run_ok((const char *const[]){ "qemu-img", "create", "-q", "-f", "qcow2", "-b", "tmpl.qcow2", "-F", "qcow2",
                                      theirs, NULL });

        argv[n++] = "qemu-io";
        argv[n++] = "-f";
        argv[n++] = "qcow2";
        for (int i = 0; i < N; i++) {
                uint64_t l = lens[xorshift(&seed) % (sizeof lens / sizeof lens[0])];
                uint64_t off = (xorshift(&seed) % ((BASE_SIZE - l) / 512)) * 512;
                uint8_t pat = (uint8_t)(xorshift(&seed) % 255 + 1);

                /* Every eighth write is a zero write (-z), which qcow2 v3 may
                 * record as a zero cluster instead of data. */
                if (i % 8 == 7) {
                        snprintf(cmds[i], sizeof cmds[i], "write -z %llu %llu", (unsigned long long)off,
                                 (unsigned long long)l);
                        memset(model + off, 0, l);
                } else {
                        snprintf(cmds[i], sizeof cmds[i], "write -P 0x%02x %llu %llu", pat, (unsigned long long)off,
                                 (unsigned long long)l);
                        memset(model + off, pat, l);
                }
                argv[n++] = "-c";
                argv[n++] = cmds[i];
        }
        argv[n++] = "-c";
        argv[n++] = "write -P 0x77 5M 128k";
        memset(model + 5 * MiB, 0x77, 128 * 1024);
        argv[n + 1] = NULL;
        argv[n] = ours;
        run_ok(argv);
        argv[n] = theirs;
        run_ok(argv);

        run_ok((const char *const[]){ "qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", ours, theirs, NULL });
        qemu_img_check(ours);

        /* QEMU's view of ours, flattened, equals the model. */
        run_ok((const char *const[]){ "qemu-img", "convert", "-f", "qcow2", "-O", "raw", ours, raw, NULL });
        flat = test_read_file(raw, &len);
        assert_int_equal(len, BASE_SIZE);
        assert_memory_equal(flat, model, BASE_SIZE);
        free(flat);

        /* qemu-io's own pattern check on the last, fixed write. */
        assert_int_equal(test_run((const char *const[]){ "qemu-io", "-f", "qcow2", "-c", "read -P 0x77 5M 128k",
                                                         ours, NULL },
                                  &out),
                         0);
        assert_true(test_contains(out, "read 131072/131072 bytes"));
        assert_null(strstr(out, "Pattern verification failed"));
        free(out);

        /* No libqcow read here: libqcow 20201213 ignores the v3 zero-cluster
         * flag that write -z produces (L2 entry 0x1) and returns bytes of
         * the image's own header cluster instead of zeros, for qemu-img's
         * overlays as for ours. test_libqcow_read_through covers data
         * writes. */
        free(model);
        free(tmpl);
        free(ours);
        free(theirs);
        free(raw);
}

/* A fresh overlay: how much disk it takes, ours against qemu-img's. */
static void test_fresh_overlay_size(void **state) {
        const char *dir = *state;
        char *tmpl = test_path(dir, "tmpl.qcow2");
        char *ours = test_path(dir, "ours.qcow2");
        char *theirs = test_path(dir, "theirs.qcow2");
        uint64_t a, b;
        struct stat st;

        run_ok((const char *const[]){ "qemu-img", "create", "-q", "-f", "qcow2", tmpl, "10G", NULL });
        create_overlay(ours, "tmpl.qcow2", "qcow2", 0);
        run_ok((const char *const[]){ "qemu-img", "create", "-q", "-f", "qcow2", "-b", "tmpl.qcow2", "-F", "qcow2",
                                      theirs, NULL });
        a = test_allocated(ours);
        b = test_allocated(theirs);
        print_message("fresh 10G overlay allocated: ours %llu bytes, qemu-img %llu bytes\n", (unsigned long long)a,
                      (unsigned long long)b);
        assert_true(a <= 16 * 1024);
        assert_true(a < b);
        /* Same apparent size: both end with the L1 table. */
        assert_int_equal(stat(ours, &st), 0);
        assert_int_equal((uint64_t)st.st_size, 0x30000 + 20 * 8);
        assert_int_equal(stat(theirs, &st), 0);
        assert_int_equal((uint64_t)st.st_size, 0x30000 + 20 * 8);
        free(tmpl);
        free(ours);
        free(theirs);
}

/* A blank image, as `vrt image install` gives the installer: QEMU reads
 * and writes it, qemu-img finds it clean, libqcow and our chain see one
 * layer, and it serves as an overlay's backing file. */
static void test_blank_image(void **state) {
        const char *dir = *state;
        char *img = test_path(dir, "blank.qcow2");
        char *theirs = test_path(dir, "theirs.qcow2");
        char *ov = test_path(dir, "ov.qcow2");
        struct json_object *info, *top, *v;
        struct image_chain *c = NULL;
        char err[1024] = "";
        char *out = NULL;
        uint64_t a, b;

        assert_int_equal(qcow2_image_create(img, 20 * GiB, err, sizeof err), 0);
        qemu_img_check(img);
        info = qemu_img_info(img);
        assert_int_equal(json_object_array_length(info), 1);
        top = json_object_array_get_idx(info, 0);
        assert_string_equal(jstr(top, "format"), "qcow2");
        assert_int_equal(jint(top, "virtual-size"), 20 * GiB);
        assert_int_equal(jint(top, "cluster-size"), 65536);
        assert_false(json_object_object_get_ex(top, "backing-filename", &v));
        json_object_put(info);

        assert_int_equal(image_chain_inspect(img, &c, err, sizeof err), 0);
        assert_int_equal(c->n_layers, 1);
        assert_string_equal(c->layers[0].format, "qcow2");
        assert_null(c->layers[0].backing_file);
        assert_int_equal(c->layers[0].virtual_size, 20 * GiB);
        c = image_chain_free(c);

        /* Same apparent size as qemu-img's blank image, less allocated. */
        run_ok((const char *const[]){ "qemu-img", "create", "-q", "-f", "qcow2", theirs, "20G", NULL });
        a = test_allocated(img);
        b = test_allocated(theirs);
        print_message("fresh 20G image allocated: ours %llu bytes, qemu-img %llu bytes\n", (unsigned long long)a,
                      (unsigned long long)b);
        assert_true(a <= b);
        run_ok((const char *const[]){ "qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", img, theirs, NULL });

        /* Written by QEMU (an installer), then used as a template. */
        run_ok((const char *const[]){ "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M", "-c",
                                      "write -P 0xa5 19G 64k", img, NULL });
        qemu_img_check(img);
        create_overlay(ov, "blank.qcow2", "qcow2", 0);
        check_overlay(ov, "blank.qcow2", "qcow2", 20 * GiB, img, 2);
        assert_int_equal(test_run((const char *const[]){ "qemu-io", "-f", "qcow2", "-c", "read -P 0xa5 19G 64k",
                                                         ov, NULL },
                                  &out),
                         0);
        assert_true(test_contains(out, "read 65536/65536 bytes"));
        assert_null(strstr(out, "Pattern verification failed"));
        free(out);
        free(img);
        free(theirs);
        free(ov);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_check_and_info, setup, teardown),
                cmocka_unit_test_setup_teardown(test_awkward_paths, setup, teardown),
                cmocka_unit_test_setup_teardown(test_libqcow_read_through, setup, teardown),
                cmocka_unit_test_setup_teardown(test_differential_writes, setup, teardown),
                cmocka_unit_test_setup_teardown(test_fresh_overlay_size, setup, teardown),
                cmocka_unit_test_setup_teardown(test_blank_image, setup, teardown),
        };
        const char *probe[] = { "qemu-img", "--version", NULL };

        if (test_run(probe, NULL) != 0) {
                fprintf(stderr, "qemu-img not found: skipping\n");
                return 77;
        }
        umask(022);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
