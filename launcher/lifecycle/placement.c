#include "launcher/lifecycle/placement.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/core/config.h"
#include "launcher/core/fileio.h"
#include "launcher/core/hostconf.h"
#include "launcher/core/paths.h"
#include "launcher/core/props.h"
#include "launcher/core/strv.h"
#include "launcher/core/vmstate.h"

#define REQUEST_MAX 4096

static int request_key(const char *key, const char *value, unsigned line, void *userdata, char *err, size_t errlen) {
        struct spool_request *r = userdata;
        (void)line;
        if (strcmp(key, "host") == 0) {
                /* The same rule as VRT_HOST: a name that can be this host's. */
                size_t n = strlen(value);
                if (n == 0 || n > LEASE_HOST_MAX || strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != n) {
                        snprintf(err, errlen, "host=%.80s: not a host name (letters, digits, '.', '_', '-', at most %d)",
                                 value, LEASE_HOST_MAX);
                        return -EINVAL;
                }
                memcpy(r->host, value, n + 1);
                return 0;
        }
        if (strcmp(key, "force") == 0) {
                if (strcmp(value, "yes") != 0 && strcmp(value, "no") != 0) {
                        snprintf(err, errlen, "force=%.80s: must be yes or no", value);
                        return -EINVAL;
                }
                r->force = strcmp(value, "yes") == 0;
                return 0;
        }
        snprintf(err, errlen, "unknown key %.80s (host=, force=)", key);
        return -EINVAL;
}

int spool_request_parse(const char *name, const char *text, size_t len, struct spool_request *ret,
                        char *err, size_t errlen) {
        *ret = (struct spool_request){ 0 };
        return props_parse_buffer(name, text, len, request_key, ret, err, errlen);
}

int spool_request_load(const char *path, const char *name, struct spool_request *ret, char *err, size_t errlen) {
        char *text = NULL;
        size_t len = 0;
        int r = fileio_read_untrusted(path, REQUEST_MAX, &text, &len, err, errlen);
        if (r < 0) {
                *ret = (struct spool_request){ 0 };
                return r;
        }
        r = spool_request_parse(name, text, len, ret, err, errlen);
        free(text);
        return r;
}

/* Memory of the VM whose instance.properties is at path; 0 when unknown. */
static uint64_t memory_of(const struct host_config *host, const char *path, const char *name, const char *runtime_dir) {
        struct instance *inst = NULL;
        char err[256];
        uint64_t m = 0;
        if (instance_load(path, name, runtime_dir, &inst, err, sizeof err) == 0) {
                const struct size_class *sz = host_config_find_size(host, inst->size);
                if (sz)
                        m = sz->memory;
        }
        instance_free(inst);
        return m;
}

static int load_host(const char *root, struct host_config **ret) {
        char err[256], *conf = paths_join(root, "vrt.conf");
        if (!conf)
                return -ENOMEM;
        int r = host_config_load(conf, ret, err, sizeof err);
        free(conf);
        return r;
}

uint64_t placement_vm_memory(const char *root, const char *runtime_dir, const char *name) {
        struct host_config *host = NULL;
        struct vm_paths p;
        uint64_t m = 0;
        if (load_host(root, &host) < 0)
                return 0;
        if (vm_paths_init(&p, root, runtime_dir, name) == 0) {
                m = memory_of(host, p.instance, name, runtime_dir);
                vm_paths_done(&p);
        }
        host_config_free(host);
        return m;
}

int placement_local_load(const char *root, const char *runtime_dir, unsigned *ret_n, uint64_t *ret_memory) {
        struct strv names = { 0 };
        struct host_config *host = NULL;
        char *vm_dir = paths_join(root, "vm");
        int r = vm_dir ? strv_add_dir(&names, vm_dir, NULL, true) : -ENOMEM;
        free(vm_dir);
        *ret_n = 0;
        *ret_memory = 0;
        if (r < 0)
                goto out;
        /* A broken vrt.conf counts sizes as unknown, not as a reason to stop. */
        load_host(root, &host);
        for (size_t i = 0; i < names.n; i++) {
                struct vm_paths p;
                struct vm_running run;
                if (vm_paths_init(&p, root, runtime_dir, names.items[i]) < 0) {
                        r = -ENOMEM;
                        break;
                }
                if (vmstate_running(&p, 0, 0, &run) > 0) {
                        (*ret_n)++;
                        if (host)
                                *ret_memory += memory_of(host, p.instance, names.items[i], runtime_dir);
                }
                vm_paths_done(&p);
        }
        r = r < 0 ? r : 0;
out:
        host_config_free(host);
        strv_done(&names);
        return r;
}

int placement_take_start(const char *root, const char *runtime_dir, const char *name,
                         const struct spool_request *req, char *why, size_t whylen) {
        char me[LEASE_HOST_MAX + 1], room[256];
        struct host_limits limits;
        unsigned n;
        uint64_t used;
        int r = lease_host_name(me, sizeof me, why, whylen);
        if (r < 0)
                return r;
        if (req->host[0]) {
                if (strcmp(req->host, me) == 0)
                        return 1;       /* asked for by name: no room check, as `vrt start` */
                snprintf(why, whylen, "for host %s", req->host);
                return 0;
        }
        r = hostconf_load(hostconf_path(), &limits, why, whylen);
        if (r < 0)
                return r;
        r = placement_local_load(root, runtime_dir, &n, &used);
        if (r < 0) {
                snprintf(why, whylen, "cannot count the VMs running here: %s", strerror(-r));
                return r;
        }
        r = hostconf_check_room(&limits, n, used, placement_vm_memory(root, runtime_dir, name),
                                hostconf_mem_available(), room, sizeof room);
        if (r == -ENOSPC) {
                snprintf(why, whylen, "no room on host %s: %s", me, room);
                return 0;
        }
        return r < 0 ? r : 1;
}
