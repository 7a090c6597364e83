/* vmstate: the one place that answers questions about a VM's state.
 *
 * Across runs, a VM's directory records it with markers: DESTROYED (written
 * by destroy; the VM never starts again), and the markers its first boot
 * leaves, CREATED and INIT-FAILED. A VM without init= is created as soon as
 * its files exist; one with init= is created once its init script reported
 * success, and has failed while INIT-FAILED exists. With init= and neither
 * marker, the first boot has not finished (it runs right now, or the run
 * was interrupted).
 *
 * Whether a VM runs is its runtime lock (see runtime.h): a supervisor holds
 * it for its whole life. vmstate_running() is the one function that turns
 * the lock and the pid file into "running, supervisor pid N".
 * vmstate_check_startable() is the one answer, with the one message, to
 * "may NAME start?" for `vrt start`, the spool and autostart. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "launcher/core/lease.h"
#include "launcher/core/paths.h"

#define FIRSTBOOT_CREATED_FILE "CREATED"
#define FIRSTBOOT_FAILED_FILE "INIT-FAILED"
#define VMSTATE_DESTROYED_FILE "DESTROYED"

enum firstboot_state {
        FIRSTBOOT_CREATED,      /* "created" */
        FIRSTBOOT_INIT_FAILED,  /* "init-failed" */
        FIRSTBOOT_PENDING,      /* "init-pending": init= set, no marker yet */
        _FIRSTBOOT_STATE_MAX,
        _FIRSTBOOT_STATE_INVALID = -1,
};

const char *firstboot_state_to_string(enum firstboot_state s);
enum firstboot_state firstboot_state_from_string(const char *s);

/* The state of the VM in vm_dir, from its markers; has_init: its
 * instance.properties has init=. Never fails: a marker that cannot be
 * stat()ed counts as absent. */
enum firstboot_state firstboot_state_of(const char *vm_dir, bool has_init);

/* Whether vm_dir/FILE exists (lstat: a symlink counts, never followed). */
bool vmstate_has_marker(const char *vm_dir, const char *file);

/* Whether the VM in vm_dir is destroyed (its DESTROYED marker exists). */
bool vmstate_is_destroyed(const char *vm_dir);

struct vm_running {
        pid_t pid;              /* the supervisor; 0: running, but its pid is not known (yet) */
        int pidfd;              /* with VMSTATE_PIN: a pidfd of exactly that supervisor, else -1 */
        time_t since;           /* when it started (its pid file's mtime), 0: unknown */
};

enum {
        /* Pin the supervisor: open a pidfd and check, with it held, that the
         * lock is still held, the pid file still names that pid and the
         * process is a vrt-launch, so that the pidfd cannot refer to a
         * process that reuses the pid of a supervisor that is gone. */
        VMSTATE_PIN = 1 << 0,
};

/* Does a supervisor run the VM, and which? The lock is taken before the pid
 * file is written (and a destroy, cleanup or disk reset holds it a moment
 * without one), so a supervisor's pid is waited for up to wait_ms. Returns
 * 1 (running) with *ret filled, pid 0 when no pid was found in time; 0 (not
 * running; *ret untouched); or a negative errno. */
int vmstate_running(const struct vm_paths *p, unsigned wait_ms, int flags, struct vm_running *ret);

/* Is NAME a valid name of a VM that exists (has instance.properties)?
 * Returns 0, or -EINVAL (bad name) or -ENOENT (no such VM) with the one
 * message for it in err. */
int vmstate_check_exists(const char *root, const char *runtime_dir, const char *name, char *err, size_t errlen);

/* May NAME start? It must be a valid name of a VM that exists, is not
 * destroyed, and whose first boot (init=) is neither unfinished nor failed.
 * Running is not looked at (that is "already running", not a refusal).
 * Returns 0, or a negative errno with the one message for it in err (a
 * phrase for "NAME: <message>"): -EINVAL a bad name, -ENOENT no such VM
 * (no instance.properties), -ESTALE destroyed, -EAGAIN the first boot has
 * not finished, -ENOTRECOVERABLE the first boot failed. An
 * instance.properties that does not parse is not refused here: vrt-launch
 * reports it with file and line. */
int vmstate_check_startable(const char *root, const char *runtime_dir, const char *name, char *err, size_t errlen);

/* True when the VM's instance.properties says managed_by=pacemaker: a
 * cluster resource (ocf:vrt:vm) then decides where and whether it runs,
 * and the spool and autostart leave it alone. False when it cannot be read. */
bool vmstate_cluster_managed(const char *root, const char *runtime_dir, const char *name);

/* Does the VM in vm_dir run on another host? Its lease (see lease.h) is
 * held and names a host other than this one (lease_host_name()). Returns 1
 * with *ret filled, 0 when not (no lease held, held by this host, or the
 * holder has not written its name yet), or a negative errno. */
int vmstate_elsewhere(const char *vm_dir, struct lease_holder *ret);

/* "runs on host H (pid P, since T)": the one phrase for a VM that runs
 * elsewhere, for "NAME: <phrase>; not started" and the like. */
void vmstate_describe_elsewhere(const struct lease_holder *h, char *buf, size_t len);

/* The runtime lock is local to one host, but the root may be shared: a
 * QEMU on another host sees no lock here. Its image locks (file-posix
 * locks bytes 100..299 of every image it has open, with OFD locks, which
 * NFS carries to the server) are visible everywhere. Returns the path of
 * the VM's disk that some QEMU holds, or NULL (also when locks cannot be
 * tested). */
const char *vmstate_disk_in_use(const struct vm_paths *p);
