/* vrt: the command line. Parses global options and dispatches. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/cli/cli.h"
#include "launcher/core/log.h"
#include "launcher/core/paths.h"
#include "version.h"

static const struct command {
        const char *name;
        int (*run)(struct cli *cli, int argc, char **argv);
        const char *help;
} commands[] = {
        { "list", cmd_list, "list [--all]          VMs with state, image, size, MAC, pid, uptime" },
        { "status", cmd_status, "status NAME           state and QEMU's view: vCPUs, memory, disks, NICs" },
        { "stats", cmd_stats, "stats [NAME...]       CPU, memory, disk, net use; --interval S, --prometheus" },
        { "top", cmd_top, "top                   live view of the VMs' CPU, memory, disk and net use" },
        { "start", cmd_start, "start NAME...         start VMs (systemd unit, or detached vrt-launch)" },
        { "stop", cmd_stop, "stop NAME...          ACPI power button, escalating; --force: power off now" },
        { "spool", cmd_spool, "spool [--watch]       carry out requests in inst/ start/ stop/ destroy/" },
        { "autostart", cmd_autostart, "autostart             start autostart/ VMs and those with autostart=yes" },
        { "create", cmd_create, "create X|FILE|FLAGS   new VM from inst/X.properties, a file or flags" },
        { "init", cmd_init, "init NAME [--reset]   run a failed first boot (init=) again" },
        { "destroy", cmd_destroy, "destroy NAME...       stop, delete the disk, mark DESTROYED" },
        { "cleanup", cmd_cleanup, "cleanup               remove the directories of destroyed VMs" },
        { "migrate", cmd_migrate, "migrate NAME HOST     live migration to another host on this root" },
        { "export", cmd_export, "export NAME FILE      one archive: properties, flattened disk, sidecar (also running)" },
        { "import", cmd_import, "import FILE [--name N] a VM from an export archive (taken MAC: a new one)" },
        { "backup", cmd_backup, "backup NAME DEST      full or --incremental backup into a chain in DEST (also running)" },
        { "restore", cmd_restore, "restore DEST[/FILE]   a new VM from a backup point (--point N)" },
        { "image", cmd_image, "image CMD ...         images: info, overlay, list, protect, install (from an ISO)" },
        { "snapshot", cmd_snapshot, "snapshot NAME [TAG]   external disk snapshots; list, revert, delete" },
        { "check", cmd_check, "check                 validate vrt.conf, images, VMs and requests" },
        { "showcmd", cmd_showcmd, "showcmd NAME          print the exact QEMU command line" },
        { "qmp", cmd_qmp, "qmp NAME CMD [ARGS]   run one QMP command on a running VM" },
        { "agent", cmd_agent, "agent NAME CMD [ARGS] run one guest agent (qemu-ga) command; 3: no agent" },
        { "console", cmd_console, "console NAME          attach to the serial console (Ctrl-] leaves)" },
};

static void usage(FILE *f) {
        fprintf(f, "usage: vrt [--root DIR] [--json] COMMAND [ARGS] | --version\n\ncommands:\n");
        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
                fprintf(f, "  %s\n", commands[i].help);
        fprintf(f, "\nThe root is $VRT_ROOT or /var/lib/vrt; runtime files live in $VRT_RUNTIME_DIR or /run/vrt.\n"
                   "Exit status: 0 ok, 1 operation failed, 2 bad usage or input.\n");
}

/* "vrt 0.1.0", with "(git DESCRIBE)" when that says something else. */
static void print_version(const char *prog) {
        if (strcmp(VRT_VCS_TAG, VRT_VERSION) == 0)
                printf("%s %s\n", prog, VRT_VERSION);
        else
                printf("%s %s (git %s)\n", prog, VRT_VERSION, VRT_VCS_TAG);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "root", required_argument, NULL, 'r' },
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                { 0 },
        };
        struct cli cli = {
                .root = paths_root_from_env(),
                .runtime_dir = paths_runtime_from_env(),
        };
        int c;

        log_setup("vrt");
        /* "+": options after the command belong to the command. */
        while ((c = getopt_long(argc, argv, "+r:jh", opts, NULL)) >= 0)
                switch (c) {
                case 'r':
                        cli.root = optarg;
                        break;
                case 'j':
                        cli.json = true;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                case 'V':
                        print_version("vrt");
                        return 0;
                default:
                        usage(stderr);
                        return CLI_INVALID;
                }
        if (optind >= argc) {
                usage(stderr);
                return CLI_INVALID;
        }
        char *root = paths_absolute(cli.root), *runtime = paths_absolute(cli.runtime_dir);
        if (!root || !runtime) {
                cli_error("out of memory");
                return CLI_FAILED;
        }
        cli.root = root;
        cli.runtime_dir = runtime;
        /* --json is accepted anywhere, as in "vrt list --json". */
        int first = optind, n = 0;
        for (int i = first; i < argc; i++) {
                if (strcmp(argv[i], "--json") == 0)
                        cli.json = true;
                else
                        argv[first + n++] = argv[i];
        }
        argv[first + n] = NULL;
        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
                if (strcmp(argv[first], commands[i].name) == 0) {
                        optind = 0;     /* subcommands run getopt afresh */
                        int status = commands[i].run(&cli, n, argv + first);
                        free(root);
                        free(runtime);
                        return status;
                }
        cli_error("unknown command \"%s\" (see vrt --help)", argv[first]);
        free(root);
        free(runtime);
        return CLI_INVALID;
}
