/* The global options and the dispatch to a subcommand, shared by vrt and
 * its helper programs. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launcher/cli/cli.h"
#include "launcher/core/log.h"
#include "launcher/core/paths.h"
#include "version.h"

static void usage(FILE *f, const char *prog, const struct cli_command *cmds, size_t n) {
        fprintf(f, "usage: %s [--root DIR] [--json] COMMAND [ARGS] | --version\n\ncommands:\n", prog);
        for (size_t i = 0; i < n; i++)
                fprintf(f, "  %s\n", cmds[i].help);
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

/* Runs HELPER with vrt's own argv: from the directory of this program (the
 * build tree, or a bindir that holds both), else from LIBEXECDIR/vrt. */
static int exec_helper(const char *helper, const char *command, char **argv) {
        char path[PATH_MAX], *beside = paths_beside_self(helper);
        if (beside)
                execv(beside, argv);
        free(beside);
        snprintf(path, sizeof path, "%s/%s", VRT_LIBEXECDIR, helper);
        execv(path, argv);
        cli_error("%s: cannot run %s: %s", command, path, strerror(errno));
        return CLI_FAILED;
}

int cli_main(const char *prog, int argc, char **argv, const struct cli_command *cmds, size_t ncmds) {
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
        /* A helper gets argv as it was: the loop below reorders it. */
        char **original = calloc((size_t)argc + 1, sizeof *original);
        if (!original) {
                cli_error("out of memory");
                return CLI_FAILED;
        }
        memcpy(original, argv, (size_t)argc * sizeof *argv);
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
                        usage(stdout, prog, cmds, ncmds);
                        free(original);
                        return 0;
                case 'V':
                        print_version(prog);
                        free(original);
                        return 0;
                default:
                        usage(stderr, prog, cmds, ncmds);
                        free(original);
                        return CLI_INVALID;
                }
        if (optind >= argc) {
                usage(stderr, prog, cmds, ncmds);
                free(original);
                return CLI_INVALID;
        }
        char *root = paths_absolute(cli.root), *runtime = paths_absolute(cli.runtime_dir);
        if (!root || !runtime) {
                cli_error("out of memory");
                free(original);
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
        int status = CLI_INVALID;
        size_t i;
        for (i = 0; i < ncmds && strcmp(argv[first], cmds[i].name) != 0; i++)
                ;
        if (i == ncmds)
                cli_error("unknown command \"%s\" (see vrt --help)", argv[first]);
        else if (cmds[i].run) {
                optind = 0;     /* subcommands run getopt afresh */
                status = cmds[i].run(&cli, n, argv + first);
        } else
                status = exec_helper(cmds[i].helper, cmds[i].name, original);
        free(original);
        free(root);
        free(runtime);
        return status;
}
