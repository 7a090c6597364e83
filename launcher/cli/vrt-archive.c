/* vrt-archive: vrt's export, import, backup and restore, which need
 * libarchive and libcrypto. vrt runs it with its own argv. */
#include <stddef.h>

#include "launcher/cli/cli.h"

static const struct cli_command commands[] = {
        { "export", cmd_export, NULL, "export NAME FILE      (run as vrt export)" },
        { "import", cmd_import, NULL, "import FILE           (run as vrt import)" },
        { "backup", cmd_backup, NULL, "backup NAME DEST      (run as vrt backup)" },
        { "restore", cmd_restore, NULL, "restore DEST[/FILE]   (run as vrt restore)" },
};

int main(int argc, char **argv) {
        return cli_main("vrt-archive", argc, argv, commands, sizeof commands / sizeof commands[0]);
}
