/* Unit tests of stop.c: the graceful and the forced stop against stand-in
 * supervisors (fake-supervisor.h) that hold the VM's lock, record the
 * SIGTERM's queued value and answer QMP on monitor.sock; the shutdown
 * timeout from instance.properties, vrt.conf or the default; and that a
 * pid file naming some other process never gets that process signalled. */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "fake-supervisor.h"
#include "launcher/core/vmstate.h"
#include "launcher/lifecycle/create.h"
#include "launcher/lifecycle/stop.h"

static char root[64], runtime[128], report[128];
static struct vm_paths vm;

static void put(const char *rel, const char *text) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", root, rel);
        FILE *f = fopen(path, "we");
        assert_non_null(f);
        fputs(text, f);
        assert_int_equal(fclose(f), 0);
}

static char *reported(void) {
        static char buf[1024];
        buf[0] = '\0';
        FILE *f = fopen(report, "re");
        if (f) {
                size_t n = fread(buf, 1, sizeof buf - 1, f);
                buf[n] = '\0';
                fclose(f);
        }
        return buf;
}

static int setup(void **state) {
        (void)state;
        char path[256];
        snprintf(root, sizeof root, "/tmp/vrt-test-stop.XXXXXX");
        if (!mkdtemp(root))
                return -1;
        snprintf(runtime, sizeof runtime, "%s/run", root);
        snprintf(report, sizeof report, "%s/report", root);
        snprintf(path, sizeof path, "%s/vm", root);
        mkdir(path, 0755);
        snprintf(path, sizeof path, "%s/vm/alpha", root);
        mkdir(path, 0755);
        mkdir(runtime, 0755);
        put("vm/alpha/instance.properties", "image=testguest\nsize=small\n");
        return vm_paths_init(&vm, root, runtime, "alpha");
}

static int teardown(void **state) {
        (void)state;
        vm_paths_done(&vm);
        return create_remove_tree(root) == 0 ? 0 : -1;
}

/* Waits for the stand-in to end, as the reaper of our own child. */
static void reap(pid_t pid, int pidfd) {
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        close(pidfd);
}

static void test_timeout_sources(void **state) {
        (void)state;
        /* Nothing configured: the built-in default. */
        assert_int_equal(stop_shutdown_timeout(root, &vm, "alpha"), CONFIG_DEFAULT_SHUTDOWN_TIMEOUT_S);
        put("vrt.conf", "shutdown_timeout=7\n");
        assert_int_equal(stop_shutdown_timeout(root, &vm, "alpha"), 7);
        put("vm/alpha/instance.properties", "image=testguest\nsize=small\nshutdown_timeout=5\n");
        assert_int_equal(stop_shutdown_timeout(root, &vm, "alpha"), 5);
        /* A broken vrt.conf does not hide the instance's own timeout. */
        put("vrt.conf", "shutdown_timeout=soon\n");
        assert_int_equal(stop_shutdown_timeout(root, &vm, "alpha"), 5);
        put("vm/alpha/instance.properties", "image=testguest\nsize=small\n");
        assert_int_equal(stop_shutdown_timeout(root, &vm, "alpha"), CONFIG_DEFAULT_SHUTDOWN_TIMEOUT_S);
        /* A broken instance.properties falls back to vrt.conf. */
        put("vrt.conf", "shutdown_timeout=9\n");
        put("vm/alpha/instance.properties", "image=testguest\ncolour=red\n");
        assert_int_equal(stop_shutdown_timeout(root, &vm, "alpha"), 9);
}

static void test_graceful(void **state) {
        (void)state;
        char err[512] = "";
        int pidfd = -1;
        put("vrt.conf", "shutdown_timeout=7\n");
        pid_t pid = fake_supervisor_start(root, runtime, "alpha", report, 0, &pidfd);
        assert_true(pid > 0);
        struct stop_request req = { 0 };
        struct stop_job j;
        assert_int_equal(stop_begin(root, &vm, "alpha", &req, &j, err, sizeof err), 1);
        assert_int_equal(j.pid, pid);
        assert_true(j.pidfd >= 0);
        assert_false(j.quit_failed);
        assert_int_equal(j.bound_s, 7 + STOP_ESCALATION_S);
        assert_int_equal(stop_wait(&j, err, sizeof err), 0);
        assert_int_equal(j.pidfd, -1);
        /* SI_QUEUE (-1), value 0: keep the configured timeout. */
        assert_string_equal(reported(), "term code=-1 value=0\n");
        reap(pid, pidfd);
        assert_false(runtime_is_running(&vm));
        stop_job_done(&j);      /* idempotent */
}

static void test_graceful_explicit_timeout(void **state) {
        (void)state;
        char err[512] = "";
        int pidfd = -1;
        pid_t pid = fake_supervisor_start(root, runtime, "alpha", report, 0, &pidfd);
        assert_true(pid > 0);
        struct stop_request req = { .shutdown_timeout = 9 };
        struct stop_job j;
        assert_int_equal(stop_begin(root, &vm, "alpha", &req, &j, err, sizeof err), 1);
        assert_int_equal(j.bound_s, 9 + STOP_ESCALATION_S);
        assert_int_equal(stop_wait(&j, err, sizeof err), 0);
        assert_string_equal(reported(), "term code=-1 value=9\n");
        reap(pid, pidfd);
}

/* --force: QMP quit on monitor.sock, and no signal at all. */
static void test_force_quits_over_qmp(void **state) {
        (void)state;
        char err[512] = "";
        int pidfd = -1;
        pid_t pid = fake_supervisor_start(root, runtime, "alpha", report, FAKE_SERVE_QMP, &pidfd);
        assert_true(pid > 0);
        struct stop_request req = { .force = true };
        struct stop_job j;
        assert_int_equal(stop_begin(root, &vm, "alpha", &req, &j, err, sizeof err), 1);
        assert_false(j.quit_failed);
        assert_int_equal(j.bound_s, 1 + STOP_ESCALATION_S);
        assert_int_equal(stop_wait(&j, err, sizeof err), 0);
        assert_string_equal(reported(), "quit\n");
        reap(pid, pidfd);
}

/* --force without a monitor: the supervisor is asked to stop within 1 s. */
static void test_force_without_monitor(void **state) {
        (void)state;
        char err[512] = "";
        int pidfd = -1;
        pid_t pid = fake_supervisor_start(root, runtime, "alpha", report, 0, &pidfd);
        assert_true(pid > 0);
        struct stop_request req = { .force = true };
        struct stop_job j;
        assert_int_equal(stop_begin(root, &vm, "alpha", &req, &j, err, sizeof err), 1);
        assert_true(j.quit_failed);
        assert_int_equal(stop_wait(&j, err, sizeof err), 0);
        assert_string_equal(reported(), "term code=-1 value=1\n");
        reap(pid, pidfd);
}

static void test_wait_is_bounded(void **state) {
        (void)state;
        char err[512] = "";
        int pidfd = -1;
        pid_t pid = fake_supervisor_start(root, runtime, "alpha", report, FAKE_IGNORE_TERM, &pidfd);
        assert_true(pid > 0);
        struct stop_request req = { .wait_s = 1 };
        struct stop_job j;
        assert_int_equal(stop_begin(root, &vm, "alpha", &req, &j, err, sizeof err), 1);
        assert_int_equal(j.bound_s, 1);
        assert_int_equal(stop_wait(&j, err, sizeof err), -ETIMEDOUT);
        char want[128];
        snprintf(want, sizeof want, "still stopping after 1s (supervisor pid %d)", (int)pid);
        assert_string_equal(err, want);
        assert_true(j.pidfd >= 0);
        stop_job_done(&j);
        assert_string_equal(reported(), "term code=-1 value=0\n");
        kill(pid, SIGKILL);
        assert_int_equal(waitpid(pid, NULL, 0), pid);
        close(pidfd);
}

static void test_not_running(void **state) {
        (void)state;
        char err[512] = "";
        struct stop_request req = { 0 };
        struct stop_job j = { .pidfd = -1 };
        assert_int_equal(stop_begin(root, &vm, "alpha", &req, &j, err, sizeof err), 0);
        assert_int_equal(j.pidfd, -1);
}

/* The lock is held, but the pid file is missing or names a process that
 * is no vrt-launch (a pid reused after a crash): nothing is signalled. */
static void test_unknown_lock_holder(void **state) {
        (void)state;
        char err[512] = "", msg[256];
        int lock = runtime_lock(&vm, msg, sizeof msg);
        assert_true(lock >= 0);
        struct stop_request req = { .pid_wait_ms = 100 };
        struct stop_job j;
        assert_int_equal(stop_begin(root, &vm, "alpha", &req, &j, err, sizeof err), -EAGAIN);
        assert_non_null(strstr(err, "running, but its supervisor pid is unknown"));

        char *const argv[] = { "/bin/sleep", "30", NULL };
        struct spawn_options o = { .argv = argv };
        struct spawn_result other;
        assert_int_equal(spawn_process(&o, &other, err, sizeof err), 0);
        assert_int_equal(runtime_write_pid(vm.pid_file, other.pid), 0);
        assert_int_equal(stop_begin(root, &vm, "alpha", &req, &j, err, sizeof err), -EAGAIN);
        req.force = true;
        assert_int_equal(stop_begin(root, &vm, "alpha", &req, &j, err, sizeof err), -EAGAIN);
        int status;
        assert_int_equal(waitpid(other.pid, &status, WNOHANG), 0);     /* the sleep still runs */
        kill(other.pid, SIGKILL);
        assert_int_equal(waitpid(other.pid, &status, 0), other.pid);
        close(other.pidfd);
        runtime_remove(&vm);
        close(lock);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_timeout_sources, setup, teardown),
                cmocka_unit_test_setup_teardown(test_graceful, setup, teardown),
                cmocka_unit_test_setup_teardown(test_graceful_explicit_timeout, setup, teardown),
                cmocka_unit_test_setup_teardown(test_force_quits_over_qmp, setup, teardown),
                cmocka_unit_test_setup_teardown(test_force_without_monitor, setup, teardown),
                cmocka_unit_test_setup_teardown(test_wait_is_bounded, setup, teardown),
                cmocka_unit_test_setup_teardown(test_not_running, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unknown_lock_holder, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
