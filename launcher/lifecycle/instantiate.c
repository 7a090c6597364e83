#include "launcher/lifecycle/instantiate.h"

#include <stdio.h>
#include <string.h>

#include "launcher/core/actionlog.h"

struct boot_relay {
        const struct instantiate_request *req;
        const char *name;
        char script[256];
};

/* Remembers the script for the log, then tells the caller. */
static void on_boot(const char *script, unsigned timeout_s, void *userdata) {
        struct boot_relay *b = userdata;
        snprintf(b->script, sizeof b->script, "%s", script);
        if (b->req->on_boot)
                b->req->on_boot(b->name, script, timeout_s, b->req->boot_userdata);
}

int instantiate_vm(const struct instantiate_request *req, struct instantiate_result *ret, char *err, size_t errlen) {
        const struct create_request *c = &req->create;
        struct instantiate_result res = { 0 };

        int r = create_vm(c, &res.created, err, errlen);
        if (r < 0) {
                *ret = res;
                return r;
        }
        res.exists = true;
        const char *slash = strrchr(res.created.template_path, '/');
        snprintf(res.image, sizeof res.image, "%s", slash ? slash + 1 : res.created.template_path);
        char *dot = strrchr(res.image, '.');
        if (dot)
                *dot = '\0';
        actionlog_append(c->root, "create", "%s: created from %s (image %s, mac %s, %s)", res.created.name,
                         req->source ? req->source : c->props_path, res.image, res.created.macs,
                         disk_mode_to_string(res.created.disk_mode));

        struct boot_relay relay = { .req = req, .name = res.created.name };
        struct firstboot_request fb = {
                .root = c->root,
                .runtime_dir = c->runtime_dir,
                .name = res.created.name,
                .launcher = req->launcher,
                .cancel = c->cancel,
                .on_boot = on_boot,
                .userdata = &relay,
        };
        r = firstboot_run(&fb, &res.boot, err, errlen);
        if (res.boot.ran)
                actionlog_append(c->root, "create", "%s: first boot with init script %s: %s", res.created.name,
                                 relay.script, r == 0 ? "status 0, VM created" : err);
        *ret = res;
        return r;
}

void instantiate_result_done(struct instantiate_result *r) {
        if (!r)
                return;
        create_result_done(&r->created);
        *r = (struct instantiate_result){ 0 };
}
