/* stop: the one graceful or forced stop of a running VM from outside it,
 * used by `vrt stop`, the spool's stop/ and destroy.
 *
 * The supervisor owns the escalation — ACPI power button (QMP
 * system_powerdown), the shutdown timeout, the guest agent's
 * guest-shutdown when an agent answers, QMP quit, SIGTERM to QEMU,
 * SIGKILL, each bounded (see vm/supervisor.h) — so stopping a VM means
 * asking the very supervisor that holds the VM's lock, through a pidfd
 * (never a bare pid, see vmstate_running()), and waiting for it to end:
 *
 *   graceful  a SIGTERM queued with the shutdown timeout to use as its
 *             value (0: the configured one);
 *   force     QMP quit on monitor.sock, so QEMU ends at once; when the
 *             monitor is busy or wedged, the SIGTERM with a one-second
 *             timeout instead, and the supervisor forces QEMU off itself.
 *
 * The wait is bounded by the shutdown timeout the supervisor uses plus
 * STOP_ESCALATION_S for its escalation. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "launcher/core/paths.h"

/* vrt-launch's escalation after the shutdown timeout: the guest agent's
 * guest-shutdown, quit, SIGTERM, SIGKILL (2 + 10 + 10 + 5 + 5 s), plus
 * slack for a loaded host. */
#define STOP_ESCALATION_S 45
/* How long a stop waits for the pid of a supervisor that is starting. */
#define STOP_PID_WAIT_MS 3000

/* The shutdown timeout the supervisor of the VM uses: instance.properties'
 * shutdown_timeout=, else vrt.conf's, else the built-in default. A missing,
 * unreadable or broken file counts as one that sets nothing: stopping must
 * not depend on a valid configuration. */
unsigned stop_shutdown_timeout(const char *root, const struct vm_paths *p, const char *name);

struct stop_request {
        bool force;
        unsigned shutdown_timeout;      /* graceful: > 0 is sent along, else the configured one */
        unsigned wait_s;                /* bound of the wait; 0: the timeout plus STOP_ESCALATION_S */
        unsigned pid_wait_ms;           /* see vmstate_running() */
};

struct stop_job {
        pid_t pid;                      /* the supervisor */
        int pidfd;                      /* of exactly that supervisor; -1 when done */
        unsigned bound_s;               /* how long stop_wait() waits in all */
        int64_t deadline;               /* now_ms() at which it gives up */
        bool quit_failed;               /* force: QMP quit failed, the supervisor forces it */
};

/* Asks the supervisor of the VM at p to stop. Returns 1 when asked (*ret
 * filled, its pidfd open: wait with stop_wait(), release with
 * stop_job_done()); 0 when the VM does not run (or ended meanwhile); or a
 * negative errno with one line in err: -EAGAIN the lock is held but no
 * supervisor was identified within pid_wait_ms (one is starting, or a
 * destroy holds the lock), another for a signal that could not be sent. */
int stop_begin(const char *root, const struct vm_paths *p, const char *name, const struct stop_request *req,
               struct stop_job *ret, char *err, size_t errlen);

/* Waits until the supervisor has ended or j->deadline passed. Returns 0
 * (ended; j's pidfd is closed), -ETIMEDOUT (still running, message in
 * err), or another negative errno. */
int stop_wait(struct stop_job *j, char *err, size_t errlen);

/* Closes j's pidfd; idempotent. */
void stop_job_done(struct stop_job *j);
