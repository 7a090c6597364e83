/* Unit tests of safepath.c: opens that never follow a symbolic link below
 * a directory fd (with openat2 and with the O_NOFOLLOW walk), hard links
 * refused before anything is written or truncated, the hand-over of a file
 * through its fd, and the rules for files in shared directories. */
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

#include "launcher/core/safepath.h"

static char dir[64];

static void pathof(char *buf, size_t len, const char *name) {
        snprintf(buf, len, "%s/%s", dir, name);
}

static void write_file(const char *name, const char *text, mode_t mode) {
        char p[256];
        pathof(p, sizeof p, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
        assert_int_equal(chmod(p, mode), 0);
}

static char *read_file(const char *name) {
        static char buf[256];
        char p[256];
        pathof(p, sizeof p, name);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        buf[n < 0 ? 0 : n] = '\0';
        return buf;
}

static int setup(void **state) {
        (void)state;
        char p[256], q[256];
        snprintf(dir, sizeof dir, "/tmp/vrt-safepath.XXXXXX");
        assert_non_null(mkdtemp(dir));
        write_file("canary", "secret\n", 0600);
        write_file("own", "mine\n", 0644);
        pathof(p, sizeof p, "sub");
        assert_int_equal(mkdir(p, 0755), 0);
        pathof(p, sizeof p, "canary");
        pathof(q, sizeof q, "sym");
        assert_int_equal(symlink(p, q), 0);
        pathof(q, sizeof q, "hard");
        assert_int_equal(link(p, q), 0);
        pathof(q, sizeof q, "symdir");
        pathof(p, sizeof p, "sub");
        assert_int_equal(symlink(p, q), 0);
        pathof(q, sizeof q, "fifo");
        assert_int_equal(mkfifo(q, 0644), 0);
        return 0;
}

static int teardown(void **state) {
        (void)state;
        const char *names[] = { "canary", "own", "sym", "hard", "symdir", "fifo", "sub/new", "sub/x", "new", "sub", NULL };
        char p[256];
        for (size_t i = 0; names[i]; i++) {
                pathof(p, sizeof p, names[i]);
                if (unlink(p) < 0)
                        rmdir(p);
        }
        rmdir(dir);
        return 0;
}

static void check_openat(void) {
        char err[512];
        int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        assert_true(dfd >= 0);

        /* An honest file, and a new one beneath a real subdirectory. */
        int fd = safepath_openat(dfd, "own", NULL, O_RDONLY, 0, SAFEPATH_ONE_LINK, err, sizeof err);
        assert_true(fd >= 0);
        assert_false(fcntl(fd, F_GETFL) & O_NONBLOCK);  /* a regular file is given back blocking */
        close(fd);
        fd = safepath_openat(dfd, "sub/new", NULL, O_WRONLY | O_CREAT | O_EXCL, 0640, SAFEPATH_ONE_LINK, err, sizeof err);
        assert_true(fd >= 0);
        close(fd);
        fd = safepath_openat(dfd, "sub", NULL, O_RDONLY | O_DIRECTORY, 0, SAFEPATH_DIR, err, sizeof err);
        assert_true(fd >= 0);
        close(fd);

        /* A symbolic link: last component, and in the middle. */
        assert_int_equal(safepath_openat(dfd, "sym", "X/sym", O_RDONLY, 0, 0, err, sizeof err), -ELOOP);
        assert_string_equal(err, "X/sym: a symbolic link (not followed)");
        assert_int_equal(safepath_openat(dfd, "sym", NULL, O_WRONLY | O_APPEND | O_CREAT, 0644, 0, err, sizeof err),
                         -ELOOP);
        assert_int_equal(safepath_openat(dfd, "symdir/x", NULL, O_WRONLY | O_CREAT, 0644, 0, err, sizeof err), -ELOOP);
        char p[256];
        pathof(p, sizeof p, "sub/x");
        assert_int_equal(access(p, F_OK), -1);          /* nothing created through symdir */

        /* A hard link: refused before O_TRUNC or a write could reach it. */
        assert_int_equal(safepath_openat(dfd, "hard", "hard", O_WRONLY | O_TRUNC, 0, SAFEPATH_ONE_LINK, err, sizeof err),
                         -EMLINK);
        assert_string_equal(err, "hard: a hard link (2 names): not touched");
        assert_string_equal(read_file("canary"), "secret\n");
        /* Without the check a hard link is a file like any other. */
        fd = safepath_openat(dfd, "hard", NULL, O_RDONLY, 0, 0, err, sizeof err);
        assert_true(fd >= 0);
        close(fd);

        /* Out of the directory, other types. */
        assert_int_equal(safepath_openat(dfd, "../etc/passwd", NULL, O_RDONLY, 0, 0, err, sizeof err), -EXDEV);
        assert_int_equal(safepath_openat(dfd, "/etc/passwd", NULL, O_RDONLY, 0, 0, err, sizeof err), -EXDEV);
        assert_int_equal(safepath_openat(dfd, "fifo", NULL, O_WRONLY, 0, 0, err, sizeof err), -ENXIO);  /* no reader: no hang */
        assert_int_equal(safepath_openat(dfd, "fifo", NULL, O_RDONLY, 0, 0, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "not a regular file"));
        assert_int_equal(safepath_openat(dfd, "own", NULL, O_RDONLY, 0, SAFEPATH_DIR, err, sizeof err), -EINVAL);
        assert_int_equal(safepath_openat(dfd, "missing", NULL, O_RDONLY, 0, 0, err, sizeof err), -ENOENT);
        close(dfd);
        pathof(p, sizeof p, "sub/new");
        unlink(p);
}

static void test_openat(void **state) {
        (void)state;
        check_openat();
}

static void test_openat_walk(void **state) {
        (void)state;
        safepath_without_openat2();
        check_openat();
}

static void test_open_trunc_and_append(void **state) {
        (void)state;
        char p[256], err[512];
        pathof(p, sizeof p, "own");
        int fd = safepath_open(p, O_WRONLY | O_TRUNC, 0, SAFEPATH_ONE_LINK, err, sizeof err);
        assert_true(fd >= 0);
        close(fd);
        assert_string_equal(read_file("own"), "");      /* truncated once the checks passed */
        pathof(p, sizeof p, "new");
        fd = safepath_open(p, O_WRONLY | O_APPEND | O_CREAT, 0640, SAFEPATH_ONE_LINK, err, sizeof err);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "x", 1), 1);
        close(fd);
        assert_string_equal(read_file("new"), "x");
        pathof(p, sizeof p, "sym");
        assert_int_equal(safepath_open(p, O_WRONLY | O_APPEND | O_CREAT, 0640, SAFEPATH_ONE_LINK, err, sizeof err), -ELOOP);
        assert_non_null(strstr(err, "/sym: a symbolic link (not followed)"));
        write_file("own", "mine\n", 0644);
}

static void test_hand_over(void **state) {
        (void)state;
        char p[256], err[512];
        struct stat st;
        uid_t uid = geteuid();
        gid_t gid = getegid();

        pathof(p, sizeof p, "own");
        assert_int_equal(safepath_hand_over(p, uid, gid, 0600, 0, err, sizeof err), 0);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        assert_int_equal(chmod(p, 0644), 0);
        pathof(p, sizeof p, "sub");
        assert_int_equal(safepath_hand_over(p, (uid_t)-1, (gid_t)-1, 0711, SAFEPATH_DIR, err, sizeof err), 0);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0711);
        assert_int_equal(chmod(p, 0755), 0);

        pathof(p, sizeof p, "sym");
        assert_int_equal(safepath_hand_over(p, uid, gid, 0666, 0, err, sizeof err), -ELOOP);
        pathof(p, sizeof p, "hard");
        assert_int_equal(safepath_hand_over(p, uid, gid, 0666, 0, err, sizeof err), -EMLINK);
        pathof(p, sizeof p, "symdir");
        assert_int_equal(safepath_hand_over(p, uid, gid, 0777, SAFEPATH_DIR, err, sizeof err), -ELOOP);
        pathof(p, sizeof p, "fifo");
        assert_int_equal(safepath_hand_over(p, uid, gid, 0666, 0, err, sizeof err), -EINVAL);
        pathof(p, sizeof p, "canary");
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);     /* through none of them */
        pathof(p, sizeof p, "sub");
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0755);
}

static void test_open_shared(void **state) {
        (void)state;
        char p[256], q[256], err[512];
        int fd;

        pathof(p, sizeof p, "own");
        fd = safepath_open_shared(p, err, sizeof err);
        assert_true(fd >= 0);
        close(fd);
        /* Our own link (root's, when root runs this) is followed. */
        pathof(q, sizeof q, "symown");
        assert_int_equal(symlink("own", q), 0);
        fd = safepath_open_shared(q, err, sizeof err);
        assert_true(fd >= 0);
        close(fd);
        unlink(q);
        /* ... but not to a hard link of a root-only file. */
        pathof(p, sizeof p, "sym");
        assert_int_equal(safepath_open_shared(p, err, sizeof err), -EMLINK);
        /* A hard link to a file not everybody may read is not. */
        pathof(p, sizeof p, "hard");
        assert_int_equal(safepath_open_shared(p, err, sizeof err), -EMLINK);
        assert_non_null(strstr(err, "a hard link (2 names) to a file not everybody may read"));
        pathof(q, sizeof q, "canary");
        assert_int_equal(chmod(q, 0644), 0);
        fd = safepath_open_shared(p, err, sizeof err);
        assert_true(fd >= 0);                           /* world-readable: nothing revealed */
        close(fd);
        assert_int_equal(chmod(q, 0600), 0);
        pathof(p, sizeof p, "fifo");
        assert_int_equal(safepath_open_shared(p, err, sizeof err), -EINVAL);
        /* Somebody else's link, where we may make one (as root). */
        if (geteuid() == 0) {
                pathof(q, sizeof q, "symother");
                assert_int_equal(symlink("own", q), 0);
                assert_int_equal(lchown(q, 65534, 65534), 0);
                assert_int_equal(safepath_open_shared(q, err, sizeof err), -ELOOP);
                assert_non_null(strstr(err, "a symbolic link owned by uid 65534, not root (not followed)"));
                unlink(q);
        }
}

static void test_check_planted(void **state) {
        (void)state;
        char p[256], err[512];
        pathof(p, sizeof p, "own");
        assert_int_equal(safepath_check_planted(p, 0, err, sizeof err), 0);
        pathof(p, sizeof p, "missing");
        assert_int_equal(safepath_check_planted(p, 0, err, sizeof err), 0);
        pathof(p, sizeof p, "sym");
        assert_int_equal(safepath_check_planted(p, 0, err, sizeof err), -ELOOP);
        pathof(p, sizeof p, "hard");
        assert_int_equal(safepath_check_planted(p, 0, err, sizeof err), -EMLINK);
        pathof(p, sizeof p, "fifo");
        assert_int_equal(safepath_check_planted(p, 0, err, sizeof err), -EINVAL);
        pathof(p, sizeof p, "sub");
        assert_int_equal(safepath_check_planted(p, SAFEPATH_DIR, err, sizeof err), 0);
        assert_int_equal(safepath_check_planted(p, 0, err, sizeof err), -EINVAL);
        pathof(p, sizeof p, "symdir");
        assert_int_equal(safepath_check_planted(p, SAFEPATH_DIR, err, sizeof err), -ELOOP);
}

static void test_open_beneath(void **state) {
        (void)state;
        char p[256], err[512];
        int fd;
        pathof(p, sizeof p, "sub/x");
        fd = safepath_open_beneath(dir, p, O_WRONLY | O_CREAT | O_APPEND, 0640, SAFEPATH_ONE_LINK, err, sizeof err);
        assert_true(fd >= 0);
        close(fd);
        unlink(p);
        /* A planted directory link below the base is refused. */
        pathof(p, sizeof p, "symdir/x");
        assert_int_equal(safepath_open_beneath(dir, p, O_WRONLY | O_CREAT | O_APPEND, 0640, 0, err, sizeof err), -ELOOP);
        assert_non_null(strstr(err, "symdir/x: a symbolic link (not followed)"));
        pathof(p, sizeof p, "sub/x");
        assert_int_equal(access(p, F_OK), -1);
        /* Not beneath the base: the last component only. */
        pathof(p, sizeof p, "symdir/x");
        fd = safepath_open_beneath("/nonexistent", p, O_WRONLY | O_CREAT, 0640, 0, err, sizeof err);
        assert_true(fd >= 0);
        close(fd);
        pathof(p, sizeof p, "sub/x");
        unlink(p);
        /* A base with a trailing slash. */
        char base[128];
        snprintf(base, sizeof base, "%s/", dir);
        pathof(p, sizeof p, "sym");
        assert_int_equal(safepath_open_beneath(base, p, O_RDONLY, 0, 0, err, sizeof err), -ELOOP);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_openat, setup, teardown),
                cmocka_unit_test_setup_teardown(test_open_trunc_and_append, setup, teardown),
                cmocka_unit_test_setup_teardown(test_hand_over, setup, teardown),
                cmocka_unit_test_setup_teardown(test_open_shared, setup, teardown),
                cmocka_unit_test_setup_teardown(test_check_planted, setup, teardown),
                cmocka_unit_test_setup_teardown(test_open_beneath, setup, teardown),
                /* last: from here on without openat2 */
                cmocka_unit_test_setup_teardown(test_openat_walk, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
