/* Unit tests of spawn.c without QEMU: the child holds exactly the
 * descriptors it was given, at their target numbers, plus stdin (/dev/null)
 * and stdout/stderr; nothing else of the parent reaches it. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "launcher/core/spawn.h"
#include "launcher/core/strv.h"

/* Runs argv through spawn_child with fds, returns its output. */
static char *run(char *const *argv, const struct spawn_fd *fds, size_t n_fds) {
        char err[256] = "", *out = calloc(1, 4096);
        int pipefd[2], pidfd = -1, status = 0;
        pid_t pid = 0;
        size_t len = 0;

        assert_non_null(out);
        assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
        struct spawn_request req = { .argv = argv, .fds = fds, .n_fds = n_fds, .stdout_fd = pipefd[1] };
        assert_int_equal(spawn_child(&req, &pid, &pidfd, err, sizeof err), 0);
        close(pipefd[1]);
        for (;;) {
                ssize_t n = read(pipefd[0], out + len, 4095 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                len += (size_t)n;
        }
        close(pipefd[0]);
        close(pidfd);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        return out;
}

/* The shell prints which of the descriptors 3..12 it holds. */
static char *const list_fds[] = {
        "/bin/sh", "-c",
        "for f in 3 4 5 6 7 8 9 10 11 12; do [ -e /proc/$$/fd/$f ] && printf '%s ' $f; done; echo",
        NULL,
};

/* An fd the parent holds without FD_CLOEXEC at a number below the highest
 * target that is not itself a target (vrt-launch started with an extra
 * descriptor, first boot without a tap: targets 3-6 and 9) must not reach
 * the child. */
static void test_only_targets_below_the_highest(void **state) {
        (void)state;
        int a = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int b = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int leak = open("/dev/null", O_RDONLY | O_CLOEXEC);
        assert_true(a >= 0 && b >= 0 && leak >= 0);
        /* Put them out of the way, then a non-CLOEXEC copy at 7. */
        int a2 = fcntl(a, F_DUPFD_CLOEXEC, 100), b2 = fcntl(b, F_DUPFD_CLOEXEC, 100);
        assert_true(a2 >= 100 && b2 >= 100);
        close(a);
        close(b);
        int saved7 = fcntl(7, F_DUPFD_CLOEXEC, 100);   /* whatever the test runner had there */
        assert_int_equal(dup2(leak, 7), 7);
        close(leak);

        const struct spawn_fd fds[] = { { a2, 3 }, { b2, 9 } };
        char *out = run(list_fds, fds, 2);
        assert_string_equal(out, "3 9 \n");
        free(out);

        close(7);
        if (saved7 >= 0) {
                dup2(saved7, 7);
                close(saved7);
        }
        close(a2);
        close(b2);
}

/* Targets that are already in place, and above the parent's own. */
static void test_targets_in_order(void **state) {
        (void)state;
        int fds_[4];
        for (int i = 0; i < 4; i++) {
                fds_[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
                assert_true(fds_[i] >= 0);
        }
        const struct spawn_fd fds[] = { { fds_[0], 3 }, { fds_[1], 4 }, { fds_[2], 5 }, { fds_[3], 6 } };
        char *out = run(list_fds, fds, 4);
        assert_string_equal(out, "3 4 5 6 \n");
        free(out);
        for (int i = 0; i < 4; i++)
                close(fds_[i]);
}

/* spawn_capture: output and status; a missing program says so in the
 * output with status 127; a child that outlives the timeout is killed. */
static void test_capture(void **state) {
        (void)state;
        char out[256];
        char *const echo[] = { "/bin/sh", "-c", "echo out; echo err >&2; exit 3", NULL };
        assert_int_equal(spawn_capture(echo, 5000, out, sizeof out), 3);
        assert_string_equal(out, "out\nerr\n");
        char *const missing[] = { "/nonexistent/prog", NULL };
        assert_int_equal(spawn_capture(missing, 5000, out, sizeof out), 127);
        assert_string_equal(out, "vrt: cannot execute /nonexistent/prog: No such file or directory\n");
        char *const hang[] = { "/bin/sleep", "30", NULL };
        assert_int_equal(spawn_capture(hang, 200, out, sizeof out), -ETIMEDOUT);
        /* Capped at the buffer, still NUL-terminated. */
        char small[4];
        char *const longer[] = { "/bin/echo", "abcdefgh", NULL };
        assert_int_equal(spawn_capture(longer, 5000, small, sizeof small), 0);
        assert_string_equal(small, "abc");
}

/* The environment for vrt-launch: ours minus our service manager's, plus
 * the root, the runtime dir and the notify socket. */
static void test_environment(void **state) {
        (void)state;
        setenv("NOTIFY_SOCKET", "/run/systemd/notify", 1);
        setenv("LISTEN_FDS", "2", 1);
        setenv("JOURNAL_STREAM", "8:123", 1);
        setenv("VRT_ROOT", "/old", 1);
        setenv("VRT_TEST_KEEP", "yes", 1);
        char **env = spawn_environment("/var/lib/vrt", "/run/vrt", "@vrt-start/1");
        assert_non_null(env);
        int root = 0, runtime = 0, notify = 0, keep = 0, other = 0;
        for (char **e = env; *e; e++) {
                root += strcmp(*e, "VRT_ROOT=/var/lib/vrt") == 0;
                runtime += strcmp(*e, "VRT_RUNTIME_DIR=/run/vrt") == 0;
                notify += strcmp(*e, "NOTIFY_SOCKET=@vrt-start/1") == 0;
                keep += strcmp(*e, "VRT_TEST_KEEP=yes") == 0;
                other += strncmp(*e, "LISTEN_FDS=", 11) == 0 || strncmp(*e, "JOURNAL_STREAM=", 15) == 0 ||
                         strcmp(*e, "VRT_ROOT=/old") == 0 || strcmp(*e, "NOTIFY_SOCKET=/run/systemd/notify") == 0;
        }
        assert_int_equal(root, 1);
        assert_int_equal(runtime, 1);
        assert_int_equal(notify, 1);
        assert_int_equal(keep, 1);
        assert_int_equal(other, 0);
        strv_free(env);
        env = spawn_environment("/r", "/t", NULL);
        for (char **e = env; *e; e++)
                assert_false(strncmp(*e, "NOTIFY_SOCKET=", 14) == 0);
        strv_free(env);
        unsetenv("NOTIFY_SOCKET");
        unsetenv("LISTEN_FDS");
        unsetenv("JOURNAL_STREAM");
        unsetenv("VRT_ROOT");
        unsetenv("VRT_TEST_KEEP");
}

static int child_fn(void *userdata) {
        const int *fd = userdata;
        /* The closed descriptor is gone; the kept one still works. */
        if (fcntl(fd[0], F_GETFD) >= 0)
                return 10;
        return write(fd[1], "fn ran", 6) == 6 ? 7 : 11;
}

/* A function child: runs fn, exits with its value, closes close_fds only. */
static void test_fn_child(void **state) {
        (void)state;
        int p[2], status = 0;
        char buf[16] = "";
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        int other = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int fds[2] = { other, p[1] };
        struct spawn_options o = { .fn = child_fn, .userdata = fds, .close_fds = &other, .n_close_fds = 1 };
        struct spawn_result res;
        char err[256];
        assert_int_equal(spawn_process(&o, &res, err, sizeof err), 0);
        assert_int_equal(res.out_fd, -1);
        close(p[1]);
        assert_int_equal(read(p[0], buf, sizeof buf - 1), 6);
        assert_string_equal(buf, "fn ran");
        assert_int_equal(waitpid(res.pid, &status, 0), res.pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 7);
        close(res.pidfd);
        close(p[0]);
        close(other);
}

/* SPAWN_SESSION_NEW: the child leads a session of its own. */
static void test_new_session(void **state) {
        (void)state;
        char *const argv[] = { "/bin/sh", "-c", "ps -o sid= -p $$; echo $$", NULL };
        struct spawn_options o = { .argv = argv, .stdout_fd = SPAWN_PIPE, .session = SPAWN_SESSION_NEW };
        struct spawn_result res;
        char err[256], out[128] = "";
        size_t len = 0;
        int status;
        assert_int_equal(spawn_process(&o, &res, err, sizeof err), 0);
        struct pollfd pfd = { .fd = res.out_fd, .events = POLLIN };
        while (poll(&pfd, 1, 5000) > 0 && spawn_drain(res.out_fd, out, sizeof out, &len))
                ;
        assert_int_equal(waitpid(res.pid, &status, 0), res.pid);
        int sid = 0, pid = 0;
        assert_int_equal(sscanf(out, "%d %d", &sid, &pid), 2);
        assert_int_equal(pid, res.pid);
        assert_int_equal(sid, res.pid);
        close(res.out_fd);
        close(res.pidfd);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_only_targets_below_the_highest),
                cmocka_unit_test(test_targets_in_order),
                cmocka_unit_test(test_capture),
                cmocka_unit_test(test_environment),
                cmocka_unit_test(test_fn_child),
                cmocka_unit_test(test_new_session),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
