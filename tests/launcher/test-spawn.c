/* Unit tests of spawn.c without QEMU: the child holds exactly the
 * descriptors it was given, at their target numbers, plus stdin (/dev/null)
 * and stdout/stderr; nothing else of the parent reaches it. */
#include <errno.h>
#include <fcntl.h>
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

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_only_targets_below_the_highest),
                cmocka_unit_test(test_targets_in_order),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
