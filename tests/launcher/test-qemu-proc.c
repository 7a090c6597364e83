/* qemu_proc against a fake QEMU (fake-qemu.c): the descriptors QEMU gets,
 * -S, the QMP handshake and cont, a QEMU that dies before it accepts, and a
 * launch that names a descriptor nobody passed. */
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

#include "launcher/core/paths.h"
#include "launcher/vm/qemu_proc.h"
#include "qmp/qmp.h"

static const char *fake_qemu;
static char dir[] = "/tmp/vrt-qemu-proc-XXXXXX";
static char qmp_sock[128], monitor_sock[128], console_sock[128], agent_sock[128];

struct run {
        struct qemu_proc_fds fds;
        struct qemu_launch launch;
        struct qemu_proc proc;
        int out[2];
        char err[512];
        int r;
};

static void start(struct run *t, const char *name) {
        struct vm_paths p = { .qmp_sock = qmp_sock, .monitor_sock = monitor_sock, .console_sock = console_sock,
                              .agent_sock = agent_sock };
        qemu_proc_fds_init(&t->fds);
        assert_int_equal(qemu_proc_listen(&t->fds, &p, (gid_t)-1, t->err, sizeof t->err), 0);
        t->fds.console_log = open("/dev/null", O_WRONLY | O_CLOEXEC);
        assert_true(t->fds.console_log >= 0);
        t->launch = (struct qemu_launch){ .qemu = fake_qemu, .machine = "q35", .accel = "tcg", .name = name,
                                          .cpus = 1, .memory_mib = 64 };
        qemu_launch_std_fds(&t->launch, true);
        assert_int_equal(pipe2(t->out, O_CLOEXEC), 0);
        t->proc = (struct qemu_proc){ .pidfd = -1 };
}

static void go(struct run *t) {
        struct qemu_proc_request req = {
                .launch = &t->launch, .fds = &t->fds, .qmp_sock = qmp_sock, .stdout_fd = t->out[1],
                .user = &(struct qemu_user){ .socket_gid = (gid_t)-1 }, .timeout_ms = 5000,
        };
        t->r = qemu_proc_start(&req, &t->proc, t->err, sizeof t->err);
        close(t->out[1]);
}

/* Waits for the fake and returns its exit status and everything it printed. */
static int finish(struct run *t, char *out, size_t outlen) {
        siginfo_t si = { 0 };
        assert_true(t->proc.pid > 0);
        assert_int_equal(waitid(P_PID, (id_t)t->proc.pid, &si, WEXITED), 0);
        size_t len = 0;
        ssize_t n;
        while ((n = read(t->out[0], out + len, outlen - 1 - len)) > 0)
                len += (size_t)n;
        out[len] = '\0';
        close(t->out[0]);
        close(t->proc.pidfd);
        assert_int_equal(si.si_code, CLD_EXITED);
        return si.si_status;
}

static void assert_all_closed(const struct qemu_proc_fds *f) {
        assert_int_equal(f->qmp, -1);
        assert_int_equal(f->monitor, -1);
        assert_int_equal(f->console, -1);
        assert_int_equal(f->console_log, -1);
        assert_int_equal(f->agent, -1);
        for (unsigned i = 0; i < VM_NICS_MAX; i++)
                assert_int_equal(f->tap[i], -1);
}

static void test_start_and_cont(void **state) {
        struct run t;
        char out[1024];
        start(&t, "ok");
        go(&t);
        assert_int_equal(t.r, 0);
        assert_non_null(t.proc.qmp);
        assert_true(t.proc.pidfd >= 0);
        assert_all_closed(&t.fds);      /* QEMU holds the only copies */
        assert_int_equal(qemu_proc_cont(&t.proc, 5000, t.err, sizeof t.err), 0);
        t.proc.qmp = qmp_free(t.proc.qmp);      /* end of connection: the fake exits */
        assert_int_equal(finish(&t, out, sizeof out), 0);
        /* Exactly the listening sockets and the console log, paused. */
        assert_string_equal(out, "fds: 3 4 5 6 24 paused=1\ncmd: qmp_capabilities\ncmd: cont\n");
}

static void test_qemu_dies_before_accepting(void **state) {
        struct run t;
        char out[1024];
        start(&t, "die");
        go(&t);
        assert_true(t.r < 0);
        assert_null(t.proc.qmp);
        assert_true(t.err[0] != '\0');
        assert_all_closed(&t.fds);
        /* The caller still gets the pid, to collect QEMU's exit and output. */
        assert_int_equal(finish(&t, out, sizeof out), 3);
        assert_string_equal(out, "fds: 3 4 5 6 24 paused=1\n");
}

static void test_missing_descriptor(void **state) {
        struct run t;
        start(&t, "ok");
        struct nic nic = { .net = NET_BRIDGE };
        t.launch.nics = &nic;
        t.launch.n_nics = 1;
        t.launch.fd_tap[0] = qemu_fd_tap(0);
        go(&t);
        assert_int_equal(t.r, -EINVAL);
        assert_string_equal(t.err, "no tap descriptor for QEMU's fd 7");
        assert_int_equal(t.proc.pid, 0);       /* nothing was started */
        assert_all_closed(&t.fds);
        close(t.out[0]);
}

static void test_refused_launch(void **state) {
        struct run t;
        start(&t, NULL);
        go(&t);
        assert_int_equal(t.r, -EINVAL);
        assert_string_equal(t.err, "incomplete launch description");
        assert_int_equal(t.proc.pid, 0);
        assert_all_closed(&t.fds);
        close(t.out[0]);
}

static void test_fd_numbers(void **state) {
        assert_int_equal(qemu_fd_tap(0), 7);
        assert_int_equal(qemu_fd_vhost(0), 8);
        assert_int_equal(qemu_fd_tap(1), 10);
        assert_int_equal(qemu_fd_vhost(1), 11);
        assert_int_equal(qemu_fd_tap(7), 22);
        assert_int_equal(qemu_fd_vhost(7), 23);
        assert_int_equal(QEMU_FD_AGENT, 24);
}

int main(int argc, char **argv) {
        if (argc != 2) {
                fprintf(stderr, "usage: %s FAKE-QEMU\n", argv[0]);
                return 2;
        }
        fake_qemu = argv[1];
        if (!mkdtemp(dir))
                return 1;
        snprintf(qmp_sock, sizeof qmp_sock, "%s/qmp.sock", dir);
        snprintf(monitor_sock, sizeof monitor_sock, "%s/monitor.sock", dir);
        snprintf(console_sock, sizeof console_sock, "%s/console.sock", dir);
        snprintf(agent_sock, sizeof agent_sock, "%s/agent.sock", dir);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_start_and_cont),
                cmocka_unit_test(test_qemu_dies_before_accepting),
                cmocka_unit_test(test_missing_descriptor),
                cmocka_unit_test(test_refused_launch),
                cmocka_unit_test(test_fd_numbers),
        };
        int failed = cmocka_run_group_tests(tests, NULL, NULL);
        unlink(qmp_sock);
        unlink(monitor_sock);
        unlink(console_sock);
        unlink(agent_sock);
        rmdir(dir);
        return failed;
}
