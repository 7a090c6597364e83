#include "launcher/lifecycle/stop.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "launcher/core/config.h"
#include "launcher/core/util.h"
#include "launcher/core/vmstate.h"
#include "qmp/qmp.h"

#define STOP_QMP_CONNECT_MS 1000
#define STOP_QMP_TIMEOUT_MS 5000
/* One poll() waits at most this long; a longer shutdown timeout takes several. */
#define STOP_POLL_MAX_MS 1000000

unsigned stop_shutdown_timeout(const char *root, const struct vm_paths *p, const char *name) {
        struct host_config *host = NULL;
        struct instance *inst = NULL;
        char err[1024];
        unsigned t = CONFIG_DEFAULT_SHUTDOWN_TIMEOUT_S;
        char *conf = paths_join(root, "vrt.conf");
        if (conf && host_config_load(conf, &host, err, sizeof err) == 0)
                t = host->shutdown_timeout;
        if (instance_load(p->instance, name, NULL, &inst, err, sizeof err) == 0 && inst->shutdown_timeout)
                t = inst->shutdown_timeout;
        instance_free(inst);
        host_config_free(host);
        free(conf);
        return t;
}

/* SIGTERM with a value: vrt-launch takes a value > 0 as the shutdown
 * timeout to use. */
static int queue_sigterm(int pidfd, unsigned value) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        si.si_signo = SIGTERM;
        si.si_code = SI_QUEUE;
        si.si_pid = getpid();
        si.si_uid = getuid();
        si.si_value.sival_int = (int)value;
        return syscall(SYS_pidfd_send_signal, pidfd, SIGTERM, &si, 0U) < 0 ? -errno : 0;
}

static int qmp_quit(const char *sock) {
        struct qmp *q = NULL;
        char err[512];
        int r = qmp_connect_unix(sock, STOP_QMP_CONNECT_MS, &q, err, sizeof err);
        if (r == 0)
                r = qmp_handshake(q, STOP_QMP_TIMEOUT_MS, err, sizeof err);
        if (r == 0)
                r = qmp_execute(q, "quit", NULL, STOP_QMP_TIMEOUT_MS, NULL, err, sizeof err);
        qmp_free(q);
        /* QEMU may close the socket before its reply makes it out. */
        return r == -ECONNRESET ? 0 : r;
}

int stop_begin(const char *root, const struct vm_paths *p, const char *name, const struct stop_request *req,
               struct stop_job *ret, char *err, size_t errlen) {
        struct stop_job j = { .pidfd = -1 };
        struct vm_running run;
        int r = vmstate_running(p, req->pid_wait_ms, VMSTATE_PIN, &run);
        if (r <= 0) {
                if (r < 0)
                        snprintf(err, errlen, "cannot tell whether %s runs: %s", name, strerror(-r));
                return r;
        }
        if (run.pidfd < 0) {
                snprintf(err, errlen, "running, but its supervisor pid is unknown (%s)", p->pid_file);
                return -EAGAIN;
        }
        j.pid = run.pid;
        j.pidfd = run.pidfd;
        if (req->force) {
                r = qmp_quit(p->monitor_sock);
                if (r < 0) {
                        j.quit_failed = true;
                        r = queue_sigterm(j.pidfd, 1);
                }
                j.bound_s = req->wait_s ? req->wait_s : 1 + STOP_ESCALATION_S;
        } else {
                r = queue_sigterm(j.pidfd, req->shutdown_timeout);
                unsigned t = req->shutdown_timeout ? req->shutdown_timeout : stop_shutdown_timeout(root, p, name);
                j.bound_s = req->wait_s ? req->wait_s : t + STOP_ESCALATION_S;
        }
        if (r < 0) {
                stop_job_done(&j);
                if (r == -ESRCH)
                        return 0;       /* ended meanwhile */
                snprintf(err, errlen, "cannot signal supervisor pid %d: %s", (int)run.pid, strerror(-r));
                return r;
        }
        j.deadline = now_ms() + (int64_t)j.bound_s * 1000;
        *ret = j;
        return 1;
}

int stop_wait(struct stop_job *j, char *err, size_t errlen) {
        while (j->pidfd >= 0) {
                int64_t left = j->deadline - now_ms();
                if (left <= 0) {
                        snprintf(err, errlen, "still stopping after %us (supervisor pid %d)", j->bound_s, (int)j->pid);
                        return -ETIMEDOUT;
                }
                struct pollfd pfd = { .fd = j->pidfd, .events = POLLIN };
                int n = poll(&pfd, 1, (int)(left > STOP_POLL_MAX_MS ? STOP_POLL_MAX_MS : left));
                if (n < 0 && errno != EINTR) {
                        int r = -errno;
                        snprintf(err, errlen, "poll: %s", strerror(-r));
                        return r;
                }
                if (n > 0)
                        stop_job_done(j);
        }
        return 0;
}

void stop_job_done(struct stop_job *j) {
        close_fd(&j->pidfd);
}
