/* migrate: live migration of a running VM to another host on the same
 * shared root (README "12. Live migration"; the files are migreq.h's).
 *
 * The source (this host, where the VM runs) writes ROOT/migrate/NAME; the
 * destination's spool (migrate_spool_incoming) starts `vrt-launch
 * --incoming NAME`, which starts the same QEMU argv with -incoming defer,
 * listens on its host.conf migration_address and answers with the address
 * and its QEMU version and CPU model. The source then runs QEMU's sequence
 * on the VM's monitor socket (migrate-set-capabilities, -parameters,
 * migrate, query-migrate and MIGRATION events until completed); the
 * source supervisor sees it completed, releases the lease and quits its
 * QEMU (then ends with status 0); the destination
 * takes it and only then lets the guest run (cont). On any failure the
 * source guest keeps running with its lease, the request is withdrawn and
 * the destination supervisor quits its QEMU. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct migrate_progress {
        const char *status;     /* query-migrate's: setup, active, device, ... */
        uint64_t transferred;   /* bytes */
        uint64_t remaining;     /* bytes */
        double mbps;            /* QEMU's ram.mbps */
};

struct migrate_options {
        const char *root;
        const char *runtime_dir;
        const char *name;
        const char *host;               /* the destination */
        unsigned timeout_s;             /* whole migration; 0: MIGRATE_DEFAULT_TIMEOUT_S */
        unsigned bandwidth_mib;         /* MiB/s, 0: unlimited */
        unsigned downtime_ms;           /* 0: MIGRATE_DEFAULT_DOWNTIME_MS */
        void (*progress)(void *userdata, const struct migrate_progress *p);
        void *userdata;
};

#define MIGRATE_DEFAULT_TIMEOUT_S 600
#define MIGRATE_DEFAULT_DOWNTIME_MS 300

struct migrate_result {
        long long total_ms;             /* from the request to the guest running on the destination */
        long long qemu_total_ms;        /* query-migrate total-time */
        long long qemu_downtime_ms;     /* query-migrate downtime */
        long long handover_ms;          /* completed (seen here) until the destination runs */
        long long pause_us;             /* the guest's pause: the source QEMU's STOP event to the
                                         * destination's cont (both hosts' clocks); -1: unknown */
};

/* Moves VM NAME, which runs on this host, to o->host and waits until it
 * runs there. Returns 0 with *ret filled, -EINVAL for bad input (unknown
 * VM, not running here, bad or own host name: nothing created), -EPERM
 * when the hosts' QEMU versions or CPU models differ, or another negative
 * errno when the migration failed (the VM still runs here). err gets one
 * line in every failure. */
int migrate_run(const struct migrate_options *o, struct migrate_result *ret, char *err, size_t errlen);

/* The destination half of the spool: for every ROOT/migrate/NAME meant for
 * this host and not yet answered, claims it (NAME.answer created
 * exclusively) and starts vrt-launch --incoming detached. launcher NULL:
 * service_find_launcher(). Returns how many were started (each is logged
 * in log/migrate.log), or a negative errno. */
int migrate_spool_incoming(const char *root, const char *runtime_dir, const char *launcher);
