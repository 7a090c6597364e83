/* qemu_proc: starting one QEMU, once for everybody. The listening sockets,
 * the process (paused with -S, as the unprivileged user, holding exactly
 * the descriptors it is given), the QMP handshake and `cont`. vrt-launch's
 * supervisor and `vrt image install` both start QEMU through here; what
 * they do with it afterwards (events, stopping) is theirs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "launcher/core/config.h"
#include "launcher/core/paths.h"
#include "launcher/core/spawn.h"
#include "launcher/vm/qemu_argv.h"

/* Descriptor numbers inside QEMU, the same for every QEMU vrt starts. */
enum {
        QEMU_FD_QMP = 3,
        QEMU_FD_MONITOR = 4,
        QEMU_FD_CONSOLE = 5,
        QEMU_FD_CONSOLE_LOG = 6,
        QEMU_FD_TAP = 7,
        QEMU_FD_VHOST = 8,
        QEMU_FD_INIT_LOG = 9,
        QEMU_FD_NIC_EXTRA = 10,         /* NIC N >= 1: tap at 10 + 2(N-1), vhost-net next to it */
        QEMU_FD_AGENT = QEMU_FD_NIC_EXTRA + 2 * (VM_NICS_MAX - 1),     /* agent.sock, after the last NIC's */
};

/* Where QEMU sees NIC i's tap and vhost-net descriptors. */
int qemu_fd_tap(unsigned nic);
int qemu_fd_vhost(unsigned nic);

/* Sets the console, monitor, agent and QMP descriptor numbers of l (console_log:
 * whether a console log is passed) and marks every other one absent. */
void qemu_launch_std_fds(struct qemu_launch *l, bool console_log);

/* Descriptors of the parent that QEMU inherits, -1 when absent. Each goes
 * to the number the launch description gives it (fd_qmp, fd_tap[i], ...). */
struct qemu_proc_fds {
        int qmp, monitor, console, console_log, init_log, agent;
        int tap[VM_NICS_MAX], vhost[VM_NICS_MAX];
};

/* Marks every descriptor absent. */
void qemu_proc_fds_init(struct qemu_proc_fds *f);
/* Closes every descriptor that is set and marks it absent. */
void qemu_proc_fds_close(struct qemu_proc_fds *f);

/* Creates the listening sockets at p->qmp_sock (0600: the caller's alone),
 * p->monitor_sock, p->console_sock and p->agent_sock (0600, or 0660 for socket_gid when it
 * is not -1) into f. Returns 0 or a negative errno with a message. */
int qemu_proc_listen(struct qemu_proc_fds *f, const struct vm_paths *p, gid_t socket_gid, char *err, size_t errlen);

struct qemu_proc {
        pid_t pid;              /* 0: none */
        int pidfd;              /* -1: none */
        struct qmp *qmp;        /* connected and past the handshake */
};

struct qemu_proc_request {
        const struct qemu_launch *launch;
        struct qemu_proc_fds *fds;      /* closed by qemu_proc_start in every case */
        const char *qmp_sock;           /* where fds->qmp listens */
        const char *pid_file;           /* QEMU's pid is written here; NULL: nowhere */
        int stdout_fd;                  /* QEMU's stdout+stderr; -1: /dev/null */
        const struct qemu_user *user;
        int timeout_ms;                 /* for the QMP greeting */
        /* Work to overlap with QEMU's start-up (run once QEMU is spawned,
         * before waiting for its greeting); NULL: none. */
        void (*while_starting)(void *arg);
        void *while_starting_arg;
};

/* Builds the argv, starts QEMU paused and completes the QMP handshake.
 * Returns 0 with *ret filled, -EINVAL for a launch description the argv
 * builder refuses (nothing started), or another negative errno with a
 * message. When QEMU was started but the handshake failed, ret->pid and
 * ret->pidfd are set all the same, so that the caller can collect QEMU's
 * exit and last words; ret->qmp is then NULL. */
int qemu_proc_start(const struct qemu_proc_request *req, struct qemu_proc *ret, char *err, size_t errlen);

/* Lets the paused guest run (QMP cont). Returns 0 or a negative errno. */
int qemu_proc_cont(struct qemu_proc *p, int timeout_ms, char *err, size_t errlen);
