/* service: starting and stopping VM supervisors. With systemd as PID 1 a VM
 * is the unit vrt@NAME.service and `systemctl start` runs it; elsewhere
 * vrt-launch runs detached (own session, output appended to
 * vm/NAME/log/launch.log) and reports READY=1 over a private notify socket,
 * exactly as it would to systemd. Stopping is the same either way: a
 * queued SIGTERM to the supervisor (carrying the shutdown timeout), whose
 * own escalation does the rest, then a pidfd wait — pidfds work for
 * processes that are not our children, and never depend on the reaper.
 * Several VMs are handled in parallel; every VM gets its own result.
 * The stop itself is lifecycle/stop.h's. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum service_manager {
        SERVICE_DETACHED,
        SERVICE_SYSTEMD,
        _SERVICE_MANAGER_MAX,
        _SERVICE_MANAGER_INVALID = -1,
};

const char *service_manager_to_string(enum service_manager m);
enum service_manager service_manager_from_string(const char *s);

enum service_outcome {
        SERVICE_DONE,           /* started, resp. stopped */
        SERVICE_ALREADY,        /* was running already, resp. was not running */
        SERVICE_INVALID,        /* bad name, unknown or destroyed VM: nothing tried */
        SERVICE_FAILED,
        SERVICE_ELSEWHERE,      /* start: the VM runs on another host (its lease), not started here */
};

struct service_result {
        enum service_outcome outcome;
        pid_t pid;              /* the supervisor's pid when known, else 0 */
        char message[512];      /* one phrase for "NAME: <message>" */
};

/* A stop handed to another host waits this much longer than a local one:
 * that host's spool rescans the shared root every 60 s by default. */
#define SERVICE_HANDOVER_SLACK_S 90

/* Seconds `vrt start` waits for a VM to report running, by default. */
#define SERVICE_START_WAIT_S 60

struct service_options {
        const char *root;
        const char *runtime_dir;
        enum service_manager manager;
        const char *launcher;   /* vrt-launch for SERVICE_DETACHED; NULL: service_find_launcher() */
        unsigned wait_s;        /* start: bound to reach running (0: SERVICE_START_WAIT_S);
                                 * stop: bound to wait for the end (0: derived from the timeout) */
        unsigned shutdown_timeout;      /* stop: > 0 is sent along with SIGTERM */
        bool force;             /* stop: power off at once (QMP quit) */
};

/* True when systemd is PID 1: /run/systemd/system exists and /proc/1/exe
 * is a systemd binary. */
bool service_systemd_booted(void);

/* Parses the value of `systemctl show -p Environment --value` (assignments
 * separated by blanks, double-quoted when they contain blanks) and returns
 * the values of VRT_ROOT and VRT_RUNTIME_DIR as new strings, or NULL for
 * one that is absent. Returns 0 or -ENOMEM / -EINVAL (unbalanced quotes). */
int service_parse_unit_environment(const char *text, char **ret_root, char **ret_runtime);

/* Picks how VMs are started. $VRT_SERVICE_MANAGER=systemd|detached forces
 * one; unset or "auto" means systemd when it is PID 1 and vrt@.service
 * runs VMs of this root and runtime dir (probed with `systemctl show` on
 * vrt@PROBE_NAME.service), else detached. When auto falls back to detached
 * on a systemd host, note gets one line saying why (else it is emptied).
 * Returns 0, or -EINVAL for a bad $VRT_SERVICE_MANAGER (message in note). */
int service_manager_detect(const char *root, const char *runtime_dir, const char *probe_name,
                           enum service_manager *ret, char *note, size_t notelen);

/* `systemctl --no-block start vrt@NAME.service`: queued, not waited for
 * (an incoming migration's unit reports READY=1 only once the guest runs
 * here). Returns 0, or a negative errno with one line in err. */
int service_start_unit_nowait(const char *name, char *err, size_t errlen);

/* Finds vrt-launch: next to the running executable (/proc/self/exe), else
 * in $PATH. Returns 0 and a new string, or -ENOENT. */
int service_find_launcher(char **ret);

/* Starts the named VMs in parallel and fills results[i] for names[i].
 * A VM that already runs is SERVICE_ALREADY; one that may not start
 * (vmstate_check_startable(): a bad name, no such VM, destroyed, its first
 * boot unfinished or failed) is SERVICE_INVALID with vmstate's message.
 * Returns the number of VMs that are SERVICE_INVALID or SERVICE_FAILED
 * (0: all are running now), or a negative errno if nothing could be tried. */
int service_start(const struct service_options *o, char *const *names, size_t n, struct service_result *results);

/* Stops the named VMs in parallel (gracefully, or at once with o->force)
 * and waits until their supervisors are gone. A VM that is not running
 * is SERVICE_ALREADY. A VM that runs on another host (its lease) is handed
 * to that host: ROOT/stop/NAME is written (with "force=yes" for a forced
 * stop), that host's spool carries it out at its next scan, and the wait
 * is for the lease to be released, bounded as for a local stop plus
 * SERVICE_HANDOVER_SLACK_S for the other host's spool to notice it.
 * Returns as service_start(). */
int service_stop(const struct service_options *o, char *const *names, size_t n, struct service_result *results);

/* The last line vrt-launch pid wrote to log_path, without its timestamp
 * and "vrt-launch[PID]: " prefix, into buf; pid 0 takes any writer's. Only
 * the file's last 8 KiB after offset from are looked at. Returns 0, or
 * -ENOENT when there is no such line. */
int service_launch_log_last(const char *log_path, pid_t pid, off_t from, char *buf, size_t len);
