/* spawn: the one way vrt starts a process — QEMU from its supervisor,
 * vrt-launch from `vrt start` and the first boot, systemctl, the spool's
 * workers — with exactly the descriptors it is meant to have, default
 * signals, and, for QEMU, as the unprivileged user without capabilities.
 * Also the one environment builder for the vrt-launch it starts, the one
 * run-and-capture (systemctl show) and the one non-blocking drain. */
#pragma once

#include <stdbool.h>
#include <signal.h>
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

/* stdout_fd: a new pipe whose read end (non-blocking) comes back. */
#define SPAWN_PIPE (-2)

enum spawn_session {
        SPAWN_SESSION_KEEP,     /* ours */
        SPAWN_SESSION_GROUP,    /* a process group of its own: a terminal's ^C reaches only us */
        SPAWN_SESSION_NEW,      /* a session of its own: no terminal, none of our job control */
};

struct spawn_options {
        /* Executes argv[0] (a path, not searched) with argv; or, with argv
         * NULL, runs fn(userdata) in the child and exits with its result
         * (the spool's workers), keeping our signal handlers and all
         * descriptors but close_fds, with the signal mask fn_sigmask. */
        char *const *argv;
        int (*fn)(void *userdata);
        void *userdata;
        const int *close_fds;   /* fn only: descriptors the child closes first (-1 entries skipped) */
        size_t n_close_fds;
        const sigset_t *fn_sigmask;     /* fn only; NULL: nothing blocked */
        char *const *envp;      /* NULL: ours */
        const struct spawn_fd *fds;     /* argv only: passed at their target numbers; all others closed */
        size_t n_fds;
        int stdout_fd;          /* argv only: stdout+stderr; -1: /dev/null; SPAWN_PIPE. stdin is /dev/null */
        enum spawn_session session;
        int death_signal;       /* sent to the child when we die (PR_SET_PDEATHSIG); 0: none */
        bool chdir_root;        /* run in / */
        bool drop_privileges;   /* switch to uid/gid and clear all capabilities */
        bool no_new_privs;      /* PR_SET_NO_NEW_PRIVS: exec never gains privileges */
        uid_t uid;
        gid_t gid;
        const char *fail_prefix;        /* the child's message when exec fails: PREFIX ARGV0: why */
};

struct spawn_result {
        pid_t pid;
        int pidfd;              /* O_CLOEXEC */
        int out_fd;             /* with SPAWN_PIPE, else -1 */
};

/* Forks and starts the child as o says, with all signals default and
 * unblocked (argv) or as fn_sigmask (fn). Returns 0 with *ret filled (close its fds), or a negative
 * errno with one line in err (nothing left running). */
int spawn_process(const struct spawn_options *o, struct spawn_result *ret, char *err, size_t errlen);

/* The environment of a vrt-launch we start: ours, without what belonged to
 * our own caller's service manager (NOTIFY_SOCKET, LISTEN_*, WATCHDOG_*,
 * JOURNAL_STREAM, INVOCATION_ID), with VRT_ROOT, VRT_RUNTIME_DIR and, when
 * notify is not NULL, NOTIFY_SOCKET=notify. A new vector, or NULL. */
char **spawn_environment(const char *root, const char *runtime_dir, const char *notify);

/* Appends what is readable on the non-blocking fd to buf (capped at cap-1,
 * NUL-terminated). Returns false at EOF or on an error. */
bool spawn_drain(int fd, char *buf, size_t cap, size_t *len);

/* Runs argv (our environment, stdin /dev/null) to its end within
 * timeout_ms, collecting stdout+stderr into out. Returns the exit status
 * (0..255, 128+N for signal N), or a negative errno (-ETIMEDOUT: killed). */
int spawn_capture(char *const *argv, int timeout_ms, char *out, size_t outlen);

/* The QEMU request of the supervisor and image install. */
struct spawn_request {
        char *const *argv;
        const struct spawn_fd *fds;
        size_t n_fds;
        int stdout_fd;          /* stdout+stderr of the child; -1: /dev/null */
        bool drop_privileges;   /* switch to uid/gid and clear all capabilities */
        uid_t uid;
        gid_t gid;
};

/* spawn_process() for QEMU: the child dies with the parent (SIGKILL), runs
 * in its own process group (a terminal's ^C reaches only the supervisor,
 * which then shuts the guest down gracefully), in /, with the minimal
 * environment PATH and LC_ALL=C, and holds only stdin (/dev/null),
 * stdout/stderr and the requested fds. Returns 0 with the pid and a pidfd,
 * or a negative errno. */
int spawn_child(const struct spawn_request *req, pid_t *ret_pid, int *ret_pidfd, char *err, size_t errlen);
