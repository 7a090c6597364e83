/* Unit tests for images/seediso.c: the encoder against golden bytes and
 * ECMA-119/SUSP/RRIP offsets, every invalid input, the atomic write, and
 * xorriso and blkid as independent readers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers.h"
#include "images/seediso.h"

#define SECTOR 2048
#define MTIME 1700000000        /* 2023-11-14 22:13:20 UTC */

static const char meta_data[] = "instance-id: pluto-4711-0123456789abcdef\nlocal-hostname: pluto-4711\n";
static const char user_data[] = "#!/bin/sh\necho hello from the seed\n";

static const struct seediso_file seed_files[] = {
        { "user-data", user_data, sizeof user_data - 1 },
        { "meta-data", meta_data, sizeof meta_data - 1 },
};

static const struct seediso_spec seed_spec = { "cidata", seed_files, 2, MTIME };

static uint32_t le32(const uint8_t *p) {
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t be32(const uint8_t *p) {
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t le16(const uint8_t *p) {
        return (uint16_t)(p[0] | p[1] << 8);
}

static uint16_t be16(const uint8_t *p) {
        return (uint16_t)(p[0] << 8 | p[1]);
}

/* A both-byte-order field must agree with itself. */
static uint32_t both32(const uint8_t *p) {
        assert_int_equal(le32(p), be32(p + 4));
        return le32(p);
}

static uint16_t both16(const uint8_t *p) {
        assert_int_equal(le16(p), be16(p + 2));
        return le16(p);
}

static uint8_t *encode_ok(const struct seediso_spec *spec, size_t *len) {
        uint8_t *buf = NULL;
        char err[256] = "";
        int r = seediso_encode(spec, &buf, len, err, sizeof err);
        if (r < 0)
                fail_msg("seediso_encode: %s", err);
        assert_non_null(buf);
        assert_int_equal(*len % SECTOR, 0);
        return buf;
}

/* ---- golden bytes ------------------------------------------------------- */

/* Length, then every 16-byte line holding a non-zero byte (as for qcow2). */
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

static const char *golden_files[] = { "cidata.hex" };

static const char *golden_dir(void) {
        const char *d = getenv("VRT_SEEDISO_GOLDEN_DIR");
        if (!d)
                fail_msg("VRT_SEEDISO_GOLDEN_DIR is not set (run through meson test)");
        return d;
}

static void test_golden(void **state) {
        size_t len = 0, glen = 0;
        uint8_t *buf;
        char *dump, *path, *want;

        (void)state;
        buf = encode_ok(&seed_spec, &len);
        dump = hexdump(buf, len);
        path = test_path(golden_dir(), golden_files[0]);
        if (getenv("VRT_REGEN_GOLDEN")) {
                test_write_file(path, dump, strlen(dump));
        } else {
                want = (char *)test_read_file(path, &glen);
                want[glen] = '\0';
                if (strcmp(want, dump) != 0) {
                        fprintf(stderr, "%s differs; got:\n%s\n", path, dump);
                        fail_msg("golden mismatch: %s (VRT_REGEN_GOLDEN=1 regenerates)", golden_files[0]);
                }
                free(want);
        }
        free(path);
        free(dump);
        free(buf);
}

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
                for (size_t i = 0; i < sizeof golden_files / sizeof golden_files[0]; i++)
                        used |= strcmp(e->d_name, golden_files[i]) == 0;
                if (!used)
                        fail_msg("unused golden file %s", e->d_name);
        }
        closedir(d);
}

/* ---- the layout against the specs -------------------------------------- */

/* Finds a SUSP entry by signature in a system use area; NULL if absent. */
static const uint8_t *susp_find(const uint8_t *sua, size_t len, const char sig[2]) {
        size_t off = 0;
        while (off + 4 <= len) {
                const uint8_t *e = sua + off;
                if (e[2] < 4)
                        return NULL;
                if (e[0] == (uint8_t)sig[0] && e[1] == (uint8_t)sig[1])
                        return e;
                off += e[2];
        }
        return NULL;
}

struct record {
        const uint8_t *p;
        uint32_t lba, size;
        uint8_t flags;
        const uint8_t *id;
        size_t id_len;
        const uint8_t *sua;
        size_t sua_len;
};

static void record_parse(const uint8_t *p, struct record *r) {
        r->p = p;
        assert_true(p[0] >= 34);
        assert_int_equal(p[0] % 2, 0);
        r->lba = both32(p + 2);
        r->size = both32(p + 10);
        r->flags = p[25];
        assert_int_equal(both16(p + 28), 1);
        r->id_len = p[32];
        r->id = p + 33;
        size_t sua = 33 + r->id_len + (r->id_len % 2 == 0 ? 1 : 0);
        assert_true(sua <= p[0]);
        r->sua = p + sua;
        r->sua_len = p[0] - sua;
}

static void test_layout(void **state) {
        size_t len = 0;
        uint8_t *b, *pvd, *root, *ce;
        struct record rec;

        (void)state;
        b = encode_ok(&seed_spec, &len);
        assert_int_equal(len, 24 * SECTOR);
        for (size_t i = 0; i < 16 * SECTOR; i++)
                assert_int_equal(b[i], 0);

        pvd = b + 16 * SECTOR;
        assert_int_equal(pvd[0], 1);
        assert_memory_equal(pvd + 1, "CD001", 5);
        assert_int_equal(pvd[6], 1);
        /* The label NoCloud looks for, lower case, blank-padded. */
        assert_memory_equal(pvd + 40, "cidata                          ", 32);
        assert_int_equal(both32(pvd + 80), len / SECTOR);
        assert_int_equal(both16(pvd + 120), 1);
        assert_int_equal(both16(pvd + 124), 1);
        assert_int_equal(both16(pvd + 128), SECTOR);
        assert_int_equal(both32(pvd + 132), 10);
        assert_int_equal(le32(pvd + 140), 18);
        assert_int_equal(be32(pvd + 148), 19);
        assert_memory_equal(pvd + 813, "2023111422132000", 16);
        assert_int_equal(pvd[881], 1);
        record_parse(pvd + 156, &rec);
        assert_int_equal(pvd[156], 34);
        assert_int_equal(rec.lba, 20);
        assert_int_equal(rec.size, SECTOR);
        assert_int_equal(rec.flags, 2);

        assert_int_equal(b[17 * SECTOR], 255);
        assert_memory_equal(b + 17 * SECTOR + 1, "CD001", 5);

        /* Path tables: one root entry, its own parent. */
        assert_int_equal(b[18 * SECTOR], 1);
        assert_int_equal(le32(b + 18 * SECTOR + 2), 20);
        assert_int_equal(le16(b + 18 * SECTOR + 6), 1);
        assert_int_equal(be32(b + 19 * SECTOR + 2), 20);
        assert_int_equal(be16(b + 19 * SECTOR + 6), 1);

        /* ".": SP first, then a CE pointing at the ER. */
        root = b + 20 * SECTOR;
        record_parse(root, &rec);
        assert_int_equal(rec.id_len, 1);
        assert_int_equal(rec.id[0], 0);
        assert_int_equal(rec.lba, 20);
        assert_memory_equal(rec.sua, "SP\x07\x01\xbe\xef\x00", 7);
        const uint8_t *e = susp_find(rec.sua, rec.sua_len, "CE");
        assert_non_null(e);
        assert_int_equal(both32(e + 4), 21);
        assert_int_equal(both32(e + 12), 0);
        ce = b + 21 * SECTOR;
        assert_int_equal(both32(e + 20), ce[2]);
        assert_memory_equal(ce, "ER", 2);
        assert_int_equal(ce[4], 10);
        assert_memory_equal(ce + 8, "RRIP_1991A", 10);
        e = susp_find(rec.sua, rec.sua_len, "PX");
        assert_non_null(e);
        assert_int_equal(both32(e + 4), S_IFDIR | 0555);

        /* "..", then the files sorted by ISO name: META_DAT before USER_DAT. */
        size_t off = root[0];
        record_parse(root + off, &rec);
        assert_int_equal(rec.id[0], 1);
        off += root[off];
        const char *want_iso[] = { "META_DAT.;1", "USER_DAT.;1" };
        const char *want_name[] = { "meta-data", "user-data" };
        const char *want_data[] = { meta_data, user_data };
        for (int i = 0; i < 2; i++) {
                record_parse(root + off, &rec);
                assert_int_equal(rec.id_len, strlen(want_iso[i]));
                assert_memory_equal(rec.id, want_iso[i], rec.id_len);
                assert_int_equal(rec.flags, 0);
                e = susp_find(rec.sua, rec.sua_len, "NM");
                assert_non_null(e);
                assert_int_equal(e[2] - 5, strlen(want_name[i]));
                assert_memory_equal(e + 5, want_name[i], e[2] - 5);
                e = susp_find(rec.sua, rec.sua_len, "PX");
                assert_non_null(e);
                assert_int_equal(both32(e + 4), S_IFREG | 0444);
                e = susp_find(rec.sua, rec.sua_len, "RR");
                assert_non_null(e);
                assert_int_equal(e[4], 0x09);   /* PX and NM present */
                assert_int_equal(rec.size, strlen(want_data[i]));
                assert_true((size_t)rec.lba * SECTOR + rec.size <= len);
                assert_memory_equal(b + (size_t)rec.lba * SECTOR, want_data[i], rec.size);
                off += root[off];
        }
        assert_int_equal(root[off], 0);         /* no further record */
        free(b);
}

/* Files larger than a sector span consecutive sectors; empty files and a
 * dotted name get sensible fallback names. */
static void test_sizes_and_names(void **state) {
        size_t big_len = 3 * SECTOR + 1, len = 0;
        char *big = malloc(big_len);
        struct seediso_file files[] = {
                { "user-data", big, big_len },
                { "network-config", "", 0 },
                { "vendor.yaml", "x", 1 },
        };
        struct seediso_spec spec = { "CIDATA", files, 3, MTIME };
        uint8_t *b;

        (void)state;
        assert_non_null(big);
        for (size_t i = 0; i < big_len; i++)
                big[i] = (char)('a' + i % 26);
        b = encode_ok(&spec, &len);
        /* 22 fixed sectors, then NETWORK_ (1), USER_DAT (4), VENDOR.YAM (1). */
        assert_int_equal(len, (22 + 1 + 4 + 1) * SECTOR);
        const uint8_t *root = b + 20 * SECTOR;
        size_t off = root[0];
        off += root[off];
        const char *want[] = { "NETWORK_.;1", "USER_DAT.;1", "VENDOR.YAM;1" };
        uint32_t want_lba[] = { 22, 23, 27 };
        for (int i = 0; i < 3; i++) {
                struct record rec;
                record_parse(root + off, &rec);
                assert_int_equal(rec.id_len, strlen(want[i]));
                assert_memory_equal(rec.id, want[i], rec.id_len);
                assert_int_equal(rec.lba, want_lba[i]);
                off += root[off];
        }
        assert_memory_equal(b + 23 * SECTOR, big, big_len);
        free(b);
        free(big);
}

static void expect_invalid(const struct seediso_spec *spec, const char *needle) {
        uint8_t *buf = (uint8_t *)"untouched";
        size_t len = 12345;
        char err[256] = "";
        assert_int_equal(seediso_encode(spec, &buf, &len, err, sizeof err), -EINVAL);
        assert_string_equal((char *)buf, "untouched");
        assert_int_equal(len, 12345);
        assert_true(test_contains(err, needle));
}

static void test_invalid(void **state) {
        char long_name[SEEDISO_NAME_MAX + 2];
        struct seediso_file one = { "meta-data", "x", 1 };
        struct seediso_file many[SEEDISO_MAX_FILES + 1];
        static char names[SEEDISO_MAX_FILES + 1][8];

        (void)state;
        memset(long_name, 'a', sizeof long_name - 1);
        long_name[sizeof long_name - 1] = '\0';

        expect_invalid(&(struct seediso_spec){ NULL, &one, 1, MTIME }, "volume id");
        expect_invalid(&(struct seediso_spec){ "", &one, 1, MTIME }, "volume id");
        expect_invalid(&(struct seediso_spec){ "cidata cidata", &one, 1, MTIME }, "volume id");
        expect_invalid(&(struct seediso_spec){ "a23456789012345678901234567890123", &one, 1, MTIME }, "volume id");

        const char *bad_names[] = { "", ".", "..", "dir/meta-data", long_name };
        for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
                struct seediso_file f = { bad_names[i], "x", 1 };
                expect_invalid(&(struct seediso_spec){ "cidata", &f, 1, MTIME }, "invalid file name");
        }
        struct seediso_file nameless = { NULL, "x", 1 };
        expect_invalid(&(struct seediso_spec){ "cidata", &nameless, 1, MTIME }, "invalid file name");

        /* Two names with one ISO 9660 fallback name. */
        struct seediso_file clash[] = { { "meta-data", "a", 1 }, { "meta_data", "b", 1 } };
        expect_invalid(&(struct seediso_spec){ "cidata", clash, 2, MTIME }, "META_DAT.;1");

        for (int i = 0; i <= SEEDISO_MAX_FILES; i++) {
                snprintf(names[i], sizeof names[i], "f%d", i);
                many[i] = (struct seediso_file){ names[i], "x", 1 };
        }
        expect_invalid(&(struct seediso_spec){ "cidata", many, SEEDISO_MAX_FILES + 1, MTIME }, "at most");

        struct seediso_file huge = { "user-data", user_data, (size_t)SEEDISO_FILE_MAX + 1 };
        expect_invalid(&(struct seediso_spec){ "cidata", &huge, 1, MTIME }, "at most");
        struct seediso_file no_data = { "user-data", NULL, 3 };
        expect_invalid(&(struct seediso_spec){ "cidata", &no_data, 1, MTIME }, "user-data");

        /* The limits themselves are fine. */
        size_t len = 0;
        memset(long_name, 'b', SEEDISO_NAME_MAX);
        long_name[SEEDISO_NAME_MAX] = '\0';
        struct seediso_file longest = { long_name, "x", 1 };
        free(encode_ok(&(struct seediso_spec){ "a2345678901234567890123456789012", &longest, 1, MTIME }, &len));
        free(encode_ok(&(struct seediso_spec){ "cidata", many, SEEDISO_MAX_FILES, MTIME }, &len));
        free(encode_ok(&(struct seediso_spec){ "cidata", NULL, 0, MTIME }, &len));
        assert_int_equal(len, 22 * SECTOR);
}

/* ---- the write ---------------------------------------------------------- */

static void test_write(void **state) {
        char *dir = test_tmpdir(), *path = test_path(dir, "seed.iso");
        char err[512] = "";
        size_t len = 0, flen = 0;
        uint8_t *want, *got;
        struct stat st;

        (void)state;
        assert_int_equal(seediso_write(path, &seed_spec, 0640, err, sizeof err), 0);
        want = encode_ok(&seed_spec, &len);
        got = test_read_file(path, &flen);
        assert_int_equal(flen, len);
        assert_memory_equal(got, want, len);
        assert_int_equal(stat(path, &st), 0);
        mode_t um = umask(0);
        umask(um);
        assert_int_equal(st.st_mode & 07777, 0640 & ~um);
        free(got);

        /* An existing file is refused and stays as it was. */
        test_write_file(path, "old", 3);
        assert_int_equal(seediso_write(path, &seed_spec, 0640, err, sizeof err), -EEXIST);
        got = test_read_file(path, &flen);
        assert_int_equal(flen, 3);
        free(got);
        unlink(path);

        /* Bad input: an error naming the file, and no file at all. */
        struct seediso_spec bad = seed_spec;
        bad.volume_id = "";
        assert_int_equal(seediso_write(path, &bad, 0640, err, sizeof err), -EINVAL);
        assert_true(test_contains(err, path));
        assert_int_equal(test_count_entries(dir), 0);

        /* A missing directory. */
        char *nodir = test_path(dir, "missing/seed.iso");
        assert_true(seediso_write(nodir, &seed_spec, 0640, err, sizeof err) < 0);
        assert_true(test_contains(err, "missing"));
        assert_int_equal(test_count_entries(dir), 0);

        free(nodir);
        free(want);
        free(path);
        test_rmtree(dir);
        free(dir);
}

/* ---- independent readers ------------------------------------------------ */

static bool have(const char *prog) {
        const char *argv[] = { "sh", "-c", "command -v \"$0\" >/dev/null || test -x \"/usr/sbin/$0\" || test -x \"/sbin/$0\"", prog, NULL };
        return test_run(argv, NULL) == 0;
}

static void test_xorriso_reads_back(void **state) {
        char *dir, *path, *out = NULL;
        char err[512] = "";

        (void)state;
        if (!have("xorriso"))
                skip();
        dir = test_tmpdir();
        path = test_path(dir, "seed.iso");
        assert_int_equal(seediso_write(path, &seed_spec, 0644, err, sizeof err), 0);

        const char *toc[] = { "xorriso", "-abort_on", "WARNING", "-indev", path, "-pvd_info", "-find", "/", "-exec", "lsdl", "--", NULL };
        assert_int_equal(test_run(toc, &out), 0);
        assert_true(test_contains(out, "Volume Id    : cidata\n"));
        assert_true(test_contains(out, "-r--r--r--"));
        assert_true(test_contains(out, "'/meta-data'"));
        assert_true(test_contains(out, "'/user-data'"));
        free(out);
        out = NULL;

        /* The contents, extracted by their Rock Ridge names. */
        const char *names[] = { "meta-data", "user-data" };
        const char *data[] = { meta_data, user_data };
        for (int i = 0; i < 2; i++) {
                char *src = NULL, *dst = test_path(dir, names[i]);
                size_t flen = 0;
                uint8_t *got;
                assert_true(asprintf(&src, "/%s", names[i]) > 0);
                const char *x[] = { "xorriso", "-abort_on", "WARNING", "-osirrox", "on", "-indev", path, "-extract", src, dst, NULL };
                assert_int_equal(test_run(x, NULL), 0);
                got = test_read_file(dst, &flen);
                assert_int_equal(flen, strlen(data[i]));
                assert_memory_equal(got, data[i], flen);
                free(got);
                free(src);
                free(dst);
        }

        /* Without Rock Ridge, the level-1 names. */
        const char *norock[] = { "xorriso", "-read_fs", "norock", "-indev", path, "-find", "/", NULL };
        assert_int_equal(test_run(norock, &out), 0);
        assert_true(test_contains(out, "'/META_DAT'"));
        assert_true(test_contains(out, "'/USER_DAT'"));
        free(out);
        out = NULL;

        if (have("blkid")) {
                const char *blkid[] = { "sh", "-c", "PATH=$PATH:/usr/sbin:/sbin exec blkid -p -o export \"$0\"", path, NULL };
                assert_int_equal(test_run(blkid, &out), 0);
                assert_true(test_contains(out, "TYPE=iso9660"));
                assert_true(test_contains(out, "LABEL=cidata"));
                free(out);
        }
        free(path);
        test_rmtree(dir);
        free(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_golden),
                cmocka_unit_test(test_golden_unused),
                cmocka_unit_test(test_layout),
                cmocka_unit_test(test_sizes_and_names),
                cmocka_unit_test(test_invalid),
                cmocka_unit_test(test_write),
                cmocka_unit_test(test_xorriso_reads_back),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
