/* vrt export [--with-template] NAME FILE, vrt import FILE [--name NEW | NEWNAME]: a VM as one archive. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "launcher/cli/cli.h"
#include "launcher/lifecycle/export.h"

static volatile sig_atomic_t export_cancel;

static void on_signal(int sig) {
        (void)sig;
        export_cancel = 1;
}

static void catch_signals(void) {
        /* No SA_RESTART: a wait for the registry lock ends too. */
        struct sigaction sa = { .sa_handler = on_signal };
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
}

struct progress {
        const char *what;
        int last_percent;
        bool shown;
};

static int show_progress(uint64_t done, uint64_t total, void *userdata) {
        struct progress *p = userdata;
        int percent = total ? (int)(done * 100 / total) : 100;
        if (percent > 100)
                percent = 100;
        if (percent == p->last_percent)
                return 0;
        p->last_percent = percent;
        p->shown = true;
        int width = 30, filled = percent * width / 100;
        fprintf(stderr, "\r%s [%.*s%*s] %3d%% %.1f/%.1f MiB", p->what, filled, "##############################",
                width - filled, "", percent, (double)done / 1048576.0, (double)total / 1048576.0);
        fflush(stderr);
        return 0;
}

static void end_progress(const struct progress *p) {
        if (p->shown)
                fputc('\n', stderr);
}

int cmd_export(struct cli *cli, int argc, char **argv) {
        static const char usage[] =
                "usage: vrt export [--with-template] NAME FILE   (stopped or running; FILE must not exist)";
        static const struct option opts[] = {
                { "with-template", no_argument, NULL, 't' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        char err[2048], what[128];
        bool with_template = false;
        int c;

        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                if (c == 'h') {
                        puts(usage + 7);
                        return CLI_OK;
                }
                if (c == 't') {
                        with_template = true;
                        continue;
                }
                return cli_usage_error(usage);
        }
        if (argc - optind != 2)
                return cli_usage_error(usage);
        catch_signals();
        snprintf(what, sizeof what, "exporting %s", argv[optind]);
        struct progress prog = { .what = what, .last_percent = -1 };
        struct export_request req = {
                .root = cli->root,
                .runtime_dir = cli->runtime_dir,
                .name = argv[optind],
                .file = argv[optind + 1],
                .with_template = with_template,
                .progress = !cli->json && isatty(STDERR_FILENO) ? show_progress : NULL,
                .userdata = &prog,
                .cancel = &export_cancel,
        };
        struct export_result res = { 0 };
        int r = export_vm(&req, &res, err, sizeof err);
        end_progress(&prog);
        if (r < 0) {
                cli_error("%s", err);
                return r == -EBUSY || r == -ECANCELED ? CLI_FAILED : cli_status_for(r);
        }
        if (cli->json) {
                struct json_object *o = json_object_new_object();
                json_object_object_add(o, "name", json_object_new_string(req.name));
                json_object_object_add(o, "file", json_object_new_string(req.file));
                json_object_object_add(o, "archive_size", json_object_new_int64((int64_t)res.archive_size));
                json_object_object_add(o, "disk_size", json_object_new_int64((int64_t)res.disk_size));
                json_object_object_add(o, "virtual_size", json_object_new_int64((int64_t)res.virtual_size));
                json_object_object_add(o, "source_layers", json_object_new_int((int)res.n_layers));
                json_object_object_add(o, "members", json_object_new_int((int)res.n_members));
                json_object_object_add(o, "running", json_object_new_boolean(res.running));
                json_object_object_add(o, "with_template", json_object_new_boolean(res.with_template));
                puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                json_object_put(o);
        } else {
                printf("%s: exported to %s (%.1f MiB, %u members", req.name, req.file,
                       (double)res.archive_size / 1048576.0, res.n_members);
                if (res.n_layers && res.with_template)
                        printf("; disk of %u layers kept as a chain", res.n_layers);
                else if (res.n_layers)
                        printf("; disk of %u layer%s flattened to %.1f MiB", res.n_layers, res.n_layers > 1 ? "s" : "",
                               (double)res.disk_size / 1048576.0);
                if (res.running)
                        printf("; copied from the running VM with blockdev-backup");
                printf(")\n");
        }
        return CLI_OK;
}

int cmd_import(struct cli *cli, int argc, char **argv) {
        static const char usage[] = "usage: vrt import FILE [--name NEW | NEWNAME]   (a MAC taken on this root is replaced by a new one)";
        static const struct option opts[] = {
                { "name", required_argument, NULL, 'n' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        const char *new_name = NULL;
        char err[2048];
        int c;

        while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) >= 0) {
                switch (c) {
                case 'n':
                        new_name = optarg;
                        break;
                case 'h':
                        puts(usage + 7);
                        return CLI_OK;
                default:
                        return cli_usage_error(usage);
                }
        }
        if (argc - optind == 2 && !new_name)
                new_name = argv[optind + 1];
        else if (argc - optind != 1)
                return cli_usage_error(usage);
        catch_signals();
        struct progress prog = { .what = "importing", .last_percent = -1 };
        struct import_request req = {
                .root = cli->root,
                .runtime_dir = cli->runtime_dir,
                .file = argv[optind],
                .new_name = new_name,
                .progress = !cli->json && isatty(STDERR_FILENO) ? show_progress : NULL,
                .userdata = &prog,
                .cancel = &export_cancel,
        };
        struct import_result res;
        int r = import_vm(&req, &res, err, sizeof err);
        end_progress(&prog);
        if (r < 0) {
                cli_error("%s", err);
                return r == -EINVAL ? CLI_INVALID : CLI_FAILED;
        }
        if (cli->json) {
                struct json_object *o = json_object_new_object(), *macs = json_object_new_array();
                json_object_object_add(o, "name", json_object_new_string(res.name));
                for (const char *p = res.macs; *p;) {
                        size_t n = strcspn(p, ",");
                        json_object_array_add(macs, json_object_new_string_len(p, (int)n));
                        p += n;
                        p += strspn(p, ", ");
                }
                json_object_object_add(o, "macs", macs);
                json_object_object_add(o, "new_macs", json_object_new_boolean(res.new_macs));
                json_object_object_add(o, "vm_dir", json_object_new_string(res.vm_dir));
                json_object_object_add(o, "disk_size", json_object_new_int64((int64_t)res.disk_size));
                json_object_object_add(o, "images_installed", json_object_new_int((int)res.images_installed));
                puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                json_object_put(o);
        } else {
                printf("%s: imported from %s (MAC %s%s", res.name, req.file, res.macs[0] ? res.macs : "none",
                       res.new_macs ? "; the archived MAC is taken here, a new one was assigned" : "");
                if (res.images_installed)
                        printf("; %u image file%s installed in images/", res.images_installed,
                               res.images_installed > 1 ? "s" : "");
                printf(")\n");
        }
        return CLI_OK;
}
