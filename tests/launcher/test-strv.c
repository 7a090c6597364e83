/* Unit tests of strv.c: building vectors and listing directories. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "launcher/core/strv.h"

static char dir[64];

static void touch(const char *name) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        close(fd);
}

static void make_dir(const char *name) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        assert_int_equal(mkdir(path, 0755), 0);
}

static int setup(void **state) {
        (void)state;
        snprintf(dir, sizeof dir, "/tmp/vrt-test-strv.XXXXXX");
        if (!mkdtemp(dir))
                return -1;
        touch("web.qcow2");
        touch("db.qcow2");
        touch(".staging.qcow2");
        touch("db.properties");
        touch(".qcow2");
        make_dir("zeta");
        make_dir("alpha");
        make_dir(".hidden");
        return 0;
}

static int teardown(void **state) {
        (void)state;
        static const char *const files[] = { "web.qcow2", "db.qcow2", ".staging.qcow2", "db.properties", ".qcow2" };
        static const char *const dirs[] = { "zeta", "alpha", ".hidden" };
        char path[128];
        for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
                snprintf(path, sizeof path, "%s/%s", dir, files[i]);
                unlink(path);
        }
        for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
                snprintf(path, sizeof path, "%s/%s", dir, dirs[i]);
                rmdir(path);
        }
        return rmdir(dir);
}

static void assert_items(const struct strv *v, const char *const *want, size_t n) {
        assert_int_equal(v->error, 0);
        assert_int_equal(v->n, n);
        for (size_t i = 0; i < n; i++)
                assert_string_equal(v->items[i], want[i]);
        assert_null(v->items ? v->items[n] : NULL);
}

static void test_add_and_format(void **state) {
        (void)state;
        struct strv v = { 0 };
        strv_add(&v, "-m");
        strv_addf(&v, "%uM", 64u);
        static const char *const want[] = { "-m", "64M" };
        assert_items(&v, want, 2);
        strv_done(&v);
        assert_null(v.items);
        assert_int_equal(v.n, 0);
}

static void test_take_null_is_sticky_enomem(void **state) {
        (void)state;
        struct strv v = { 0 };
        strv_take(&v, NULL);
        strv_add(&v, "after");
        assert_int_equal(v.error, -ENOMEM);
        assert_int_equal(v.n, 0);
        strv_done(&v);
}

static void test_dir_suffix_sorted_hidden_left_out(void **state) {
        (void)state;
        struct strv v = { 0 };
        assert_int_equal(strv_add_dir(&v, dir, ".qcow2", false), 0);
        static const char *const want[] = { "db", "web" };
        assert_items(&v, want, 2);
        strv_done(&v);
}

static void test_dir_all_entries(void **state) {
        (void)state;
        struct strv v = { 0 };
        assert_int_equal(strv_add_dir(&v, dir, NULL, false), 0);
        static const char *const want[] = { "alpha", "db.properties", "db.qcow2", "web.qcow2", "zeta" };
        assert_items(&v, want, 5);
        strv_done(&v);
}

static void test_dir_dirs_only_appends_sorted(void **state) {
        (void)state;
        struct strv v = { 0 };
        strv_add(&v, "zzz-first");      /* what was there stays first */
        assert_int_equal(strv_add_dir(&v, dir, NULL, true), 0);
        static const char *const want[] = { "zzz-first", "alpha", "zeta" };
        assert_items(&v, want, 3);
        strv_done(&v);
}

static void test_dir_empty_adds_nothing(void **state) {
        (void)state;
        struct strv v = { 0 };
        char empty[128];
        snprintf(empty, sizeof empty, "%s/alpha", dir);
        assert_int_equal(strv_add_dir(&v, empty, NULL, false), 0);
        assert_int_equal(v.n, 0);
        assert_null(v.items);
        strv_done(&v);
}

static void test_dir_missing_adds_nothing(void **state) {
        (void)state;
        struct strv v = { 0 };
        char missing[128];
        snprintf(missing, sizeof missing, "%s/no-such-dir", dir);
        assert_int_equal(strv_add_dir(&v, missing, NULL, false), 0);
        assert_int_equal(v.n, 0);
        strv_done(&v);
}

static void test_dir_not_a_directory_fails(void **state) {
        (void)state;
        struct strv v = { 0 };
        char file[128];
        snprintf(file, sizeof file, "%s/db.qcow2", dir);
        assert_int_equal(strv_add_dir(&v, file, NULL, false), -ENOTDIR);
        assert_int_equal(v.n, 0);
        strv_done(&v);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_add_and_format),
                cmocka_unit_test(test_take_null_is_sticky_enomem),
                cmocka_unit_test(test_dir_suffix_sorted_hidden_left_out),
                cmocka_unit_test(test_dir_all_entries),
                cmocka_unit_test(test_dir_dirs_only_appends_sorted),
                cmocka_unit_test(test_dir_empty_adds_nothing),
                cmocka_unit_test(test_dir_missing_adds_nothing),
                cmocka_unit_test(test_dir_not_a_directory_fails),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
