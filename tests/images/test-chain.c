/* Unit tests for images/chain.c (backing chain inspection through libqcow)
 * and images/template.c. Fixtures are made with our encoder, patched by
 * hand for the malformed cases, and with qemu-img where an image with data
 * or another format is needed. */
#include <errno.h>
#include <fcntl.h>
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

#include "helpers.h"
#include "images/chain.h"
#include "images/qcow2.h"
#include "images/template.h"

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

static uint64_t be64(const uint8_t *p) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return v;
}

static void put32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

static int setup(void **state) {
        *state = test_tmpdir();
        return 0;
}

static int teardown(void **state) {
        test_rmtree(*state);
        free(*state);
        return 0;
}

static char *make_raw(const char *dir, const char *name, uint64_t size) {
        char *p = test_path(dir, name);
        FILE *f = fopen(p, "w");

        assert_non_null(f);
        assert_int_equal(ftruncate(fileno(f), (off_t)size), 0);
        fclose(f);
        return p;
}

/* Writes an overlay with our encoder, without looking at the backing file,
 * so that broken chains can be built. */
static char *make_overlay(const char *dir, const char *name, const char *backing, const char *fmt, uint64_t size) {
        struct qcow2_overlay_spec spec = { backing, fmt, size };
        char *p = test_path(dir, name);
        char err[256];
        uint8_t *b = NULL;
        size_t len;

        assert_int_equal(qcow2_overlay_encode(&spec, &b, &len, err, sizeof err), 0);
        test_write_file(p, b, len);
        free(b);
        return p;
}

static void qemu_img(const char *const argv[]) {
        assert_int_equal(test_run(argv, NULL), 0);
}

static void expect_error(const char *path, int want, const char *msg) {
        struct image_chain *c = NULL;
        char err[1024] = "";

        assert_int_equal(image_chain_inspect(path, &c, err, sizeof err), want);
        assert_null(c);
        assert_true(test_contains(err, msg));
        assert_null(strchr(err, '\n'));
}

static struct image_chain *inspect(const char *path) {
        struct image_chain *c = NULL;
        char err[1024] = "";
        int r = image_chain_inspect(path, &c, err, sizeof err);

        if (r < 0)
                fail_msg("inspect %s: %d %s", path, r, err);
        return c;
}

/* ours (qcow2, 128M) -> template made by qemu-img (qcow2, 64M) -> raw. */
static void test_three_layers(void **state) {
        const char *dir = *state;
        char *raw = make_raw(dir, "base.raw", 64 * MiB);
        char *tmpl = test_path(dir, "tmpl.qcow2");
        char *ov = test_path(dir, "ov.qcow2");
        struct image_chain *c;
        char err[512] = "";

        qemu_img((const char *const[]){ "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw",
                                        tmpl, NULL });
        assert_int_equal(image_template_protect(tmpl), 0);
        assert_int_equal(image_template_protect(raw), 0);
        assert_int_equal(qcow2_overlay_create(ov, "tmpl.qcow2", "qcow2", 128 * MiB, err, sizeof err), 0);

        c = inspect(ov);
        assert_int_equal(c->n_layers, 3);
        assert_string_equal(c->layers[0].path, ov);
        assert_string_equal(c->layers[0].format, "qcow2");
        assert_int_equal(c->layers[0].virtual_size, 128 * MiB);
        assert_int_equal(c->layers[0].allocated_size, test_allocated(ov));
        assert_true(c->layers[0].writable);
        assert_string_equal(c->layers[0].backing_file, "tmpl.qcow2");
        assert_string_equal(c->layers[0].backing_format, "qcow2");

        assert_string_equal(c->layers[1].path, tmpl);
        assert_string_equal(c->layers[1].format, "qcow2");
        assert_int_equal(c->layers[1].virtual_size, 64 * MiB);
        assert_false(c->layers[1].writable);
        assert_string_equal(c->layers[1].backing_file, "base.raw");
        assert_string_equal(c->layers[1].backing_format, "raw");

        assert_string_equal(c->layers[2].path, raw);
        assert_string_equal(c->layers[2].format, "raw");
        assert_int_equal(c->layers[2].virtual_size, 64 * MiB);
        assert_false(c->layers[2].writable);
        assert_null(c->layers[2].backing_file);
        assert_null(c->layers[2].backing_format);
        assert_null(image_chain_free(c));
        assert_null(image_chain_free(NULL));

        /* The raw base alone: a one-layer chain. */
        c = inspect(raw);
        assert_int_equal(c->n_layers, 1);
        assert_string_equal(c->layers[0].format, "raw");
        image_chain_free(c);
        free(raw);
        free(tmpl);
        free(ov);
}

static void test_json(void **state) {
        const char *dir = *state;
        char *raw = make_raw(dir, "base.raw", 4 * MiB);
        char *ov = test_path(dir, "ov, 1.qcow2");
        struct image_chain *c;
        struct json_object *j = NULL;
        char err[512] = "", want[2048];

        assert_int_equal(qcow2_overlay_create(ov, "base.raw", "raw", 0, err, sizeof err), 0);
        assert_int_equal(image_template_protect(raw), 0);
        c = inspect(ov);
        assert_int_equal(image_chain_to_json(c, &j), 0);
        snprintf(want, sizeof want,
                 "[{\"path\":\"%s\",\"format\":\"qcow2\",\"virtual-size\":4194304,\"allocated-size\":%llu,"
                 "\"writable\":true,\"backing-file\":\"base.raw\",\"backing-format\":\"raw\"},"
                 "{\"path\":\"%s\",\"format\":\"raw\",\"virtual-size\":4194304,\"allocated-size\":0,"
                 "\"writable\":false}]",
                 ov, (unsigned long long)test_allocated(ov), raw);
        assert_string_equal(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
                            want);
        json_object_put(j);
        image_chain_free(c);
        free(raw);
        free(ov);
}

/* Each backing name is resolved against the directory of the image that
 * names it, not the top image's. */
static void test_nested_relative(void **state) {
        const char *dir = *state;
        char *a = test_path(dir, "a"), *b = test_path(dir, "b"), *cdir = test_path(dir, "c");
        char *raw, *mid, *top, *want;
        struct image_chain *c;

        assert_int_equal(mkdir(a, 0755), 0);
        assert_int_equal(mkdir(b, 0755), 0);
        assert_int_equal(mkdir(cdir, 0755), 0);
        raw = make_raw(cdir, "base.raw", MiB);
        mid = make_overlay(b, "mid.qcow2", "../c/base.raw", "raw", MiB);
        top = make_overlay(a, "top.qcow2", "../b/mid.qcow2", "qcow2", MiB);
        c = inspect(top);
        assert_int_equal(c->n_layers, 3);
        want = test_path(a, "../b/mid.qcow2");
        assert_string_equal(c->layers[1].path, want);
        free(want);
        want = test_path(a, "../b/../c/base.raw");
        assert_string_equal(c->layers[2].path, want);
        free(want);
        image_chain_free(c);
        free(raw);
        free(mid);
        free(top);
        free(a);
        free(b);
        free(cdir);
}

static void test_missing(void **state) {
        const char *dir = *state;
        char *raw = make_raw(dir, "base.raw", MiB);
        char *ov = make_overlay(dir, "ov.qcow2", "base.raw", "raw", MiB);
        char *missing = test_path(dir, "nope.qcow2");
        char msg[1024];

        expect_error(missing, -ENOENT, "nope.qcow2: No such file or directory");
        unlink(raw);
        snprintf(msg, sizeof msg, "%s: backing file %s does not exist", ov, raw);
        expect_error(ov, -ENOENT, msg);
        free(raw);
        free(ov);
        free(missing);
}

static void test_loops(void **state) {
        const char *dir = *state;
        char *self = make_overlay(dir, "self.qcow2", "self.qcow2", "qcow2", MiB);
        char *a = make_overlay(dir, "a.qcow2", "b.qcow2", "qcow2", MiB);
        char *b = make_overlay(dir, "b.qcow2", "./a.qcow2", "qcow2", MiB);
        char *link = test_path(dir, "link.qcow2");

        expect_error(self, -ELOOP, "self.qcow2: backing chain loop");
        expect_error(a, -ELOOP, "b.qcow2: backing chain loop");
        expect_error(a, -ELOOP, "./a.qcow2 is already in the chain");
        /* A symlink to a file in the chain is the same file. */
        unlink(b);
        free(b);
        b = make_overlay(dir, "b.qcow2", "link.qcow2", "qcow2", MiB);
        assert_int_equal(symlink("a.qcow2", link), 0);
        expect_error(a, -ELOOP, "backing chain loop");
        free(self);
        free(a);
        free(b);
        free(link);
}

static void test_depth(void **state) {
        const char *dir = *state;
        char name[64], prev[64];
        char *p, *raw = make_raw(dir, "l0.raw", MiB);
        struct image_chain *c;

        snprintf(prev, sizeof prev, "l0.raw");
        for (int i = 1; i < IMAGE_CHAIN_MAX_DEPTH; i++) {
                snprintf(name, sizeof name, "l%d.qcow2", i);
                free(make_overlay(dir, name, prev, i == 1 ? "raw" : "qcow2", MiB));
                snprintf(prev, sizeof prev, "%s", name);
        }
        /* 16 layers: the limit itself is fine. */
        p = test_path(dir, prev);
        c = inspect(p);
        assert_int_equal(c->n_layers, IMAGE_CHAIN_MAX_DEPTH);
        image_chain_free(c);
        free(p);
        /* 17 layers: refused. */
        p = make_overlay(dir, "top.qcow2", prev, "qcow2", MiB);
        expect_error(p, -ELOOP, "top.qcow2: backing chain is deeper than 16 images (at ");
        free(p);
        free(raw);
}

/* A raw backing file must not be taken for qcow2, whatever the guest
 * wrote into it, and the declared format must match the content. */
static void test_format_mismatch(void **state) {
        const char *dir = *state;
        char *evil = make_overlay(dir, "evil.raw", "/etc/shadow", "raw", MiB);
        char *ov = make_overlay(dir, "ov.qcow2", "evil.raw", "raw", MiB);
        char *raw = make_raw(dir, "plain.raw", MiB);
        char *ov2 = make_overlay(dir, "ov2.qcow2", "plain.raw", "qcow2", MiB);
        char *vmdk = test_path(dir, "disk.vmdk");
        char *ov3 = make_overlay(dir, "ov3.qcow2", "disk.vmdk", "qcow2", MiB);
        char msg[1024];

        snprintf(msg, sizeof msg, "%s: backing file %s is declared raw but has a qcow2 header; refusing", ov, evil);
        expect_error(ov, -EINVAL, msg);
        expect_error(ov2, -EINVAL, "plain.raw is declared qcow2 but is not a qcow2 image");
        qemu_img((const char *const[]){ "qemu-img", "create", "-q", "-f", "vmdk", vmdk, "1M", NULL });
        expect_error(ov3, -EINVAL, "disk.vmdk is declared qcow2 but is vmdk");
        expect_error(vmdk, -EINVAL, "disk.vmdk: is a vmdk image; only qcow2 and raw are supported");
        free(evil);
        free(ov);
        free(raw);
        free(ov2);
        free(vmdk);
        free(ov3);
}

static void test_backing_format_extension(void **state) {
        const char *dir = *state;
        char *raw = make_raw(dir, "base.raw", MiB);
        char *ov = make_overlay(dir, "ov.qcow2", "base.raw", "raw", MiB);
        uint8_t end[8] = { 0 };
        uint8_t vmdk_ext[16] = { 0 };

        /* Extension replaced by the end marker: the backing format would
         * have to be probed, which we refuse. */
        test_patch_file(ov, 112, end, sizeof end);
        expect_error(ov, -EINVAL, "ov.qcow2: backing file 'base.raw' has no explicit format");

        put32(vmdk_ext, QCOW2_EXT_BACKING_FORMAT);
        put32(vmdk_ext + 4, 4);
        memcpy(vmdk_ext + 8, "vmdk", 4);
        test_patch_file(ov, 112, vmdk_ext, sizeof vmdk_ext);
        expect_error(ov, -EINVAL, "base.raw has unsupported format 'vmdk' (only qcow2 and raw)");
        free(raw);
        free(ov);
}

static void test_not_images(void **state) {
        const char *dir = *state;
        char *sub = test_path(dir, "sub");
        char *ov = make_overlay(dir, "ov.qcow2", "sub", "raw", MiB);
        char *j = make_overlay(dir, "j.qcow2", "json:{\"driver\":\"raw\"}", "raw", MiB);

        assert_int_equal(mkdir(sub, 0755), 0);
        expect_error(sub, -EISDIR, "sub: not a disk image");
        expect_error("/dev/null", -EINVAL, "/dev/null: not a disk image");
        expect_error(ov, -EISDIR, "sub: not a disk image");
        expect_error(j, -EINVAL, "j.qcow2: json: backing file names are not supported");
        free(sub);
        free(ov);
        free(j);
}

/* A FIFO as a backing file (or as the image) is refused at once: opening
 * it must not wait for a writer (found by tools/fuzz, fuzz-qcow2). */
static void test_fifo(void **state) {
        const char *dir = *state;
        char *fifo = test_path(dir, "fifo");
        char *ov = make_overlay(dir, "ov.qcow2", "fifo", "raw", MiB);

        assert_int_equal(mkfifo(fifo, 0600), 0);
        alarm(10);      /* a regression hangs: fail instead */
        expect_error(fifo, -EINVAL, "fifo: not a disk image");
        expect_error(ov, -EINVAL, "fifo: not a disk image");
        alarm(0);
        free(fifo);
        free(ov);
}

static void patch_u8(const char *path, uint64_t off, uint8_t v) {
        test_patch_file(path, off, &v, 1);
}

static void test_header_policy(void **state) {
        const char *dir = *state;
        char *raw = make_raw(dir, "base.raw", MiB);
        char *ov = test_path(dir, "ov.qcow2");
        char *bad = test_path(dir, "bad.qcow2");
        char *ctl = make_overlay(dir, "ctl.qcow2", "a\nb", "raw", MiB);
        size_t len;
        uint8_t *good;

        free(make_overlay(dir, "ov.qcow2", "base.raw", "raw", MiB));
        good = test_read_file(ov, &len);
#define CASE(off, val, want, msg)                       \
        do {                                            \
                test_write_file(bad, good, len);        \
                patch_u8(bad, off, val);                \
                expect_error(bad, want, msg);           \
        } while (0)
        CASE(35, 1, -EOPNOTSUPP, "bad.qcow2: encrypted qcow2 images are not supported");
        CASE(79, 2, -EIO, "bad.qcow2: image is marked corrupt");
        CASE(79, 4, -EOPNOTSUPP, "with an external data file are not supported");
        CASE(79, 0x20, -EOPNOTSUPP, "unknown incompatible qcow2 features 0x20");
        CASE(78, 1, -EOPNOTSUPP, "unknown incompatible qcow2 features 0x100");
        CASE(7, 1, -EINVAL, "bad.qcow2: qcow version 1 is not supported");
        CASE(23, 30, -EINVAL, "invalid qcow2 cluster_bits 30");
        /* Offsets near 2^64 must not wrap around the end-of-file checks. */
        CASE(40, 0xff, -EIO, "bad.qcow2: truncated qcow2 image: L1 table ends past the end of the file");
        CASE(48, 0xff, -EIO, "bad.qcow2: truncated qcow2 image: refcount table ends past the end of the file");
        /* An L1 entry pointing at an unaligned L2 table. */
        CASE(0x30006, 0x02, -EIO, "bad.qcow2: corrupt qcow2 image: unaligned L2 table offset 512");
#undef CASE
        /* L1 entries sharing one L2 table, more of them than the file has
         * clusters: refused before the tables are read (a large L1 table
         * over one big L2 table would otherwise take hours). */
        {
                char *many = make_overlay(dir, "many.qcow2", "base.raw", "raw", 8 * GiB);
                uint8_t l1[16 * 8] = { 0 };
                for (size_t i = 0; i < 16; i++)
                        put32(l1 + 8 * i + 4, 0x10000);
                test_patch_file(many, 0x30000, l1, sizeof l1);
                expect_error(many, -EIO, "many.qcow2: corrupt qcow2 image: 16 L2 tables do not fit in a file of");
                free(many);
        }
        /* Control characters from a header never reach the message. */
        expect_error(ctl, -ENOENT, "backing file");
        {
                struct image_chain *c = NULL;
                char err[512];
                assert_int_equal(image_chain_inspect(ctl, &c, err, sizeof err), -ENOENT);
                assert_true(test_contains(err, "a?b does not exist"));
        }
        free(good);
        free(raw);
        free(ov);
        free(bad);
        free(ctl);
}

/* libqcow's own validation, for what our checks let through: a header
 * length of 120 is valid qcow2 (a multiple of 8, at least 104) that
 * libqcow refuses. */
static void test_libqcow_rejects(void **state) {
        const char *dir = *state;
        char *raw = make_raw(dir, "base.raw", MiB);
        char *ov = make_overlay(dir, "ov.qcow2", "base.raw", "raw", MiB);
        uint8_t area[40] = { 0 };

        /* Header up to 120, then the extension, end marker and name. */
        put32(area + 8, QCOW2_EXT_BACKING_FORMAT);
        put32(area + 12, 3);
        memcpy(area + 16, "raw", 3);
        memcpy(area + 32, "base.raw", 8);
        test_patch_file(ov, 112, area, sizeof area);
        patch_u8(ov, 103, 120);
        patch_u8(ov, 15, 144);
        expect_error(ov, -EINVAL, "ov.qcow2: invalid qcow2 image: libqcow_file_header_read_data: unsupported file header size: 120");
        free(raw);
        free(ov);
}

static void truncate_to(const char *path, uint64_t size) {
        assert_int_equal(truncate(path, (off_t)size), 0);
}

static void test_truncated(void **state) {
        const char *dir = *state;
        char *tmpl = test_path(dir, "tmpl.qcow2");
        char *ov = test_path(dir, "ov.qcow2");
        char *copy = test_path(dir, "copy.qcow2");
        char err[512] = "";
        uint8_t *b;
        size_t len;
        uint64_t l1_off, l2_off, data_off;

        qemu_img((const char *const[]){ "qemu-img", "create", "-q", "-f", "qcow2", tmpl, "64M", NULL });
        qemu_img((const char *const[]){ "qemu-io", "-c", "write -P 0xab 0 64k", tmpl, NULL });
        assert_int_equal(qcow2_overlay_create(ov, "tmpl.qcow2", "qcow2", 0, err, sizeof err), 0);
        image_chain_free(inspect(ov));

        b = test_read_file(tmpl, &len);
        l1_off = be64(b + 40);
        l2_off = be64(b + l1_off) & UINT64_C(0x00fffffffffffe00);
        data_off = be64(b + l2_off) & UINT64_C(0x00fffffffffffe00);
        assert_true(l2_off > 0 && data_off > 0);

        /* Data cluster cut off: reported for the template, via the overlay. */
        test_write_file(copy, b, len);
        truncate_to(tmpl, data_off);
        expect_error(ov, -EIO, "tmpl.qcow2: truncated qcow2 image: data cluster at");
        test_write_file(tmpl, b, len);
        assert_true(l2_off > l1_off && data_off > l2_off);
        truncate_to(tmpl, l2_off + 100);
        expect_error(tmpl, -EIO, "tmpl.qcow2: truncated qcow2 image: L2 table at");
        test_write_file(tmpl, b, len);
        truncate_to(tmpl, l1_off + 4);
        expect_error(tmpl, -EIO, "tmpl.qcow2: truncated qcow2 image: L1 table ends past the end of the file");
        truncate_to(tmpl, 0x18000);
        expect_error(tmpl, -EIO, "truncated qcow2 image: refcount table ends past the end of the file");
        truncate_to(tmpl, 100);
        expect_error(tmpl, -EIO, "tmpl.qcow2: truncated qcow2 image: qcow2 header truncated (100 bytes)");
        truncate_to(tmpl, 6);
        expect_error(tmpl, -EIO, "tmpl.qcow2: truncated qcow2 image: file too short");

        /* Our own overlay without its (sparse) L1 table. */
        truncate_to(ov, 0x30000);
        expect_error(ov, -EIO, "ov.qcow2: truncated qcow2 image: L1 table ends past the end of the file");
        free(b);
        free(tmpl);
        free(ov);
        free(copy);
}

static void test_template_protect(void **state) {
        const char *dir = *state;
        char *raw = make_raw(dir, "t.raw", MiB);
        char *link = test_path(dir, "link");
        char *missing = test_path(dir, "missing");
        struct stat st;

        assert_int_equal(image_template_protect(raw), 0);
        assert_int_equal(stat(raw, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0444);
        /* Idempotent. */
        assert_int_equal(image_template_protect(raw), 0);
        assert_int_equal(image_template_protect(missing), -ENOENT);
        assert_int_equal(image_template_protect(dir), -EINVAL);
        assert_int_equal(symlink("t.raw", link), 0);
        assert_int_equal(image_template_protect(link), -ELOOP);
        assert_int_equal(image_template_protect("/dev/null"), -EINVAL);
        /* A hard link: its other name would change too. */
        char *hard = test_path(dir, "hard");
        assert_int_equal(chmod(raw, 0600), 0);
        assert_int_equal(linkat(AT_FDCWD, raw, AT_FDCWD, hard, 0), 0);
        assert_int_equal(image_template_protect(hard), -EMLINK);
        assert_int_equal(stat(raw, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        free(hard);
        free(raw);
        free(link);
        free(missing);
}

static void test_check_within(void **state) {
        const char *dir = *state;
        char *vm = test_path(dir, "vm"), *images = test_path(dir, "images"), *other = test_path(dir, "other");
        assert_int_equal(mkdir(vm, 0755), 0);
        assert_int_equal(mkdir(images, 0755), 0);
        assert_int_equal(mkdir(other, 0755), 0);
        char *base = make_raw(images, "t.raw", MiB), *secret = make_raw(other, "secret", MiB);
        char *good = make_overlay(vm, "good.ovl", "../images/t.raw", "raw", MiB);
        char *bad = make_overlay(vm, "bad.ovl", secret, "raw", MiB);
        const char *const within[] = { vm, images, NULL };
        struct image_chain *c = inspect(good);
        char err[1024] = "";
        assert_int_equal(image_chain_check_within(c, within, err, sizeof err), 0);
        image_chain_free(c);
        c = inspect(bad);
        assert_int_equal(image_chain_check_within(c, within, err, sizeof err), -EPERM);
        assert_true(test_contains(err, "is outside the VM's directory and images/: not read"));
        assert_true(test_contains(err, "/other/secret"));
        image_chain_free(c);
        /* The top layer itself outside: refused too. */
        const char *const only_images[] = { images, NULL };
        c = inspect(good);
        assert_int_equal(image_chain_check_within(c, only_images, err, sizeof err), -EPERM);
        image_chain_free(c);
        free(good);
        free(bad);
        free(base);
        free(secret);
        free(vm);
        free(images);
        free(other);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_three_layers, setup, teardown),
                cmocka_unit_test_setup_teardown(test_json, setup, teardown),
                cmocka_unit_test_setup_teardown(test_nested_relative, setup, teardown),
                cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
                cmocka_unit_test_setup_teardown(test_loops, setup, teardown),
                cmocka_unit_test_setup_teardown(test_depth, setup, teardown),
                cmocka_unit_test_setup_teardown(test_format_mismatch, setup, teardown),
                cmocka_unit_test_setup_teardown(test_backing_format_extension, setup, teardown),
                cmocka_unit_test_setup_teardown(test_not_images, setup, teardown),
                cmocka_unit_test_setup_teardown(test_fifo, setup, teardown),
                cmocka_unit_test_setup_teardown(test_header_policy, setup, teardown),
                cmocka_unit_test_setup_teardown(test_libqcow_rejects, setup, teardown),
                cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
                cmocka_unit_test_setup_teardown(test_template_protect, setup, teardown),
                cmocka_unit_test_setup_teardown(test_check_within, setup, teardown),
        };

        umask(022);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
