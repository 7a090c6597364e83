/* install: a new template image from an installer ISO (the seed's
 * "Installation OS" step). QEMU boots once from the ISO with a blank qcow2
 * disk staged under a hidden name in images/, under the same supervision as
 * vrt-launch (unprivileged, sandboxed, started paused, driven over QMP), with
 * the serial console and a VNC display on unix sockets for the operator.
 * When the guest powers off (or reboots: the installer's last step), the
 * disk becomes images/NAME.qcow2, read-only, with its sidecar
 * images/NAME.properties. Anything else — a signal, the timeout, a QEMU
 * failure — discards the staged disk, so a half-installed template never
 * appears under images/. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "launcher/core/config.h"
#include "launcher/core/paths.h"

struct install_options {
        const char *root;
        const char *runtime_dir;
        const char *name;               /* the template: images/NAME.qcow2 */
        const char *iso;                /* absolute path of the installer ISO */
        uint64_t disk_size;             /* bytes */
        uint64_t memory;                /* bytes, a whole number of MiB */
        unsigned cpus;
        enum firmware firmware;
        unsigned timeout;               /* seconds until the install is given up */
};

struct qmp;
struct host_config;

struct install {
        /* Files, for the operator (valid after install_start()). */
        char *staging;                  /* ROOT/images/.NAME.qcow2.partial */
        char *template_path;            /* ROOT/images/NAME.qcow2 */
        char *sidecar;                  /* ROOT/images/NAME.properties */
        char *console_log;              /* ROOT/log/install-NAME.console.log */
        char *vnc_dir;                  /* RUNTIME/install.NAME/vnc, owned by QEMU's user */
        char *vnc_socket;               /* RUNTIME/install.NAME/vnc/vnc.sock */
        char *uefi_vars;                /* RUNTIME/install.NAME/OVMF_VARS.fd (firmware=uefi) */
        struct vm_paths paths;          /* run_dir, console_sock, monitor_sock, qmp_sock, lock, pid */
        pid_t qemu_pid;
        uint64_t virtual_size, allocated_size;  /* of the finished template */

        /* Private. */
        struct install_options opts;
        struct host_config *host;
        struct qmp *qmp;
        int lock_fd, sig_fd, pidfd;
        bool staged;                    /* the staging file is ours to remove */
        bool keep_staging;              /* finished, but could not be renamed: keep it */
        bool guest_shutdown;            /* SHUTDOWN with guest=true seen */
        char shutdown_reason[64];
};

/* Checks the options, refuses an existing template or sidecar (-EEXIST),
 * takes the install lock RUNTIME/install.NAME/lock (-EBUSY: an install of
 * NAME runs), stages the blank disk, starts QEMU and lets the guest run.
 * Blocks SIGINT, SIGTERM and SIGHUP for the rest of the process: they are
 * read by install_wait(). On failure, everything done so far is undone.
 * Returns 0 and *ret, -EINVAL/-ENOENT/-ENAMETOOLONG/-EEXIST for bad input,
 * or another negative errno, with one line in err. */
int install_start(const struct install_options *o, struct install **ret, char *err, size_t errlen);

/* Waits until QEMU is gone. When the guest powered itself off or rebooted,
 * the template is finalised: renamed to images/NAME.qcow2 without replacing
 * anything, made read-only (0444, owned by the caller), and its sidecar
 * written. Returns 0, or -ECANCELED (SIGINT/SIGTERM, or QEMU told to quit
 * before the guest powered off), -ETIMEDOUT, -EIO (QEMU failed) or the
 * error of finalising, with one line in err; install_free() then removes
 * the staged disk. SIGHUP is ignored: an install outlives its terminal. */
int install_wait(struct install *in, char *err, size_t errlen);

/* Stops QEMU if it still runs, removes the staged disk unless the template
 * was finalised (or kept, as err said), and the runtime directory.
 * Accepts NULL, returns NULL. */
struct install *install_free(struct install *in);
