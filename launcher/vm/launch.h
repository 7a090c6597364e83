/* launch: everything vrt-launch and `vrt showcmd` need to know about a VM
 * before anything is opened — its files loaded and cross-checked, its disk
 * chain inspected, and the QEMU launch description filled in with the fixed
 * descriptor numbers QEMU will see. */
#pragma once

#include "launcher/core/config.h"
#include "launcher/core/paths.h"
#include "launcher/vm/qemu_argv.h"

/* Descriptor numbers inside QEMU. */
enum {
        LAUNCH_FD_QMP = 3,
        LAUNCH_FD_MONITOR = 4,
        LAUNCH_FD_CONSOLE = 5,
        LAUNCH_FD_CONSOLE_LOG = 6,
        LAUNCH_FD_TAP = 7,
        LAUNCH_FD_VHOST = 8,
        LAUNCH_FD_INIT_LOG = 9,
        LAUNCH_FD_NIC_EXTRA = 10,       /* NIC N >= 1: tap at 10 + 2(N-1), vhost-net next to it */
};

/* Where QEMU sees NIC i's tap and vhost-net descriptors. */
int launch_fd_tap(unsigned nic);
int launch_fd_vhost(unsigned nic);

struct image_chain;

struct launch_context {
        char *root;
        char *conf_path;
        char *image_path;       /* ROOT/images/IMAGE.qcow2 */
        struct vm_paths paths;
        struct host_config *host;
        struct instance *inst;
        struct image_meta *meta;
        const struct size_class *size;
        struct image_chain *chain;
        struct qemu_disk_layer *layers;
        struct qemu_launch launch;
};

/* Loads and checks NAME under root. Returns 0, -EINVAL (bad input: the
 * caller exits 2) or another negative errno, with a one-line message. */
int launch_context_load(struct launch_context *c, const char *root, const char *runtime_dir,
                        const char *name, char *err, size_t errlen);
void launch_context_done(struct launch_context *c);
