/* placement: which of several hosts sharing one root carries out a spool
 * request. A request file may say more than its name:
 *
 *   start/NAME   host=hostB      only host hostB starts it
 *   stop/NAME    force=yes       power off at once (as `vrt stop --force`)
 *
 * (key=value lines as in vrt.conf; an empty file asks for the default.)
 * A start without host= is taken by a host only if it has room for the VM
 * (hostconf.h: max_vms, max_memory, reserve_memory and MemAvailable);
 * otherwise it is left for another host. A stop or destroy of a VM that
 * runs on another host (its lease) is left for that host. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "launcher/core/lease.h"

struct spool_request {
        char host[LEASE_HOST_MAX + 1];  /* "" = any host */
        bool force;
};

/* Parses the text of a request file; name is for messages ("start/NAME").
 * Unknown keys and bad values are -EINVAL with "name:line: why" in err. */
int spool_request_parse(const char *name, const char *text, size_t len, struct spool_request *ret,
                        char *err, size_t errlen);

/* Reads and parses the request file at path (at most 4 KiB, a regular
 * file; a FIFO never blocks). Errors as spool_request_parse(); a file
 * that is gone is -ENOENT. */
int spool_request_load(const char *path, const char *name, struct spool_request *ret, char *err, size_t errlen);

/* Should this host start VM NAME for request req? 1 yes; 0 leave the
 * request for another host, with the reason in why ("for host hostB",
 * "no room here: max_vms=2 reached (2 running)"); or a negative errno
 * with why (host.conf is invalid: -EINVAL). */
int placement_take_start(const char *root, const char *runtime_dir, const char *name,
                         const struct spool_request *req, char *why, size_t whylen);

/* What this host runs now: the number of VMs with a local supervisor and
 * their memory (size classes of vrt.conf) in bytes. */
int placement_local_load(const char *root, const char *runtime_dir, unsigned *ret_n, uint64_t *ret_memory);

/* The memory VM NAME would take (its size class), 0 when unknown. */
uint64_t placement_vm_memory(const char *root, const char *runtime_dir, const char *name);
