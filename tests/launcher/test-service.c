/* Unit tests of service.c without QEMU: the systemctl environment parser,
 * the manager choice, vrt-launch lookup, launch.log reading, and start/stop
 * against fake supervisors — shell scripts standing in for vrt-launch, and
 * forked children called vrt-launch that hold the VM lock and record the
 * queued SIGTERM. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "launcher/lifecycle/create.h"
#include "launcher/core/paths.h"
#include "launcher/core/runtime.h"
#include "launcher/lifecycle/service.h"

static char root[64], runtime[128];

static char *path_of(const char *rel) {
        char *p;
        assert_true(asprintf(&p, "%s/%s", root, rel) > 0);
        return p;
}

static void write_file(const char *rel, const char *text, mode_t mode) {
        char *p = path_of(rel);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
        free(p);
}

static char *read_file(const char *rel) {
        char *p = path_of(rel), *buf = calloc(1, 1 << 16);
        assert_non_null(buf);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                ssize_t n = read(fd, buf, (1 << 16) - 1);
                assert_true(n >= 0);
                close(fd);
        }
        free(p);
        return buf;
}

static void make_vm(const char *name) {
        char rel[128];
        snprintf(rel, sizeof rel, "vm/%s", name);
        char *p = path_of(rel);
        assert_int_equal(mkdir(p, 0755), 0);
        free(p);
        snprintf(rel, sizeof rel, "vm/%s/instance.properties", name);
        write_file(rel, "image=halt\nsize=tiny\nnet=none\n", 0644);
}

static int setup(void **state) {
        snprintf(root, sizeof root, "/tmp/vrt-test-service.XXXXXX");
        assert_non_null(mkdtemp(root));
        snprintf(runtime, sizeof runtime, "%s/run", root);
        char *vm = path_of("vm");
        assert_int_equal(mkdir(vm, 0755), 0);
        assert_int_equal(mkdir(runtime, 0755), 0);
        free(vm);
        /* Enough for a VM that vrt-launch would accept (service_start
         * checks that before it spawns anything). */
        char *images = path_of("images");
        assert_int_equal(mkdir(images, 0755), 0);
        free(images);
        write_file("images/halt.bin", "", 0644);
        write_file("images/halt.properties", "kernel=halt.bin\n", 0644);
        write_file("vrt.conf", "accel=tcg\nsize.tiny.cpus=1\nsize.tiny.memory=64M\n", 0644);
        unsetenv("VRT_SERVICE_MANAGER");
        return 0;
}

static int teardown(void **state) {
        assert_int_equal(create_remove_tree(root), 0);
        return 0;
}

static struct service_options opts(void) {
        return (struct service_options){ .root = root, .runtime_dir = runtime, .manager = SERVICE_DETACHED };
}

static void test_manager_names(void **state) {
        for (int m = 0; m < _SERVICE_MANAGER_MAX; m++)
                assert_int_equal(service_manager_from_string(service_manager_to_string((enum service_manager)m)), m);
        assert_int_equal(service_manager_from_string("upstart"), _SERVICE_MANAGER_INVALID);
        assert_int_equal(service_manager_from_string(NULL), _SERVICE_MANAGER_INVALID);
        assert_null(service_manager_to_string(_SERVICE_MANAGER_MAX));
}

static void test_parse_unit_environment(void **state) {
        char *r = NULL, *t = NULL;
        assert_int_equal(service_parse_unit_environment("", &r, &t), 0);
        assert_null(r);
        assert_null(t);
        assert_int_equal(service_parse_unit_environment("VRT_ROOT=/var/lib/vrt VRT_RUNTIME_DIR=/run/vrt\n", &r, &t), 0);
        assert_string_equal(r, "/var/lib/vrt");
        assert_string_equal(t, "/run/vrt");
        free(r);
        free(t);
        assert_int_equal(service_parse_unit_environment("LANG=C \"VRT_ROOT=/mnt/my vrt\" VRT_ROOTX=/no VRT_ROOT=/mnt/last", &r, &t), 0);
        assert_string_equal(r, "/mnt/last");     /* the last assignment wins */
        assert_null(t);
        free(r);
        assert_int_equal(service_parse_unit_environment("\"VRT_ROOT=/mnt/a \\\"b\\\"\"", &r, &t), 0);
        assert_string_equal(r, "/mnt/a \"b\"");
        free(r);
        assert_int_equal(service_parse_unit_environment("\"VRT_ROOT=/mnt/open", &r, &t), -EINVAL);
}

static void test_manager_detect(void **state) {
        enum service_manager m = _SERVICE_MANAGER_INVALID;
        char note[512];
        setenv("VRT_SERVICE_MANAGER", "systemd", 1);
        assert_int_equal(service_manager_detect(root, runtime, "alpha", &m, note, sizeof note), 0);
        assert_int_equal(m, SERVICE_SYSTEMD);
        setenv("VRT_SERVICE_MANAGER", "detached", 1);
        assert_int_equal(service_manager_detect(root, runtime, "alpha", &m, note, sizeof note), 0);
        assert_int_equal(m, SERVICE_DETACHED);
        setenv("VRT_SERVICE_MANAGER", "openrc", 1);
        assert_int_equal(service_manager_detect(root, runtime, "alpha", &m, note, sizeof note), -EINVAL);
        assert_non_null(strstr(note, "VRT_SERVICE_MANAGER=openrc"));
        setenv("VRT_SERVICE_MANAGER", "auto", 1);
        assert_int_equal(service_manager_detect(root, runtime, "alpha", &m, note, sizeof note), 0);
        /* On a host without systemd as PID 1 auto means detached, silently. */
        if (!service_systemd_booted()) {
                assert_int_equal(m, SERVICE_DETACHED);
                assert_string_equal(note, "");
        } else {
                /* A test root is never the one vrt@.service runs. */
                assert_int_equal(m, SERVICE_DETACHED);
                assert_true(note[0] != '\0');
        }
        unsetenv("VRT_SERVICE_MANAGER");
}

static void test_find_launcher(void **state) {
        char *found = NULL, *bin = path_of("bin"), *old = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
        assert_int_equal(mkdir(bin, 0755), 0);
        /* The test binary has no vrt-launch next to it: $PATH decides. */
        setenv("PATH", bin, 1);
        assert_int_equal(service_find_launcher(&found), -ENOENT);
        write_file("bin/vrt-launch", "#!/bin/sh\n", 0755);
        assert_int_equal(service_find_launcher(&found), 0);
        char *want = path_of("bin/vrt-launch");
        assert_string_equal(found, want);
        free(want);
        free(found);
        if (old)
                setenv("PATH", old, 1);
        free(old);
        free(bin);
}

static void test_launch_log_last(void **state) {
        char buf[256];
        char *log = path_of("launch.log");
        assert_int_equal(service_launch_log_last(log, 10, 0, buf, sizeof buf), -ENOENT);
        write_file("launch.log",
                   "2026-01-01 00:00:00.000 vrt-launch[10]: started QEMU pid 11\n"
                   "2026-01-01 00:00:01.000 vrt-launch[10]: VM alpha running\n"
                   "2026-01-01 00:00:02.000 vrt-launch[12]: alpha: VM is already running (supervisor pid 10)\n"
                   "2026-01-01 00:00:03.000 vrt-launch[10]: VM alpha powered off\n"
                   "trailing text without a prefix",
                   0644);
        assert_int_equal(service_launch_log_last(log, 10, 0, buf, sizeof buf), 0);
        assert_string_equal(buf, "VM alpha powered off");
        assert_int_equal(service_launch_log_last(log, 12, 0, buf, sizeof buf), 0);
        assert_string_equal(buf, "alpha: VM is already running (supervisor pid 10)");
        assert_int_equal(service_launch_log_last(log, 0, 0, buf, sizeof buf), 0);
        assert_string_equal(buf, "trailing text without a prefix");
        assert_int_equal(service_launch_log_last(log, 99, 0, buf, sizeof buf), -ENOENT);
        /* Only what was written after `from` counts. */
        struct stat st;
        assert_int_equal(stat(log, &st), 0);
        assert_int_equal(service_launch_log_last(log, 10, st.st_size, buf, sizeof buf), -ENOENT);
        free(log);
}

static void test_start_refusals(void **state) {
        struct service_options o = opts();
        struct service_result res[4];
        char *names[] = { "Bad_Name", "ghost", "gone", "alpha" };
        make_vm("gone");
        write_file("vm/gone/DESTROYED", "", 0644);
        make_vm("alpha");
        o.launcher = "/nonexistent/vrt-launch";
        assert_int_equal(service_start(&o, names, 4, res), 4);
        assert_int_equal(res[0].outcome, SERVICE_INVALID);
        assert_non_null(strstr(res[0].message, "invalid VM name"));
        assert_int_equal(res[1].outcome, SERVICE_INVALID);
        assert_non_null(strstr(res[1].message, "no such VM"));
        assert_int_equal(res[2].outcome, SERVICE_INVALID);
        assert_non_null(strstr(res[2].message, "destroyed"));
        /* A launcher that cannot be executed is reported, from launch.log. */
        assert_int_equal(res[3].outcome, SERVICE_FAILED);
        assert_non_null(strstr(res[3].message, "cannot execute /nonexistent/vrt-launch"));
        char *log = read_file("vm/alpha/log/launch.log");
        assert_non_null(strstr(log, "cannot execute /nonexistent/vrt-launch"));
        free(log);
}

/* What vrt-launch would refuse is refused before anything is spawned or
 * created, naming file:line as `vrt check` does. */
static void test_start_refuses_bad_config(void **state) {
        struct service_options o = opts();
        struct service_result res[1];
        char *names[] = { "alpha" };
        make_vm("alpha");
        write_file("vm/alpha/instance.properties", "image=halt\nsize=tiny\nnet=none\ncolour=blue\n", 0644);
        o.launcher = "/nonexistent/vrt-launch";
        assert_int_equal(service_start(&o, names, 1, res), 1);
        assert_int_equal(res[0].outcome, SERVICE_INVALID);
        assert_non_null(strstr(res[0].message, "instance.properties:4: unknown key colour"));
        char *log = path_of("vm/alpha/log");
        assert_int_equal(access(log, F_OK), -1);
        free(log);
}

static void test_start_failure_reports_last_line(void **state) {
        struct service_options o = opts();
        struct service_result res;
        char *names[] = { "alpha" };
        make_vm("alpha");
        /* Stands in for vrt-launch: says why, the way vrt-launch logs, and fails. */
        write_file("fake-launch",
                   "#!/bin/sh\n"
                   "echo \"2026-01-01 00:00:00.000 vrt-launch[$$]: $1: instance.properties:3: unknown key colour\" >&2\n"
                   "[ \"$VRT_ROOT\" = \"$EXPECT_ROOT\" ] || echo \"2026-01-01 00:00:00.000 vrt-launch[$$]: wrong root $VRT_ROOT\" >&2\n"
                   "exit 2\n",
                   0755);
        setenv("EXPECT_ROOT", root, 1);
        char *fake = path_of("fake-launch");
        o.launcher = fake;
        assert_int_equal(service_start(&o, names, 1, &res), 1);
        assert_int_equal(res.outcome, SERVICE_FAILED);
        assert_string_equal(res.message, "vrt-launch exited with status 2: alpha: instance.properties:3: unknown key colour");
        free(fake);
}

static void test_start_ready_and_timeout(void **state) {
        if (access("/usr/bin/socat", X_OK) != 0)
                skip();
        struct service_options o = opts();
        struct service_result res[2];
        char *names[] = { "alpha", "bravo" };
        make_vm("alpha");
        make_vm("bravo");
        /* alpha: READY=1 from the supervisor's own pid (exec keeps it).
         * bravo: READY=1 from another process, which must not count. */
        write_file("ready", "READY=1\n", 0644);
        char script[1024];
        snprintf(script, sizeof script,
                 "#!/bin/sh\n"
                 "if [ \"$1\" = alpha ]; then exec socat -u OPEN:%s/ready \"ABSTRACT-SENDTO:${NOTIFY_SOCKET#@}\"; fi\n"
                 "socat -u OPEN:%s/ready \"ABSTRACT-SENDTO:${NOTIFY_SOCKET#@}\"\n"
                 "exec sleep 30\n",
                 root, root);
        write_file("fake-launch", script, 0755);
        char *fake = path_of("fake-launch");
        o.launcher = fake;
        o.wait_s = 2;
        assert_int_equal(service_start(&o, names, 2, res), 1);
        assert_int_equal(res[0].outcome, SERVICE_DONE);
        assert_true(res[0].pid > 0);
        assert_int_equal(res[1].outcome, SERVICE_FAILED);
        assert_non_null(strstr(res[1].message, "not running within 2s"));
        assert_true(res[1].pid > 0);
        kill(res[1].pid, SIGKILL);
        waitpid(res[1].pid, NULL, 0);
        waitpid(res[0].pid, NULL, 0);
        free(fake);
}

static void test_start_through_systemctl(void **state) {
        struct service_options o = opts();
        struct service_result res[2];
        char *names[] = { "alpha", "bravo" };
        char *bin = path_of("bin"), *old = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
        make_vm("alpha");
        make_vm("bravo");
        assert_int_equal(mkdir(bin, 0755), 0);
        /* Stands in for systemctl: records its arguments, fails for bravo
         * the way systemctl does. */
        char script[1024];
        snprintf(script, sizeof script,
                 "#!/bin/sh\n"
                 "echo \"$*\" >> %s/systemctl.args\n"
                 "[ \"$3\" = vrt@alpha.service ] && exit 0\n"
                 "echo \"Job for $3 failed because the control process exited with error code.\" >&2\n"
                 "echo \"See systemctl status $3 for details.\" >&2\n"
                 "exit 1\n",
                 root);
        write_file("bin/systemctl", script, 0755);
        setenv("PATH", bin, 1);
        o.manager = SERVICE_SYSTEMD;
        assert_int_equal(service_start(&o, names, 2, res), 1);
        if (old)
                setenv("PATH", old, 1);
        assert_int_equal(res[0].outcome, SERVICE_DONE);
        assert_string_equal(res[0].message, "started (vrt@alpha.service)");
        assert_int_equal(res[1].outcome, SERVICE_FAILED);
        assert_string_equal(res[1].message, "systemctl start vrt@bravo.service failed: "
                                            "Job for vrt@bravo.service failed because the control process exited with error code.");
        char *args = read_file("systemctl.args");
        assert_non_null(strstr(args, "--no-ask-password start vrt@alpha.service\n"));
        assert_non_null(strstr(args, "--no-ask-password start vrt@bravo.service\n"));
        free(args);
        free(old);
        free(bin);
}

/* A stand-in supervisor: holds the VM lock, writes the pid file, records
 * the value queued with SIGTERM (or ignores SIGTERM), then exits. */
static pid_t fake_supervisor(const char *name, bool ignore_term) {
        int ready[2];
        assert_int_equal(pipe(ready), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct vm_paths p;
                char err[256], rel[128];
                sigset_t mask;
                sigemptyset(&mask);
                sigaddset(&mask, SIGTERM);
                sigprocmask(SIG_BLOCK, &mask, NULL);
                int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
                if (sfd < 0 || vm_paths_init(&p, root, runtime, name) < 0 || runtime_lock(&p, err, sizeof err) < 0 ||
                    runtime_write_pid(p.pid_file, getpid()) < 0)
                        _exit(1);
                prctl(PR_SET_NAME, "vrt-launch");      /* what a stop checks it is talking to */
                close(ready[0]);
                assert_int_equal(write(ready[1], "x", 1), 1);
                close(ready[1]);
                for (;;) {
                        struct signalfd_siginfo si;
                        if (read(sfd, &si, sizeof si) != sizeof si)
                                _exit(1);
                        snprintf(rel, sizeof rel, "%s.term", name);
                        char text[64];
                        snprintf(text, sizeof text, "code=%d value=%d\n", si.ssi_code, si.ssi_int);
                        write_file(rel, text, 0644);
                        if (!ignore_term)
                                break;
                }
                runtime_remove(&p);
                _exit(0);
        }
        char c;
        close(ready[1]);
        assert_int_equal(read(ready[0], &c, 1), 1);
        close(ready[0]);
        return pid;
}

static void test_stop_queues_timeout(void **state) {
        struct service_options o = opts();
        struct service_result res[4];
        char *names[] = { "alpha", "bravo", "idle", "Bad_Name" };
        make_vm("alpha");
        make_vm("bravo");
        make_vm("idle");
        pid_t a = fake_supervisor("alpha", false), b = fake_supervisor("bravo", false);
        o.shutdown_timeout = 7;
        assert_int_equal(service_stop(&o, names, 4, res), 1);
        assert_int_equal(res[0].outcome, SERVICE_DONE);
        assert_int_equal(res[0].pid, a);
        assert_int_equal(res[1].outcome, SERVICE_DONE);
        assert_int_equal(res[2].outcome, SERVICE_ALREADY);
        assert_string_equal(res[2].message, "not running");
        assert_int_equal(res[3].outcome, SERVICE_INVALID);
        /* SIGTERM came queued (SI_QUEUE = -1) with the timeout as its value. */
        char *t = read_file("alpha.term");
        assert_string_equal(t, "code=-1 value=7\n");
        free(t);
        t = read_file("bravo.term");
        assert_string_equal(t, "code=-1 value=7\n");
        free(t);
        /* The supervisors had ended when service_stop returned. */
        int status;
        assert_int_equal(waitpid(a, &status, WNOHANG), a);
        assert_int_equal(waitpid(b, &status, WNOHANG), b);
}

static void test_stop_without_timeout_sends_zero(void **state) {
        struct service_options o = opts();
        struct service_result res;
        char *names[] = { "alpha" };
        make_vm("alpha");
        pid_t a = fake_supervisor("alpha", false);
        assert_int_equal(service_stop(&o, names, 1, &res), 0);
        char *t = read_file("alpha.term");
        assert_string_equal(t, "code=-1 value=0\n");   /* 0: keep the configured timeout */
        free(t);
        waitpid(a, NULL, 0);
}

static void test_stop_gives_up_after_wait(void **state) {
        struct service_options o = opts();
        struct service_result res;
        char *names[] = { "alpha" };
        make_vm("alpha");
        pid_t a = fake_supervisor("alpha", true);
        o.wait_s = 1;
        assert_int_equal(service_stop(&o, names, 1, &res), 1);
        assert_int_equal(res.outcome, SERVICE_FAILED);
        assert_non_null(strstr(res.message, "still stopping after 1s"));
        kill(a, SIGKILL);
        waitpid(a, NULL, 0);
}

static void test_force_without_monitor_falls_back(void **state) {
        struct service_options o = opts();
        struct service_result res;
        char *names[] = { "alpha" };
        make_vm("alpha");
        pid_t a = fake_supervisor("alpha", false);
        o.force = true;
        /* No monitor.sock: QMP quit fails, the supervisor is asked to stop
         * with a one-second timeout instead. */
        assert_int_equal(service_stop(&o, names, 1, &res), 0);
        assert_int_equal(res.outcome, SERVICE_DONE);
        assert_non_null(strstr(res.message, "QMP quit failed"));
        char *t = read_file("alpha.term");
        assert_string_equal(t, "code=-1 value=1\n");
        free(t);
        waitpid(a, NULL, 0);
}

static void test_stop_unknown_vm(void **state) {
        struct service_options o = opts();
        struct service_result res;
        char *names[] = { "ghost" };
        assert_int_equal(service_stop(&o, names, 1, &res), 1);
        assert_int_equal(res.outcome, SERVICE_INVALID);
        assert_non_null(strstr(res.message, "no such VM"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_manager_names, setup, teardown),
                cmocka_unit_test_setup_teardown(test_parse_unit_environment, setup, teardown),
                cmocka_unit_test_setup_teardown(test_manager_detect, setup, teardown),
                cmocka_unit_test_setup_teardown(test_find_launcher, setup, teardown),
                cmocka_unit_test_setup_teardown(test_launch_log_last, setup, teardown),
                cmocka_unit_test_setup_teardown(test_start_refusals, setup, teardown),
                cmocka_unit_test_setup_teardown(test_start_refuses_bad_config, setup, teardown),
                cmocka_unit_test_setup_teardown(test_start_failure_reports_last_line, setup, teardown),
                cmocka_unit_test_setup_teardown(test_start_ready_and_timeout, setup, teardown),
                cmocka_unit_test_setup_teardown(test_start_through_systemctl, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stop_queues_timeout, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stop_without_timeout_sends_zero, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stop_gives_up_after_wait, setup, teardown),
                cmocka_unit_test_setup_teardown(test_force_without_monitor_falls_back, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stop_unknown_vm, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
