/* hostconf: what one host may take on, in a file that is NOT on the shared
 * root (/etc/vrt/host.conf, or $VRT_HOST_CONF). vrt.conf on the root says
 * how every VM is built; host.conf says how much this host runs:
 *
 *   max_vms=8          at most this many VMs at once (0: no limit)
 *   max_memory=48G     their memory together at most this (0: no limit)
 *   reserve_memory=2G  a spool start also leaves this much MemAvailable
 *   migration_address=192.0.2.7   where incoming live migrations listen
 *                      (an IPv4 address of this host; none: it takes none)
 *
 * A missing file means no limits beyond the free memory check. */
#pragma once

#include <stdint.h>
#include <stddef.h>

#define HOSTCONF_DEFAULT_PATH "/etc/vrt/host.conf"

struct host_limits {
        unsigned max_vms;               /* 0: no limit */
        uint64_t max_memory;            /* bytes, 0: no limit */
        uint64_t reserve_memory;        /* bytes */
        char migration_address[16];     /* dotted IPv4, "": no incoming migrations */
};

/* $VRT_HOST_CONF, else HOSTCONF_DEFAULT_PATH. */
const char *hostconf_path(void);

/* Reads path; a missing file gives the defaults. Returns 0 or -EINVAL with
 * "path:line: key=value: why" in err. */
int hostconf_load(const char *path, struct host_limits *ret, char *err, size_t errlen);

/* Whether this host has room for one more VM of vm_memory bytes, given the
 * VMs it runs now (n_running, running_memory bytes) and MemAvailable
 * (bytes; 0: unknown, not checked). 0 yes, -ENOSPC no with the reason in
 * err ("max_vms=2 reached (2 running)"). */
int hostconf_check_room(const struct host_limits *l, unsigned n_running, uint64_t running_memory,
                        uint64_t vm_memory, uint64_t mem_available, char *err, size_t errlen);

/* MemAvailable from /proc/meminfo in bytes, 0 when unknown. */
uint64_t hostconf_mem_available(void);
