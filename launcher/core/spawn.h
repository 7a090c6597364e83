/* spawn: starts QEMU as a direct child with exactly the descriptors it is
 * meant to have, as the unprivileged user, without capabilities. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "launcher/core/config.h"

/* Who QEMU runs as. When vrt runs as root: vrt.conf's user= (never root),
 * plus group= for the operator sockets. Otherwise QEMU simply runs as the
 * caller (development use) and drop is false. */
struct qemu_user {
        bool drop;
        uid_t uid;
        gid_t gid;
        gid_t socket_gid;       /* operator group for the sockets, -1: none */
};

/* Looks up host->user and host->group. Returns 0, or -EINVAL with a
 * message naming vrt.conf when either does not exist or user is root. */
int spawn_resolve_user(const struct host_config *host, struct qemu_user *ret, char *err, size_t errlen);

struct spawn_fd {
        int fd;                 /* in the parent */
        int target;             /* number in the child */
};

struct spawn_request {
        char *const *argv;
        const struct spawn_fd *fds;
        size_t n_fds;
        int stdout_fd;          /* stdout+stderr of the child; -1: /dev/null */
        bool drop_privileges;   /* switch to uid/gid and clear all capabilities */
        uid_t uid;
        gid_t gid;
};

/* Forks and execs. The child dies with the parent (PR_SET_PDEATHSIG), runs
 * in its own process group (a terminal's ^C reaches only the supervisor,
 * which then shuts the guest down gracefully), has all signals unblocked
 * and default, and holds only stdin (/dev/null), stdout/stderr and the
 * requested fds. Returns 0 with the pid and a pidfd, or a negative errno. */
int spawn_child(const struct spawn_request *req, pid_t *ret_pid, int *ret_pidfd, char *err, size_t errlen);
