/* lease: which host runs a VM, kept on the shared root.
 *
 * While a VM runs, its supervisor holds ROOT/vm/NAME/lease open with an
 * OFD write lock on the whole file (F_OFD_SETLK: owned by the open file,
 * so it is released when the holder dies, and on NFS when the server's
 * lease of a dead client expires). The file says who holds it:
 *
 *   host=hostA
 *   pid=4242
 *   since=1765026658        (Unix time of the start)
 *   boot_id=…               (/proc/sys/kernel/random/boot_id of that host)
 *
 * The lock, not the text, decides: a file with text but no lock holder is
 * stale (its host died, or its supervisor was killed) and the next start
 * takes it over. A clean stop truncates the file before the lock goes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define LEASE_FILE "lease"
#define LEASE_HOST_MAX 64
#define LEASE_TEXT_MAX 1024

struct lease_holder {
        char host[LEASE_HOST_MAX + 1];  /* "" when the file names none */
        long pid;                       /* 0 when unknown */
        long long since;                /* Unix time, 0 when unknown */
        char boot_id[40];
};

/* This host's name for leases: $VRT_HOST, else the node name (uname -n).
 * Letters, digits, '.', '_' and '-', 1..LEASE_HOST_MAX characters.
 * Returns 0 or -EINVAL with the reason in err. */
int lease_host_name(char *buf, size_t len, char *err, size_t errlen);

/* Parses a lease file's text (as written by lease_acquire). Unknown keys
 * are ignored (a newer vrt may add some); bad values are -EINVAL. */
int lease_parse(const char *text, size_t len, struct lease_holder *ret, char *err, size_t errlen);

/* Takes the lease of VM NAME in vm_dir for this host and process. Returns
 * the fd that holds the lock (keep it open for the VM's whole run, then
 * lease_release()), or:
 *   -EBUSY  another process holds it; err: "NAME runs on host H (pid P,
 *           since T); not started"
 *   -EINVAL the lease is not a regular file of its own (a symlink, a
 *           FIFO, a hard link), err says which
 *   other negative errnos from the filesystem (err says which).
 * When the file named a holder that no longer holds it, *stale gets that
 * holder (stale->host[0] != '\0') for the caller to log; else it is zeroed.
 * The text is written but not yet synced: the lock alone keeps other hosts
 * out, the text only tells them who holds it, so the caller runs
 * lease_sync() once its time-critical part is done (the supervisor while
 * QEMU starts up; the destination of a migration after cont). */
int lease_acquire(const char *vm_dir, const char *name, const char *host,
                  struct lease_holder *stale, char *err, size_t errlen);

/* Makes the holder's text durable on the (shared) root. Returns 0 or a
 * negative errno. */
int lease_sync(int fd);

/* Empties the lease and closes fd (the lock goes with it); safe on -1. */
void lease_release(int *fd);

/* Who holds the lease in vm_dir: 1 held (*ret filled from the file; its
 * fields are empty while the holder is still writing them), 0 not held
 * (or no lease file), or a negative errno. Takes no lock. */
int lease_probe(const char *vm_dir, struct lease_holder *ret);

/* "host H (pid P, since YYYY-MM-DD HH:MM:SS)" in local time. */
void lease_describe(const struct lease_holder *h, char *buf, size_t len);

/* Whether leases can work on the file system that holds root:
 *   -ENOLCK     root is on NFS mounted with nolock or local_lock=… (locks
 *               stay on one host); err names the mount and the option
 *   -EOPNOTSUPP (live only) a lock taken through one open file was not seen
 *               through another
 *   0           fine, or root is on a local file system.
 * mountinfo is /proc/self/mountinfo (a test passes its own). live: also
 * take and probe a lock on a temporary file in root (vrt check does; a
 * start only reads the mount options). */
int lease_check_root(const char *root, const char *mountinfo, bool live, char *err, size_t errlen);
