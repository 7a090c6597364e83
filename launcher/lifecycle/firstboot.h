/* firstboot: the seed's "VM initialisieren" — run init/SCRIPT once in a new
 * VM, collect its log, power the VM off, and only then mark it created.
 *
 * The script reaches the guest on a NoCloud seed drive (ISO 9660, label
 * cidata: meta-data with instance-id and local-hostname, user-data). For a
 * shell script, user-data is a wrapper vrt generates around it: it runs
 * the script once with "set -eu" (bash when the script asks for bash and
 * the guest has it, else sh), sends its stdout and stderr and a final line
 * "VRT-INIT-STATUS: N" to the virtio-serial port org.vrt.init, which
 * vrt-launch writes to vm/NAME/init.log, syncs, and powers the VM off. A
 * script that starts with "#cloud-config" is passed to cloud-init as it is;
 * then the guest itself must write the status line to the port and power
 * off (see tools/README-firstboot.md).
 *
 * The first boot is `vrt-launch --seed-image vm/NAME/seed.iso --init-log
 * vm/NAME/init.log --run-timeout INIT_TIMEOUT NAME`; the seed is deleted
 * when it ends, so no later boot sees it. The generated user-data stays
 * as vm/NAME/init.sh (the seed's "generated script used for the
 * initialisation").
 *
 * State markers in vm/NAME (written atomically):
 *   CREATED      the VM is complete ("erzeugt"): its init ran with status 0,
 *                or it has no init=. Text: created=TIME, init=SCRIPT.
 *   INIT-FAILED  the first boot failed; one line says why. init.log stays.
 * A VM with init= and neither marker has not finished its first boot
 * (it runs right now, or the run was interrupted). */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include "launcher/core/config.h"
#include "launcher/core/vmstate.h"

#define FIRSTBOOT_SEED_FILE "seed.iso"
#define FIRSTBOOT_SCRIPT_FILE "init.sh"
#define FIRSTBOOT_STATUS_PREFIX "VRT-INIT-STATUS: "
/* The largest init script accepted (it travels inside user-data). */
#define FIRSTBOOT_SCRIPT_MAX (1u << 20)

/* Checks ROOT/init/SCRIPT before anything is created: a readable regular
 * file of at most FIRSTBOOT_SCRIPT_MAX bytes without NUL bytes. Returns 0,
 * or -EINVAL / a negative errno with one line in err ("init script PATH:
 * why"). */
int firstboot_check_script(const char *root, const char *script, char *err, size_t errlen);

struct firstboot_userdata_request {
        const char *vm_name;
        const char *script_name;        /* init=, for comments and messages */
        const char *script;             /* the script's text */
        size_t script_len;
};

/* Builds the user-data for a script (pure, no I/O apart from random bytes
 * for the here-document delimiter): the wrapper described above, or the
 * script itself for #cloud-config. Returns 0 and a new NUL-terminated
 * string, -EINVAL for a script with NUL bytes, or -ENOMEM. */
int firstboot_user_data(const struct firstboot_userdata_request *req, char **ret);

/* meta-data for NAME: "instance-id: NAME-<16 hex>" (new on every call) and
 * "local-hostname: NAME". Returns 0 and a new string, or a negative errno. */
int firstboot_meta_data(const char *vm_name, char **ret);

/* What a first boot's init.log says: the status from its last
 * "VRT-INIT-STATUS: N" line (N in 0..255, alone on its line) and the last
 * FIRSTBOOT_TAIL_LINES non-empty lines of output before it, made printable,
 * each cut to FIRSTBOOT_TAIL_LINE_MAX bytes, joined with " | ". */
#define FIRSTBOOT_TAIL_LINES 3
#define FIRSTBOOT_TAIL_LINE_MAX 160
struct firstboot_init_report {
        bool has_status;
        int status;                     /* -1 without a status line */
        char tail[FIRSTBOOT_TAIL_LINES * (FIRSTBOOT_TAIL_LINE_MAX + 3) + 1];
};

/* Parses len bytes of guest output (the end of init.log; any bytes, NUL
 * included). Pure: reads nothing else, always fills in *rep. */
void firstboot_parse_init_log(const char *data, size_t len, struct firstboot_init_report *rep);

struct firstboot_request {
        const char *root;
        const char *runtime_dir;
        const char *name;
        const char *launcher;           /* vrt-launch; NULL: next to /proc/self/exe, else $PATH */
        /* When it becomes non-zero the first boot is stopped (SIGTERM to
         * vrt-launch, which powers the guest down) and fails. */
        volatile sig_atomic_t *cancel;
        /* Called right before the VM boots with the script (may be NULL). */
        void (*on_boot)(const char *script, unsigned timeout_s, void *userdata);
        void *userdata;
};

struct firstboot_result {
        enum firstboot_state state;     /* CREATED or INIT_FAILED */
        bool ran;                       /* a first boot was run (init= set) */
        int init_status;                /* the script's status; -1 unknown */
        unsigned timeout;               /* the run timeout used, seconds */
};

/* Runs the first boot of the created, stopped VM req->name, or, without
 * init=, just marks it created. Returns 0 (CREATED written), or a negative
 * errno with one line in err after writing INIT-FAILED (with that line)
 * when the VM was touched: -EPROTO the script failed or sent no status,
 * -ETIMEDOUT it did not finish in time, -ECANCELED req->cancel, -EALREADY
 * the VM is created already (nothing touched), -EBUSY it runs, others for
 * what failed around the boot. *ret is filled in either case. */
int firstboot_run(const struct firstboot_request *req, struct firstboot_result *ret, char *err, size_t errlen);

/* Gives the stopped VM name, whose first boot failed or never finished, a
 * fresh overlay on its template in place of hdd.ovl (same backing file,
 * format and size), and drops its UEFI variable store, so that the next
 * first boot starts from the template again. The new overlay is written
 * beside the old one and renamed over it: a crash leaves one or the other.
 * The VM's runtime lock is held from the "not running" check until the new
 * overlay is in place, so no start boots it in between. Returns 0, or a
 * negative errno with one line in err: -EINVAL the VM has no overlay
 * (disk=copy) or is created already, -EBUSY it runs (someone holds its
 * lock). */
int firstboot_reset_disk(const char *root, const char *runtime_dir, const char *name, char *err, size_t errlen);
