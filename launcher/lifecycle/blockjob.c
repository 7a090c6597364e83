#include "launcher/lifecycle/blockjob.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "qmp/qmp.h"

#define POLL_MS 100

int blockjob_call(struct qmp *q, const char *cmd, struct json_object *args, struct json_object **ret, char *err,
                  size_t errlen) {
        char msg[512] = "";
        int r = qmp_execute(q, cmd, args, BLOCKJOB_QMP_TIMEOUT_MS, ret, msg, sizeof msg);
        json_object_put(args);
        if (r < 0)
                snprintf(err, errlen, "QMP %s: %s", cmd, msg[0] ? msg : strerror(-r));
        return r;
}

struct json_object *blockjob_str(struct json_object *o, const char *key, const char *value) {
        if (o)
                json_object_object_add(o, key, json_object_new_string(value));
        return o;
}

static void sleep_ms(int ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
}

static struct json_object *id_arg(const char *id) {
        return blockjob_str(json_object_new_object(), "id", id);
}

/* The job's entry of query-jobs into *ret_jobs (owned by the caller) and
 * *ret_job (NULL when there is none). */
static int find_job(struct qmp *q, const char *id, struct json_object **ret_jobs, struct json_object **ret_job, char *err,
                    size_t errlen) {
        struct json_object *jobs = NULL;
        int r = blockjob_call(q, "query-jobs", NULL, &jobs, err, errlen);
        if (r < 0)
                return r;
        *ret_job = NULL;
        for (size_t i = 0; json_object_is_type(jobs, json_type_array) && i < json_object_array_length(jobs); i++) {
                struct json_object *e = json_object_array_get_idx(jobs, i), *v = NULL;
                if (json_object_object_get_ex(e, "id", &v) && strcmp(json_object_get_string(v), id) == 0)
                        *ret_job = e;
        }
        *ret_jobs = jobs;
        return 0;
}

static const char *field(struct json_object *job, const char *key) {
        struct json_object *v = NULL;
        return json_object_object_get_ex(job, key, &v) ? json_object_get_string(v) : NULL;
}

int blockjob_wait(struct qmp *q, const char *id, blockjob_progress_fn progress, void *userdata,
                  volatile sig_atomic_t *cancel, char *err, size_t errlen) {
        bool cancel_sent = false;
        char msg[256];
        for (;;) {
                struct json_object *jobs = NULL, *job = NULL, *cur = NULL, *tot = NULL;
                int r = find_job(q, id, &jobs, &job, err, errlen);
                if (r < 0)
                        return r;
                if (!job) {
                        json_object_put(jobs);
                        snprintf(err, errlen, "QMP: the job %s vanished", id);
                        return -EIO;
                }
                const char *status = field(job, "status");
                if (status && strcmp(status, "concluded") == 0) {
                        const char *e = field(job, "error");
                        r = 0;
                        if (e) {
                                snprintf(err, errlen, "%s: %s", id, e);
                                r = cancel_sent ? -ECANCELED : -EIO;
                        }
                        json_object_put(jobs);
                        blockjob_call(q, "job-dismiss", id_arg(id), NULL, msg, sizeof msg);
                        return r;
                }
                json_object_object_get_ex(job, "current-progress", &cur);
                json_object_object_get_ex(job, "total-progress", &tot);
                int64_t c = cur ? json_object_get_int64(cur) : 0, t = tot ? json_object_get_int64(tot) : 0;
                json_object_put(jobs);
                bool stop = cancel && *cancel;
                if (!stop && progress && t > 0 && c >= 0)
                        stop = progress((uint64_t)c, (uint64_t)t, userdata) != 0;
                if (stop && !cancel_sent) {
                        cancel_sent = true;
                        blockjob_call(q, "job-cancel", id_arg(id), NULL, msg, sizeof msg);
                }
                sleep_ms(POLL_MS);
        }
}

int blockjob_reap(struct qmp *q, const char *id, int timeout_ms, char *err, size_t errlen) {
        char msg[256];
        bool cancel_sent = false;
        for (int waited = 0;; waited += POLL_MS) {
                struct json_object *jobs = NULL, *job = NULL;
                int r = find_job(q, id, &jobs, &job, err, errlen);
                if (r < 0)
                        return r;
                const char *status = job ? field(job, "status") : NULL;
                bool concluded = status && strcmp(status, "concluded") == 0;
                json_object_put(jobs);
                if (!job)
                        return cancel_sent ? 1 : 0;
                if (concluded) {
                        r = blockjob_call(q, "job-dismiss", id_arg(id), NULL, err, errlen);
                        return r < 0 ? r : 1;
                }
                if (waited >= timeout_ms) {
                        snprintf(err, errlen, "the stale job %s (status %s) does not end", id, status ? status : "?");
                        return -ETIMEDOUT;
                }
                if (!cancel_sent) {
                        cancel_sent = true;
                        r = blockjob_call(q, "job-cancel", id_arg(id), NULL, msg, sizeof msg);
                        (void)r;        /* it may have concluded meanwhile; the next poll tells */
                }
                sleep_ms(POLL_MS);
        }
}

/* qom-get of the device's "drive" names the node on top of its block graph
 * in a short reply; query-block describes every layer of every chain, which
 * costs QEMU milliseconds per layer. */
int blockjob_device_node(struct qmp *q, const char *qdev_id, char *buf, size_t len, char *err, size_t errlen) {
        struct json_object *args = json_object_new_object(), *node = NULL;
        char path[160];
        snprintf(path, sizeof path, "/machine/peripheral/%s", qdev_id);
        blockjob_str(blockjob_str(args, "path", path), "property", "drive");
        int r = blockjob_call(q, "qom-get", args, &node, err, errlen);
        if (r == 0 && (!json_object_is_type(node, json_type_string) || !*json_object_get_string(node)))
                r = -ENOENT;
        if (r == 0)
                snprintf(buf, len, "%s", json_object_get_string(node));
        else if (r == -EREMOTEIO || r == -ENOENT) {
                snprintf(err, errlen, "QEMU has no disk device %s with a medium", qdev_id);
                r = -ENOENT;
        }
        json_object_put(node);
        return r;
}

int blockjob_wait_sock(const char *sock, const char *id, blockjob_progress_fn progress, void *userdata,
                       volatile sig_atomic_t *cancel, char *err, size_t errlen) {
        bool cancel_sent = false;
        char msg[256];
        for (;;) {
                struct qmp *q = NULL;
                struct json_object *jobs = NULL, *job = NULL, *cur = NULL, *tot = NULL;
                int r = qmp_connect_unix(sock, 2000, &q, msg, sizeof msg);
                if (r == 0)
                        r = qmp_handshake(q, BLOCKJOB_QMP_TIMEOUT_MS, msg, sizeof msg);
                if (r < 0) {
                        snprintf(err, errlen, "QMP %s: %s", sock, msg);
                        qmp_free(q);
                        return r;
                }
                r = find_job(q, id, &jobs, &job, err, errlen);
                if (r < 0) {
                        qmp_free(q);
                        return r;
                }
                if (!job) {
                        json_object_put(jobs);
                        qmp_free(q);
                        snprintf(err, errlen, "QMP: the job %s vanished", id);
                        return -EIO;
                }
                const char *status = field(job, "status");
                if (status && strcmp(status, "concluded") == 0) {
                        const char *e = field(job, "error");
                        r = 0;
                        if (e) {
                                snprintf(err, errlen, "%s: %s", id, e);
                                r = cancel_sent ? -ECANCELED : -EIO;
                        }
                        json_object_put(jobs);
                        blockjob_call(q, "job-dismiss", id_arg(id), NULL, msg, sizeof msg);
                        qmp_free(q);
                        return r;
                }
                json_object_object_get_ex(job, "current-progress", &cur);
                json_object_object_get_ex(job, "total-progress", &tot);
                int64_t c = cur ? json_object_get_int64(cur) : 0, t = tot ? json_object_get_int64(tot) : 0;
                json_object_put(jobs);
                bool stop = cancel && *cancel;
                if (!stop && progress && t > 0 && c >= 0)
                        stop = progress((uint64_t)c, (uint64_t)t, userdata) != 0;
                if (stop && !cancel_sent) {
                        cancel_sent = true;
                        blockjob_call(q, "job-cancel", id_arg(id), NULL, msg, sizeof msg);
                }
                qmp_free(q);
                sleep_ms(2 * POLL_MS);
        }
}
