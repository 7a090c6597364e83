/* Unit tests of runtime.c: the per-VM lock that means "running". */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "launcher/core/paths.h"
#include "launcher/core/runtime.h"

static char root[64];
static struct vm_paths paths;

static int setup(void **state) {
        (void)state;
        snprintf(root, sizeof root, "/tmp/vrt-test-runtime.XXXXXX");
        if (!mkdtemp(root))
                return -1;
        char run[128];
        snprintf(run, sizeof run, "%s/run", root);
        return vm_paths_init(&paths, root, run, "alpha");
}

static int teardown(void **state) {
        (void)state;
        runtime_remove(&paths);
        char run[128];
        snprintf(run, sizeof run, "%s/run", root);
        rmdir(run);
        rmdir(root);
        vm_paths_done(&paths);
        return 0;
}

static void sleep_ms(long ms) {
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* A child holding the lock file with `how` for hold_ms; returns once it
 * holds it. */
static pid_t hold_lock(int how, long hold_ms) {
        int ready[2];
        char c;
        assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                int fd = open(paths.lock_file, O_RDONLY | O_CLOEXEC);
                if (fd < 0 || flock(fd, how) < 0)
                        _exit(1);
                if (write(ready[1], "x", 1) != 1)
                        _exit(1);
                sleep_ms(hold_ms);
                _exit(0);
        }
        close(ready[1]);
        assert_int_equal(read(ready[0], &c, 1), 1);
        close(ready[0]);
        return pid;
}

static void reap(pid_t pid) {
        int status;
        kill(pid, SIGKILL);
        assert_int_equal(waitpid(pid, &status, 0), pid);
}

static void test_lock_and_is_running(void **state) {
        (void)state;
        char err[256] = "";
        assert_false(runtime_is_running(&paths));
        int fd = runtime_lock(&paths, err, sizeof err);
        assert_true(fd >= 0);
        assert_true(runtime_is_running(&paths));
        close(fd);
        assert_false(runtime_is_running(&paths));
}

/* runtime_is_running() probes with a shared lock for a moment (vrt list,
 * vrt stop, the spool): a start that meets such a probe is not "already
 * running". */
static void test_lock_waits_out_a_probe(void **state) {
        (void)state;
        char err[256] = "";
        int fd = runtime_lock(&paths, err, sizeof err);
        assert_true(fd >= 0);
        close(fd);
        pid_t probe = hold_lock(LOCK_SH, 30);
        fd = runtime_lock(&paths, err, sizeof err);
        if (fd < 0)
                print_error("runtime_lock: %d %s\n", fd, err);
        assert_true(fd >= 0);
        close(fd);
        reap(probe);
}

/* A supervisor holding the lock: -EBUSY, promptly. */
static void test_lock_held_is_busy(void **state) {
        (void)state;
        char err[256] = "";
        int fd = runtime_lock(&paths, err, sizeof err);
        assert_true(fd >= 0);
        close(fd);
        pid_t holder = hold_lock(LOCK_EX, 60000);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        assert_int_equal(runtime_lock(&paths, err, sizeof err), -EBUSY);
        clock_gettime(CLOCK_MONOTONIC, &b);
        assert_non_null(strstr(err, "already running"));
        assert_true(b.tv_sec - a.tv_sec < 2);
        reap(holder);
}

static int count_fds(void) {
        int n = 0;
        for (int fd = 0; fd < 1024; fd++)
                n += fcntl(fd, F_GETFD) >= 0;
        return n;
}

/* A pid file that cannot be written: the error, no descriptor left open,
 * no temporary file left behind. */
static void test_write_pid_failure_leaks_nothing(void **state) {
        (void)state;
        char err[256] = "", *tmp = NULL;
        int fd = runtime_lock(&paths, err, sizeof err);
        assert_true(fd >= 0);
        struct rlimit old, none = { 0, 0 };
        assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
        none.rlim_max = old.rlim_max;
        signal(SIGXFSZ, SIG_IGN);
        int before = count_fds();
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &none), 0);
        int r = runtime_write_pid(paths.pid_file, 4711);
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
        assert_int_equal(r, -EFBIG);
        assert_int_equal(count_fds(), before);
        assert_true(asprintf(&tmp, "%s.tmp", paths.pid_file) > 0);
        assert_int_equal(access(tmp, F_OK), -1);
        free(tmp);
        pid_t pid = 0;
        assert_int_equal(runtime_write_pid(paths.pid_file, 4711), 0);
        assert_int_equal(runtime_read_pid(paths.pid_file, &pid), 0);
        assert_int_equal(pid, 4711);
        close(fd);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_lock_and_is_running, setup, teardown),
                cmocka_unit_test_setup_teardown(test_lock_waits_out_a_probe, setup, teardown),
                cmocka_unit_test_setup_teardown(test_lock_held_is_busy, setup, teardown),
                cmocka_unit_test_setup_teardown(test_write_pid_failure_leaks_nothing, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
