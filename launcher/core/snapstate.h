/* snapstate: which file is a VM's active disk layer, and its snapshots.
 *
 * A VM without snapshots runs its disk as created: hdd.ovl (an overlay on
 * the template) or hdd.img (a full copy). `vrt snapshot` freezes the
 * active layer and puts a new, empty overlay on top of it; the new layer
 * files live in ROOT/vm/NAME/snapshots/ as N.qcow2 (N counts up and is
 * never reused), each naming its backing file relative to its own
 * directory ("../hdd.ovl", "3.qcow2") with an explicit backing format.
 * ROOT/vm/NAME/snapshots/state says which layer is active and which frozen
 * layer each tag is; it is replaced atomically (temporary file, fsync,
 * rename, fsync of the directory):
 *
 *   active=snapshots/3.qcow2
 *   next=4
 *   snapshot.1=s1 hdd.ovl 1765026658
 *   snapshot.2=s2 snapshots/1.qcow2 1765026700
 *
 * Layer names are relative to the VM's directory. Without a state file the
 * active layer is hdd.ovl, else hdd.img. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define SNAP_DIR "snapshots"
#define SNAP_STATE_FILE "snapshots/state"
#define SNAP_TAG_MAX 32
#define SNAP_MAX 14             /* a chain holds at most 16 layers (images/chain.h) */
#define SNAP_LAYER_MAX 32       /* "snapshots/4294967295.qcow2" */

struct snap_entry {
        char tag[SNAP_TAG_MAX + 1];
        char layer[SNAP_LAYER_MAX];     /* the frozen layer: the state at the time of the snapshot */
        long long time;                 /* Unix time */
};

struct snap_state {
        bool present;                   /* the state file exists */
        char active[SNAP_LAYER_MAX];    /* "" when there is no state file */
        unsigned next;                  /* number of the next layer file, >= 1 */
        size_t n;
        struct snap_entry snaps[SNAP_MAX];      /* oldest first */
};

/* Is tag a valid snapshot tag: 1..SNAP_TAG_MAX letters, digits and '-',
 * not starting with '-'? Returns 0 or -EINVAL with the message in err. */
int snap_check_tag(const char *tag, char *err, size_t errlen);

/* Is name a layer name the state may use: "hdd.ovl", "hdd.img" or
 * "snapshots/N.qcow2" (N a decimal number without leading zeros)? */
bool snap_layer_name_valid(const char *name);

/* Reads vm_dir's state file. A missing file gives present=false, next=1
 * and no snapshots. Returns 0, or -EINVAL ("PATH:LINE: why") for a state
 * file that does not parse, or another negative errno. */
int snap_state_load(const char *vm_dir, struct snap_state *ret, char *err, size_t errlen);

/* Replaces vm_dir's state file atomically (creates snapshots/ if needed).
 * Returns 0 or a negative errno with the message in err. */
int snap_state_save(const char *vm_dir, const struct snap_state *s, char *err, size_t errlen);

/* The index of tag in s, or -1. */
int snap_state_find(const struct snap_state *s, const char *tag);

/* The active layer of the VM in vm_dir as a new absolute path: the state's,
 * else hdd.ovl or hdd.img if present. *ret is NULL (and 0 returned) for a
 * VM without a disk. Returns 0, or a negative errno with a message. */
int snap_active_path(const char *vm_dir, char **ret, char *err, size_t errlen);
