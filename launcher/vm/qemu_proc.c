#include "launcher/vm/qemu_proc.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launcher/core/runtime.h"
#include "launcher/core/strv.h"
#include "launcher/core/util.h"
#include "qmp/qmp.h"

/* How long to wait for QEMU to accept on its QMP socket. */
#define QEMU_PROC_CONNECT_MS 1000

int qemu_fd_tap(unsigned nic) {
        return nic == 0 ? QEMU_FD_TAP : QEMU_FD_NIC_EXTRA + 2 * ((int)nic - 1);
}

int qemu_fd_vhost(unsigned nic) {
        return nic == 0 ? QEMU_FD_VHOST : QEMU_FD_NIC_EXTRA + 2 * ((int)nic - 1) + 1;
}

void qemu_launch_std_fds(struct qemu_launch *l, bool console_log) {
        l->fd_qmp = QEMU_FD_QMP;
        l->fd_monitor = QEMU_FD_MONITOR;
        l->fd_console = QEMU_FD_CONSOLE;
        l->fd_console_log = console_log ? QEMU_FD_CONSOLE_LOG : -1;
        l->fd_init_log = -1;
        l->fd_agent = QEMU_FD_AGENT;
        qemu_launch_no_nic_fds(l);
}

void qemu_proc_fds_init(struct qemu_proc_fds *f) {
        f->qmp = f->monitor = f->console = f->console_log = f->init_log = f->agent = -1;
        for (unsigned i = 0; i < VM_NICS_MAX; i++)
                f->tap[i] = f->vhost[i] = -1;
}

void qemu_proc_fds_close(struct qemu_proc_fds *f) {
        close_fd(&f->qmp);
        close_fd(&f->monitor);
        close_fd(&f->console);
        close_fd(&f->console_log);
        close_fd(&f->init_log);
        close_fd(&f->agent);
        for (unsigned i = 0; i < VM_NICS_MAX; i++) {
                close_fd(&f->tap[i]);
                close_fd(&f->vhost[i]);
        }
}

int qemu_proc_listen(struct qemu_proc_fds *f, const struct vm_paths *p, gid_t socket_gid, char *err, size_t errlen) {
        mode_t mode = socket_gid != (gid_t)-1 ? 0660 : 0600;
        int r;
        /* The supervisor's socket is its alone; the others may be shared
         * with an operator group. */
        if ((r = runtime_listen(p->qmp_sock, 0600, (gid_t)-1, err, errlen)) < 0)
                return r;
        f->qmp = r;
        if ((r = runtime_listen(p->monitor_sock, mode, socket_gid, err, errlen)) < 0)
                return r;
        f->monitor = r;
        if ((r = runtime_listen(p->console_sock, mode, socket_gid, err, errlen)) < 0)
                return r;
        f->console = r;
        if ((r = runtime_listen(p->agent_sock, mode, socket_gid, err, errlen)) < 0)
                return r;
        f->agent = r;
        return 0;
}

/* Pairs each parent descriptor with its number in QEMU. A descriptor the
 * launch names but the caller did not pass is a bug worth stopping for. */
static int map_fds(const struct qemu_launch *l, const struct qemu_proc_fds *f, struct spawn_fd *out, size_t *n,
                   char *err, size_t errlen) {
        struct fd_map { int parent, target; const char *what; } m[6 + 2 * VM_NICS_MAX] = {
                { f->qmp, l->fd_qmp, "QMP" },
                { f->monitor, l->fd_monitor, "monitor" },
                { f->console, l->fd_console, "console" },
                { f->console_log, l->fd_console_log, "console log" },
                { f->init_log, l->fd_init_log, "init log" },
                { f->agent, l->fd_agent, "guest agent" },
        };
        size_t k = 6;
        for (unsigned i = 0; i < VM_NICS_MAX; i++) {
                m[k++] = (struct fd_map){ f->tap[i], l->fd_tap[i], "tap" };
                m[k++] = (struct fd_map){ f->vhost[i], l->fd_vhost[i], "vhost-net" };
        }
        *n = 0;
        for (size_t i = 0; i < k; i++) {
                if (m[i].target < 0)
                        continue;
                if (m[i].parent < 0) {
                        snprintf(err, errlen, "no %s descriptor for QEMU's fd %d", m[i].what, m[i].target);
                        return -EINVAL;
                }
                out[(*n)++] = (struct spawn_fd){ m[i].parent, m[i].target };
        }
        return 0;
}

int qemu_proc_start(const struct qemu_proc_request *req, struct qemu_proc *ret, char *err, size_t errlen) {
        struct spawn_fd fds[6 + 2 * VM_NICS_MAX];
        size_t n_fds = 0;
        char **argv = NULL;
        struct qemu_proc p = { .pidfd = -1 };
        int r;

        r = qemu_argv_build(req->launch, &argv, err, errlen);
        if (r == 0)
                r = map_fds(req->launch, req->fds, fds, &n_fds, err, errlen);
        if (r < 0)
                goto fail;
        struct spawn_request sr = {
                .argv = argv,
                .fds = fds,
                .n_fds = n_fds,
                .stdout_fd = req->stdout_fd,
                .drop_privileges = req->user->drop,
                .uid = req->user->uid,
                .gid = req->user->gid,
        };
        r = spawn_child(&sr, &p.pid, &p.pidfd, err, errlen);
        if (r < 0)
                goto fail;
        if (req->pid_file)
                runtime_write_pid(req->pid_file, p.pid);
        if (req->while_starting)
                req->while_starting(req->while_starting_arg);

        /* Connect while our listening copy still exists: the connection
         * waits in its backlog, and if QEMU dies before accepting, closing
         * our copy resets it, so the handshake fails fast instead of
         * retrying against a dead socket. */
        r = qmp_connect_unix(req->qmp_sock, QEMU_PROC_CONNECT_MS, &p.qmp, err, errlen);
        /* QEMU holds the only copies now: taps and sockets die with it. */
        qemu_proc_fds_close(req->fds);
        if (r == 0)
                r = qmp_handshake(p.qmp, req->timeout_ms, err, errlen);
        if (r < 0)
                p.qmp = qmp_free(p.qmp);
        strv_free(argv);
        *ret = p;
        return r;
fail:
        qemu_proc_fds_close(req->fds);
        strv_free(argv);
        return r;
}

int qemu_proc_cont(struct qemu_proc *p, int timeout_ms, char *err, size_t errlen) {
        struct json_object *reply = NULL;
        int r = qmp_execute(p->qmp, "cont", NULL, timeout_ms, &reply, err, errlen);
        json_object_put(reply);
        return r;
}
