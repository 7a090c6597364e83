/* Unit tests for images/qcow2.c: the encoder against golden bytes and the
 * spec, the header decoder against malformed input, and every failure path
 * of qcow2_overlay_create(). The qemu-img/qemu-io/libqcow oracles are in
 * test-qemu.c. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers.h"
#include "images/qcow2.h"

#define GiB (UINT64_C(1) << 30)
#define TiB (UINT64_C(1) << 40)

static uint32_t be32(const uint8_t *p) {
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p) {
        return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static void put32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v) {
        put32(p, (uint32_t)(v >> 32));
        put32(p + 4, (uint32_t)v);
}

/* ---- golden files ------------------------------------------------------ */

/* The golden form of an image buffer: its length, then every 16-byte line
 * that holds a non-zero byte. The buffer is fully determined by it, so
 * equal text means equal bytes. */
static char *hexdump(const uint8_t *b, size_t len) {
        char *out = NULL;
        size_t outlen = 0;
        FILE *f = open_memstream(&out, &outlen);

        assert_non_null(f);
        fprintf(f, "length %zu\n", len);
        for (size_t off = 0; off < len; off += 16) {
                size_t n = len - off < 16 ? len - off : 16;
                bool nonzero = false;

                for (size_t i = 0; i < n; i++)
                        nonzero |= b[off + i] != 0;
                if (!nonzero)
                        continue;
                fprintf(f, "%08zx:", off);
                for (size_t i = 0; i < n; i++)
                        fprintf(f, " %02x", b[off + i]);
                fprintf(f, "\n");
        }
        fclose(f);
        return out;
}

/* A spec without backing file stands for a blank image of its size. */
static const struct golden_case {
        const char *file;
        struct qcow2_overlay_spec spec;
} golden_cases[] = {
        { "overlay-qcow2-10G.hex", { "base.qcow2", "qcow2", 10 * GiB } },
        /* 5 TiB needs a two-cluster L1 table: five refcounted clusters. */
        { "overlay-raw-5T-spaces-commas.hex", { "../images/Debian 12, generic (amd64).raw", "raw", 5 * TiB } },
        { "overlay-qcow2-1M-absolute.hex", { "/var/lib/vrt/images/tiny.qcow2", "qcow2", 1 << 20 } },
        { "image-20G.hex", { NULL, NULL, 20 * GiB } },
        /* 4 TiB + 512: the smallest size whose L1 table (8193 entries) needs a second cluster. */
        { "image-4T-and-512.hex", { NULL, NULL, 4 * TiB + 512 } },
};

static const char *golden_dir(void) {
        const char *d = getenv("VRT_IMAGES_GOLDEN_DIR");
        if (!d)
                fail_msg("VRT_IMAGES_GOLDEN_DIR is not set (run through meson test)");
        return d;
}

static void test_golden(void **state) {
        (void)state;
        for (size_t i = 0; i < sizeof golden_cases / sizeof golden_cases[0]; i++) {
                const struct golden_case *g = &golden_cases[i];
                char err[256] = "";
                uint8_t *buf = NULL;
                size_t len = 0, glen = 0;
                char *dump, *path, *want;

                if (g->spec.backing_file)
                        assert_int_equal(qcow2_overlay_encode(&g->spec, &buf, &len, err, sizeof err), 0);
                else
                        assert_int_equal(qcow2_image_encode(g->spec.virtual_size, &buf, &len, err, sizeof err), 0);
                dump = hexdump(buf, len);
                path = test_path(golden_dir(), g->file);
                if (getenv("VRT_REGEN_GOLDEN")) {
                        test_write_file(path, dump, strlen(dump));
                } else {
                        want = (char *)test_read_file(path, &glen);
                        want[glen] = '\0';
                        if (strcmp(want, dump) != 0) {
                                fprintf(stderr, "%s differs; got:\n%s\n", path, dump);
                                fail_msg("golden mismatch: %s (VRT_REGEN_GOLDEN=1 regenerates)", g->file);
                        }
                        free(want);
                }
                free(path);
                free(dump);
                free(buf);
        }
}

/* Every file in the golden directory belongs to a case. */
static void test_golden_unused(void **state) {
        DIR *d;
        struct dirent *e;

        (void)state;
        d = opendir(golden_dir());
        assert_non_null(d);
        while ((e = readdir(d))) {
                bool used = false;

                if (e->d_name[0] == '.')
                        continue;
                for (size_t i = 0; i < sizeof golden_cases / sizeof golden_cases[0]; i++)
                        used |= strcmp(e->d_name, golden_cases[i].file) == 0;
                if (!used)
                        fail_msg("unused golden file %s", e->d_name);
        }
        closedir(d);
}

/* ---- encoder against the spec ------------------------------------------ */

static void test_encode_layout(void **state) {
        struct qcow2_overlay_spec spec = { "base.qcow2", "qcow2", 10 * GiB };
        char err[256] = "";
        uint8_t *b = NULL;
        size_t len = 0;

        (void)state;
        assert_int_equal(qcow2_overlay_encode(&spec, &b, &len, err, sizeof err), 0);
        /* 10 GiB / 512 MiB per L1 entry = 20 entries after three clusters. */
        assert_int_equal(len, 3 * 65536 + 20 * 8);
        assert_memory_equal(b, "QFI\xfb", 4);
        assert_int_equal(be32(b + 4), 3);
        assert_int_equal(be32(b + 20), 16);             /* cluster_bits */
        assert_int_equal(be64(b + 24), 10 * GiB);
        assert_int_equal(be32(b + 32), 0);              /* crypt_method */
        assert_int_equal(be32(b + 36), 20);             /* l1_size */
        assert_int_equal(be64(b + 40), 0x30000);
        assert_int_equal(be64(b + 48), 0x10000);        /* refcount table */
        assert_int_equal(be32(b + 56), 1);
        assert_int_equal(be32(b + 60), 0);              /* nb_snapshots */
        assert_int_equal(be64(b + 72), 0);              /* incompatible */
        assert_int_equal(be64(b + 80), 0);              /* compatible */
        assert_int_equal(be64(b + 88), 0);              /* autoclear */
        assert_int_equal(be32(b + 96), 4);              /* refcount_order */
        assert_int_equal(be32(b + 100), 112);           /* header_length */
        assert_int_equal(b[104], 0);                    /* compression_type zlib */
        /* Backing-format extension, padded to 8, then the end marker. */
        assert_int_equal(be32(b + 112), 0xe2792aca);
        assert_int_equal(be32(b + 116), 5);
        assert_memory_equal(b + 120, "qcow2\0\0\0", 8);
        assert_int_equal(be64(b + 128), 0);
        assert_int_equal(be64(b + 8), 136);             /* backing_file_offset */
        assert_int_equal(be32(b + 16), 10);             /* backing_file_size */
        assert_memory_equal(b + 136, "base.qcow2", 10);
        /* Refcount table -> block at cluster 2; clusters 0-3 in use. */
        assert_int_equal(be64(b + 0x10000), 0x20000);
        for (int i = 0; i < 4; i++)
                assert_int_equal(b[0x20000 + 2 * i] << 8 | b[0x20000 + 2 * i + 1], 1);
        for (size_t i = 0x20000 + 8; i < 0x30000; i++)
                assert_int_equal(b[i], 0);
        for (size_t i = 0x30000; i < len; i++)
                assert_int_equal(b[i], 0);
        free(b);
}

static void test_encode_decode_roundtrip(void **state) {
        const struct qcow2_overlay_spec specs[] = {
                { "a", "raw", 512 },
                { "base.qcow2", "qcow2", 10 * GiB },
                { "/x/y z,w.raw", "raw", 5 * TiB },
                { "q", "qcow2", (UINT64_C(1) << 29) + 512 },
        };

        (void)state;
        for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
                struct qcow2_header h;
                char err[256] = "";
                uint8_t *b = NULL;
                size_t len = 0;
                uint64_t l1 = (specs[i].virtual_size + (UINT64_C(1) << 29) - 1) >> 29;

                assert_int_equal(qcow2_overlay_encode(&specs[i], &b, &len, err, sizeof err), 0);
                assert_int_equal(qcow2_header_decode(b, len, &h, err, sizeof err), 0);
                assert_int_equal(h.version, 3);
                assert_int_equal(h.size, specs[i].virtual_size);
                assert_int_equal(h.l1_size, l1);
                assert_int_equal(len, 0x30000 + l1 * 8);
                assert_true(h.has_backing_file);
                assert_string_equal(h.backing_file, specs[i].backing_file);
                assert_true(h.has_backing_format);
                assert_string_equal(h.backing_format, specs[i].backing_format);
                free(b);
        }
}

static void test_encode_longest_name(void **state) {
        char name[QCOW2_BACKING_FILE_MAX + 1];
        struct qcow2_overlay_spec spec = { name, "raw", GiB };
        struct qcow2_header h;
        char err[256] = "";
        uint8_t *b = NULL;
        size_t len = 0;

        (void)state;
        memset(name, 'n', sizeof name - 1);
        name[sizeof name - 1] = '\0';
        assert_int_equal(qcow2_overlay_encode(&spec, &b, &len, err, sizeof err), 0);
        assert_int_equal(qcow2_header_decode(b, 65536, &h, err, sizeof err), 0);
        assert_string_equal(h.backing_file, name);
        free(b);
}

static void expect_encode_error(const struct qcow2_overlay_spec *spec, const char *msg) {
        char err[256] = "";
        uint8_t *b = NULL;
        size_t len = 0;

        assert_int_equal(qcow2_overlay_encode(spec, &b, &len, err, sizeof err), -EINVAL);
        assert_null(b);
        assert_true(test_contains(err, msg));
}

static void test_encode_invalid(void **state) {
        char longname[QCOW2_BACKING_FILE_MAX + 2];

        (void)state;
        memset(longname, 'n', sizeof longname - 1);
        longname[sizeof longname - 1] = '\0';
        expect_encode_error(&(struct qcow2_overlay_spec){ "", "raw", GiB }, "empty backing file name");
        expect_encode_error(&(struct qcow2_overlay_spec){ NULL, "raw", GiB }, "empty backing file name");
        expect_encode_error(&(struct qcow2_overlay_spec){ longname, "raw", GiB }, "at most 1023");
        expect_encode_error(&(struct qcow2_overlay_spec){ "b", "vmdk", GiB }, "unsupported backing format 'vmdk'");
        expect_encode_error(&(struct qcow2_overlay_spec){ "b", NULL, GiB }, "unsupported backing format");
        expect_encode_error(&(struct qcow2_overlay_spec){ "b", "raw", 0 }, "virtual size is 0");
        expect_encode_error(&(struct qcow2_overlay_spec){ "b", "raw", GiB + 1 }, "not a multiple of 512");
        expect_encode_error(&(struct qcow2_overlay_spec){ "b", "raw", UINT64_C(1) << 62 }, "exceeds the qcow2 limit");
}

/* A blank image: the overlay layout without backing name and extension. */
static void test_image_encode_layout(void **state) {
        struct qcow2_header h;
        char err[256] = "";
        uint8_t *b = NULL;
        size_t len = 0;

        (void)state;
        assert_int_equal(qcow2_image_encode(20 * GiB, &b, &len, err, sizeof err), 0);
        assert_int_equal(len, 3 * 65536 + 40 * 8);
        assert_memory_equal(b, "QFI\xfb", 4);
        assert_int_equal(be32(b + 4), 3);
        assert_int_equal(be64(b + 8), 0);               /* no backing_file_offset */
        assert_int_equal(be32(b + 16), 0);              /* no backing_file_size */
        assert_int_equal(be32(b + 20), 16);
        assert_int_equal(be64(b + 24), 20 * GiB);
        assert_int_equal(be32(b + 36), 40);
        assert_int_equal(be64(b + 40), 0x30000);
        assert_int_equal(be64(b + 48), 0x10000);
        assert_int_equal(be32(b + 96), 4);
        assert_int_equal(be32(b + 100), 112);
        /* The end-of-extensions marker right after the header, then nothing. */
        for (size_t i = 104; i < 0x10000; i++)
                assert_int_equal(b[i], 0);
        assert_int_equal(be64(b + 0x10000), 0x20000);
        for (int i = 0; i < 4; i++)
                assert_int_equal(b[0x20000 + 2 * i] << 8 | b[0x20000 + 2 * i + 1], 1);
        assert_int_equal(b[0x20000 + 8], 0);
        assert_int_equal(b[0x20000 + 9], 0);
        assert_int_equal(qcow2_header_decode(b, len, &h, err, sizeof err), 0);
        assert_false(h.has_backing_file);
        assert_false(h.has_backing_format);
        assert_int_equal(h.size, 20 * GiB);
        free(b);
}

static void test_image_encode_invalid(void **state) {
        char err[256] = "";
        uint8_t *b = NULL;
        size_t len = 0;

        (void)state;
        assert_int_equal(qcow2_image_encode(0, &b, &len, err, sizeof err), -EINVAL);
        assert_true(test_contains(err, "virtual size is 0"));
        assert_int_equal(qcow2_image_encode(GiB + 1, &b, &len, err, sizeof err), -EINVAL);
        assert_true(test_contains(err, "not a multiple of 512"));
        assert_int_equal(qcow2_image_encode(UINT64_C(1) << 62, &b, &len, err, sizeof err), -EINVAL);
        assert_true(test_contains(err, "exceeds the qcow2 limit"));
        assert_null(b);
}

/* ---- decoder ------------------------------------------------------------ */

static uint8_t *sample(size_t *len) {
        struct qcow2_overlay_spec spec = { "base.qcow2", "qcow2", GiB };
        char err[256];
        uint8_t *b = NULL;

        assert_int_equal(qcow2_overlay_encode(&spec, &b, len, err, sizeof err), 0);
        return b;
}

/* Every prefix shorter than header, extensions and name is reported as
 * truncated, never accepted and never read past. */
static void test_decode_truncated(void **state) {
        struct qcow2_header h;
        char err[256];
        size_t len;
        uint8_t *b = sample(&len);

        (void)state;
        for (size_t n = 0; n < 146; n++) {
                uint8_t *copy = malloc(n ? n : 1);
                memcpy(copy, b, n);
                assert_int_equal(qcow2_header_decode(copy, n, &h, err, sizeof err), -ENODATA);
                free(copy);
        }
        assert_int_equal(qcow2_header_decode(b, 146, &h, err, sizeof err), 0);
        free(b);
}

static void expect_decode_error(const uint8_t *b, size_t len, int want, const char *msg) {
        struct qcow2_header h;
        char err[256] = "";

        assert_int_equal(qcow2_header_decode(b, len, &h, err, sizeof err), want);
        assert_true(test_contains(err, msg));
}

static void test_decode_invalid(void **state) {
        size_t len;
        uint8_t *b = sample(&len);
        uint8_t *m = malloc(len);

        (void)state;
#define MUTATE(stmt, msg)                                                       \
        do {                                                                    \
                memcpy(m, b, len);                                              \
                stmt;                                                           \
                expect_decode_error(m, len, -EINVAL, msg);                      \
        } while (0)
        MUTATE(m[0] = 'X', "not a qcow2 image");
        MUTATE(put32(m + 4, 1), "qcow version 1 is not supported");
        MUTATE(put32(m + 4, 4), "qcow version 4 is not supported");
        MUTATE(put32(m + 20, 8), "invalid qcow2 cluster_bits 8");
        MUTATE(put32(m + 20, 22), "invalid qcow2 cluster_bits 22");
        MUTATE(put32(m + 100, 100), "invalid qcow2 header length 100");
        MUTATE(put32(m + 100, 108), "invalid qcow2 header length 108");
        MUTATE(put32(m + 100, 0x20000), "exceeds the cluster size");
        MUTATE(put32(m + 96, 7), "invalid qcow2 refcount_order 7");
        MUTATE(put64(m + 40, 0x30001), "not aligned");
        MUTATE(put64(m + 48, 0x10200), "not aligned");
        MUTATE(put32(m + 36, 0x500000), "L1 table too large");
        MUTATE(put32(m + 16, 0), "invalid backing file name length 0");
        MUTATE(put32(m + 16, 1024), "invalid backing file name length 1024");
        MUTATE(put64(m + 8, 64), "outside the header cluster");
        MUTATE(put64(m + 8, 65530), "outside the header cluster");
        MUTATE(put64(m + 8, UINT64_MAX - 2), "outside the header cluster");
        MUTATE(m[140] = 0, "contains a NUL byte");
        MUTATE(put32(m + 116, 4096), "is too long");
        MUTATE(put32(m + 116, 0), "invalid backing format header extension");
        MUTATE(put32(m + 116, 40), "is too long");
        MUTATE(m[121] = 0, "invalid backing format header extension");
#undef MUTATE
        free(m);
        free(b);
}

static void test_decode_duplicate_and_unterminated(void **state) {
        uint8_t b[4096] = { 0 };
        struct qcow2_header h;
        char err[256] = "";

        (void)state;
        put32(b, QCOW2_MAGIC);
        put32(b + 4, 3);
        put32(b + 20, 16);
        put64(b + 24, GiB);
        put32(b + 96, 4);
        put32(b + 100, 104);
        /* Two backing-format extensions: refused. */
        put32(b + 104, QCOW2_EXT_BACKING_FORMAT);
        put32(b + 108, 3);
        memcpy(b + 112, "raw", 3);
        put32(b + 120, QCOW2_EXT_BACKING_FORMAT);
        put32(b + 124, 3);
        memcpy(b + 128, "raw", 3);
        expect_decode_error(b, sizeof b, -EINVAL, "duplicate backing format header extension");

        /* An unknown extension is skipped; without an end marker the
         * extensions run to the backing file name, which QEMU accepts. */
        memset(b + 104, 0, 40);
        put32(b + 104, 0x12345678);
        put32(b + 108, 5);
        put32(b + 120, QCOW2_EXT_BACKING_FORMAT);
        put32(b + 124, 5);
        memcpy(b + 128, "qcow2", 5);
        put64(b + 8, 136);
        put32(b + 16, 4);
        memcpy(b + 136, "base", 4);
        memcpy(b + 140, "base", 4);
        assert_int_equal(qcow2_header_decode(b, sizeof b, &h, err, sizeof err), 0);
        assert_string_equal(h.backing_format, "qcow2");
        assert_string_equal(h.backing_file, "base");

        /* An extension cut off by the backing file name. */
        put64(b + 8, 140);
        expect_decode_error(b, sizeof b, -EINVAL, "cut off");
}

static void test_decode_v2(void **state) {
        uint8_t b[512] = { 0 };
        struct qcow2_header h;
        char err[256] = "";

        (void)state;
        put32(b, QCOW2_MAGIC);
        put32(b + 4, 2);
        put32(b + 20, 16);
        put64(b + 24, GiB);
        put32(b + 72, 0);               /* end of extensions right after the v2 header */
        put64(b + 8, 80);
        put32(b + 16, 3);
        memcpy(b + 80, "old", 3);
        assert_int_equal(qcow2_header_decode(b, sizeof b, &h, err, sizeof err), 0);
        assert_int_equal(h.version, 2);
        assert_int_equal(h.header_length, 72);
        assert_int_equal(h.refcount_order, 4);
        assert_string_equal(h.backing_file, "old");
        assert_false(h.has_backing_format);
        expect_decode_error(b, 71, -ENODATA, "truncated");
}

static void test_has_magic(void **state) {
        (void)state;
        assert_true(qcow2_has_magic("QFI\xfb", 4));
        assert_false(qcow2_has_magic("QFI\xfb", 3));
        assert_false(qcow2_has_magic("QFI\xfa", 4));
        assert_false(qcow2_has_magic("", 0));
}

/* ---- qcow2_overlay_create ---------------------------------------------- */

struct fixture {
        char *dir;
        char *raw;              /* 1 GiB sparse raw image */
        char *qcow;             /* qcow2 image of 2 GiB (itself over raw) */
};

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof *f);
        struct qcow2_overlay_spec spec = { "base.raw", "raw", 2 * GiB };
        char err[256];
        uint8_t *b = NULL;
        size_t len;
        FILE *fp;

        f->dir = test_tmpdir();
        f->raw = test_path(f->dir, "base.raw");
        f->qcow = test_path(f->dir, "base.qcow2");
        fp = fopen(f->raw, "w");
        assert_non_null(fp);
        assert_int_equal(ftruncate(fileno(fp), (off_t)GiB), 0);
        fclose(fp);
        assert_int_equal(qcow2_overlay_encode(&spec, &b, &len, err, sizeof err), 0);
        test_write_file(f->qcow, b, len);
        free(b);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;

        test_rmtree(f->dir);
        free(f->dir);
        free(f->raw);
        free(f->qcow);
        free(f);
        return 0;
}

static void read_header(const char *path, struct qcow2_header *h) {
        char err[256] = "";
        size_t len;
        uint8_t *b = test_read_file(path, &len);

        assert_int_equal(qcow2_header_decode(b, len, h, err, sizeof err), 0);
        free(b);
}

static void test_create_sizes(void **state) {
        struct fixture *f = *state;
        struct qcow2_header h;
        char err[512] = "";
        char *ov = test_path(f->dir, "sizes.qcow2");

        assert_int_equal(qcow2_overlay_create(ov, "base.qcow2", "qcow2", 0, err, sizeof err), 0);
        read_header(ov, &h);
        assert_int_equal(h.size, 2 * GiB);
        assert_string_equal(h.backing_file, "base.qcow2");
        assert_string_equal(h.backing_format, "qcow2");
        assert_int_equal(unlink(ov), 0);

        /* Equal to the backing size is fine; larger wins, rounded to 512. */
        assert_int_equal(qcow2_overlay_create(ov, "base.raw", "raw", GiB, err, sizeof err), 0);
        read_header(ov, &h);
        assert_int_equal(h.size, GiB);
        assert_int_equal(unlink(ov), 0);
        assert_int_equal(qcow2_overlay_create(ov, "base.raw", "raw", 3 * GiB + 1, err, sizeof err), 0);
        read_header(ov, &h);
        assert_int_equal(h.size, 3 * GiB + 512);
        assert_int_equal(unlink(ov), 0);

        /* Smaller than the backing image: refused, nothing written. */
        assert_int_equal(qcow2_overlay_create(ov, "base.qcow2", "qcow2", GiB, err, sizeof err), -EINVAL);
        assert_true(test_contains(err, "is smaller than backing file"));
        assert_int_equal(test_count_entries(f->dir), 2);
        free(ov);
}

/* The variant for a caller that fsyncs the directory itself writes the
 * same overlay and fails the same way. */
static void test_create_dir_unsynced(void **state) {
        struct fixture *f = *state;
        struct qcow2_header h;
        char err[512] = "";
        char *ov = test_path(f->dir, "unsynced.qcow2");

        assert_int_equal(qcow2_overlay_create_dir_unsynced(ov, "base.qcow2", "qcow2", 0, err, sizeof err), 0);
        read_header(ov, &h);
        assert_int_equal(h.size, 2 * GiB);
        assert_string_equal(h.backing_file, "base.qcow2");
        assert_string_equal(h.backing_format, "qcow2");
        assert_int_equal(qcow2_overlay_create_dir_unsynced(ov, "base.qcow2", "qcow2", 0, err, sizeof err), -EEXIST);
        assert_int_equal(unlink(ov), 0);
        assert_int_equal(qcow2_overlay_create_dir_unsynced(ov, "missing.qcow2", "qcow2", 0, err, sizeof err), -ENOENT);
        assert_int_equal(test_count_entries(f->dir), 2);
        free(ov);
}

/* Sizes near 2^64 must not wrap when rounded to 512: neither a requested
 * size (it exceeds the limit) nor a backing image's declared size (the
 * overlay would be smaller than its base). */
static void test_create_size_overflow(void **state) {
        struct fixture *f = *state;
        struct qcow2_overlay_spec spec = { "base.raw", "raw", 2 * GiB };
        char err[512] = "";
        char *ov = test_path(f->dir, "huge.qcow2"), *big = test_path(f->dir, "big.qcow2");
        uint8_t *b = NULL;
        size_t len;

        assert_int_equal(qcow2_overlay_create(ov, "base.qcow2", "qcow2", UINT64_MAX, err, sizeof err), -EINVAL);
        assert_true(test_contains(err, "exceeds the qcow2 limit"));
        assert_int_equal(qcow2_overlay_create(ov, "base.qcow2", "qcow2", UINT64_MAX - 100, err, sizeof err), -EINVAL);
        assert_true(test_contains(err, "exceeds the qcow2 limit"));

        /* A base whose header claims almost 2^64 bytes. */
        assert_int_equal(qcow2_overlay_encode(&spec, &b, &len, err, sizeof err), 0);
        put64(b + 24, UINT64_MAX - 100);
        test_write_file(big, b, len);
        free(b);
        assert_int_equal(qcow2_overlay_create(ov, "big.qcow2", "qcow2", 2 * GiB, err, sizeof err), -EINVAL);
        assert_int_equal(qcow2_overlay_create(ov, "big.qcow2", "qcow2", 0, err, sizeof err), -EINVAL);
        assert_int_equal(access(ov, F_OK), -1);
        free(ov);
        free(big);
}

static void test_create_odd_raw_size(void **state) {
        struct fixture *f = *state;
        struct qcow2_header h;
        char err[512] = "";
        char *raw = test_path(f->dir, "odd.raw");
        char *ov = test_path(f->dir, "odd.qcow2");

        test_write_file(raw, "x", 1);
        assert_int_equal(qcow2_overlay_create(ov, "odd.raw", "raw", 0, err, sizeof err), 0);
        read_header(ov, &h);
        assert_int_equal(h.size, 512);
        unlink(ov);
        unlink(raw);
        free(ov);
        free(raw);
}

/* A relative backing name is stored as given and resolved against the
 * overlay's directory, not the working directory. */
static void test_create_relative_backing(void **state) {
        struct fixture *f = *state;
        struct qcow2_header h;
        char err[512] = "";
        char *sub = test_path(f->dir, "sub");
        char *ov = test_path(sub, "ov.qcow2");
        char cwd[4096];

        assert_int_equal(mkdir(sub, 0755), 0);
        assert_non_null(getcwd(cwd, sizeof cwd));
        assert_int_equal(chdir("/"), 0);
        assert_int_equal(qcow2_overlay_create(ov, "../base.qcow2", "qcow2", 0, err, sizeof err), 0);
        read_header(ov, &h);
        assert_string_equal(h.backing_file, "../base.qcow2");
        assert_int_equal(h.size, 2 * GiB);
        /* The target exists now. */
        assert_int_equal(qcow2_overlay_create(ov, "../base.qcow2", "qcow2", 0, err, sizeof err), -EEXIST);
        assert_true(test_contains(err, "ov.qcow2: already exists"));
        unlink(ov);
        /* base.qcow2 exists in the working directory, not next to ov. */
        assert_int_equal(chdir(f->dir), 0);
        assert_int_equal(qcow2_overlay_create(ov, "base.qcow2", "qcow2", 0, err, sizeof err), -ENOENT);
        assert_true(test_contains(err, "sub/base.qcow2: No such file or directory"));
        assert_int_equal(test_count_entries(sub), 0);

        /* A path without a directory part is relative to the working dir. */
        assert_int_equal(chdir(f->dir), 0);
        assert_int_equal(qcow2_overlay_create("cwd.qcow2", "base.raw", "raw", 0, err, sizeof err), 0);
        read_header("cwd.qcow2", &h);
        assert_int_equal(h.size, GiB);
        unlink("cwd.qcow2");
        assert_int_equal(chdir(cwd), 0);
        rmdir(sub);
        free(ov);
        free(sub);
}

static void test_create_spaces_commas(void **state) {
        struct fixture *f = *state;
        struct qcow2_header h;
        char err[512] = "";
        char *sub = test_path(f->dir, "dir with space, and comma");
        char *base = test_path(sub, "my base, v1.raw");
        char *ov = test_path(sub, "over lay,1.qcow2");
        FILE *fp;

        assert_int_equal(mkdir(sub, 0755), 0);
        fp = fopen(base, "w");
        assert_non_null(fp);
        assert_int_equal(ftruncate(fileno(fp), 1 << 20), 0);
        fclose(fp);
        assert_int_equal(qcow2_overlay_create(ov, "my base, v1.raw", "raw", 0, err, sizeof err), 0);
        read_header(ov, &h);
        assert_string_equal(h.backing_file, "my base, v1.raw");
        assert_int_equal(h.size, 1 << 20);
        test_rmtree(sub);
        free(ov);
        free(base);
        free(sub);
}

static void expect_create_error(struct fixture *f, const char *ov_name, const char *backing, const char *fmt,
                                uint64_t size, int want, const char *msg) {
        char err[512] = "";
        char *ov = ov_name[0] == '/' ? strdup(ov_name) : test_path(f->dir, ov_name);
        int before = test_count_entries(f->dir);

        assert_int_equal(qcow2_overlay_create(ov, backing, fmt, size, err, sizeof err), want);
        assert_true(test_contains(err, msg));
        assert_null(strchr(err, '\n'));
        /* Nothing created, no temporary file left behind. */
        assert_int_equal(test_count_entries(f->dir), before);
        free(ov);
}

static void test_create_errors(void **state) {
        struct fixture *f = *state;
        char *p;
        uint8_t hdr[200];
        size_t len;
        uint8_t *q;

        expect_create_error(f, "x.qcow2", "missing.qcow2", "qcow2", 0, -ENOENT,
                            "missing.qcow2: No such file or directory");
        expect_create_error(f, "/nonexistent-vrt-dir/x.qcow2", f->raw, "raw", 0, -ENOENT,
                            "cannot open directory /nonexistent-vrt-dir");
        expect_create_error(f, "x.qcow2", "/dev/zero", "raw", 0, -EINVAL,
                            "/dev/zero: not a regular file or block device");
        p = test_path(f->dir, "base.raw/x.qcow2");
        assert_int_equal(qcow2_overlay_create(p, f->raw, "raw", 0, (char[256]){ 0 }, 256), -ENOTDIR);
        free(p);
        expect_create_error(f, "base.qcow2", "base.raw", "raw", 0, -EEXIST, "base.qcow2: already exists");
        assert_int_equal(qcow2_overlay_create("", f->raw, "raw", 0, (char[256]){ 0 }, 256), -EINVAL);
        p = test_path(f->dir, "");
        assert_int_equal(qcow2_overlay_create(p, f->raw, "raw", 0, (char[256]){ 0 }, 256), -EISDIR);
        free(p);
        expect_create_error(f, "x.qcow2", "base.raw", "vmdk", 0, -EINVAL, "unsupported backing format 'vmdk'");
        expect_create_error(f, "x.qcow2", "", "raw", 0, -EINVAL, "empty backing file name");
        expect_create_error(f, "x.qcow2", ".", "raw", 0, -EISDIR, "not a regular file or block device");
        /* The declared format must match the content. */
        expect_create_error(f, "x.qcow2", "base.qcow2", "raw", 0, -EINVAL,
                            "has a qcow2 header but was given as raw; refusing");
        expect_create_error(f, "x.qcow2", "base.raw", "qcow2", 0, -EINVAL, "base.raw: not a qcow2 image");

        /* A truncated and a malformed qcow2 backing image. */
        q = test_read_file(f->qcow, &len);
        memcpy(hdr, q, sizeof hdr);
        free(q);
        p = test_path(f->dir, "short.qcow2");
        test_write_file(p, hdr, 60);
        expect_create_error(f, "x.qcow2", "short.qcow2", "qcow2", 0, -EINVAL, "short.qcow2: qcow2 header truncated");
        put32(hdr + 4, 1);
        test_write_file(p, hdr, sizeof hdr);
        expect_create_error(f, "x.qcow2", "short.qcow2", "qcow2", 0, -EINVAL, "qcow version 1 is not supported");
        put32(hdr + 4, 3);
        put64(hdr + 24, 0);
        test_write_file(p, hdr, sizeof hdr);
        expect_create_error(f, "x.qcow2", "short.qcow2", "qcow2", 0, -EINVAL, "virtual size is 0");
        unlink(p);
        free(p);

        p = test_path(f->dir, "empty.raw");
        test_write_file(p, "", 0);
        expect_create_error(f, "x.qcow2", "empty.raw", "raw", 0, -EINVAL, "empty.raw: virtual size is 0");
        unlink(p);
        free(p);
}

/* Runs fn in a child (so rlimits and mount namespaces stay there) and
 * returns its exit status; 77 means "cannot test here". */
static int in_child(int (*fn)(struct fixture *f, const char *dir), struct fixture *f, const char *dir) {
        int status;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0)
                _exit(fn(f, dir));
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        return WEXITSTATUS(status);
}

static int create_in_readonly_dir(struct fixture *f, const char *dir) {
        char err[512] = "";
        char *ov = test_path(dir, "ov.qcow2");
        int want = -EROFS, r;

        if (unshare(CLONE_NEWNS) == 0) {
                if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
                    mount(dir, dir, NULL, MS_BIND, NULL) < 0 ||
                    mount(NULL, dir, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
                        return 77;
        } else if (geteuid() != 0) {
                if (chmod(dir, 0555) < 0)
                        return 77;
                want = -EACCES;
        } else {
                return 77;
        }
        r = qcow2_overlay_create(ov, f->raw, "raw", 0, err, sizeof err);
        if (r != want || !strstr(err, "cannot create a file in")) {
                fprintf(stderr, "r=%d err=%s\n", r, err);
                return 1;
        }
        return 0;
}

static void test_create_readonly_dir(void **state) {
        struct fixture *f = *state;
        char *ro = test_path(f->dir, "ro");
        int st;

        assert_int_equal(mkdir(ro, 0755), 0);
        st = in_child(create_in_readonly_dir, f, ro);
        chmod(ro, 0755);
        free(ro);
        if (st == 77)
                skip();
        assert_int_equal(st, 0);
        /* Nothing in the directory, not even a temporary file. */
        ro = test_path(f->dir, "ro");
        assert_int_equal(test_count_entries(ro), 0);
        free(ro);
}

/* The temporary file exists when the write fails (file size limit): it
 * must be gone afterwards. */
static int create_with_fsize_limit(struct fixture *f, const char *dir) {
        struct rlimit rl = { 100000, 100000 };
        char err[512] = "";
        char *ov = test_path(dir, "ov.qcow2");
        int r;

        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
                return 77;
        r = qcow2_overlay_create(ov, f->raw, "raw", 0, err, sizeof err);
        if (r != -EFBIG || !strstr(err, "ov.qcow2: write: File too large")) {
                fprintf(stderr, "r=%d err=%s\n", r, err);
                return 1;
        }
        return 0;
}

static void test_create_write_failure(void **state) {
        struct fixture *f = *state;
        char *d = test_path(f->dir, "fsize");
        int st;

        assert_int_equal(mkdir(d, 0755), 0);
        st = in_child(create_with_fsize_limit, f, d);
        if (st == 77)
                skip();
        assert_int_equal(st, 0);
        assert_int_equal(test_count_entries(d), 0);
        rmdir(d);
        free(d);
}

/* A fresh overlay leaves its all-zero L1 table as a hole. */
static void test_create_small_and_sparse(void **state) {
        struct fixture *f = *state;
        char err[512] = "";
        char *ov = test_path(f->dir, "small.qcow2");
        struct stat st;

        assert_int_equal(qcow2_overlay_create(ov, "base.qcow2", "qcow2", 10 * GiB, err, sizeof err), 0);
        assert_int_equal(stat(ov, &st), 0);
        assert_int_equal(st.st_size, 0x30000 + 20 * 8);
        assert_true((uint64_t)st.st_blocks * 512 <= 16 * 1024);
        assert_int_equal(st.st_mode & 0777, 0644);
        unlink(ov);
        free(ov);
}

/* qcow2_image_create: rounding, sparseness, refusal to replace, errors. */
static void test_image_create(void **state) {
        struct fixture *f = *state;
        struct qcow2_header h;
        char err[512] = "";
        char *img = test_path(f->dir, "blank.qcow2");
        struct stat st;
        int before;

        assert_int_equal(qcow2_image_create(img, 10 * GiB + 1, err, sizeof err), 0);
        read_header(img, &h);
        assert_int_equal(h.size, 10 * GiB + 512);
        assert_false(h.has_backing_file);
        assert_int_equal(stat(img, &st), 0);
        assert_int_equal(st.st_size, 0x30000 + 21 * 8);
        assert_true((uint64_t)st.st_blocks * 512 <= 16 * 1024);
        assert_int_equal(st.st_mode & 0777, 0644);

        before = test_count_entries(f->dir);
        assert_int_equal(qcow2_image_create(img, GiB, err, sizeof err), -EEXIST);
        assert_true(test_contains(err, "blank.qcow2: already exists"));
        assert_null(strchr(err, '\n'));
        read_header(img, &h);
        assert_int_equal(h.size, 10 * GiB + 512);       /* untouched */
        assert_int_equal(unlink(img), 0);

        assert_int_equal(qcow2_image_create(img, 0, err, sizeof err), -EINVAL);
        assert_true(test_contains(err, "blank.qcow2: virtual size is 0"));
        assert_int_equal(qcow2_image_create(img, UINT64_MAX, err, sizeof err), -EINVAL);
        assert_true(test_contains(err, "exceeds the qcow2 limit"));
        assert_int_equal(qcow2_image_create("", GiB, err, sizeof err), -EINVAL);
        assert_int_equal(qcow2_image_create("/nonexistent-vrt-dir/x.qcow2", GiB, err, sizeof err), -ENOENT);
        assert_true(test_contains(err, "cannot open directory /nonexistent-vrt-dir"));
        assert_int_equal(test_count_entries(f->dir), before - 1);
        free(img);
}

static int image_create_with_fsize_limit(struct fixture *f, const char *dir) {
        struct rlimit rl = { 100000, 100000 };
        char err[512] = "";
        char *img = test_path(dir, "img.qcow2");
        int r;

        (void)f;
        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
                return 77;
        r = qcow2_image_create(img, GiB, err, sizeof err);
        if (r != -EFBIG || !strstr(err, "img.qcow2: write: File too large")) {
                fprintf(stderr, "r=%d err=%s\n", r, err);
                return 1;
        }
        return 0;
}

static void test_image_create_write_failure(void **state) {
        struct fixture *f = *state;
        char *d = test_path(f->dir, "fsize-image");
        int st;

        assert_int_equal(mkdir(d, 0755), 0);
        st = in_child(image_create_with_fsize_limit, f, d);
        if (st == 77)
                skip();
        assert_int_equal(st, 0);
        assert_int_equal(test_count_entries(d), 0);
        rmdir(d);
        free(d);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_golden),
                cmocka_unit_test(test_golden_unused),
                cmocka_unit_test(test_encode_layout),
                cmocka_unit_test(test_encode_decode_roundtrip),
                cmocka_unit_test(test_encode_longest_name),
                cmocka_unit_test(test_encode_invalid),
                cmocka_unit_test(test_decode_truncated),
                cmocka_unit_test(test_decode_invalid),
                cmocka_unit_test(test_decode_duplicate_and_unterminated),
                cmocka_unit_test(test_decode_v2),
                cmocka_unit_test(test_image_encode_layout),
                cmocka_unit_test(test_image_encode_invalid),
                cmocka_unit_test(test_has_magic),
                cmocka_unit_test_setup_teardown(test_create_sizes, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_dir_unsynced, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_size_overflow, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_odd_raw_size, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_relative_backing, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_spaces_commas, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_errors, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_readonly_dir, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_write_failure, setup, teardown),
                cmocka_unit_test_setup_teardown(test_image_create, setup, teardown),
                cmocka_unit_test_setup_teardown(test_image_create_write_failure, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_small_and_sparse, setup, teardown),
        };

        umask(022);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
