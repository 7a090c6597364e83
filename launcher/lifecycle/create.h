/* create: instantiating a VM from instance properties (the seed's
 * "VM instanziieren": data structure, disk, MAC and name registered).
 *
 * All or nothing. The invariant, for every vrt root:
 *
 *   Every directory vm/NAME (NAME not starting with '.') is complete —
 *   instance.properties with name=NAME and mac= (and mac.N= for more
 *   NICs), its disk (hdd.ovl or hdd.img) unless destroyed, log/ — and NAME
 *   is listed in install/installed.txt and its MACs in
 *   install/mac-addresses.txt.
 *   Nothing else a create makes is visible: work in progress lives in
 *   vm/.NAME.creating/ only, and a registry line is only ever added by a
 *   create that then publishes its directory.
 *
 * How: a create builds everything in vm/.NAME.creating/, which holds a
 * .lock file flock()ed by the creator for its whole life, and an .intent
 * file (name, MACs) so concurrent creators avoid each other's choices. The
 * commit happens under the registry lock: record the registry's sizes in
 * .commit, append the MACs, append the name (the commit point), rename the
 * directory to vm/NAME. Every create sweeps stale staging directories
 * (.lock not held) under the registry lock before it picks a name or
 * appends: one whose name reached installed.txt is completed (renamed);
 * any other is removed and the registry files are cut back to the sizes in
 * its .commit — safe, because every appender sweeps first, so whatever
 * follows those sizes was written by the dead creator. A create killed at
 * any point therefore leaves either a complete, registered VM or nothing
 * once the next create or cleanup has swept. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "images/copy.h"
#include "launcher/core/config.h"

struct registry;

struct create_request {
        const char *root;
        const char *runtime_dir;
        const char *props_path;         /* instance properties to read */
        /* The name given explicitly (--name); may be NULL. A different
         * name= in the properties is an error. */
        const char *name;
        /* Used when the properties have no name=; NULL: generate one from
         * the image name, e.g. "debian-12-4711". */
        const char *default_name;
        image_copy_progress_fn progress; /* disk=copy progress; may be NULL */
        void *userdata;
        /* When set and non-zero, the create stops at the next step and
         * removes what it made (-ECANCELED). For signal handlers. */
        volatile sig_atomic_t *cancel;
};

struct create_result {
        char *name;
        char *mac;                      /* NIC 0's */
        char *macs;                     /* every NIC's, in NIC order, ", "-separated */
        char *vm_dir;
        char *disk;                     /* hdd.ovl or hdd.img under vm_dir */
        enum disk_mode disk_mode;
        char *template_path;            /* ROOT/images/IMAGE.qcow2 */
        char *backing_file;             /* as written in the overlay; NULL for copies */
        uint64_t disk_size;             /* virtual size in bytes */
        bool name_generated;
        bool size_not_applied;          /* disk=copy keeps the template's size */
};

/* Creates the VM. Returns 0 and fills *ret (create_result_done() it);
 * -EINVAL when the request is unusable — a bad or incomplete properties
 * file, an unknown size, a missing or broken template, a name or MAC that
 * is taken — with one line "file:line: ..." in err (the CLI exits 2);
 * -ECANCELED when req->cancel was set; another negative errno for an
 * operational failure (disk full, I/O, a malformed registry: -EUCLEAN).
 * On any failure nothing is left behind (see the invariant above). */
int create_vm(const struct create_request *req, struct create_result *ret, char *err, size_t errlen);

void create_result_done(struct create_result *r);

/* The name a properties file gives a VM that has no name=: the file name
 * without ".properties" ("inst/pluto-4711.properties" -> "pluto-4711"),
 * unless that is not a valid VM name or starts with "instance" (the seed's
 * inst/instance*.properties are anonymous requests): then NULL, and the
 * create generates one. Returns 0 and *ret (a new string or NULL), or
 * -ENOMEM. */
int create_default_name(const char *path, char **ret);

/* Sweeps stale staging directories in ROOT/vm (see above). Call with the
 * registry lock held (reg from registry_lock()); reg is reloaded when a
 * rollback cuts the registry back. Returns the number of directories
 * swept, or a negative errno with one line in err. */
int create_sweep(const char *root, struct registry *reg, char *err, size_t errlen);

/* Removes the directory tree at path without following symlinks; a
 * missing path is fine. Returns 0 or a negative errno. */
int create_remove_tree(const char *path);
