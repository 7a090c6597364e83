/* cli: what every `vrt` subcommand shares. Each cmd_* returns the exit
 * status: 0 ok, 1 the operation failed, 2 bad usage or bad input, 5 the
 * VM runs on another host (as vrt-launch's exit 5): not done here, 3 (vrt
 * agent) the VM runs but no guest agent answered. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

enum { CLI_OK = 0, CLI_FAILED = 1, CLI_INVALID = 2, CLI_NO_AGENT = 3, CLI_ELSEWHERE = 5 };

struct cli {
        const char *root;
        const char *runtime_dir;
        bool json;
};

/* A subcommand: run here, or (run NULL) by the program helper, which gets
 * the same argv. */
struct cli_command {
        const char *name;
        int (*run)(struct cli *cli, int argc, char **argv);
        const char *helper;
        const char *help;
};

/* Parses the global options and runs the command argv names; returns the
 * exit status. prog: the name --help and --version print. */
int cli_main(const char *prog, int argc, char **argv, const struct cli_command *cmds, size_t ncmds);

/* Prints "vrt: MESSAGE" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Maps a negative errno from loading input to an exit status. */
int cli_status_for(int r);

/* Says usage in one line on stderr; returns CLI_INVALID. */
int cli_usage_error(const char *usage);
/* Writes s to stdout, single-quoted for a POSIX shell when needed. */
void cli_print_shell_quoted(const char *s);

int cmd_check(struct cli *cli, int argc, char **argv);
int cmd_showcmd(struct cli *cli, int argc, char **argv);
int cmd_qmp(struct cli *cli, int argc, char **argv);
int cmd_agent(struct cli *cli, int argc, char **argv);
int cmd_console(struct cli *cli, int argc, char **argv);
int cmd_create(struct cli *cli, int argc, char **argv);
int cmd_init(struct cli *cli, int argc, char **argv);
int cmd_destroy(struct cli *cli, int argc, char **argv);
int cmd_cleanup(struct cli *cli, int argc, char **argv);
int cmd_start(struct cli *cli, int argc, char **argv);
int cmd_stop(struct cli *cli, int argc, char **argv);
int cmd_list(struct cli *cli, int argc, char **argv);
int cmd_status(struct cli *cli, int argc, char **argv);
int cmd_spool(struct cli *cli, int argc, char **argv);
int cmd_autostart(struct cli *cli, int argc, char **argv);
int cmd_image(struct cli *cli, int argc, char **argv);
int cmd_export(struct cli *cli, int argc, char **argv);
int cmd_import(struct cli *cli, int argc, char **argv);
int cmd_backup(struct cli *cli, int argc, char **argv);
int cmd_restore(struct cli *cli, int argc, char **argv);
int cmd_stats(struct cli *cli, int argc, char **argv);
int cmd_top(struct cli *cli, int argc, char **argv);
int cmd_snapshot(struct cli *cli, int argc, char **argv);
int cmd_migrate(struct cli *cli, int argc, char **argv);
