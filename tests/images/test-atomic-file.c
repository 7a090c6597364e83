/* Unit tests for images/atomic_file.c: the crash-safe create used by the
 * overlay writer and the sparse copy. */
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

#include "helpers.h"
#include "images/atomic_file.h"

typedef int (*opener_fn)(const char *path, mode_t mode, struct atomic_file **ret, char *err, size_t errlen);

/* Tests run twice: with the default open (unnamed O_TMPFILE where the file
 * system has it) and with the named fallback. */
static opener_fn opener = atomic_file_open;

static int setup(void **state) {
        opener = atomic_file_open;
        *state = test_tmpdir();
        return 0;
}

static int setup_named(void **state) {
        setup(state);
        opener = atomic_file_open_named;
        return 0;
}

static int teardown(void **state) {
        test_rmtree(*state);
        free(*state);
        return 0;
}

static void test_commit(void **state) {
        const char *dir = *state;
        char *p = test_path(dir, "file");
        struct atomic_file *af = NULL;
        char err[256] = "";
        struct stat st;

        assert_int_equal(opener(p, 0640, &af, err, sizeof err), 0);
        /* Only the temporary file exists until the commit: unnamed, or a
         * hidden name. */
        assert_int_equal(access(p, F_OK), -1);
        if (opener == atomic_file_open_named)
                assert_non_null(af->tmp_name);
        if (af->tmp_name) {
                assert_int_equal(test_count_entries(dir), 1);
                assert_int_equal(af->tmp_name[0], '.');
        } else {
                assert_int_equal(test_count_entries(dir), 0);
        }
        assert_int_equal(write(af->fd, "hello", 5), 5);
        assert_int_equal(atomic_file_commit(af, err, sizeof err), 0);
        assert_null(atomic_file_free(af));
        assert_int_equal(test_count_entries(dir), 1);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_size, 5);
        assert_int_equal(st.st_mode & 0777, 0640);
        free(p);
}

static void test_abort_removes_temp(void **state) {
        const char *dir = *state;
        char *p = test_path(dir, "file");
        struct atomic_file *af = NULL;
        char err[256] = "";

        assert_int_equal(opener(p, 0644, &af, err, sizeof err), 0);
        assert_int_equal(write(af->fd, "x", 1), 1);
        assert_null(atomic_file_free(af));
        assert_int_equal(test_count_entries(dir), 0);
        assert_null(atomic_file_free(NULL));
        free(p);
}

static void test_exists_at_open(void **state) {
        const char *dir = *state;
        char *p = test_path(dir, "file");
        struct atomic_file *af = NULL;
        char err[256] = "";

        test_write_file(p, "old", 3);
        assert_int_equal(opener(p, 0644, &af, err, sizeof err), -EEXIST);
        assert_null(af);
        assert_true(test_contains(err, "/file: already exists"));
        /* A dangling symlink counts as existing too. */
        unlink(p);
        assert_int_equal(symlink("nowhere", p), 0);
        assert_int_equal(opener(p, 0644, &af, err, sizeof err), -EEXIST);
        assert_int_equal(test_count_entries(dir), 1);
        free(p);
}

/* Someone else creates the target between open and commit: the commit
 * must not replace it, and the temporary file must go. */
static void test_exists_at_commit(void **state) {
        const char *dir = *state;
        char *p = test_path(dir, "file");
        struct atomic_file *af = NULL;
        char err[256] = "";
        size_t len;
        uint8_t *content;

        assert_int_equal(opener(p, 0644, &af, err, sizeof err), 0);
        assert_int_equal(write(af->fd, "new", 3), 3);
        test_write_file(p, "theirs", 6);
        assert_int_equal(atomic_file_commit(af, err, sizeof err), -EEXIST);
        assert_true(test_contains(err, "/file: already exists"));
        atomic_file_free(af);
        assert_int_equal(test_count_entries(dir), 1);
        content = test_read_file(p, &len);
        assert_int_equal(len, 6);
        assert_memory_equal(content, "theirs", 6);
        free(content);
        free(p);
}

static void test_bad_paths(void **state) {
        const char *dir = *state;
        struct atomic_file *af = NULL;
        char err[256] = "";
        char *p;

        assert_int_equal(opener("", 0644, &af, err, sizeof err), -EINVAL);
        assert_true(test_contains(err, "empty file name"));
        assert_int_equal(opener(NULL, 0644, &af, err, sizeof err), -EINVAL);

        p = test_path(dir, "");
        assert_int_equal(opener(p, 0644, &af, err, sizeof err), -EISDIR);
        assert_true(test_contains(err, "names a directory"));
        free(p);
        p = test_path(dir, "..");
        assert_int_equal(opener(p, 0644, &af, err, sizeof err), -EISDIR);
        free(p);

        p = test_path(dir, "missing/file");
        assert_int_equal(opener(p, 0644, &af, err, sizeof err), -ENOENT);
        assert_true(test_contains(err, "cannot open directory"));
        free(p);

        p = test_path(dir, "plain");
        test_write_file(p, "", 0);
        free(p);
        p = test_path(dir, "plain/file");
        assert_int_equal(opener(p, 0644, &af, err, sizeof err), -ENOTDIR);
        free(p);
        assert_null(af);
        assert_int_equal(test_count_entries(dir), 1);
}

/* A 255-byte name is valid; its temporary name must be too. */
static void test_long_name(void **state) {
        const char *dir = *state;
        char name[256];
        char *p;
        struct atomic_file *af = NULL;
        char err[256] = "";

        memset(name, 'a', 255);
        name[255] = '\0';
        p = test_path(dir, name);
        assert_int_equal(opener(p, 0644, &af, err, sizeof err), 0);
        assert_true(!af->tmp_name || strlen(af->tmp_name) <= 255);
        assert_int_equal(atomic_file_commit(af, err, sizeof err), 0);
        atomic_file_free(af);
        assert_int_equal(access(p, F_OK), 0);
        free(p);
}

/* No directory part: the working directory. */
static void test_relative_name(void **state) {
        const char *dir = *state;
        struct atomic_file *af = NULL;
        char err[256] = "";
        char cwd[4096];

        assert_non_null(getcwd(cwd, sizeof cwd));
        assert_int_equal(chdir(dir), 0);
        assert_int_equal(opener("rel", 0644, &af, err, sizeof err), 0);
        assert_int_equal(atomic_file_commit(af, err, sizeof err), 0);
        atomic_file_free(af);
        assert_int_equal(access("rel", F_OK), 0);
        assert_int_equal(chdir(cwd), 0);
}

#define BOTH(t) cmocka_unit_test_setup_teardown(t, setup, teardown), \
                cmocka_unit_test_setup_teardown(t, setup_named, teardown)

int main(void) {
        const struct CMUnitTest tests[] = {
                BOTH(test_commit),
                BOTH(test_abort_removes_temp),
                BOTH(test_exists_at_open),
                BOTH(test_exists_at_commit),
                BOTH(test_bad_paths),
                BOTH(test_long_name),
                BOTH(test_relative_name),
        };

        umask(022);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
