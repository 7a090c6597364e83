/* A stand-in vrt-launch for unit tests, started with spawn_process(): it
 * is called vrt-launch, holds the VM's lock, writes the pid file, and
 *  - records each SIGTERM with its queued value in REPORT ("term code=C
 *    value=V" lines) and ends (or, with FAKE_IGNORE_TERM, goes on);
 *  - with FAKE_SERVE_QMP listens on monitor.sock as QEMU would: greeting,
 *    qmp_capabilities, and for "quit" records "quit", replies and ends, as
 *    a supervisor does when its QEMU quits.
 * Only for test programs; everything here is static. */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "launcher/core/paths.h"
#include "launcher/core/runtime.h"
#include "launcher/core/spawn.h"

enum { FAKE_IGNORE_TERM = 1 << 0, FAKE_SERVE_QMP = 1 << 1 };

struct fake_supervisor {
        const char *root, *runtime_dir, *name, *report;
        int flags;
        int ready_fd;
};

static void fake_record(const char *path, const char *line) {
        FILE *f = fopen(path, "ae");
        if (f) {
                fprintf(f, "%s\n", line);
                fclose(f);
        }
}

static void fake_send(int fd, const char *s) {
        if (send(fd, s, strlen(s), MSG_NOSIGNAL) < 0) {
                /* the client went away: nothing to do */
        }
}

/* One QMP client: true when it asked to quit. */
static bool fake_serve(int conn, const char *report) {
        char buf[4096];
        size_t len = 0;
        bool caps = false;
        fake_send(conn, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\r\n");
        for (;;) {
                ssize_t n = recv(conn, buf + len, sizeof buf - 1 - len, 0);
                if (n <= 0)
                        return false;
                len += (size_t)n;
                buf[len] = '\0';
                if (!caps && strstr(buf, "\"qmp_capabilities\"")) {
                        caps = true;
                        fake_send(conn, "{\"return\": {}, \"id\": 1}\r\n");
                }
                if (caps && strstr(buf, "\"quit\"")) {
                        fake_record(report, "quit");
                        fake_send(conn, "{\"return\": {}, \"id\": 2}\r\n");
                        return true;
                }
        }
}

static int fake_main(void *userdata) {
        const struct fake_supervisor *f = userdata;
        struct vm_paths p;
        char err[256];
        sigset_t mask;
        int listen_fd = -1;

        prctl(PR_SET_NAME, "vrt-launch");
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
        if (sfd < 0 || vm_paths_init(&p, f->root, f->runtime_dir, f->name) < 0 || runtime_lock(&p, err, sizeof err) < 0)
                return 1;
        if ((f->flags & FAKE_SERVE_QMP) && (listen_fd = runtime_listen(p.monitor_sock, 0600, (gid_t)-1, err, sizeof err)) < 0)
                return 1;
        if (runtime_write_pid(p.pid_file, getpid()) < 0 || write(f->ready_fd, "x", 1) != 1)
                return 1;
        for (;;) {
                struct pollfd pfd[2] = { { .fd = sfd, .events = POLLIN }, { .fd = listen_fd, .events = POLLIN } };
                if (poll(pfd, 2, -1) < 0 && errno != EINTR)
                        return 1;
                if (pfd[0].revents & POLLIN) {
                        struct signalfd_siginfo si;
                        char line[64];
                        if (read(sfd, &si, sizeof si) != sizeof si)
                                return 1;
                        snprintf(line, sizeof line, "term code=%d value=%d", si.ssi_code, si.ssi_int);
                        fake_record(f->report, line);
                        if (!(f->flags & FAKE_IGNORE_TERM))
                                break;
                }
                if (pfd[1].revents & POLLIN) {
                        int conn = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
                        bool quit = conn >= 0 && fake_serve(conn, f->report);
                        if (conn >= 0)
                                close(conn);
                        if (quit)
                                break;
                }
        }
        runtime_remove(&p);
        return 0;
}

/* Starts one and waits until it holds the lock. Returns its pid; *ret_pidfd
 * gets a pidfd of it. */
static pid_t fake_supervisor_start(const char *root, const char *runtime_dir, const char *name, const char *report,
                                   int flags, int *ret_pidfd) {
        int ready[2];
        char c, err[256];
        if (pipe2(ready, O_CLOEXEC) < 0)
                return -1;
        struct fake_supervisor f = { root, runtime_dir, name, report, flags, ready[1] };
        struct spawn_options o = { .fn = fake_main, .userdata = &f, .close_fds = &ready[0], .n_close_fds = 1 };
        struct spawn_result res;
        if (spawn_process(&o, &res, err, sizeof err) < 0)
                return -1;
        close(ready[1]);
        ssize_t n = read(ready[0], &c, 1);
        close(ready[0]);
        if (n != 1)
                return -1;
        *ret_pidfd = res.pidfd;
        return res.pid;
}
