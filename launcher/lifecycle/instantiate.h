/* instantiate: a new VM from instance properties, the seed's two steps as
 * one — "VM instanziieren" (create_vm(): name, MAC, disk, registered) and
 * "VM initialisieren" (firstboot_run(): with init= the VM boots once to run
 * its script and is marked created only when that succeeded; without, it
 * is marked created at once). `vrt create` and the spool's inst/ both use
 * it, so a VM made either way is made the same way and logged the same way
 * in ROOT/log/create.log. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "launcher/lifecycle/create.h"
#include "launcher/lifecycle/firstboot.h"

struct instantiate_request {
        struct create_request create;   /* its cancel also stops the first boot */
        const char *source;             /* where the properties came from, for the log */
        const char *launcher;           /* vrt-launch for the first boot; NULL: found */
        /* Called right before the first boot of the new VM name (may be NULL). */
        void (*on_boot)(const char *name, const char *script, unsigned timeout_s, void *userdata);
        void *boot_userdata;
};

struct instantiate_result {
        bool exists;                    /* the VM was created (its first boot may still have failed) */
        struct create_result created;   /* when exists */
        struct firstboot_result boot;   /* when exists */
        char image[256];                /* the template's name, e.g. "debian-12" */
};

/* Creates the VM and runs its first boot. Returns 0 (a created VM); or a
 * negative errno with one line in err: with ret->exists false it is
 * create_vm()'s (nothing was made, -EINVAL for bad input); with
 * ret->exists true it is firstboot_run()'s — the VM, its name and MAC stay,
 * marked INIT-FAILED. Release ret with instantiate_result_done() either
 * way. */
int instantiate_vm(const struct instantiate_request *req, struct instantiate_result *ret, char *err, size_t errlen);

void instantiate_result_done(struct instantiate_result *r);
