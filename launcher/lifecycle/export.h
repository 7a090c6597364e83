/* export: a VM as one self-contained archive, and back (the seed lab's
 * "VM exportieren — auf anderem Rechner importieren und starten").
 *
 * The archive is an uncompressed POSIX tar file (`tar tvf` lists it) of
 * regular files, in this order:
 *
 *   manifest.json          format "vrt-export", version 1, the VM's name,
 *                          image and MACs, and every other member's name,
 *                          size and SHA-256 (always first)
 *   instance.properties    as on the source root
 *   disk.qcow2             the disk and its backing chain flattened into one
 *                          standalone qcow2 (images/flatten.h); absent for a
 *                          diskless VM
 *   OVMF_VARS.fd init.log init.sh CREATED INIT-FAILED   when present
 *   image/IMAGE.properties the template's sidecar (kernel=, cmdline=, ...)
 *   image/FILE             the files its kernel= and initrd= name, when
 *                          they are plain names next to the sidecar
 *
 * A stopped VM is exported with its runtime lock held throughout, so it
 * cannot be started meanwhile, and a disk that some QEMU (on any host
 * sharing the root) has locked is refused. A running VM is exported from a
 * blockdev-backup (sync=full) copy that QEMU makes through its monitor
 * (see export.c). The file appears complete under its name or not at all.
 *
 * Import reads the archive strictly (images/archive.h; the manifest must
 * list exactly the members that follow, with matching sizes and
 * checksums), then creates the VM all or nothing like `vrt create`: in
 * vm/.NAME.importing/, committed under the registry lock by appending its
 * MACs and then its name (the commit point) to the registry and renaming
 * the directory. The imported VM has disk=copy (hdd.img, the flattened
 * disk) and so needs no template; the sidecar and its boot files are
 * installed into images/ unless identical ones are there (different ones
 * are an error). A staging directory left by a killed import is completed
 * (its name was registered) or removed by the next import. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "images/copy.h"
#include "launcher/core/config.h"
#include "net/mac.h"

#define EXPORT_FORMAT "vrt-export"
#define EXPORT_VERSION 1
#define EXPORT_MANIFEST "manifest.json"

struct export_request {
        const char *root;
        const char *runtime_dir;
        const char *name;
        const char *file;               /* the archive to write; must not exist */
        bool with_template;             /* the disk's chain as members instead of flattened */
        image_copy_progress_fn progress; /* bytes of the archive written; may be NULL */
        void *userdata;
        volatile sig_atomic_t *cancel;  /* set non-zero to stop (nothing is left) */
};

struct export_result {
        uint64_t archive_size;
        uint64_t disk_size;             /* bytes of disk.qcow2, 0 without a disk */
        uint64_t virtual_size;
        unsigned n_layers;              /* of the source chain */
        unsigned n_members;
        bool running;                   /* the disk was copied from the running VM */
        bool with_template;
};

/* Writes the archive. Returns 0; -EINVAL (bad name, destroyed VM,
 * unusable files), -ENOENT (no such VM), -EEXIST (file exists) with one
 * line in err; -EBUSY when the VM runs; -ECANCELED; another negative errno
 * on failure. Nothing is left behind on failure. */
int export_vm(const struct export_request *req, struct export_result *ret, char *err, size_t errlen);

struct import_request {
        const char *root;
        const char *runtime_dir;
        const char *file;
        const char *new_name;           /* NULL: the archived name; else new MACs too */
        image_copy_progress_fn progress; /* bytes extracted; may be NULL */
        void *userdata;
        volatile sig_atomic_t *cancel;
};

struct import_result {
        char name[VM_NAME_MAX + 1];
        char macs[VM_NICS_MAX * (MAC_STRLEN + 2)];      /* ", "-separated */
        bool new_macs;
        unsigned images_installed;      /* files written to images/ */
        uint64_t disk_size;             /* virtual size, 0 without a disk */
        char vm_dir[4096];
};

/* Imports the archive. Returns 0; -EINVAL with one line "FILE: ..." for
 * a malformed archive, a name or MAC already used, an image sidecar that
 * conflicts, or an instance the target's vrt.conf does not accept;
 * -ECANCELED; another negative errno on failure. Nothing is left behind
 * on failure: no registry line, no VM directory, no file in images/. */
int import_vm(const struct import_request *req, struct import_result *ret, char *err, size_t errlen);

/* What a manifest says, for callers outside the import (the fuzz harness). */
struct export_manifest_info {
        char name[VM_NAME_MAX + 1];
        size_t n_members;
        unsigned n_macs;
        bool has_disk;
        size_t n_template_layers;
};

/* Parses and checks manifest.json text of len bytes (not NUL-terminated)
 * as import does: every key known, every member name one an export holds,
 * sizes within their caps. Returns 0, -EINVAL with one line "FILE:
 * manifest.json: why" in err, or -ENOMEM. ret may be NULL. */
int export_parse_manifest(const char *file, const char *text, size_t len, struct export_manifest_info *ret, char *err,
                          size_t errlen);

/* For `vrt restore` (backup.h): a VM from a standalone disk image and an
 * instance.properties saved beside it, registered and committed exactly
 * like an import (same staging directory, same sweep, same commit point). */
typedef int (*import_disk_write_fn)(const char *path, void *userdata, char *err, size_t errlen);

struct import_disk_request {
        const char *root;
        const char *runtime_dir;
        const char *source;             /* names the input in messages */
        const char *props;              /* the saved instance.properties */
        const char *default_name;       /* its name when it has no name= line */
        const char *new_name;           /* NULL: that name */
        uint64_t virtual_size;          /* of the disk write_disk makes */
        import_disk_write_fn write_disk; /* creates the standalone qcow2 at path (new file) */
        void *userdata;
        volatile sig_atomic_t *cancel;
};

/* Returns as import_vm(); write_disk's errors are returned as they are. */
int import_disk_vm(const struct import_disk_request *req, struct import_result *ret, char *err, size_t errlen);
