/* vrt-launch NAME: the per-VM supervisor, in the foreground. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/core/config.h"
#include "launcher/core/log.h"
#include "launcher/core/migreq.h"
#include "launcher/core/paths.h"
#include "launcher/vm/supervisor.h"
#include "version.h"

static void usage(FILE *f) {
        fprintf(f,
                "usage: vrt-launch [--root DIR] [--shutdown-timeout S] NAME\n"
                "       vrt-launch --seed-image ISO --init-log FILE [--run-timeout S] NAME   (first boot)\n"
                "       vrt-launch --incoming [--incoming-timeout S] NAME   (live migration target)\n"
                "       vrt-launch --version\n"
                "Runs VM NAME in the foreground until it powers off.\n"
                "Exit status: 0 powered off, 1 QEMU failed or crashed, 2 bad configuration,\n"
                "3 stopped forcibly (after the shutdown timeout, or QEMU died while stopping),\n"
                "4 the run timeout elapsed, 5 the VM runs elsewhere (or an incoming migration was given up).\n");
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "root", required_argument, NULL, 'r' },
                { "shutdown-timeout", required_argument, NULL, 't' },
                { "seed-image", required_argument, NULL, 's' },
                { "init-log", required_argument, NULL, 'l' },
                { "run-timeout", required_argument, NULL, 'T' },
                { "incoming", no_argument, NULL, 'i' },
                { "incoming-timeout", required_argument, NULL, 'I' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                { 0 },
        };
        struct supervisor_options o = {
                .root = paths_root_from_env(),
                .runtime_dir = paths_runtime_from_env(),
        };
        unsigned t;
        int c;

        log_setup("vrt-launch");
        while ((c = getopt_long(argc, argv, "r:t:s:l:T:h", opts, NULL)) >= 0)
                switch (c) {
                case 'r':
                        o.root = optarg;
                        break;
                case 't':
                        if (config_parse_uint(optarg, 1, 86400, &t) < 0) {
                                fprintf(stderr, "vrt-launch: invalid --shutdown-timeout \"%s\" (1..86400)\n", optarg);
                                return 2;
                        }
                        o.shutdown_timeout = (int)t;
                        break;
                case 's':
                        o.seed_image = optarg;
                        break;
                case 'l':
                        o.init_log = optarg;
                        break;
                case 'T':
                        if (config_parse_uint(optarg, 1, 7 * 86400, &t) < 0) {
                                fprintf(stderr, "vrt-launch: invalid --run-timeout \"%s\"\n", optarg);
                                return 2;
                        }
                        o.run_timeout = (int)t;
                        break;
                case 'i':
                        o.incoming = true;
                        break;
                case 'I':
                        if (config_parse_uint(optarg, 1, 86400, &t) < 0) {
                                fprintf(stderr, "vrt-launch: invalid --incoming-timeout \"%s\" (1..86400)\n", optarg);
                                return 2;
                        }
                        o.incoming_timeout = (int)t;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                case 'V':
                        if (strcmp(VRT_VCS_TAG, VRT_VERSION) == 0)
                                printf("vrt-launch %s\n", VRT_VERSION);
                        else
                                printf("vrt-launch %s (git %s)\n", VRT_VERSION, VRT_VCS_TAG);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        if (optind + 1 != argc) {
                usage(stderr);
                return 2;
        }
        o.name = argv[optind];
        char *root = paths_absolute(o.root), *runtime = paths_absolute(o.runtime_dir);
        if (!root || !runtime)
                return 1;
        /* Under systemd the spool starts vrt@NAME.service, whose ExecStart
         * has no --incoming: its marker in the runtime dir says so. */
        unsigned marked_timeout = 0;
        char namemsg[256];
        if (!o.incoming && config_check_vm_name(o.name, runtime, namemsg, sizeof namemsg) == 0 &&
            migreq_incoming_take(runtime, o.name, &marked_timeout) == 1) {
                o.incoming = true;
                o.incoming_timeout = (int)marked_timeout;
        }
        o.root = root;
        o.runtime_dir = runtime;
        int status = supervisor_run(&o);
        free(root);
        free(runtime);
        return status;
}
