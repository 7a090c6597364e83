#include "launcher/core/hostconf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/core/config.h"
#include "launcher/core/props.h"

const char *hostconf_path(void) {
        const char *p = getenv("VRT_HOST_CONF");
        return p && *p ? p : HOSTCONF_DEFAULT_PATH;
}

static int hostconf_key(const char *key, const char *value, unsigned line, void *userdata, char *err, size_t errlen) {
        struct host_limits *l = userdata;

        if (strcmp(key, "max_vms") == 0) {
                if (config_parse_uint(value, 0, 100000, &l->max_vms) < 0) {
                        snprintf(err, errlen, "max_vms=%.80s: not a number of VMs (0..100000)", value);
                        return -EINVAL;
                }
        } else if (strcmp(key, "max_memory") == 0 || strcmp(key, "reserve_memory") == 0) {
                uint64_t v;
                if (strcmp(value, "0") == 0)
                        v = 0;
                else if (config_parse_size(value, &v) < 0) {
                        snprintf(err, errlen, "%s=%.80s: not a size (e.g. 48G, 512M, 0)", key, value);
                        return -EINVAL;
                }
                *(strcmp(key, "max_memory") == 0 ? &l->max_memory : &l->reserve_memory) = v;
        } else if (strcmp(key, "migration_address") == 0) {
                struct in_addr a;
                if (strlen(value) >= sizeof l->migration_address || inet_pton(AF_INET, value, &a) != 1) {
                        snprintf(err, errlen, "migration_address=%.80s: not an IPv4 address (e.g. 192.0.2.7)", value);
                        return -EINVAL;
                }
                snprintf(l->migration_address, sizeof l->migration_address, "%s", value);
        } else {
                snprintf(err, errlen, "unknown key %.80s (known: max_vms, max_memory, reserve_memory, migration_address)", key);
                return -EINVAL;
        }
        return 0;
}

int hostconf_load(const char *path, struct host_limits *ret, char *err, size_t errlen) {
        *ret = (struct host_limits){ 0 };
        int r = props_parse_file(path, hostconf_key, ret, err, errlen);
        if (r == -ENOENT) {
                err[0] = '\0';
                return 0;
        }
        return r;
}

static void mib(uint64_t bytes, char *buf, size_t len) {
        snprintf(buf, len, "%" PRIu64 "M", bytes >> 20);
}

int hostconf_check_room(const struct host_limits *l, unsigned n_running, uint64_t running_memory,
                        uint64_t vm_memory, uint64_t mem_available, char *err, size_t errlen) {
        char a[32], b[32], c[32];

        if (l->max_vms && n_running >= l->max_vms) {
                snprintf(err, errlen, "max_vms=%u reached (%u running)", l->max_vms, n_running);
                return -ENOSPC;
        }
        if (l->max_memory && running_memory + vm_memory > l->max_memory) {
                mib(l->max_memory, a, sizeof a);
                mib(running_memory, b, sizeof b);
                mib(vm_memory, c, sizeof c);
                snprintf(err, errlen, "max_memory=%s would be exceeded (%s in use, %s more)", a, b, c);
                return -ENOSPC;
        }
        if (mem_available && mem_available < vm_memory + l->reserve_memory) {
                mib(mem_available, a, sizeof a);
                mib(vm_memory, b, sizeof b);
                mib(l->reserve_memory, c, sizeof c);
                snprintf(err, errlen, "only %s of memory available (%s needed, %s kept in reserve)", a, b, c);
                return -ENOSPC;
        }
        return 0;
}

uint64_t hostconf_mem_available(void) {
        FILE *f = fopen("/proc/meminfo", "re");
        char line[256];
        uint64_t kib = 0;

        if (!f)
                return 0;
        while (fgets(line, sizeof line, f))
                if (sscanf(line, "MemAvailable: %" SCNu64 " kB", &kib) == 1)
                        break;
        fclose(f);
        return kib * 1024;
}
