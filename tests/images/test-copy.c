/* Unit tests for images/copy.c: holes stay holes, data is identical,
 * progress is reported, and failures or cancels leave nothing behind. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers.h"
#include "images/copy.h"

#define MiB (UINT64_C(1) << 20)
#define TMPFS_MAGIC 0x01021994

static int setup(void **state) {
        *state = test_tmpdir();
        return 0;
}

static int teardown(void **state) {
        test_rmtree(*state);
        free(*state);
        return 0;
}

static void fill(const char *path, uint64_t off, size_t len, uint8_t seed) {
        uint8_t *b = malloc(len);

        for (size_t i = 0; i < len; i++)
                b[i] = (uint8_t)(seed + i * 7 + (i >> 9));
        test_patch_file(path, off, b, len);
        free(b);
}

/* 64 MiB + 1000 bytes: data at the start, in the middle (1 MiB), an
 * isolated 8 KiB, an all-zero but allocated block, and the tail. */
static char *make_sparse(const char *dir, const char *name) {
        char *p = test_path(dir, name);
        uint64_t size = 64 * MiB + 1000;
        uint8_t zero[4096] = { 0 };
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, (off_t)size), 0);
        close(fd);
        fill(p, 0, 4096, 1);
        fill(p, 10 * MiB, MiB, 2);
        fill(p, 40 * MiB + 4096, 8192, 3);
        test_patch_file(p, 50 * MiB, zero, sizeof zero);
        fill(p, size - 3000, 3000, 4);
        return p;
}

struct progress_log {
        uint64_t calls;
        uint64_t first;
        uint64_t last;
        uint64_t total;
        bool monotonic;
        uint64_t cancel_at_call;        /* 0: never */
        int cancel_with;
};

static int on_progress(uint64_t done, uint64_t total, void *userdata) {
        struct progress_log *l = userdata;

        if (l->calls == 0)
                l->first = done;
        else if (done < l->last)
                l->monotonic = false;
        l->calls++;
        l->last = done;
        l->total = total;
        if (l->cancel_at_call && l->calls == l->cancel_at_call)
                return l->cancel_with;
        return 0;
}

static void test_copy_sparse(void **state) {
        const char *dir = *state;
        char *src = make_sparse(dir, "src.img");
        char *dst = test_path(dir, "dst.img");
        struct progress_log log = { .monotonic = true };
        char err[512] = "";
        char *sa, *sb;
        struct stat a, b;

        assert_int_equal(image_copy_sparse(src, dst, on_progress, &log, err, sizeof err), 0);
        assert_true(test_files_equal(src, dst));
        assert_int_equal(stat(src, &a), 0);
        assert_int_equal(stat(dst, &b), 0);
        assert_int_equal(a.st_size, b.st_size);
        /* Holes stay holes: the same data extents, and as many blocks as
         * the source give or take one extent tree block of the file
         * system. */
        sa = test_data_map(src);
        sb = test_data_map(dst);
        assert_string_equal(sa, sb);
        assert_true((uint64_t)b.st_blocks * 512 <= (uint64_t)a.st_blocks * 512 + 8192);
        assert_true((uint64_t)b.st_blocks * 512 < 2 * MiB);
        assert_int_equal(b.st_mode & 0777, 0644);
        assert_true(log.calls >= 2);
        assert_int_equal(log.first, 0);
        assert_int_equal(log.last, (uint64_t)a.st_size);
        assert_int_equal(log.total, (uint64_t)a.st_size);
        assert_true(log.monotonic);
        assert_int_equal(test_count_entries(dir), 2);
        free(sa);
        free(sb);
        free(src);
        free(dst);
}

static void test_copy_special_sizes(void **state) {
        const char *dir = *state;
        char *empty = test_path(dir, "empty");
        char *hole = test_path(dir, "hole");
        char *dense = test_path(dir, "dense");
        char *out = test_path(dir, "out");
        char err[512] = "";
        struct stat st;
        int fd;

        test_write_file(empty, "", 0);
        assert_int_equal(image_copy_sparse(empty, out, NULL, NULL, err, sizeof err), 0);
        assert_int_equal(stat(out, &st), 0);
        assert_int_equal(st.st_size, 0);
        unlink(out);

        fd = open(hole, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_int_equal(ftruncate(fd, (off_t)(32 * MiB)), 0);
        close(fd);
        assert_int_equal(image_copy_sparse(hole, out, NULL, NULL, err, sizeof err), 0);
        assert_int_equal(stat(out, &st), 0);
        assert_int_equal(st.st_size, 32 * MiB);
        assert_int_equal(st.st_blocks, 0);
        unlink(out);

        /* More than one progress chunk of dense data. */
        test_write_file(dense, "", 0);
        fill(dense, 0, 70 * MiB, 9);
        assert_int_equal(image_copy_sparse(dense, out, NULL, NULL, err, sizeof err), 0);
        assert_true(test_files_equal(dense, out));
        free(empty);
        free(hole);
        free(dense);
        free(out);
}

/* A copy of a protected (0444) template is an ordinary writable disk. */
static void test_copy_of_protected(void **state) {
        const char *dir = *state;
        char *src = make_sparse(dir, "tmpl.img");
        char *dst = test_path(dir, "vm.img");
        char err[512] = "";
        struct stat st;

        assert_int_equal(chmod(src, 0444), 0);
        assert_int_equal(image_copy_sparse(src, dst, NULL, NULL, err, sizeof err), 0);
        assert_int_equal(stat(dst, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0644);
        free(src);
        free(dst);
}

static void test_copy_errors(void **state) {
        const char *dir = *state;
        char *src = make_sparse(dir, "src.img");
        char *dst = test_path(dir, "dst.img");
        char *missing = test_path(dir, "missing.img");
        char *nodir = test_path(dir, "nodir/dst.img");
        char err[512] = "";
        size_t len;
        uint8_t *content;

        assert_int_equal(image_copy_sparse(missing, dst, NULL, NULL, err, sizeof err), -ENOENT);
        assert_true(test_contains(err, "missing.img: No such file or directory"));
        assert_int_equal(image_copy_sparse(dir, dst, NULL, NULL, err, sizeof err), -EISDIR);
        assert_true(test_contains(err, "not a regular file"));
        assert_int_equal(image_copy_sparse("/dev/null", dst, NULL, NULL, err, sizeof err), -EINVAL);
        assert_int_equal(image_copy_sparse(src, nodir, NULL, NULL, err, sizeof err), -ENOENT);
        assert_true(test_contains(err, "cannot open directory"));
        assert_int_equal(test_count_entries(dir), 1);

        /* An existing target is never replaced. */
        test_write_file(dst, "keep", 4);
        assert_int_equal(image_copy_sparse(src, dst, NULL, NULL, err, sizeof err), -EEXIST);
        assert_true(test_contains(err, "dst.img: already exists"));
        content = test_read_file(dst, &len);
        assert_int_equal(len, 4);
        free(content);
        assert_int_equal(test_count_entries(dir), 2);
        free(src);
        free(dst);
        free(missing);
        free(nodir);
}

static void test_copy_cancel(void **state) {
        const char *dir = *state;
        char *src = make_sparse(dir, "src.img");
        char *dst = test_path(dir, "dst.img");
        char err[512] = "";
        struct progress_log log = { .monotonic = true, .cancel_at_call = 1, .cancel_with = 1 };

        /* Cancelled before any data, in the middle, and at the very end. */
        assert_int_equal(image_copy_sparse(src, dst, on_progress, &log, err, sizeof err), -ECANCELED);
        assert_true(test_contains(err, "dst.img: copy cancelled"));
        assert_int_equal(test_count_entries(dir), 1);
        log = (struct progress_log){ .monotonic = true, .cancel_at_call = 2, .cancel_with = -EINTR };
        assert_int_equal(image_copy_sparse(src, dst, on_progress, &log, err, sizeof err), -EINTR);
        assert_int_equal(test_count_entries(dir), 1);
        log = (struct progress_log){ .monotonic = true };
        assert_int_equal(image_copy_sparse(src, dst, on_progress, &log, err, sizeof err), 0);
        unlink(dst);
        log.cancel_at_call = log.calls;
        log.cancel_with = 1;
        log.calls = 0;
        assert_int_equal(image_copy_sparse(src, dst, on_progress, &log, err, sizeof err), -ECANCELED);
        assert_int_equal(test_count_entries(dir), 1);
        free(src);
        free(dst);
}

static int copy_with_fsize_limit(const char *src, const char *dst) {
        struct rlimit rl = { 8 * MiB, 8 * MiB };
        char err[512] = "";
        int r;

        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
                return 77;
        r = image_copy_sparse(src, dst, NULL, NULL, err, sizeof err);
        if (r != -EFBIG || !strstr(err, "dst.img: copying from") || !strstr(err, "File too large")) {
                fprintf(stderr, "r=%d err=%s\n", r, err);
                return 1;
        }
        return 0;
}

/* A write fails half way (file size limit): the temporary file goes. */
static void test_copy_write_failure(void **state) {
        const char *dir = *state;
        char *src = make_sparse(dir, "src.img");
        char *dst = test_path(dir, "dst.img");
        int status;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0)
                _exit(copy_with_fsize_limit(src, dst));
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) == 77)
                skip();
        assert_int_equal(WEXITSTATUS(status), 0);
        assert_int_equal(test_count_entries(dir), 1);
        free(src);
        free(dst);
}

/* Across file systems copy_file_range gives EXDEV and the read/write path
 * runs; it must keep holes too. Needs a tmpfs at /dev/shm. */
static void test_copy_cross_fs(void **state) {
        const char *dir = *state;
        struct statfs a, b;
        char shm_tmpl[] = "/dev/shm/vrt-images-test.XXXXXX";
        char *shm, *src, *dst, *back;
        char err[512] = "";
        struct stat s1, s2;

        if (statfs("/dev/shm", &a) < 0 || a.f_type != TMPFS_MAGIC || statfs(dir, &b) < 0 ||
            b.f_type == TMPFS_MAGIC)
                skip();
        shm = mkdtemp(shm_tmpl);
        assert_non_null(shm);
        src = make_sparse(shm, "src.img");
        dst = test_path(dir, "dst.img");
        back = test_path(shm, "back.img");
        assert_int_equal(image_copy_sparse(src, dst, NULL, NULL, err, sizeof err), 0);
        assert_true(test_files_equal(src, dst));
        assert_int_equal(stat(dst, &s2), 0);
        assert_true((uint64_t)s2.st_blocks * 512 < 4 * MiB);
        assert_int_equal(image_copy_sparse(dst, back, NULL, NULL, err, sizeof err), 0);
        assert_true(test_files_equal(src, back));
        assert_int_equal(stat(back, &s1), 0);
        assert_true((uint64_t)s1.st_blocks * 512 < 4 * MiB);
        test_rmtree(shm);
        free(src);
        free(dst);
        free(back);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_copy_sparse, setup, teardown),
                cmocka_unit_test_setup_teardown(test_copy_special_sizes, setup, teardown),
                cmocka_unit_test_setup_teardown(test_copy_of_protected, setup, teardown),
                cmocka_unit_test_setup_teardown(test_copy_errors, setup, teardown),
                cmocka_unit_test_setup_teardown(test_copy_cancel, setup, teardown),
                cmocka_unit_test_setup_teardown(test_copy_write_failure, setup, teardown),
                cmocka_unit_test_setup_teardown(test_copy_cross_fs, setup, teardown),
        };

        umask(022);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
