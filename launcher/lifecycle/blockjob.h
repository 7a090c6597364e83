/* blockjob: the QMP plumbing of a block job that copies a running VM's disk
 * (`vrt export` of a running VM, `vrt backup`): one command with its error
 * text, polling query-jobs until a job concludes (with progress and
 * cancel), reaping a job whose owner died, and finding the node the guest
 * writes to.
 *
 * Jobs are started with auto-dismiss=false, so a job that concludes while
 * nobody watches stays in query-jobs until it is dismissed: its owner (or
 * the next one, see blockjob_reap()) learns how it ended. Every wait is
 * bounded by the QMP timeout of each call; blockjob_wait() itself waits as
 * long as the job runs. */
#pragma once

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

struct qmp;
struct json_object;

#define BLOCKJOB_QMP_TIMEOUT_MS 10000

/* Runs cmd with args (consumed, may be NULL). Returns 0 and *ret (may be
 * NULL) or a negative errno with "QMP CMD: QEMU's error" in err. */
int blockjob_call(struct qmp *q, const char *cmd, struct json_object *args, struct json_object **ret, char *err,
                  size_t errlen);

/* o with key set to the string value; o may be NULL (then NULL). */
struct json_object *blockjob_str(struct json_object *o, const char *key, const char *value);

/* Called with the job's current and total progress (QEMU's units: bytes
 * for backup jobs) after every poll. Non-zero: cancel the job. */
typedef int (*blockjob_progress_fn)(uint64_t current, uint64_t total, void *userdata);

/* Polls the job id every 100 ms until it concludes, then dismisses it.
 * progress may be NULL; *cancel (may be NULL) set non-zero cancels the job
 * (job-cancel, then the wait goes on until QEMU concludes it). Returns 0
 * when it concluded without error, -ECANCELED after a cancel, -EIO with
 * "JOB: QEMU's error" in err, or another negative errno from QMP. */
int blockjob_wait(struct qmp *q, const char *id, blockjob_progress_fn progress, void *userdata,
                  volatile sig_atomic_t *cancel, char *err, size_t errlen);

/* A job id left by a process that died while it ran (the caller holds the
 * lock that job's owner held): cancels it unless concluded, waits until it
 * concludes (at most timeout_ms) and dismisses it. Returns 1 when there
 * was one, 0 when not, or a negative errno with a message. */
int blockjob_reap(struct qmp *q, const char *id, int timeout_ms, char *err, size_t errlen);

/* The node-name the device qdev_id (e.g. "vda") writes to now: "disk0" as
 * started, or the top of a live snapshot. Returns 0 and the name in buf,
 * -ENOENT when QEMU has no such device with a medium, or another negative
 * errno with a message. */
int blockjob_device_node(struct qmp *q, const char *qdev_id, char *buf, size_t len, char *err, size_t errlen);

/* As blockjob_wait(), but each poll connects to the QMP socket sock,
 * queries and disconnects, so that the monitor (one client at a time) is
 * free for `vrt qmp` and scripts while a long job runs. */
int blockjob_wait_sock(const char *sock, const char *id, blockjob_progress_fn progress, void *userdata,
                       volatile sig_atomic_t *cancel, char *err, size_t errlen);
