/* vrt list, vrt status: what exists under ROOT/vm and what runs. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "launcher/cli/cli.h"
#include "launcher/core/config.h"
#include "launcher/core/lease.h"
#include "launcher/core/vmstate.h"
#include "launcher/lifecycle/firstboot.h"
#include "launcher/lifecycle/guestinfo.h"
#include "launcher/core/paths.h"
#include "launcher/core/runtime.h"
#include "launcher/core/strv.h"
#include "launcher/core/util.h"
#include "qmp/qmp.h"

#define STATUS_QMP_TIMEOUT_MS 5000

struct vm_info {
        char *name;
        const char *state;      /* running, stopped, destroyed, invalid, init-pending, init-failed */
        struct instance *inst;  /* NULL when it does not load */
        char error[512];
        pid_t pid;              /* the supervisor (on host), 0 when not running */
        char host[LEASE_HOST_MAX + 1];  /* where it runs; "" when not running */
        bool here;              /* it runs on this host */
        long long uptime;       /* seconds, -1 when not running */
};

static void vm_info_done(struct vm_info *v) {
        free(v->name);
        instance_free(v->inst);
        *v = (struct vm_info){ 0 };
}

/* Fills v for NAME; false (with v->error) only for out of memory. */
static bool vm_info_load(const struct cli *cli, const char *name, struct vm_info *v) {
        struct vm_paths p;
        *v = (struct vm_info){ .uptime = -1 };
        v->name = strdup(name);
        if (!v->name || vm_paths_init(&p, cli->root, cli->runtime_dir, name) < 0) {
                snprintf(v->error, sizeof v->error, "out of memory");
                return false;
        }
        if (config_check_vm_name(name, cli->runtime_dir, v->error, sizeof v->error) == 0)
                instance_load(p.instance, name, cli->runtime_dir, &v->inst, v->error, sizeof v->error);
        struct vm_running run;
        struct lease_holder holder;
        char why[128];
        long long since = 0;
        /* The lease says where the VM runs. A supervisor here whose lease
         * another host holds is a migration's other end (waiting for the
         * guest, or handing it over). */
        bool here = vmstate_running(&p, 0, 0, &run) > 0;
        if (vmstate_elsewhere(p.vm_dir, &holder) == 1) {
                v->state = "running";
                v->pid = (pid_t)holder.pid;
                since = holder.since;
                snprintf(v->host, sizeof v->host, "%s", holder.host);
        } else if (here) {
                v->state = "running";
                v->pid = run.pid;
                v->here = true;
                since = run.since;
                if (lease_host_name(v->host, sizeof v->host, why, sizeof why) < 0)
                        v->host[0] = '\0';
        } else if (vmstate_is_destroyed(p.vm_dir)) {
                v->state = "destroyed";
        } else if (!v->inst) {
                v->state = "invalid";
        } else {
                /* A stopped VM whose first boot did not (yet) succeed says so. */
                enum firstboot_state fs = firstboot_state_of(p.vm_dir, v->inst->init != NULL);
                v->state = fs == FIRSTBOOT_CREATED ? "stopped" : firstboot_state_to_string(fs);
        }
        if (since > 0) {
                v->uptime = (long long)(time(NULL) - since);
                if (v->uptime < 0)
                        v->uptime = 0;
        }
        vm_paths_done(&p);
        return true;
}

static void format_uptime(long long s, char *buf, size_t len) {
        if (s < 0)
                snprintf(buf, len, "-");
        else if (s >= 86400)
                snprintf(buf, len, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
        else if (s >= 3600)
                snprintf(buf, len, "%lldh%02lldm", s / 3600, s % 3600 / 60);
        else if (s >= 60)
                snprintf(buf, len, "%lldm%02llds", s / 60, s % 60);
        else
                snprintf(buf, len, "%llds", s);
}

static json_object *string_or_null(const char *s) {
        return s ? json_object_new_string(s) : NULL;
}

static json_object *vm_info_json(const struct vm_info *v) {
        json_object *o = json_object_new_object();
        const struct instance *i = v->inst;
        json_object_object_add(o, "name", json_object_new_string(v->name));
        json_object_object_add(o, "state", json_object_new_string(v->state));
        json_object_object_add(o, "host", v->host[0] ? json_object_new_string(v->host) : NULL);
        json_object_object_add(o, "here", json_object_new_boolean(v->here));
        json_object_object_add(o, "image", string_or_null(i ? i->image : NULL));
        json_object_object_add(o, "size", string_or_null(i ? i->size : NULL));
        json_object_object_add(o, "mac", string_or_null(i ? i->nics[0].mac : NULL));
        if (i) {
                json_object *nics = json_object_new_array();
                for (unsigned k = 0; k < i->n_nics && nics; k++) {
                        const struct nic *n = &i->nics[k];
                        json_object *x = json_object_new_object();
                        json_object_object_add(x, "net", json_object_new_string(net_mode_to_string(n->net)));
                        json_object_object_add(x, "bridge", string_or_null(n->net == NET_BRIDGE ? n->bridge : NULL));
                        json_object_object_add(x, "mac", string_or_null(n->mac));
                        json_object_object_add(x, "hostfwd", string_or_null(n->hostfwd));
                        json_object_array_add(nics, x);
                }
                json_object_object_add(o, "nics", nics);
        }
        json_object_object_add(o, "pid", v->pid > 0 ? json_object_new_int(v->pid) : NULL);
        json_object_object_add(o, "uptime_seconds", v->uptime >= 0 ? json_object_new_int64(v->uptime) : NULL);
        json_object_object_add(o, "comment", string_or_null(i ? i->comment : NULL));
        json_object_object_add(o, "autostart", json_object_new_boolean(i && i->autostart));
        json_object_object_add(o, "managed_by", string_or_null(i ? (i->cluster_managed ? "pacemaker" : "vrt") : NULL));
        if (!i)
                json_object_object_add(o, "error", json_object_new_string(v->error));
        return o;
}

/* list --json asks the agents of the VMs running here in parallel, one
 * thread each, so the whole list waits at most GUESTINFO_TIMEOUT_MS for
 * them; VMs beyond this many are reported without asking. */
#define LIST_AGENT_JOBS_MAX 64

struct agent_job {
        struct vm_paths p;
        struct instance *inst;  /* owned */
        json_object *o;         /* borrowed: the VM's entry */
        pthread_t thread;
        bool started;
};

static int agent_job_init(struct agent_job *j, const struct cli *cli, const struct vm_info *v, json_object *o) {
        *j = (struct agent_job){ .inst = v->inst, .o = o };
        return vm_paths_init(&j->p, cli->root, cli->runtime_dir, v->name);
}

static void *agent_job_run(void *arg) {
        struct agent_job *j = arg;
        guestinfo_add_addresses(j->o, &j->p, j->inst, GUESTINFO_TIMEOUT_MS);
        return NULL;
}

static void run_agent_jobs(struct agent_job *jobs, size_t n) {
        for (size_t k = 0; k < n; k++)
                jobs[k].started = pthread_create(&jobs[k].thread, NULL, agent_job_run, &jobs[k]) == 0;
        for (size_t k = 0; k < n; k++) {
                if (jobs[k].started)
                        pthread_join(jobs[k].thread, NULL);
                else
                        agent_job_run(&jobs[k]);
                instance_free(jobs[k].inst);
                vm_paths_done(&jobs[k].p);
        }
}

static void print_json(json_object *o) {
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
}

int cmd_list(struct cli *cli, int argc, char **argv) {
        static const struct option opts[] = {
                { "all", no_argument, NULL, 'a' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        bool all = false;
        struct strv names = { 0 };
        int c;
        while ((c = getopt_long(argc, argv, "ah", opts, NULL)) >= 0)
                switch (c) {
                case 'a':
                        all = true;
                        break;
                case 'h':
                        printf("usage: vrt list [--all] [--json]\nLists the VMs under ROOT/vm; --all includes destroyed ones.\n");
                        return CLI_OK;
                default:
                        return CLI_INVALID;
                }
        if (optind != argc) {
                cli_error("usage: vrt list [--all] [--json]");
                return CLI_INVALID;
        }
        char *vm_dir = paths_join(cli->root, "vm");
        int r = vm_dir ? strv_add_dir(&names, vm_dir, NULL, true) : -ENOMEM;
        free(vm_dir);
        if (r < 0) {
                cli_error("cannot read %s/vm: %s", cli->root, strerror(-r));
                strv_done(&names);
                return CLI_FAILED;
        }
        json_object *arr = cli->json ? json_object_new_array() : NULL;
        int status = CLI_OK;
        /* Only --json asks the agents, all at once after the loop: the
         * table stays as fast as reading files. */
        struct agent_job jobs[LIST_AGENT_JOBS_MAX];
        size_t n_jobs = 0;
        if (!cli->json)
                printf("%-24s %-12s %-12s %-20s %-8s %-17s %-8s %-8s %s\n",
                       "NAME", "STATE", "HOST", "IMAGE", "SIZE", "MAC", "PID", "UPTIME", "COMMENT");
        for (size_t k = 0; k < names.n; k++) {
                struct vm_info v;
                if (!vm_info_load(cli, names.items[k], &v)) {
                        cli_error("%s: %s", names.items[k], v.error);
                        status = CLI_FAILED;
                        vm_info_done(&v);
                        continue;
                }
                if (all || strcmp(v.state, "destroyed") != 0) {
                        if (arr) {
                                json_object *o = vm_info_json(&v);
                                if (strcmp(v.state, "running") == 0 && v.here) {
                                        if (n_jobs < LIST_AGENT_JOBS_MAX &&
                                            agent_job_init(&jobs[n_jobs], cli, &v, o) == 0) {
                                                n_jobs++;
                                                v.inst = NULL;  /* the job's now */
                                        } else {
                                                guestinfo_add_addresses(o, NULL, NULL, 0);
                                        }
                                }
                                json_object_array_add(arr, o);
                        } else {
                                char up[32], pid[16];
                                const struct instance *i = v.inst;
                                format_uptime(v.uptime, up, sizeof up);
                                snprintf(pid, sizeof pid, v.pid > 0 ? "%d" : "-", (int)v.pid);
                                printf("%-24s %-12s %-12s %-20s %-8s %-17s %-8s %-8s %s\n", v.name, v.state,
                                       v.host[0] ? v.host : "-", i && i->image ? i->image : "-", i && i->size ? i->size : "-",
                                       i && i->nics[0].mac ? i->nics[0].mac : "-", pid, up,
                                       i && i->comment ? i->comment : (i ? "" : v.error));
                        }
                }
                vm_info_done(&v);
        }
        run_agent_jobs(jobs, n_jobs);
        if (arr) {
                print_json(arr);
                json_object_put(arr);
        }
        strv_done(&names);
        return status;
}

/* Runs one query; its return value, or NULL with a note in *errors. */
static json_object *query(struct qmp *q, const char *cmd, json_object *errors) {
        char err[512];
        json_object *ret = NULL;
        if (qmp_execute(q, cmd, NULL, STATUS_QMP_TIMEOUT_MS, &ret, err, sizeof err) < 0) {
                json_object_object_add(errors, cmd, json_object_new_string(err));
                return NULL;
        }
        return ret;
}

static const char *jstr(json_object *o, const char *key) {
        json_object *v;
        return o && json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static int64_t jint(json_object *o, const char *key) {
        json_object *v;
        return o && json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

static void print_status_text(const struct vm_info *v, json_object *st) {
        json_object *x;
        const struct instance *i = v->inst;
        char up[32];
        format_uptime(v->uptime, up, sizeof up);
        printf("name:      %s\n", v->name);
        printf("state:     %s", v->state);
        if (json_object_object_get_ex(st, "status", &x))
                printf(" (QEMU: %s)", jstr(x, "status"));
        printf("\n");
        if (v->host[0])
                printf("host:      %s%s\n", v->host, v->here ? " (this host)" : "");
        if (v->pid > 0)
                printf("pid:       %d%s\nuptime:    %s\n", (int)v->pid, v->here ? "" : " (on that host)", up);
        if (i) {
                printf("image:     %s\nsize:      %s\n", i->image ? i->image : "-", i->size ? i->size : "-");
                printf("mac:       %s\nnet:       %s\n", i->nics[0].mac ? i->nics[0].mac : "-", net_mode_to_string(i->nics[0].net));
                for (unsigned k = 1; k < i->n_nics; k++)
                        printf("net.%u:     %s %s\n", k, net_mode_to_string(i->nics[k].net), i->nics[k].mac ? i->nics[k].mac : "-");
                if (i->comment && *i->comment)
                        printf("comment:   %s\n", i->comment);
                printf("autostart: %s\n", i->autostart ? "yes" : "no");
                if (i->cluster_managed)
                        printf("managed:   by pacemaker (ocf:vrt:vm); the spool and autostart leave it alone\n");
        } else {
                printf("error:     %s\n", v->error);
        }
        if (json_object_object_get_ex(st, "vcpus", &x) && json_object_is_type(x, json_type_array)) {
                size_t n = json_object_array_length(x);
                printf("vcpus:     %zu (threads", n);
                for (size_t k = 0; k < n; k++)
                        printf(" %lld", (long long)jint(json_object_array_get_idx(x, k), "thread-id"));
                printf(")\n");
        }
        if (json_object_object_get_ex(st, "memory", &x))
                printf("memory:    %lld MiB\n", (long long)(jint(x, "base-memory") / (1024 * 1024)));
        if (json_object_object_get_ex(st, "block", &x) && json_object_is_type(x, json_type_array)) {
                for (size_t k = 0; k < json_object_array_length(x); k++) {
                        json_object *b = json_object_array_get_idx(x, k), *s = NULL;
                        /* -blockdev disks have no legacy name: show the device id
                         * from "/machine/peripheral/ID/virtio-backend". */
                        char id[128] = "";
                        const char *dev = jstr(b, "device"), *qdev = jstr(b, "qdev");
                        if ((!dev || !*dev) && qdev && strncmp(qdev, "/machine/peripheral/", 20) == 0) {
                                snprintf(id, sizeof id, "%s", qdev + 20);
                                id[strcspn(id, "/")] = '\0';
                                dev = id;
                        }
                        if (!dev || !*dev)
                                dev = qdev;
                        if (!dev || !*dev)
                                dev = jstr(b, "node-name");
                        json_object_object_get_ex(b, "stats", &s);
                        printf("block:     %s read %lld B in %lld ops, written %lld B in %lld ops\n", dev ? dev : "?",
                               (long long)jint(s, "rd_bytes"), (long long)jint(s, "rd_operations"),
                               (long long)jint(s, "wr_bytes"), (long long)jint(s, "wr_operations"));
                }
        }
        if (json_object_object_get_ex(st, "net", &x) && json_object_is_type(x, json_type_array)) {
                for (size_t k = 0; k < json_object_array_length(x); k++) {
                        json_object *nic = json_object_array_get_idx(x, k);
                        printf("nic:       %s mac %s\n", jstr(nic, "name"), jstr(nic, "main-mac"));
                }
        }
        if (json_object_object_get_ex(st, "agent", &x)) {
                json_object *list = NULL, *e = NULL;
                json_object_object_get_ex(st, "addresses", &list);
                if (!json_object_get_boolean(x)) {
                        json_object_object_get_ex(st, "agent_error", &e);
                        printf("agent:     no agent (%s)\n", e ? json_object_get_string(e) : "no answer");
                } else {
                        printf("agent:     answers\n");
                }
                for (size_t k = 0; list && k < json_object_array_length(list); k++) {
                        json_object *n = json_object_array_get_idx(list, k), *addrs = NULL;
                        const char *ifname = jstr(n, "interface");
                        printf("ip.%lld:      %s (%s)", (long long)jint(n, "nic"), jstr(n, "mac"), ifname ? ifname : "no such interface in the guest");
                        json_object_object_get_ex(n, "addresses", &addrs);
                        for (size_t m = 0; addrs && m < json_object_array_length(addrs); m++)
                                printf(" %s", json_object_get_string(json_object_array_get_idx(addrs, m)));
                        printf("\n");
                }
        }
        if (json_object_object_get_ex(st, "note", &x))
                printf("note:      %s\n", json_object_get_string(x));
        if (json_object_object_get_ex(st, "errors", &x)) {
                json_object_object_foreach(x, cmd, msg)
                        printf("qmp:       %s failed: %s\n", cmd, json_object_get_string(msg));
        }
}

int cmd_status(struct cli *cli, int argc, char **argv) {
        struct vm_info v;
        struct vm_paths p;
        struct qmp *q = NULL;
        char err[512];
        struct stat st;
        int status = CLI_OK;

        if (argc == 2 && strcmp(argv[1], "--help") == 0) {
                printf("usage: vrt status NAME [--json]\nShows a VM's state and, while it runs, QEMU's view: vCPUs, memory, disks, NICs.\n");
                return CLI_OK;
        }
        if (argc != 2) {
                cli_error("usage: vrt status NAME [--json]");
                return CLI_INVALID;
        }
        const char *name = argv[1];
        if (config_check_vm_name(name, cli->runtime_dir, err, sizeof err) < 0) {
                cli_error("%s", err);
                return CLI_INVALID;
        }
        if (vm_paths_init(&p, cli->root, cli->runtime_dir, name) < 0) {
                cli_error("out of memory");
                return CLI_FAILED;
        }
        struct vm_running run;
        if (stat(p.vm_dir, &st) < 0 && vmstate_running(&p, 0, 0, &run) == 0) {
                cli_error("no such VM %s (%s: %s)", name, p.vm_dir, strerror(errno));
                vm_paths_done(&p);
                return CLI_INVALID;
        }
        if (!vm_info_load(cli, name, &v)) {
                cli_error("%s: %s", name, v.error);
                vm_info_done(&v);
                vm_paths_done(&p);
                return CLI_FAILED;
        }
        json_object *o = vm_info_json(&v);
        if (strcmp(v.state, "running") == 0 && !v.here) {
                /* QEMU's view is on the host that runs it. */
                char where[300];
                snprintf(where, sizeof where, "%s runs on host %s: QEMU's view (vrt status there) is not available here", name, v.host);
                json_object_object_add(o, "note", json_object_new_string(where));
        } else if (strcmp(v.state, "running") == 0) {
                json_object *errors = json_object_new_object();
                int r = qmp_connect_unix(p.monitor_sock, 1000, &q, err, sizeof err);
                if (r == 0)
                        r = qmp_handshake(q, STATUS_QMP_TIMEOUT_MS, err, sizeof err);
                if (r < 0) {
                        json_object_object_add(errors, "connect", json_object_new_string(err));
                        status = CLI_FAILED;
                } else {
                        json_object_object_add(o, "status", query(q, "query-status", errors));
                        json_object_object_add(o, "vcpus", query(q, "query-cpus-fast", errors));
                        json_object_object_add(o, "memory", query(q, "query-memory-size-summary", errors));
                        json_object_object_add(o, "block", query(q, "query-blockstats", errors));
                        /* Devices without rx-filter support (and no NIC at all) are no error. */
                        json_object *discard = json_object_new_object();
                        json_object *net = query(q, "query-rx-filter", discard);
                        json_object_put(discard);
                        json_object_object_add(o, "net", net ? net : json_object_new_array());
                }
                guestinfo_add_addresses(o, &p, v.inst, GUESTINFO_TIMEOUT_MS);
                if (json_object_object_length(errors) > 0)
                        json_object_object_add(o, "errors", errors);
                else
                        json_object_put(errors);
        }
        if (cli->json)
                print_json(o);
        else
                print_status_text(&v, o);
        json_object_put(o);
        qmp_free(q);
        vm_info_done(&v);
        vm_paths_done(&p);
        return status;
}
