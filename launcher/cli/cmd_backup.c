/* vrt backup NAME DEST [--incremental] [--speed RATE], vrt restore DEST[/FILE] [NEWNAME] [--point N]. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "launcher/cli/cli.h"
#include "launcher/core/config.h"
#include "launcher/lifecycle/backup.h"

static volatile sig_atomic_t backup_cancel;

static void on_signal(int sig) {
        (void)sig;
        backup_cancel = 1;
}

static void catch_signals(void) {
        struct sigaction sa = { .sa_handler = on_signal };
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
}

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct progress {
        const char *what;
        double start, last;
        bool shown;
};

/* "backing up a: 12.0/64.0 MiB  18%  5.2 MiB/s", at most 10 times a second. */
static int show_progress(uint64_t done, uint64_t total, void *userdata) {
        struct progress *p = userdata;
        double t = now_s();
        if (p->shown && t - p->last < 0.1 && done < total)
                return 0;
        p->last = t;
        p->shown = true;
        double rate = t > p->start ? (double)done / (t - p->start) : 0;
        fprintf(stderr, "\r%s: %.1f/%.1f MiB %3d%% %.1f MiB/s   ", p->what, (double)done / 1048576.0,
                (double)total / 1048576.0, total ? (int)(done * 100 / total) : 100, rate / 1048576.0);
        fflush(stderr);
        return 0;
}

static void end_progress(const struct progress *p) {
        if (p->shown)
                fputc('\n', stderr);
}

int cmd_backup(struct cli *cli, int argc, char **argv) {
        static const char usage[] =
                "usage: vrt backup NAME DEST [--incremental] [--speed RATE] [--json]   (the next point of DEST's chain)";
        static const struct option opts[] = {
                { "incremental", no_argument, NULL, 'i' },
                { "speed", required_argument, NULL, 's' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        bool incremental = false;
        uint64_t speed = 0;
        char err[2048], what[128];
        int c;

        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'i':
                        incremental = true;
                        break;
                case 's':
                        if (config_parse_size(optarg, &speed) < 0 || speed == 0) {
                                cli_error("--speed %s: not a size in bytes per second (e.g. 50M)", optarg);
                                return CLI_INVALID;
                        }
                        break;
                case 'h':
                        puts(usage + 7);
                        return CLI_OK;
                default:
                        return cli_usage_error(usage);
                }
        }
        if (argc - optind != 2)
                return cli_usage_error(usage);
        catch_signals();
        snprintf(what, sizeof what, "backing up %s", argv[optind]);
        struct progress prog = { .what = what, .start = now_s() };
        struct backup_request req = {
                .root = cli->root,
                .runtime_dir = cli->runtime_dir,
                .name = argv[optind],
                .dest = argv[optind + 1],
                .incremental = incremental,
                .speed = speed,
                .progress = !cli->json && isatty(STDERR_FILENO) ? show_progress : NULL,
                .userdata = &prog,
                .cancel = &backup_cancel,
        };
        struct backup_result res = { 0 };
        double t0 = now_s();
        int r = backup_vm(&req, &res, err, sizeof err);
        double secs = now_s() - t0;
        end_progress(&prog);
        if (res.orphan[0]) {
                /* res.orphan is FILE.orphan[.N]: the last ".orphan" ends FILE. */
                const char *end = NULL;
                for (const char *p = res.orphan; (p = strstr(p, ".orphan")); p++)
                        end = p;
                fprintf(stderr, "vrt: note: %.*s was not listed in %s (a vrt backup died before recording it): moved aside as %s\n",
                        end ? (int)(end - res.orphan) : (int)strlen(res.orphan), res.orphan, BACKUP_STATE_FILE, res.orphan);
        }
        if (r < 0) {
                cli_error("%s", err);
                return r == -EBUSY || r == -ECANCELED ? CLI_FAILED : cli_status_for(r);
        }
        if (cli->json) {
                struct json_object *o = json_object_new_object();
                json_object_object_add(o, "name", json_object_new_string(req.name));
                json_object_object_add(o, "dest", json_object_new_string(req.dest));
                json_object_object_add(o, "point", json_object_new_int((int)res.point));
                json_object_object_add(o, "file", json_object_new_string(res.file));
                json_object_object_add(o, "kind", json_object_new_string(res.incremental ? "incremental" : "full"));
                json_object_object_add(o, "running", json_object_new_boolean(res.running));
                json_object_object_add(o, "bitmap", json_object_new_boolean(res.bitmap));
                json_object_object_add(o, "virtual_size", json_object_new_int64((int64_t)res.virtual_size));
                json_object_object_add(o, "file_size", json_object_new_int64((int64_t)res.file_size));
                json_object_object_add(o, "copied", json_object_new_int64((int64_t)res.copied));
                json_object_object_add(o, "seconds", json_object_new_double(secs));
                json_object_object_add(o, "orphan", res.orphan[0] ? json_object_new_string(res.orphan) : NULL);
                puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(o);
        } else {
                printf("%s: %s backup point %u in %s (%.1f MiB%s)\n", req.name, res.incremental ? "incremental" : "full",
                       res.point, res.file, (double)res.file_size / 1048576.0,
                       !res.running ? "; VM stopped: copied offline, the next backup must be full to start a bitmap"
                       : res.bitmap ? "; live, bitmap kept for the next --incremental"
                                    : "; live, but the bitmap could not be kept: the next backup must be full");
        }
        return CLI_OK;
}

int cmd_restore(struct cli *cli, int argc, char **argv) {
        static const char usage[] =
                "usage: vrt restore DEST[/FILE] [NEWNAME] [--point N] [--json]   (a new VM from a backup point)";
        static const struct option opts[] = {
                { "point", required_argument, NULL, 'p' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        int point = -1, c;
        unsigned v;
        char err[2048];

        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'p':
                        if (config_parse_uint(optarg, 0, BACKUP_POINTS_MAX - 1, &v) < 0) {
                                cli_error("--point %s: not a number from 0 to %d", optarg, BACKUP_POINTS_MAX - 1);
                                return CLI_INVALID;
                        }
                        point = (int)v;
                        break;
                case 'h':
                        puts(usage + 7);
                        return CLI_OK;
                default:
                        return cli_usage_error(usage);
                }
        }
        if (argc - optind != 1 && argc - optind != 2)
                return cli_usage_error(usage);
        catch_signals();
        struct progress prog = { .what = "restoring", .start = now_s() };
        struct restore_request req = {
                .root = cli->root,
                .runtime_dir = cli->runtime_dir,
                .source = argv[optind],
                .point = point,
                .new_name = argc - optind == 2 ? argv[optind + 1] : NULL,
                .progress = !cli->json && isatty(STDERR_FILENO) ? show_progress : NULL,
                .userdata = &prog,
                .cancel = &backup_cancel,
        };
        struct import_result res;
        unsigned used = 0;
        int r = restore_vm(&req, &res, &used, err, sizeof err);
        end_progress(&prog);
        if (r < 0) {
                cli_error("%s", err);
                return r == -EINVAL ? CLI_INVALID : CLI_FAILED;
        }
        if (cli->json) {
                struct json_object *o = json_object_new_object();
                json_object_object_add(o, "name", json_object_new_string(res.name));
                json_object_object_add(o, "point", json_object_new_int((int)used));
                json_object_object_add(o, "macs", json_object_new_string(res.macs));
                json_object_object_add(o, "new_macs", json_object_new_boolean(res.new_macs));
                json_object_object_add(o, "vm_dir", json_object_new_string(res.vm_dir));
                json_object_object_add(o, "disk_size", json_object_new_int64((int64_t)res.disk_size));
                puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(o);
        } else {
                printf("%s: restored from point %u of %s (MAC %s%s)\n", res.name, used, req.source,
                       res.macs[0] ? res.macs : "none", res.new_macs ? "; the backed-up MAC is taken here, a new one was assigned" : "");
        }
        return CLI_OK;
}
