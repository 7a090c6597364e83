/* vrt spool, vrt autostart: the seed's request directories and boot-time
 * starts, wired to the real actions. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/cli/cli.h"
#include "launcher/core/config.h"
#include "launcher/core/paths.h"
#include "launcher/lifecycle/create.h"
#include "launcher/lifecycle/instantiate.h"
#include "launcher/lifecycle/destroy.h"
#include "launcher/lifecycle/service.h"
#include "launcher/lifecycle/spool.h"

#define DEFAULT_ROOT_WAIT_S 120
#define DEFAULT_RESCAN_S 60

struct actions {
        struct cli *cli;
        enum service_manager manager;
        bool manager_known;
};

static struct service_options options_for(struct actions *a, char *const *names) {
        struct service_options o = { .root = a->cli->root, .runtime_dir = a->cli->runtime_dir };
        if (!a->manager_known) {
                char note[512];
                a->manager = SERVICE_DETACHED;
                /* The spool passes valid names only. */
                if (service_manager_detect(a->cli->root, a->cli->runtime_dir, names[0], &a->manager, note, sizeof note) < 0 || note[0])
                        cli_error("note: %s", note);
                a->manager_known = true;
        }
        o.manager = a->manager;
        return o;
}

static int do_start(void *userdata, char *const *names, size_t n, struct service_result *res) {
        struct service_options o = options_for(userdata, names);
        return service_start(&o, names, n, res);
}

static int do_stop(void *userdata, char *const *names, size_t n, bool force, struct service_result *res) {
        struct service_options o = options_for(userdata, names);
        o.force = force;
        return service_stop(&o, names, n, res);
}

static int do_instantiate(void *userdata, const char *path, char **ret_name, char *err, size_t errlen) {
        struct actions *a = userdata;
        char *default_name = NULL, source[300];
        /* inst/pluto-4711.properties names its VM, as with `vrt create`. */
        if (create_default_name(path, &default_name) < 0)
                return -ENOMEM;
        /* The request, not the claim directory it was moved into meanwhile. */
        const char *base = strrchr(path, '/');
        snprintf(source, sizeof source, "inst/%s", base ? base + 1 : path);
        struct instantiate_request req = {
                .create = {
                        .root = a->cli->root,
                        .runtime_dir = a->cli->runtime_dir,
                        .props_path = path,
                        .default_name = default_name,
                },
                .source = source,
        };
        struct instantiate_result res = { 0 };
        char why[1024] = "";
        int r = instantiate_vm(&req, &res, why, sizeof why);
        free(default_name);
        if (r < 0 && res.exists)
                snprintf(err, errlen, "%s: created, but its first boot failed: %s", res.created.name, why);
        else if (r < 0)
                snprintf(err, errlen, "%s", why);
        if (r == 0) {
                *ret_name = res.created.name;
                res.created.name = NULL;
        }
        instantiate_result_done(&res);
        return r;
}

static int do_destroy(void *userdata, const char *name, struct service_result *res) {
        struct actions *a = userdata;
        struct destroy_result d = { 0 };
        char err[sizeof res->message], removed[32] = "";
        int r = destroy_vm(a->cli->root, a->cli->runtime_dir, name, false, &d, err, sizeof err);
        if (r < 0) {
                res->outcome = SERVICE_FAILED;
                snprintf(res->message, sizeof res->message, "destroy failed: %s", err);
                return r;
        }
        for (size_t i = 0; i < 2; i++)
                if (d.removed[i][0])
                        snprintf(removed + strlen(removed), sizeof removed - strlen(removed), "%s%s",
                                 removed[0] ? ", " : "", d.removed[i]);
        res->outcome = SERVICE_DONE;
        if (d.gone)
                snprintf(res->message, sizeof res->message, "already destroyed and cleaned up");
        else if (d.already_destroyed && !d.was_running && !removed[0])
                snprintf(res->message, sizeof res->message, "already destroyed");
        else
                snprintf(res->message, sizeof res->message, "destroyed (%s%s%s)", d.was_running ? "stopped, " : "",
                         removed[0] ? "deleted " : "no disk to delete", removed);
        return 0;
}

static void do_report(void *userdata, enum spool_queue q, bool failure, const char *line) {
        if (failure) {
                cli_error("%s: %s", spool_queue_to_string(q), line);
        } else {
                printf("%s: %s\n", spool_queue_to_string(q), line);
                fflush(stdout);
        }
}

static const struct spool_handlers handlers = {
        .instantiate = do_instantiate,
        .start = do_start,
        .stop = do_stop,
        .destroy = do_destroy,
        .report = do_report,
};

static int parse_seconds(const char *opt, const char *arg, unsigned min, unsigned *ret) {
        if (config_parse_uint(arg, min, 86400, ret) < 0) {
                cli_error("invalid %s \"%s\" (seconds, %u..86400)", opt, arg, min);
                return -1;
        }
        return 0;
}

static int wait_root(struct cli *cli, unsigned wait_s) {
        if (spool_wait_root(cli->root, wait_s) == 0)
                return CLI_OK;
        cli_error("%s is not a vrt root (no vrt.conf, no vm/)%s", cli->root,
                  wait_s ? "; waited for it to be mounted" : "");
        return CLI_FAILED;
}

/* The request directories, writable by vrt.conf's group= when it names one. */
static int prepare_dirs(struct cli *cli) {
        char err[1024];
        struct host_config *host = NULL;
        char *conf = paths_join(cli->root, "vrt.conf");
        if (!conf) {
                cli_error("out of memory");
                return CLI_FAILED;
        }
        int r = host_config_load(conf, &host, err, sizeof err);
        free(conf);
        if (r < 0) {
                cli_error("%s", err);
                return CLI_INVALID;
        }
        long gid = -1;
        if (host->group) {
                struct group *gr = getgrnam(host->group);
                if (!gr) {
                        cli_error("%s:%u: group=%s does not exist", host->path, host->line_group, host->group);
                        host_config_free(host);
                        return CLI_INVALID;
                }
                gid = (long)gr->gr_gid;
        }
        host_config_free(host);
        r = spool_dirs_prepare(cli->root, gid, err, sizeof err);
        if (r < 0) {
                cli_error("%s", err);
                return CLI_FAILED;
        }
        return CLI_OK;
}

int cmd_spool(struct cli *cli, int argc, char **argv) {
        static const struct option opts[] = {
                { "watch", no_argument, NULL, 'W' },
                { "rescan", required_argument, NULL, 'r' },
                { "wait", required_argument, NULL, 'w' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        unsigned rescan_s = DEFAULT_RESCAN_S, wait_s = 0;
        bool watch = false, only[_SPOOL_QUEUE_MAX] = { false }, some = false;
        int c;
        while ((c = getopt_long(argc, argv, "Wr:w:h", opts, NULL)) >= 0)
                switch (c) {
                case 'W':
                        watch = true;
                        break;
                case 'r':
                        if (parse_seconds("--rescan", optarg, 1, &rescan_s) < 0)
                                return CLI_INVALID;
                        break;
                case 'w':
                        if (parse_seconds("--wait", optarg, 0, &wait_s) < 0)
                                return CLI_INVALID;
                        break;
                case 'h':
                        printf("usage: vrt spool [--watch [--rescan S]] [--wait S] [inst|destroy|stop|start]...\n"
                               "Carries out the requests in ROOT/inst, destroy, stop and start (or the queues\n"
                               "named), logging to ROOT/log/{create,destroy,stop,start}.log.\n"
                               "--watch keeps running: new requests are taken within a moment (inotify) and\n"
                               "all queues are looked at every S seconds (default %d) for NFS.\n"
                               "--wait S waits up to S seconds for the root to be mounted.\n", DEFAULT_RESCAN_S);
                        return CLI_OK;
                default:
                        return CLI_INVALID;
                }
        for (int i = optind; i < argc; i++) {
                enum spool_queue q = spool_queue_from_string(argv[i]);
                if (q < 0) {
                        cli_error("unknown queue \"%s\" (inst, destroy, stop, start)", argv[i]);
                        return CLI_INVALID;
                }
                only[q] = some = true;
        }
        if (watch && some) {
                cli_error("--watch takes all queues");
                return CLI_INVALID;
        }
        int status = wait_root(cli, wait_s);
        if (status != CLI_OK)
                return status;

        status = prepare_dirs(cli);
        if (status != CLI_OK)
                return status;
        struct actions a = { .cli = cli };
        struct spool_handlers h = handlers;
        h.userdata = &a;
        struct spool s = { .root = cli->root, .runtime_dir = cli->runtime_dir, .h = &h };
        if (watch) {
                int r = spool_watch(&s, rescan_s);
                if (r < 0) {
                        cli_error("cannot watch %s: %s", cli->root, strerror(-r));
                        return CLI_FAILED;
                }
                return CLI_OK;
        }
        struct spool_stats st = { 0 };
        int first = 0;
        for (int q = 0; q < _SPOOL_QUEUE_MAX; q++) {
                if (some && !only[q])
                        continue;
                int r = spool_run_queue(&s, (enum spool_queue)q, &st);
                if (r < 0 && first == 0)
                        first = r;
        }
        return first < 0 || st.failed ? CLI_FAILED : CLI_OK;
}

int cmd_autostart(struct cli *cli, int argc, char **argv) {
        static const struct option opts[] = {
                { "wait", required_argument, NULL, 'w' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        unsigned wait_s = DEFAULT_ROOT_WAIT_S;
        int c;
        while ((c = getopt_long(argc, argv, "w:h", opts, NULL)) >= 0)
                switch (c) {
                case 'w':
                        if (parse_seconds("--wait", optarg, 0, &wait_s) < 0)
                                return CLI_INVALID;
                        break;
                case 'h':
                        printf("usage: vrt autostart [--wait S]\n"
                               "Starts the VMs named in ROOT/autostart/ and those with autostart=yes, after\n"
                               "waiting up to S seconds (default %d) for the root to be mounted.\n", DEFAULT_ROOT_WAIT_S);
                        return CLI_OK;
                default:
                        return CLI_INVALID;
                }
        if (optind != argc) {
                cli_error("usage: vrt autostart [--wait S]");
                return CLI_INVALID;
        }
        int status = wait_root(cli, wait_s);
        if (status != CLI_OK)
                return status;
        struct actions a = { .cli = cli };
        struct spool_handlers h = handlers;
        h.userdata = &a;
        struct spool s = { .root = cli->root, .runtime_dir = cli->runtime_dir, .h = &h };
        struct spool_stats st = { 0 };
        int r = spool_autostart(&s, &st);
        if (r < 0) {
                cli_error("autostart: %s", strerror(-r));
                return CLI_FAILED;
        }
        return st.failed ? CLI_FAILED : CLI_OK;
}
