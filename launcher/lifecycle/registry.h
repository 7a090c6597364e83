/* registry: the names and MAC addresses ever handed out, so neither is used
 * twice, not even after a VM's directory was cleaned up.
 *
 *   ROOT/install/installed.txt      one VM name per line
 *   ROOT/install/mac-addresses.txt  one MAC per line (xx:xx:xx:xx:xx:xx)
 *   ROOT/install/registry.lock      the lock file
 *
 * Both lists are append-only; "#" comments and blank lines are tolerated,
 * as are MACs in upper case and a last line without its newline (the seed's
 * shell scripts wrote plain lines with echo). Every reader that decides
 * something and every writer holds an exclusive fcntl() lock (F_SETLKW) on
 * registry.lock; fcntl locks go through the NFS lock manager, so hosts that
 * share the root over NFS exclude each other. A new line is written with one
 * write() and fsync'd before the lock is released.
 *
 * fcntl locks belong to the process: two registry_lock() calls in one
 * process do not exclude each other, so a process holds at most one. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "net/mac.h"

#define REGISTRY_NAME_MAX 255

struct registry_name {
        char *name;
        unsigned line;
};

struct registry_mac {
        uint8_t mac[MAC_LEN];
        unsigned line;
};

struct registry {
        char *dir;              /* ROOT/install */
        char *names_path;
        char *macs_path;
        int lock_fd;            /* -1 when loaded without the lock */
        struct registry_name *names;
        size_t n_names;
        struct registry_mac *macs;
        size_t n_macs;
        off_t names_size;       /* file sizes as last loaded or appended */
        off_t macs_size;
        unsigned names_lines;   /* lines in the files, comments included */
        unsigned macs_lines;
};

/* Creates ROOT/install if needed, takes the registry lock (waiting for it;
 * a signal with a handler installed without SA_RESTART interrupts the wait
 * with -EINTR) and loads both lists. Missing lists count as empty.
 * Returns 0 and *ret, -EINVAL with "file:line: ..." for a malformed line,
 * or another negative errno with one line in err. */
int registry_lock(const char *root, struct registry **ret, char *err, size_t errlen);

/* Loads both lists without taking the lock, for read-only views (a
 * concurrent writer may add lines right after). Returns as registry_lock(). */
int registry_load(const char *root, struct registry **ret, char *err, size_t errlen);

/* Looks a name up (ASCII case-insensitively: VM names are host names).
 * Returns true and the line number in *ret_line (may be NULL) if listed. */
bool registry_has_name(const struct registry *r, const char *name, unsigned *ret_line);

/* Looks a MAC up. Returns true and the line in *ret_line (may be NULL). */
bool registry_has_mac(const struct registry *r, const uint8_t mac[MAC_LEN], unsigned *ret_line);

/* Appends name (resp. the MAC, written lowercase) as one line and fsyncs
 * the file. Needs the lock. Refuses a name or MAC already listed (-EEXIST)
 * and a name that is not a valid registry entry (-EINVAL). On a failed or
 * short write the file is cut back to its old size. Returns 0 or a negative
 * errno with one line in err. */
int registry_add_name(struct registry *r, const char *name, char *err, size_t errlen);
int registry_add_mac(struct registry *r, const uint8_t mac[MAC_LEN], char *err, size_t errlen);

/* Cuts the lists back to the given sizes and reloads them: the rollback
 * of an append whose creation did not commit (see create.h). Needs the
 * lock. A size larger than the current file is left alone. Returns 0 or a
 * negative errno with one line in err. */
int registry_truncate(struct registry *r, off_t names_size, off_t macs_size, char *err, size_t errlen);

/* Checks an entry of installed.txt: 1..REGISTRY_NAME_MAX characters of
 * [A-Za-z0-9._-]. Older tools' names need not be valid VM names; they only
 * have to be kept out of use. Returns 0 or -EINVAL. */
int registry_check_name(const char *name);

/* Releases the lock (if held) and frees everything. Accepts NULL, returns
 * NULL. */
struct registry *registry_free(struct registry *r);
