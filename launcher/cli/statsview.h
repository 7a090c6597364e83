/* statsview: what `vrt stats` and `vrt top` share — which VMs to sample,
 * one sample of all of them, and numbers in a few columns. */
#pragma once

#include <stddef.h>

#include "launcher/cli/cli.h"
#include "launcher/lifecycle/stats.h"

/* How long one VM may take to answer one sample. */
#define STATSVIEW_TIMEOUT_MS 2000

struct statsview {
        char **names;           /* the VMs asked for; NULL-terminated */
        size_t n;
        bool all;               /* no names given: every VM under ROOT/vm but destroyed ones */
        struct stats_vm *vms;   /* the latest sample, n entries (fewer when all and some are destroyed) */
        size_t n_vms;
};

/* Takes the names in argv (none: all VMs); a bad or unknown name is a
 * one-line message in err and -EINVAL/-ENOENT. Returns 0 or a negative errno. */
int statsview_init(struct statsview *s, const struct cli *cli, int argc, char **argv, char *err, size_t errlen);

/* Samples every VM once, all in parallel (one thread each), so the whole
 * sample takes at most about STATSVIEW_TIMEOUT_MS however many VMs do not
 * answer; with rates against the previous sample, when there is one.
 * Returns 0 or -ENOMEM. */
int statsview_sample(struct statsview *s, const struct cli *cli);

void statsview_done(struct statsview *s);

/* 1536 -> "1.5K", binary units; "-" for a negative value. */
void statsview_bytes(double b, char *buf, size_t len);

/* Parses a refresh interval in seconds ("1", "0.5"; 0.1 .. 3600). */
int statsview_parse_interval(const char *s, double *ret);
