/* The per-host text a host reads: a spool request's key=value lines
 * (start/NAME: host=, stop/NAME: force=) and /etc/vrt/host.conf (max_vms=,
 * max_memory=, reserve_memory=). The same input goes to both parsers. A
 * host= that parses is compared with this host's name and logged, so it
 * must be a plain host name. */
#include <stdlib.h>
#include <string.h>

#include "launcher/core/hostconf.h"
#include "launcher/lifecycle/placement.h"
#include "tools/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct spool_request req;
        struct host_limits limits;
        char err[1024] = "";

        if (spool_request_parse("start/fuzz", (const char *)data, size, &req, err, sizeof err) == 0) {
                size_t n = strlen(req.host);
                if (n > LEASE_HOST_MAX ||
                    strspn(req.host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != n)
                        abort();
        } else if (!err[0]) {
                abort();
        }
        err[0] = '\0';
        const char *path = fuzz_write("host.conf", (const char *)data, size);
        if (hostconf_load(path, &limits, err, sizeof err) < 0 && !err[0])
                abort();
        return 0;
}
