/* backup: a VM's disk as a chain of point-in-time backups in a directory
 * (`vrt backup`), and a new VM from one point of it (`vrt restore`).
 *
 * DEST holds, for a VM NAME:
 *
 *   NAME-0000.qcow2        a full backup: standalone qcow2, no backing file
 *   NAME-0001.qcow2        an incremental: only the clusters written since
 *                          the point before, backing file "NAME-0000.qcow2"
 *                          (format qcow2, always explicit)
 *   NAME-NNNN.properties   the VM's instance.properties at point NNNN
 *   backup.state           which points exist (written last, atomically)
 *   .lock                  flock'ed by the one `vrt backup` working here
 *   NAME-NNNN.qcow2.partial  a backup being written or one that died; never
 *                          a point: removed by the next `vrt backup` here
 *   NAME-NNNN.qcow2.orphan   a complete file that backup.state does not list
 *                          (its `vrt backup` died between naming it and
 *                          writing the state): never a point, never removed;
 *                          moved aside (with its .properties) by the next
 *                          `vrt backup` here, which then makes point NNNN
 *
 * backup.state (key=value, the one props parser):
 *
 *   vm=NAME
 *   chain=0123456789abcdef     id of the newest full backup's chain
 *   next=3                     number of the next point
 *   point.0=full 1765026658 12345678       kind, Unix time, file size
 *   point.1=incremental 1765026700 456789
 *
 * Live (the VM runs): the target is a qcow2 vrt writes itself
 * (images/qcow2.h), added with blockdev-add and filled by one
 * blockdev-backup job; the point in time is the job's start. Changes
 * since the last point are tracked by the persistent dirty bitmap
 * "vrt-backup-CHAIN" on the disk's active node (QEMU stores it in the
 * qcow2 when it closes the image, so it survives a stop and start).
 * Every backup starts, in one QMP transaction, its job and a temporary
 * bitmap "vrt-backup-tmp" (so the tmp bitmap holds exactly the writes
 * since the point); an incremental reads the persistent bitmap with
 * sync=bitmap and bitmap-mode=never, so QEMU never clears it by itself.
 * Only after the file is complete under its final name and the state
 * says so does a second transaction make tmp the persistent bitmap (a
 * full: add vrt-backup-CHAIN, merge tmp, drop other chains' bitmaps; an
 * incremental: clear, merge tmp). A job that fails, is cancelled, or
 * whose `vrt backup` is killed therefore leaves the persistent bitmap a
 * superset of the changes since the last point: the next incremental
 * still covers everything.
 *
 * A killed `vrt backup` leaves its job in QEMU (it runs on, then waits,
 * concluded, to be dismissed), the target node and the tmp bitmap. The
 * next `vrt backup` of that VM (it takes the same per-VM lock) cancels and
 * dismisses the job, deletes the node and the bitmap, and removes the
 * .partial file in its DEST. A VM that stops drops all three with QEMU.
 *
 * Stopped VM: a full backup flattens the active chain (images/flatten.h)
 * with the VM's runtime lock held; no bitmap can be started, so the next
 * incremental is refused ("must be full"), as is --incremental of a
 * stopped VM. After `vrt snapshot` (the active node changes) or an
 * unclean QEMU exit (the bitmap is missing or inconsistent) the same:
 * the next backup must be full, and vrt says so. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "images/copy.h"
#include "launcher/core/config.h"
#include "launcher/lifecycle/export.h"

#define BACKUP_STATE_FILE "backup.state"
#define BACKUP_POINTS_MAX 1000
#define BACKUP_CHAIN_LEN 16

enum backup_kind { BACKUP_FULL, BACKUP_INCREMENTAL };

struct backup_point {
        unsigned n;
        enum backup_kind kind;
        long long time;
        uint64_t size;
};

struct backup_state {
        char vm[VM_NAME_MAX + 1];
        char chain[BACKUP_CHAIN_LEN + 1];
        unsigned next;
        size_t n;                       /* points, in ascending order of n */
        struct backup_point points[BACKUP_POINTS_MAX];
};

/* Parses backup.state text (len bytes, not NUL-terminated); name is used
 * in messages ("NAME:LINE: why"). Every key known and present once, point
 * numbers below next, a full point first. Returns 0, -EINVAL or -ENOMEM. */
int backup_state_parse(const char *name, const char *text, size_t len, struct backup_state *ret, char *err,
                       size_t errlen);

struct backup_request {
        const char *root;
        const char *runtime_dir;
        const char *name;
        const char *dest;               /* a directory; made when missing (its parent must exist) */
        bool incremental;
        uint64_t speed;                 /* bytes/s limit of the live job, 0: none */
        image_copy_progress_fn progress; /* bytes copied of the bytes to copy; may be NULL */
        void *userdata;
        volatile sig_atomic_t *cancel;
};

struct backup_result {
        unsigned point;
        char file[4096];
        bool incremental, running;
        bool bitmap;                    /* the next incremental can follow this point */
        uint64_t virtual_size, file_size, copied;
        char orphan[4096 + 16];         /* not empty: the unlisted file found under this point's name, moved here */
};

/* Makes the next point (ret->orphan is set, also when it fails, when an
 * unlisted file under the point's name was moved aside; see above). Returns 0; -EINVAL (bad name, DEST not a backup
 * directory of this VM, no full backup yet, no usable bitmap, a stopped VM
 * with --incremental), -ENOENT (no such VM) with one line in err; -EBUSY
 * (another backup runs); -ECANCELED; another negative errno. A failure
 * leaves no point, no file under a point's name. */
int backup_vm(const struct backup_request *req, struct backup_result *ret, char *err, size_t errlen);

struct restore_request {
        const char *root;
        const char *runtime_dir;
        const char *source;             /* DEST, or DEST/NAME-NNNN.qcow2 */
        int point;                      /* -1: the file's, or the newest */
        const char *new_name;           /* NULL: the backed-up name */
        image_copy_progress_fn progress;
        void *userdata;
        volatile sig_atomic_t *cancel;
};

/* Makes a VM (disk=copy) from a point. Returns as import_vm(): -EINVAL with
 * one line for a missing link, a wrong backing file, a corrupt image, a
 * name in use; nothing is left on failure. *ret_point: the point used. */
int restore_vm(const struct restore_request *req, struct import_result *ret, unsigned *ret_point, char *err,
               size_t errlen);
