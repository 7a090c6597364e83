/* vrt-top: vrt top, which needs ncurses. vrt runs it with its own argv. */
#include <stddef.h>

#include "launcher/cli/cli.h"

static const struct cli_command commands[] = {
        { "top", cmd_top, NULL, "top                   (run as vrt top)" },
};

int main(int argc, char **argv) {
        return cli_main("vrt-top", argc, argv, commands, sizeof commands / sizeof commands[0]);
}
