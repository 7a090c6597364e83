#include "launcher/vm/launch.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images/chain.h"
#include "launcher/core/snapstate.h"
#include "launcher/core/strv.h"
#include "launcher/vm/qemu_argv.h"
#include "launcher/core/vmstate.h"
#include "launcher/vm/qemu_proc.h"

static int load_disk(struct launch_context *c, char *err, size_t errlen) {
        char *top = NULL;

        /* The active layer: the snapshot state's (snapstate.h), else
         * hdd.ovl or hdd.img. Only a disk that is not there at all makes
         * a diskless VM: a dangling symlink or a failing stat (NFS) must
         * not boot the kernel without its disk. */
        int r = snap_active_path(c->paths.vm_dir, &top, err, errlen);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        if (!top)
                return 0;       /* diskless VM (e.g. direct kernel boot) */

        /* A missing, truncated, looping or mislabelled layer is bad input
         * (vrt-launch exits 2), whatever errno described it. */
        r = image_chain_inspect(top, &c->chain, err, errlen);
        free(top);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        c->layers = calloc(c->chain->n_layers, sizeof *c->layers);
        if (!c->layers)
                return -ENOMEM;
        for (size_t i = 0; i < c->chain->n_layers; i++) {
                c->layers[i].path = c->chain->layers[i].path;
                c->layers[i].format = c->chain->layers[i].format;
        }
        c->launch.disk = c->layers;
        c->launch.n_disk = c->chain->n_layers;
        return 0;
}

/* image= names the template the VM was made from; its sidecar gives the
 * kernel, command line and firmware. An overlay must be on that template
 * (somewhere down its chain: a template may itself be an overlay), so that
 * a VM never boots one template's disk with another's (or no) sidecar. */
static int check_template(struct launch_context *c, char *err, size_t errlen) {
        struct stat tpl, st;
        const struct instance *inst = c->inst;
        if (!c->chain)
                return 0;       /* diskless: the sidecar alone is what it boots */
        const char *top = c->chain->layers[0].path;
        const char *bottom = c->chain->layers[c->chain->n_layers - 1].path;
        if (stat(c->image_path, &tpl) < 0) {
                int r = errno;
                if (c->chain->n_layers > 1)
                        snprintf(err, errlen, "%s:%u: image=%s: template %s: %s (the chain of %s ends in %s)",
                                 inst->path, inst->line_image, inst->image, c->image_path, strerror(r), top, bottom);
                else
                        snprintf(err, errlen, "%s:%u: image=%s: template %s: %s", inst->path, inst->line_image,
                                 inst->image, c->image_path, strerror(r));
                return -EINVAL;
        }
        /* A copy (possibly under snapshot layers) was made from the
         * template, not backed by it. */
        if (stat(c->paths.copy, &st) == 0)
                for (size_t i = 0; i < c->chain->n_layers; i++) {
                        struct stat l;
                        if (stat(c->chain->layers[i].path, &l) == 0 && l.st_dev == st.st_dev && l.st_ino == st.st_ino)
                                return 0;
                }
        for (size_t i = 1; i < c->chain->n_layers; i++)
                if (stat(c->chain->layers[i].path, &st) == 0 && st.st_dev == tpl.st_dev && st.st_ino == tpl.st_ino)
                        return 0;
        snprintf(err, errlen, "%s:%u: image=%s: %s is not an overlay on %s: its chain ends in %s",
                 inst->path, inst->line_image, inst->image, top, c->image_path, bottom);
        return -EINVAL;
}

/* Files the sidecar and vrt.conf name for this VM must be there; QEMU
 * would otherwise fail to start, with a message that names no line. */
static int check_files(struct launch_context *c, char *err, size_t errlen) {
        const struct image_meta *m = c->meta;
        const struct host_config *h = c->host;
        const char *what[2] = { m->kernel, m->initrd };
        unsigned line[2] = { m->line_kernel, m->line_initrd };
        for (size_t i = 0; i < 2; i++)
                if (what[i] && access(what[i], R_OK) < 0) {
                        snprintf(err, errlen, "%s:%u: %s=%s: %s", m->path, line[i], i ? "initrd" : "kernel", what[i],
                                 strerror(errno));
                        return -EINVAL;
                }
        if (c->launch.firmware != FIRMWARE_UEFI)
                return 0;
        /* The variable store is copied from ovmf_vars on the VM's first UEFI boot. */
        bool need_vars = access(c->paths.uefi_vars, F_OK) < 0;
        const char *fw[2] = { h->ovmf_code, need_vars ? h->ovmf_vars : NULL };
        unsigned fw_line[2] = { h->line_ovmf_code, h->line_ovmf_vars };
        for (size_t i = 0; i < 2; i++)
                if (fw[i] && access(fw[i], R_OK) < 0) {
                        const char *key = i ? "ovmf_vars" : "ovmf_code";
                        if (fw_line[i])
                                snprintf(err, errlen, "%s:%u: %s=%s: %s", h->path, fw_line[i], key, fw[i], strerror(errno));
                        else
                                snprintf(err, errlen, "%s: firmware=uefi needs %s: %s (apt-get install ovmf, or set %s= in %s)",
                                         c->inst->path, fw[i], strerror(errno), key, h->path);
                        return -EINVAL;
                }
        return 0;
}

int launch_context_open(struct launch_context *c, const char *root, const char *runtime_dir,
                        const char *name, char *err, size_t errlen) {
        char msg[1024];
        int r;

        *c = (struct launch_context){ 0 };
        r = config_check_vm_name(name, runtime_dir, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "%s", msg);
                return -EINVAL;
        }
        c->root = strdup(root);
        c->name = strdup(name);
        c->conf_path = paths_join(root, "vrt.conf");
        if (!c->root || !c->name || !c->conf_path || vm_paths_init(&c->paths, root, runtime_dir, name) < 0) {
                r = -ENOMEM;
                goto fail;
        }
        r = host_config_load(c->conf_path, &c->host, err, errlen);
        if (r < 0)
                goto fail;
        if (access(c->paths.vm_dir, F_OK) < 0) {
                snprintf(err, errlen, "no such VM: %s (%s does not exist)", name, c->paths.vm_dir);
                r = -ENOENT;
                goto fail;
        }
        return 0;
fail:
        launch_context_done(c);
        return r;
}

int launch_context_finish(struct launch_context *c, const char *runtime_dir, char *err, size_t errlen) {
        const char *root = c->root, *name = c->name;
        char *meta_rel = NULL, *img_rel = NULL, *meta_path = NULL;
        int r;

        if (vmstate_is_destroyed(c->paths.vm_dir)) {
                snprintf(err, errlen, "VM %s is destroyed (%s exists); `vrt cleanup` removes it", name, c->paths.destroyed);
                r = -EINVAL;
                goto fail;
        }
        r = instance_load(c->paths.instance, name, runtime_dir, &c->inst, err, errlen);
        if (r < 0)
                goto fail;
        if (strcmp(c->inst->name, name) != 0) {
                snprintf(err, errlen, "%s:%u: name=%s does not match the directory %s",
                         c->paths.instance, c->inst->line_name, c->inst->name, c->paths.vm_dir);
                r = -EINVAL;
                goto fail;
        }
        r = instance_check(c->inst, c->host, err, errlen);
        if (r < 0)
                goto fail;
        c->size = host_config_find_size(c->host, c->inst->size);

        if (asprintf(&meta_rel, "images/%s.properties", c->inst->image) < 0 ||
            asprintf(&img_rel, "images/%s.qcow2", c->inst->image) < 0) {
                r = -ENOMEM;
                goto fail;
        }
        meta_path = paths_join(root, meta_rel);
        c->image_path = paths_join(root, img_rel);
        if (!meta_path || !c->image_path) {
                r = -ENOMEM;
                goto fail;
        }
        r = image_meta_load(meta_path, &c->meta, err, errlen);
        if (r < 0)
                goto fail;

        for (unsigned i = 0; i < c->inst->n_nics; i++)
                if (c->inst->nics[i].net == NET_BRIDGE && !c->inst->nics[i].mac) {
                        /* A tap on the host's LAN needs a MAC of the registry. */
                        unsigned line = c->inst->nics[i].line_net;
                        if (i)
                                snprintf(err, errlen, "%s:%u: net.%u=bridge needs mac.%u= (vrt create assigns one)",
                                         c->paths.instance, line, i, i);
                        else if (line)
                                snprintf(err, errlen, "%s:%u: net=bridge needs mac= (vrt create assigns one)",
                                         c->paths.instance, line);
                        else
                                snprintf(err, errlen, "%s: net=bridge (the default) needs mac= (vrt create assigns one)",
                                         c->paths.instance);
                        r = -EINVAL;
                        goto fail;
                }

        c->launch = (struct qemu_launch){ .uefi_vars = c->paths.uefi_vars };
        qemu_launch_for_instance(&c->launch, c->host, c->inst, c->size, c->meta);
        qemu_launch_std_fds(&c->launch, true);
        /* vhost-net is decided here, not when the supervisor opens it, so
         * that `vrt showcmd` prints the argv vrt-launch will use. */
        bool vhost = access("/dev/vhost-net", R_OK | W_OK) == 0;
        for (unsigned i = 0; i < c->inst->n_nics; i++)
                if (c->inst->nics[i].net == NET_BRIDGE) {
                        c->launch.fd_tap[i] = qemu_fd_tap(i);
                        c->launch.fd_vhost[i] = vhost ? qemu_fd_vhost(i) : -1;
                }
        r = load_disk(c, err, errlen);
        if (r < 0)
                goto fail;
        if ((r = check_template(c, err, errlen)) < 0 || (r = check_files(c, err, errlen)) < 0 ||
            (r = spawn_resolve_user(c->host, &c->user, err, errlen)) < 0)
                goto fail;
        if (!c->meta->kernel && c->launch.n_disk == 0) {
                snprintf(err, errlen, "%s:%u: image=%s: VM %s has nothing to boot: no disk in %s and no kernel= in %s",
                         c->inst->path, c->inst->line_image, c->inst->image, name, c->paths.vm_dir, meta_path);
                r = -EINVAL;
                goto fail;
        }
        free(meta_rel);
        free(img_rel);
        free(meta_path);
        return 0;
fail:
        free(meta_rel);
        free(img_rel);
        free(meta_path);
        return r;
}

int launch_context_load(struct launch_context *c, const char *root, const char *runtime_dir,
                        const char *name, char *err, size_t errlen) {
        int r = launch_context_open(c, root, runtime_dir, name, err, errlen);
        if (r == 0 && (r = launch_context_finish(c, runtime_dir, err, errlen)) < 0)
                launch_context_done(c);
        return r;
}

void launch_context_done(struct launch_context *c) {
        free(c->root);
        free(c->name);
        free(c->conf_path);
        free(c->image_path);
        vm_paths_done(&c->paths);
        host_config_free(c->host);
        instance_free(c->inst);
        image_meta_free(c->meta);
        image_chain_free(c->chain);
        free(c->layers);
        *c = (struct launch_context){ 0 };
}

int launch_check(const char *root, const char *runtime_dir, const char *name, char *err, size_t errlen) {
        struct launch_context ctx;
        char **args = NULL;
        int r = launch_context_load(&ctx, root, runtime_dir, name, err, errlen);
        if (r < 0)
                return r;
        r = qemu_argv_build(&ctx.launch, &args, err, errlen);
        strv_free(args);
        launch_context_done(&ctx);
        return r;
}
