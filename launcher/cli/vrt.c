/* vrt: the command line. The commands whose libraries are large (libarchive
 * and libcrypto for export/import/backup/restore, ncurses for top) run in
 * helper programs, so that every other command starts without loading
 * them: see cli_main(). */
#include <stddef.h>

#include "launcher/cli/cli.h"

static const struct cli_command commands[] = {
        { "list", cmd_list, NULL, "list [--all]          VMs with state, image, size, MAC, pid, uptime" },
        { "status", cmd_status, NULL, "status NAME           state and QEMU's view: vCPUs, memory, disks, NICs" },
        { "stats", cmd_stats, NULL, "stats [NAME...]       CPU, memory, disk, net use; --interval S, --prometheus" },
        { "top", NULL, "vrt-top", "top                   live view of the VMs' CPU, memory, disk and net use" },
        { "start", cmd_start, NULL, "start NAME...         start VMs (systemd unit, or detached vrt-launch)" },
        { "stop", cmd_stop, NULL, "stop NAME...          ACPI power button, escalating; --force: power off now" },
        { "spool", cmd_spool, NULL, "spool [--watch]       carry out requests in inst/ start/ stop/ destroy/" },
        { "autostart", cmd_autostart, NULL, "autostart             start autostart/ VMs and those with autostart=yes" },
        { "create", cmd_create, NULL, "create X|FILE|FLAGS   new VM from inst/X.properties, a file or flags" },
        { "init", cmd_init, NULL, "init NAME [--reset]   run a failed first boot (init=) again" },
        { "destroy", cmd_destroy, NULL, "destroy NAME...       stop, delete the disk, mark DESTROYED" },
        { "cleanup", cmd_cleanup, NULL, "cleanup               remove the directories of destroyed VMs" },
        { "migrate", cmd_migrate, NULL, "migrate NAME HOST     live migration to another host on this root" },
        { "export", NULL, "vrt-archive", "export NAME FILE      one archive: properties, flattened disk, sidecar (also running)" },
        { "import", NULL, "vrt-archive", "import FILE [--name N] a VM from an export archive (taken MAC: a new one)" },
        { "backup", NULL, "vrt-archive", "backup NAME DEST      full or --incremental backup into a chain in DEST (also running)" },
        { "restore", NULL, "vrt-archive", "restore DEST[/FILE]   a new VM from a backup point (--point N)" },
        { "image", cmd_image, NULL, "image CMD ...         images: info, overlay, list, protect, install (from an ISO)" },
        { "snapshot", cmd_snapshot, NULL, "snapshot NAME [TAG]   external disk snapshots; list, revert, delete" },
        { "check", cmd_check, NULL, "check                 validate vrt.conf, images, VMs and requests" },
        { "showcmd", cmd_showcmd, NULL, "showcmd NAME          print the exact QEMU command line" },
        { "qmp", cmd_qmp, NULL, "qmp NAME CMD [ARGS]   run one QMP command on a running VM" },
        { "agent", cmd_agent, NULL, "agent NAME CMD [ARGS] run one guest agent (qemu-ga) command; 3: no agent" },
        { "console", cmd_console, NULL, "console NAME          attach to the serial console (Ctrl-] leaves)" },
};

int main(int argc, char **argv) {
        return cli_main("vrt", argc, argv, commands, sizeof commands / sizeof commands[0]);
}
