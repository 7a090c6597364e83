/* supervisor: the life of one VM under vrt-launch — validate, lock, create
 * the tap and sockets, start QEMU paused as an unprivileged child, hand it
 * over to QMP, and stay in the foreground until QEMU is gone. */
#pragma once

#include <stdbool.h>

/* Exit statuses of vrt-launch (documented in vrt-launch(8) and the README). */
enum {
        SUPERVISOR_EXIT_OK = 0,         /* the guest powered off, or was told to quit */
        SUPERVISOR_EXIT_FAILED = 1,     /* QEMU failed to start or crashed */
        SUPERVISOR_EXIT_INVALID = 2,    /* bad configuration: nothing was started */
        SUPERVISOR_EXIT_FORCED = 3,     /* stop escalated past system_powerdown */
        SUPERVISOR_EXIT_TIMEOUT = 4,    /* --run-timeout elapsed; the VM was stopped */
        SUPERVISOR_EXIT_ELSEWHERE = 5,  /* the VM runs on another host (or supervisor): not started */
};

struct supervisor_options {
        const char *root;
        const char *runtime_dir;
        const char *name;
        int shutdown_timeout;   /* > 0 overrides the configured one */
        /* First boot: a NoCloud seed drive and the file that receives the
         * guest's org.vrt.init port; the run is stopped after run_timeout. */
        const char *seed_image;
        const char *init_log;
        int run_timeout;        /* seconds, 0 = unbounded */
        /* Live migration target: QEMU starts with -incoming defer and
         * listens on host.conf's migration_address; the lease is taken when
         * the incoming migration has completed, then cont. The run is given
         * up (exit 5, nothing left) when ROOT/migrate/NAME goes away or
         * incoming_timeout passes first (migreq.h). */
        bool incoming;
        int incoming_timeout;   /* seconds */
};

/* Runs the VM to its end and returns one of the exit statuses above. */
int supervisor_run(const struct supervisor_options *opts);
