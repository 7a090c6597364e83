/* vrt migrate NAME HOST: live migration to another host on this root. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "launcher/cli/cli.h"
#include "launcher/core/config.h"
#include "launcher/lifecycle/migrate.h"

#define USAGE "usage: vrt migrate [--timeout S] [--bandwidth MiB/s] [--downtime MS] NAME HOST"

struct tty {
        bool on;
        bool printed;
};

static void show_progress(void *userdata, const struct migrate_progress *p) {
        struct tty *t = userdata;
        if (!t->on)
                return;
        fprintf(stderr, "\r\033[K%s: %llu MiB sent, %llu MiB left, %.0f Mbit/s", p->status,
                (unsigned long long)(p->transferred >> 20), (unsigned long long)(p->remaining >> 20), p->mbps);
        fflush(stderr);
        t->printed = true;
}

static int parse_opt(const char *what, const char *v, unsigned min, unsigned max, unsigned *ret) {
        if (config_parse_uint(v, min, max, ret) < 0) {
                cli_error("invalid %s \"%s\" (%u..%u)", what, v, min, max);
                return -EINVAL;
        }
        return 0;
}

int cmd_migrate(struct cli *cli, int argc, char **argv) {
        static const struct option opts[] = {
                { "timeout", required_argument, NULL, 't' },
                { "bandwidth", required_argument, NULL, 'b' },
                { "downtime", required_argument, NULL, 'd' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        struct tty t = { .on = isatty(STDERR_FILENO) == 1 };
        struct migrate_options o = { .root = cli->root, .runtime_dir = cli->runtime_dir,
                                     .progress = show_progress, .userdata = &t };
        struct migrate_result res;
        char err[2048];
        int c;

        while ((c = getopt_long(argc, argv, "t:b:d:h", opts, NULL)) >= 0)
                switch (c) {
                case 't':
                        if (parse_opt("--timeout", optarg, 1, 86400, &o.timeout_s) < 0)
                                return CLI_INVALID;
                        break;
                case 'b':
                        if (parse_opt("--bandwidth", optarg, 1, 1000000, &o.bandwidth_mib) < 0)
                                return CLI_INVALID;
                        break;
                case 'd':
                        if (parse_opt("--downtime", optarg, 1, 60000, &o.downtime_ms) < 0)
                                return CLI_INVALID;
                        break;
                case 'h':
                        printf(USAGE "\n"
                               "Moves running VM NAME to HOST, which shares this root; the guest keeps running.\n"
                               "HOST's spool starts the destination (host.conf migration_address=); the lease\n"
                               "moves when the source QEMU has stopped. --timeout S bounds the whole migration\n"
                               "(default %ds), --bandwidth caps it (default: unlimited), --downtime MS is the\n"
                               "longest pause QEMU aims for (default %d). On failure the VM runs on here.\n",
                               MIGRATE_DEFAULT_TIMEOUT_S, MIGRATE_DEFAULT_DOWNTIME_MS);
                        return CLI_OK;
                default:
                        return CLI_INVALID;
                }
        if (argc - optind != 2) {
                cli_error(USAGE);
                return CLI_INVALID;
        }
        o.name = argv[optind];
        o.host = argv[optind + 1];
        int r = migrate_run(&o, &res, err, sizeof err);
        if (t.printed)
                fprintf(stderr, "\r\033[K");
        if (r < 0) {
                cli_error("%s", err);
                return r == -EINVAL ? CLI_INVALID : CLI_FAILED;
        }
        char pause[32];
        if (res.pause_us >= 0)
                snprintf(pause, sizeof pause, "%lld.%lld", res.pause_us / 1000, res.pause_us % 1000 / 100);
        else
                snprintf(pause, sizeof pause, "null");
        if (cli->json)
                printf("{\"name\":\"%s\",\"host\":\"%s\",\"total_ms\":%lld,\"qemu_total_ms\":%lld,\"downtime_ms\":%lld,"
                       "\"handover_ms\":%lld,\"pause_ms\":%s}\n", o.name, o.host, res.total_ms, res.qemu_total_ms,
                       res.qemu_downtime_ms, res.handover_ms, pause);
        else
                printf("%s: runs on host %s now (%lld ms; downtime %lld ms in QEMU, lease handover %lld ms%s%s%s)\n",
                       o.name, o.host, res.total_ms, res.qemu_downtime_ms, res.handover_ms,
                       res.pause_us >= 0 ? "; guest paused " : "", res.pause_us >= 0 ? pause : "",
                       res.pause_us >= 0 ? " ms" : "");
        return CLI_OK;
}
