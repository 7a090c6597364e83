/* qemu_argv: the pure builder of the qemu-system-x86_64 command line.
 * It opens nothing and reads no environment: everything it needs is in
 * struct qemu_launch, so the same input always gives the same argv. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "launcher/core/config.h"

/* The qdev id of the VM's disk device, which QMP commands name. */
#define QEMU_DISK_DEVICE "vda"

/* One layer of the VM's disk chain, top (the VM's own file) first. */
struct qemu_disk_layer {
        const char *path;
        const char *format;     /* "qcow2" or "raw" */
};

/* What QEMU is to run. A VM fills it from its files with
 * qemu_launch_for_instance(); an OS install fills it from its options. */
struct qemu_launch {
        const char *qemu;       /* argv[0], absolute */
        const char *machine;    /* a checked machine type, e.g. "q35" */
        const char *accel;      /* checked accelerators to try in order, "kvm:tcg" */
        const char *name;       /* guest name: [A-Za-z0-9._-] */
        const char *cpu;        /* -cpu model (checked); NULL: CONFIG_DEFAULT_CPU */
        unsigned cpus;
        uint64_t memory_mib;
        enum firmware firmware;
        const char *ovmf_code;  /* firmware=uefi: absolute */

        /* Direct kernel boot: absolute paths; kernel NULL = none. */
        const char *kernel;
        const char *initrd;
        const char *cmdline;

        const struct nic *nics; /* n_nics of them; 0 = no NIC at all */
        unsigned n_nics;

        const struct qemu_disk_layer *disk;     /* NULL/0: no disk */
        size_t n_disk;

        const char *uefi_vars;  /* per-VM copy of the OVMF variable store (firmware=uefi) */
        const char *install_iso;        /* OS install: boot once from this CD */
        const char *seed_image; /* first boot: NoCloud seed (ISO 9660, label cidata) */
        const char *incoming;   /* "defer": wait for migrate-incoming (live migration); NULL: none */
        const char *vnc_socket; /* install: VNC display on this unix socket */

        /* Descriptors the supervisor passes; -1 when absent. */
        int fd_qmp;             /* listening socket: the supervisor's QMP */
        int fd_monitor;         /* listening socket: monitor.sock for scripts */
        int fd_console;         /* listening socket: console.sock */
        int fd_console_log;     /* console.log, opened O_WRONLY|O_APPEND */
        int fd_tap[VM_NICS_MAX];        /* per NIC with net=bridge */
        int fd_vhost[VM_NICS_MAX];      /* per NIC, optional: vhost-net */
        int fd_init_log;        /* first boot: init.log, O_WRONLY|O_APPEND */
        int fd_agent;           /* listening socket: agent.sock, the guest agent channel */
};

/* Builds the argv (argv[0] is host->qemu). Returns 0 and a NULL-terminated
 * vector in *ret (free with strv_free), -EINVAL with a message for input it
 * refuses to put on a command line, or -ENOMEM. */
int qemu_argv_build(const struct qemu_launch *l, char ***ret, char *err, size_t errlen);

/* Marks every NIC descriptor absent (-1). */
void qemu_launch_no_nic_fds(struct qemu_launch *l);

/* Doubles every comma, the QemuOpts escape for option values. New string. */
char *qemu_escape_commas(const char *s);

/* Fills the VM part of l from checked configuration: host (qemu, machine,
 * accel, OVMF), the instance (name, NICs; firmware, else the image's, else
 * BIOS), its size and the image sidecar (direct kernel boot; may be NULL).
 * Leaves disks, extra drives and descriptors alone. */
void qemu_launch_for_instance(struct qemu_launch *l, const struct host_config *host, const struct instance *inst,
                              const struct size_class *size, const struct image_meta *image);
