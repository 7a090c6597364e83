/* spool: the seed's request directories under the vrt root.
 *
 *   inst/NAME.properties  create a VM from it; the file moves to inst/done/
 *                        or inst/failed/ (with FILE.error holding the reason)
 *   start/NAME            start NAME (not if vmstate_check_startable() refuses:
 *                        destroyed, or its first boot unfinished or failed)
 *   stop/NAME             stop NAME gracefully ("force=yes" in it: at once)
 *   destroy/NAME          destroy NAME (stop, delete its disk, mark DESTROYED)
 *
 * A request is removed before it is acted on, and only the process whose
 * removal succeeded acts: unlink() (rename() for inst/) succeeds for
 * exactly one of several overlapping runs, on one host or several sharing
 * the root over NFS. A start run also holds an flock() on ROOT/start.lock,
 * as the seed's cron job did; a run that finds it held skips start/ and
 * says so in start.log. Names that are not valid VM names, unknown VMs and
 * directories are logged and removed, never run. With several hosts on
 * one root, a host claims only the requests that are its own (placement.h:
 * host= in a start request, room for the VM, stops and destroys of the VMs
 * it runs); the others stay for the other hosts. Hidden entries (".x",
 * NFS's ".nfsXXXX") are left alone. Every action and its result is one
 * timestamped line in log/create.log, start.log, stop.log or destroy.log. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "launcher/lifecycle/service.h"

/* In processing order. */
enum spool_queue {
        SPOOL_INST,
        SPOOL_DESTROY,
        SPOOL_STOP,
        SPOOL_START,
        _SPOOL_QUEUE_MAX,
        _SPOOL_QUEUE_INVALID = -1,
};

/* "inst", "destroy", "stop", "start": the directory names. */
const char *spool_queue_to_string(enum spool_queue q);
enum spool_queue spool_queue_from_string(const char *s);

struct spool_handlers {
        void *userdata;
        /* Creates a VM from the request file at path. Returns 0 and the new
         * VM's name (a new string), or a negative errno with err. */
        int (*instantiate)(void *userdata, const char *path, char **ret_name, char *err, size_t errlen);
        /* Start resp. stop the names (in parallel), one result per name;
         * return as service_start(). */
        int (*start)(void *userdata, char *const *names, size_t n, struct service_result *results);
        int (*stop)(void *userdata, char *const *names, size_t n, bool force, struct service_result *results);
        /* Destroys one VM. Returns 0 or a negative errno, with one line in
         * result->message either way. */
        int (*destroy)(void *userdata, const char *name, struct service_result *result);
        /* Receives every line that goes to a log, for the CLI to print. May be NULL. */
        void (*report)(void *userdata, enum spool_queue q, bool failure, const char *line);
        /* true: leave ROOT/migrate/ alone (unit tests with fake handlers). */
        bool no_migrate;
};

struct spool {
        const char *root;
        const char *runtime_dir;
        const struct spool_handlers *h;
        bool quiet_skip;        /* a held start.lock is not logged (watch mode retries) */
};

struct spool_stats {
        unsigned done;          /* requests carried out (or already true: running, not running) */
        unsigned failed;        /* requests that failed */
        unsigned dropped;       /* malformed or unknown entries removed unprocessed */
        bool start_skipped;     /* start.lock was held by another run */
        unsigned left;          /* requests left for another host (placement.h) */
};

/* Makes inst/ destroy/ stop/ start/ real directories owned by root: mode
 * 0755, or with an operator group (vrt.conf group=, gid >= 0) root:GROUP
 * 2775, so that its members can drop requests. Never follows a symlink
 * (one in their place is an error). Returns 0 or a negative errno with
 * err naming the directory. */
int spool_dirs_prepare(const char *root, long gid, char *err, size_t errlen);

/* True when root looks mounted and set up: ROOT/vrt.conf or ROOT/vm exists. */
bool spool_root_ready(const char *root);

/* Waits up to wait_s seconds for spool_root_ready() (an NFS root may be
 * mounted late at boot). Returns 0 or -ETIMEDOUT. */
int spool_wait_root(const char *root, unsigned wait_s);

/* Processes one queue; stats are added to. Returns 0, or a negative errno
 * when the queue directory cannot be read (a missing one is empty). */
int spool_run_queue(const struct spool *s, enum spool_queue q, struct spool_stats *stats);

/* Processes all queues in order. Returns 0, -ENOENT when the root is not
 * ready, or the first queue's error (the other queues still run). */
int spool_run(const struct spool *s, struct spool_stats *stats);

/* Keeps processing: every queue at once, then each queue within a moment
 * of a new entry (inotify), and all queues every rescan_s seconds for
 * changes inotify cannot see (other NFS clients). Queues run in worker
 * processes, at most one per queue, so a long stop does not delay a start.
 * Returns 0 after SIGTERM or SIGINT (when the workers have finished), or a
 * negative errno if watching cannot be set up. */
int spool_watch(const struct spool *s, unsigned rescan_s);

/* Starts the VMs named in ROOT/autostart/ (files or symlinks named after
 * the VM, a ".sh" suffix tolerated, as the seed's start-script links) and
 * those with autostart=yes, skipping destroyed and unknown ones. Logs to
 * start.log with an "autostart:" prefix. Returns 0 or a negative errno. */
int spool_autostart(const struct spool *s, struct spool_stats *stats);
