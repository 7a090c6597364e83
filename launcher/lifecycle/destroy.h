/* destroy: the end of a VM's life, in the seed's two steps.
 *
 * destroy_vm(): stop the VM if it runs, write the DESTROYED marker, delete
 * its disk (hdd.ovl / hdd.img); the directory with instance.properties and
 * logs stays. Idempotent, and safe when several run at once (on one host
 * or several sharing the root): the VM's runtime lock is held while the
 * marker is written and the disk deleted, so no start slips in between,
 * and every step tolerates its work being done already. That lock is
 * local to a host; a disk that a QEMU holds (its image locks reach across
 * NFS) is never deleted, so a VM running on another host sharing the root
 * is not destroyed under it.
 *
 * The stop is lifecycle/stop.h's, bounded by the shutdown timeout plus
 * STOP_ESCALATION_S.
 *
 * destroy_cleanup(): remove the directories of destroyed VMs that do not
 * run. A directory is first renamed to vm/.NAME.removing (one rename wins
 * among concurrent cleanups), then deleted, so a half-deleted VM is never
 * visible under its name. Names and MACs stay in the registry. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct destroy_result {
        bool was_running;       /* a supervisor was stopped */
        bool already_destroyed; /* DESTROYED was there before */
        bool gone;              /* no vm/NAME: cleaned up earlier (name registered) */
        char removed[2][8];     /* disk files deleted: "hdd.ovl", "hdd.img" or "" */
};

/* Destroys NAME. With force, QEMU is quit over monitor.sock first instead
 * of a graceful shutdown. Returns 0 (also when it was destroyed already);
 * -EINVAL for a bad name, -ENOENT for a VM that never existed (neither a
 * directory nor a registered name); -ETIMEDOUT when the VM did not stop;
 * -EBUSY when a QEMU this host does not supervise holds the disk; another
 * negative errno on failure. One line in err on failure. */
int destroy_vm(const char *root, const char *runtime_dir, const char *name, bool force,
               struct destroy_result *ret, char *err, size_t errlen);

struct cleanup_entry {
        char *name;
        bool removed;           /* false: skipped (still running) or failed */
        char reason[256];       /* why not, when not removed */
};

struct cleanup_result {
        struct cleanup_entry *entries;
        size_t n;
        unsigned swept;         /* stale staging or removal dirs cleared */
};

/* Removes every destroyed VM's directory that does not run, logging each
 * to ROOT/log/cleanup.log, and sweeps leftovers of interrupted creates and
 * cleanups. Returns 0 when everything destroyed was removed or skipped
 * because it runs, the number of failures (> 0) otherwise, or a negative
 * errno when nothing could be tried (message in err). */
int destroy_cleanup(const char *root, const char *runtime_dir, struct cleanup_result *ret,
                    char *err, size_t errlen);

void cleanup_result_done(struct cleanup_result *r);
