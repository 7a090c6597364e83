/* launch: everything vrt-launch and `vrt showcmd` need to know about a VM
 * before anything is opened — its files loaded and cross-checked, its disk
 * chain inspected, and the QEMU launch description filled in with the fixed
 * descriptor numbers QEMU will see (qemu_proc.h). */
#pragma once

#include "launcher/core/config.h"
#include "launcher/core/paths.h"
#include "launcher/core/spawn.h"
#include "launcher/vm/qemu_argv.h"

struct image_chain;

struct launch_context {
        char *root;
        char *name;
        char *conf_path;
        char *image_path;       /* ROOT/images/IMAGE.qcow2 */
        struct vm_paths paths;
        struct host_config *host;
        struct instance *inst;
        struct image_meta *meta;
        struct qemu_user user;          /* who QEMU runs as */
        const struct size_class *size;
        struct image_chain *chain;
        struct qemu_disk_layer *layers;
        struct qemu_launch launch;
};

/* Loads and checks NAME under root: every check that can be made without
 * starting anything, so that `vrt check`, `vrt showcmd` and a start agree.
 * Returns 0, -EINVAL or -ENOENT (bad input: the caller exits 2) or another
 * negative errno, with a one-line message naming file:line where there is
 * one. */
int launch_context_load(struct launch_context *c, const char *root, const char *runtime_dir,
                        const char *name, char *err, size_t errlen);
/* launch_context_load() in two steps, for vrt-launch: open checks the
 * name, reads vrt.conf and finds the VM's directory (all a lease needs);
 * finish, called once the lease is held, reads what a lease holder may
 * change (DESTROYED, instance.properties, the snapshot state and chain).
 * A failed open leaves c empty; after a failed finish the caller still
 * calls launch_context_done() (the name and root stay usable until then). */
int launch_context_open(struct launch_context *c, const char *root, const char *runtime_dir,
                        const char *name, char *err, size_t errlen);
int launch_context_finish(struct launch_context *c, const char *runtime_dir, char *err, size_t errlen);
void launch_context_done(struct launch_context *c);

/* What vrt-launch NAME would refuse, found without starting anything: the
 * context loaded and the argv built dry, as `vrt showcmd` does. Returns 0
 * or a negative errno with the message (file:line) in err. Used by `vrt
 * check` and before every start, so that both say the same. */
int launch_check(const char *root, const char *runtime_dir, const char *name, char *err, size_t errlen);
