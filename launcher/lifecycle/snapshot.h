/* snapshot: external snapshots of a VM's disk (layout in core/snapstate.h).
 *
 * Taking a snapshot freezes the active layer and makes a new empty overlay,
 * written by images/qcow2.c, the active layer: offline by updating the
 * state file, live by blockdev-add of the new overlay and blockdev-snapshot
 * in a QMP transaction on the VM's monitor socket. Revert needs a stopped
 * VM. Layers nothing needs any more are removed; one with a single layer
 * above it is first merged into that layer: by QEMU (block-stream) when it
 * has the layer open, else by qemu-img rebase (see snapshot.c for why).
 * The template is never written.
 *
 * Errors: -EINVAL bad name or tag, -ENOENT no such VM or tag, -EEXIST the
 * tag exists (all bad input: exit 2), -EREMOTE the VM runs on another
 * host, -EBUSY it runs here and the operation needs it stopped (or another
 * snapshot command holds the VM), other negative errnos: failed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct json_object;

struct snapshot_result {
        bool live;                      /* done on the running VM through QMP */
        char layer[64];                 /* the new active layer, relative to the VM's directory */
        unsigned merged;                /* layers merged into the layer above them */
        unsigned removed;               /* layer files removed */
        /* Live create: the QMP transaction, request sent to reply read
         * (CLOCK_MONOTONIC), i.e. the block layer's drain the guest's I/O
         * waits for; --quiesce: freeze reply to thaw reply. -1: not measured. */
        double transaction_ms, frozen_ms;
};

/* quiesce: freeze the guest's file systems through its agent around a
 * live snapshot (-EHOSTUNREACH, nothing taken, when the agent does not
 * answer; -EINVAL for a stopped VM). */
int snapshot_create(const char *root, const char *runtime_dir, const char *name, const char *tag, bool quiesce,
                    struct snapshot_result *res, char *err, size_t errlen);
int snapshot_revert(const char *root, const char *runtime_dir, const char *name, const char *tag,
                    struct snapshot_result *res, char *err, size_t errlen);
int snapshot_delete(const char *root, const char *runtime_dir, const char *name, const char *tag,
                    struct snapshot_result *res, char *err, size_t errlen);

/* {"name","running","active","snapshots":[{"tag","time","layer","size"}],
 * "chain":[as vrt image info --json]}; paths absolute, sizes in bytes
 * (a snapshot's size: what its frozen layer file allocates). */
int snapshot_list(const char *root, const char *runtime_dir, const char *name, struct json_object **ret,
                  char *err, size_t errlen);
