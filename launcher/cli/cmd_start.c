/* vrt start, vrt stop: several VMs at once, in parallel, one result each. */
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/cli/cli.h"
#include "launcher/core/config.h"
#include "launcher/lifecycle/service.h"
#include "launcher/lifecycle/stop.h"

static const char *outcome_word(enum service_outcome o, bool start) {
        switch (o) {
        case SERVICE_DONE:
                return start ? "started" : "stopped";
        case SERVICE_ALREADY:
                return start ? "already-running" : "not-running";
        case SERVICE_INVALID:
                return "invalid";
        case SERVICE_FAILED:
        default:
                return "failed";
        }
}

/* Prints one line (or one JSON object) per VM and picks the exit status:
 * 1 if any VM failed, else 2 if any name was bad, else 0. */
static int report(const struct cli *cli, char *const *names, size_t n, const struct service_result *res, bool start) {
        int status = CLI_OK;
        json_object *arr = cli->json ? json_object_new_array() : NULL;
        for (size_t i = 0; i < n; i++) {
                if (res[i].outcome == SERVICE_FAILED)
                        status = CLI_FAILED;
                else if (res[i].outcome == SERVICE_INVALID && status == CLI_OK)
                        status = CLI_INVALID;
                if (arr) {
                        json_object *o = json_object_new_object();
                        json_object_object_add(o, "name", json_object_new_string(names[i]));
                        json_object_object_add(o, "result", json_object_new_string(outcome_word(res[i].outcome, start)));
                        json_object_object_add(o, "pid", res[i].pid > 0 ? json_object_new_int(res[i].pid) : NULL);
                        json_object_object_add(o, "message", json_object_new_string(res[i].message));
                        json_object_array_add(arr, o);
                } else if (res[i].outcome == SERVICE_DONE || res[i].outcome == SERVICE_ALREADY) {
                        printf("%s: %s\n", names[i], res[i].message);
                } else {
                        cli_error("%s: %s", names[i], res[i].message);
                }
        }
        if (arr) {
                printf("%s\n", json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(arr);
        }
        fflush(stdout);
        return status;
}

/* Drops repeated names so one VM is never started twice by one call. */
static size_t unique_names(char **names, size_t n) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
                bool seen = false;
                for (size_t k = 0; k < m; k++)
                        if (strcmp(names[k], names[i]) == 0)
                                seen = true;
                if (!seen)
                        names[m++] = names[i];
        }
        return m;
}

static int parse_seconds(const char *opt, const char *arg, unsigned min, unsigned *ret) {
        if (config_parse_uint(arg, min, 86400, ret) < 0) {
                cli_error("invalid %s \"%s\" (seconds, %u..86400)", opt, arg, min);
                return -1;
        }
        return 0;
}

static int run(struct cli *cli, char **names, size_t n, struct service_options *o, bool start) {
        char note[512];
        struct service_result *res = calloc(n, sizeof *res);
        if (!res) {
                cli_error("out of memory");
                return CLI_FAILED;
        }
        o->root = cli->root;
        o->runtime_dir = cli->runtime_dir;
        if (start) {
                /* systemd is asked about vrt@NAME.service for a valid NAME. */
                const char *probe = NULL;
                for (size_t i = 0; i < n && !probe; i++)
                        if (config_check_vm_name(names[i], cli->runtime_dir, note, sizeof note) == 0)
                                probe = names[i];
                if (service_manager_detect(cli->root, cli->runtime_dir, probe, &o->manager, note, sizeof note) < 0) {
                        cli_error("%s", note);
                        free(res);
                        return CLI_INVALID;
                }
                if (note[0])
                        cli_error("note: %s", note);
        }
        int r = start ? service_start(o, names, n, res) : service_stop(o, names, n, res);
        if (r < 0) {
                cli_error("%s: %s", start ? "start" : "stop", strerror(-r));
                free(res);
                return CLI_FAILED;
        }
        int status = report(cli, names, n, res, start);
        free(res);
        return status;
}

int cmd_start(struct cli *cli, int argc, char **argv) {
        static const struct option opts[] = {
                { "wait", required_argument, NULL, 'w' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        struct service_options o = { 0 };
        int c;
        while ((c = getopt_long(argc, argv, "w:h", opts, NULL)) >= 0)
                switch (c) {
                case 'w':
                        if (parse_seconds("--wait", optarg, 1, &o.wait_s) < 0)
                                return CLI_INVALID;
                        break;
                case 'h':
                        printf("usage: vrt start [--wait S] NAME...\n"
                               "Starts VMs in parallel and waits up to S seconds (default %d) until each runs.\n"
                               "With systemd as PID 1 a VM is the unit vrt@NAME.service; otherwise vrt-launch\n"
                               "runs detached, logging to vm/NAME/log/launch.log.\n", SERVICE_START_WAIT_S);
                        return CLI_OK;
                default:
                        return CLI_INVALID;
                }
        if (optind >= argc) {
                cli_error("usage: vrt start [--wait S] NAME...");
                return CLI_INVALID;
        }
        size_t n = unique_names(argv + optind, (size_t)(argc - optind));
        return run(cli, argv + optind, n, &o, true);
}

int cmd_stop(struct cli *cli, int argc, char **argv) {
        static const struct option opts[] = {
                { "timeout", required_argument, NULL, 't' },
                { "force", no_argument, NULL, 'f' },
                { "wait", required_argument, NULL, 'w' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        struct service_options o = { 0 };
        int c;
        while ((c = getopt_long(argc, argv, "t:fw:h", opts, NULL)) >= 0)
                switch (c) {
                case 't':
                        if (parse_seconds("--timeout", optarg, 1, &o.shutdown_timeout) < 0)
                                return CLI_INVALID;
                        break;
                case 'f':
                        o.force = true;
                        break;
                case 'w':
                        if (parse_seconds("--wait", optarg, 1, &o.wait_s) < 0)
                                return CLI_INVALID;
                        break;
                case 'h':
                        printf("usage: vrt stop [--timeout S] [--force] [--wait S] NAME...\n"
                               "Stops VMs in parallel: ACPI power button, and after the shutdown timeout\n"
                               "(vrt.conf, instance.properties, or --timeout S) quit, SIGTERM, SIGKILL.\n"
                               "--force powers off at once (QMP quit). Waits until each supervisor is gone,\n"
                               "at most --wait S (default: the timeout plus %ds).\n", STOP_ESCALATION_S);
                        return CLI_OK;
                default:
                        return CLI_INVALID;
                }
        if (optind >= argc) {
                cli_error("usage: vrt stop [--timeout S] [--force] [--wait S] NAME...");
                return CLI_INVALID;
        }
        if (o.force && o.shutdown_timeout) {
                cli_error("--force and --timeout exclude each other");
                return CLI_INVALID;
        }
        size_t n = unique_names(argv + optind, (size_t)(argc - optind));
        return run(cli, argv + optind, n, &o, false);
}
