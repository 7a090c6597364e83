/* Unit tests of the small shared helpers: util.h (suffixes, enum tables,
 * sizes) and fileio.c (directory fsync, rename without replacing). */
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

#include "launcher/core/fileio.h"
#include "launcher/core/util.h"

static void test_has_suffix(void **state) {
        (void)state;
        assert_true(has_suffix("web.properties", ".properties"));
        assert_false(has_suffix(".properties", ".properties"));     /* nothing before it */
        assert_false(has_suffix("web.propertie", ".properties"));
        assert_false(has_suffix("x", ".sh"));
}

static void test_table_lookup(void **state) {
        (void)state;
        static const char *const t[4] = { "a", NULL, "c", "dd" };
        assert_int_equal(table_lookup(t, 4, "a"), 0);
        assert_int_equal(table_lookup(t, 4, "c"), 2);
        assert_int_equal(table_lookup(t, 4, "dd"), 3);
        assert_int_equal(table_lookup(t, 4, "d"), -1);
        assert_int_equal(table_lookup(t, 4, ""), -1);
        assert_int_equal(table_lookup(t, 4, NULL), -1);
        assert_int_equal(table_lookup(t, 2, "c"), -1);   /* only the first n count */
}

static void expect_size(uint64_t v, enum format_size_style style, const char *want) {
        char buf[32];
        format_size(v, style, buf, sizeof buf);
        assert_string_equal(buf, want);
}

static void test_format_size(void **state) {
        (void)state;
        expect_size(1000, FORMAT_SIZE_EXACT, "1000 bytes");
        expect_size(1024, FORMAT_SIZE_EXACT, "1K");
        expect_size(UINT64_C(1536) << 20, FORMAT_SIZE_EXACT, "1536M");
        expect_size(UINT64_C(10) << 30, FORMAT_SIZE_EXACT, "10G");
        expect_size((UINT64_C(10) << 30) + 1, FORMAT_SIZE_EXACT, "10737418241 bytes");
        expect_size(UINT64_C(2) << 50, FORMAT_SIZE_EXACT, "2048T");
        expect_size(512, FORMAT_SIZE_HUMAN, "512B");
        expect_size(1536, FORMAT_SIZE_HUMAN, "1.5K");
        expect_size(UINT64_C(1536) << 20, FORMAT_SIZE_HUMAN, "1.5G");
        expect_size(UINT64_C(20) << 30, FORMAT_SIZE_HUMAN, "20G");
        expect_size(UINT64_C(2) << 50, FORMAT_SIZE_HUMAN, "2P");
}

static void write_file(const char *path, const char *text) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
}

static void test_rename_noreplace(void **state) {
        (void)state;
        char dir[] = "/tmp/vrt-test-util.XXXXXX", a[64], b[64], d[64], buf[8] = "";
        assert_non_null(mkdtemp(dir));
        snprintf(a, sizeof a, "%s/a", dir);
        snprintf(b, sizeof b, "%s/b", dir);
        snprintf(d, sizeof d, "%s/d", dir);
        write_file(a, "A");
        write_file(b, "B");
        assert_int_equal(fileio_rename_noreplace(AT_FDCWD, a, b), -EEXIST);
        int fd = open(b, O_RDONLY | O_CLOEXEC);
        assert_int_equal(read(fd, buf, sizeof buf - 1), 1);
        close(fd);
        assert_string_equal(buf, "B");          /* the target is untouched */
        assert_int_equal(unlink(b), 0);
        assert_int_equal(fileio_rename_noreplace(AT_FDCWD, a, b), 0);
        assert_int_equal(access(a, F_OK), -1);
        assert_int_equal(mkdir(d, 0755), 0);
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_int_equal(fileio_rename_noreplace(dfd, "d", "b"), -EEXIST);
        assert_int_equal(fileio_rename_noreplace(dfd, "d", "e"), 0);
        assert_int_equal(fileio_rename_noreplace(dfd, "missing", "f"), -ENOENT);
        close(dfd);
        assert_int_equal(fileio_fsync_dir(dir), 0);
        assert_int_equal(fileio_fsync_dir(b), -ENOTDIR);
        snprintf(d, sizeof d, "%s/e", dir);
        assert_int_equal(rmdir(d), 0);
        assert_int_equal(unlink(b), 0);
        assert_int_equal(rmdir(dir), 0);
        assert_int_equal(fileio_fsync_dir(dir), -ENOENT);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_has_suffix),
                cmocka_unit_test(test_table_lookup),
                cmocka_unit_test(test_format_size),
                cmocka_unit_test(test_rename_noreplace),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
