/* vrt create: a new VM from inst/X.properties, a properties file, or flags. */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launcher/core/actionlog.h"
#include "launcher/cli/cli.h"
#include "launcher/core/config.h"
#include "launcher/lifecycle/create.h"
#include "launcher/lifecycle/firstboot.h"
#include "launcher/lifecycle/instantiate.h"
#include "launcher/core/paths.h"
#include "launcher/lifecycle/service.h"

static volatile sig_atomic_t create_cancel;

static void on_signal(int sig) {
        (void)sig;
        create_cancel = 1;
}

static const char usage_text[] =
        "usage: vrt create [--name NAME] [--start] X | FILE.properties\n"
        "       vrt create --image IMAGE --size SIZE [--comment TEXT] [--name NAME]\n"
        "                  [--disk overlay|copy] [--net bridge|user|none] [--bridge BR]\n"
        "                  [--mac MAC] [--init SCRIPT] [--firmware bios|uefi] [--start]\n"
        "X is ROOT/inst/X.properties; an argument with a '/' or ending in .properties is a file.\n"
        "With init=SCRIPT the new VM boots once to run ROOT/init/SCRIPT and powers off;\n"
        "it is marked created only when the script succeeded. --start then boots it.";

/* Flags that become instance properties, in the order they are written. */
static const struct flag_key {
        const char *flag;
        const char *key;
        int val;
} flag_keys[] = {
        { "image", "image", 'i' },
        { "size", "size", 's' },
        { "comment", "comment", 'c' },
        { "disk", "disk", 'd' },
        { "net", "net", 'n' },
        { "bridge", "bridge", 'b' },
        { "mac", "mac", 'm' },
        { "init", "init", 'I' },
        { "firmware", "firmware", 'f' },
};
#define N_FLAG_KEYS (sizeof flag_keys / sizeof flag_keys[0])

struct progress {
        int last_percent;
        bool shown;
};

static int show_progress(uint64_t done, uint64_t total, void *userdata) {
        struct progress *p = userdata;
        int percent = total ? (int)(done * 100 / total) : 100;
        if (percent == p->last_percent)
                return 0;
        p->last_percent = percent;
        p->shown = true;
        int width = 30, filled = percent * width / 100;
        fprintf(stderr, "\rcopying disk [%.*s%*s] %3d%% %.1f/%.1f MiB", filled,
                "##############################", width - filled, "", percent,
                (double)done / 1048576.0, (double)total / 1048576.0);
        if (done >= total)
                fputc('\n', stderr);
        fflush(stderr);
        return 0;
}

/* Error messages about the flags' memfd name the flag, not the fd path. */
static void rewrite_flag_error(char *err, size_t errlen, const char *fd_path, const int *line_flag) {
        size_t n = strlen(fd_path);
        char rest[2048];
        if (strncmp(err, fd_path, n) != 0 || (err[n] != ':'))
                return;
        const char *p = err + n + 1;
        unsigned line = 0;
        int used = 0;
        if (sscanf(p, "%u:%n", &line, &used) == 1 && used > 0 && line >= 1 && line <= N_FLAG_KEYS + 1 && line_flag[line - 1] >= 0) {
                snprintf(rest, sizeof rest, "%s", p + used);
                snprintf(err, errlen, "--%s:%s", flag_keys[line_flag[line - 1]].flag, rest);
        } else {
                snprintf(rest, sizeof rest, "%s", p);
                snprintf(err, errlen, "command line:%s", rest);
        }
}

/* started: -1 no --start, else whether the VM runs. */
static void print_json(const struct create_result *res, const char *image, const struct firstboot_result *fb,
                       int started, const char *error) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string(res->name));
        json_object_object_add(o, "mac", json_object_new_string(res->mac));
        json_object *macs = json_object_new_array();
        for (const char *p = res->macs; macs && *p;) {
                size_t n = strcspn(p, ",");
                json_object_array_add(macs, json_object_new_string_len(p, (int)n));
                p += n;
                p += strspn(p, ", ");
        }
        json_object_object_add(o, "macs", macs);
        json_object_object_add(o, "vm_dir", json_object_new_string(res->vm_dir));
        json_object_object_add(o, "disk", json_object_new_string(res->disk));
        json_object_object_add(o, "disk_mode", json_object_new_string(disk_mode_to_string(res->disk_mode)));
        json_object_object_add(o, "disk_size", json_object_new_int64((int64_t)res->disk_size));
        json_object_object_add(o, "image", json_object_new_string(image));
        json_object_object_add(o, "template", json_object_new_string(res->template_path));
        if (res->backing_file)
                json_object_object_add(o, "backing_file", json_object_new_string(res->backing_file));
        json_object_object_add(o, "name_generated", json_object_new_boolean(res->name_generated));
        json_object_object_add(o, "state", json_object_new_string(firstboot_state_to_string(fb->state)));
        if (fb->ran) {
                char *log = paths_join(res->vm_dir, "init.log");
                json_object_object_add(o, "init_status", fb->init_status >= 0 ? json_object_new_int(fb->init_status) : NULL);
                json_object_object_add(o, "init_log", log ? json_object_new_string(log) : NULL);
                free(log);
        }
        if (started >= 0)
                json_object_object_add(o, "started", json_object_new_boolean(started));
        if (error)
                json_object_object_add(o, "error", json_object_new_string(error));
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
}

/* --- first boot and --start (firstboot.h) --- */

struct boot_note {
        const char *name;
        bool quiet;
        char script[256];
};

static void on_first_boot(const char *script, unsigned timeout_s, void *userdata) {
        struct boot_note *n = userdata;
        snprintf(n->script, sizeof n->script, "%s", script);
        if (!n->quiet)
                cli_error("note: %s: first boot with init script %s (at most %u s)", n->name, script, timeout_s);
}

static void on_new_vm_boot(const char *name, const char *script, unsigned timeout_s, void *userdata) {
        struct boot_note *n = userdata;
        n->name = name;
        on_first_boot(script, timeout_s, userdata);
}

/* Boots the new VM for real, as `vrt start` does. */
static int start_vm(struct cli *cli, const char *name, bool *ret_started) {
        struct service_options o = { .root = cli->root, .runtime_dir = cli->runtime_dir };
        struct service_result sr = { 0 };
        char note[512], *names[] = { (char *)name };
        if (service_manager_detect(cli->root, cli->runtime_dir, name, &o.manager, note, sizeof note) < 0) {
                cli_error("%s", note);
                return CLI_INVALID;
        }
        if (note[0])
                cli_error("note: %s", note);
        int r = service_start(&o, names, 1, &sr);
        if (r < 0) {
                cli_error("%s: start: %s", name, strerror(-r));
                return CLI_FAILED;
        }
        if (sr.outcome != SERVICE_DONE && sr.outcome != SERVICE_ALREADY) {
                cli_error("%s: %s", name, sr.message);
                return CLI_FAILED;
        }
        if (!cli->json)
                cli_error("note: %s: %s", name, sr.message);
        *ret_started = true;
        return CLI_OK;
}

int cmd_create(struct cli *cli, int argc, char **argv) {
        static const struct option opts[] = {
                { "name", required_argument, NULL, 'N' },
                { "image", required_argument, NULL, 'i' },
                { "size", required_argument, NULL, 's' },
                { "comment", required_argument, NULL, 'c' },
                { "disk", required_argument, NULL, 'd' },
                { "net", required_argument, NULL, 'n' },
                { "bridge", required_argument, NULL, 'b' },
                { "mac", required_argument, NULL, 'm' },
                { "init", required_argument, NULL, 'I' },
                { "firmware", required_argument, NULL, 'f' },
                { "start", no_argument, NULL, 'S' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        const char *values[N_FLAG_KEYS] = { 0 };
        const char *name = NULL;
        char *props_path = NULL, *default_name = NULL, *text = NULL;
        char fd_path[64] = "";
        int line_flag[N_FLAG_KEYS + 1];
        char err[4096] = "";
        int c, memfd = -1, status = CLI_FAILED, r;
        bool any_flag = false, start = false;

        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                if (c == 'h') {
                        printf("%s\n", usage_text);
                        return CLI_OK;
                }
                if (c == 'N') {
                        name = optarg;
                        continue;
                }
                if (c == 'S') {
                        start = true;
                        continue;
                }
                size_t i;
                for (i = 0; i < N_FLAG_KEYS; i++)
                        if (flag_keys[i].val == c)
                                break;
                if (i == N_FLAG_KEYS) {
                        fprintf(stderr, "%s\n", usage_text);
                        return CLI_INVALID;
                }
                values[i] = optarg;
                any_flag = true;
        }
        if (argc - optind > 1 || (argc - optind == 1) == any_flag) {
                if (argc - optind == 1 && any_flag)
                        cli_error("give either a properties file or --image/--size/..., not both");
                else
                        fprintf(stderr, "%s\n", usage_text);
                return CLI_INVALID;
        }
        /* Flag values become lines of a properties text: a newline in one
         * would smuggle in another key. */
        for (size_t i = 0; i < N_FLAG_KEYS; i++)
                for (const char *p = values[i]; p && *p; p++)
                        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
                                cli_error("--%s: control character in value", flag_keys[i].flag);
                                return CLI_INVALID;
                        }

        if (!any_flag) {
                const char *arg = argv[optind];
                if (strchr(arg, '/') || (strlen(arg) > 11 && strcmp(arg + strlen(arg) - 11, ".properties") == 0)) {
                        props_path = paths_absolute(arg);
                } else {
                        char *rel = NULL;
                        if (asprintf(&rel, "inst/%s.properties", arg) >= 0)
                                props_path = paths_join(cli->root, rel);
                        free(rel);
                }
                if (!props_path || create_default_name(props_path, &default_name) < 0) {
                        cli_error("out of memory");
                        goto done;
                }
        } else {
                size_t len = 0;
                FILE *f = open_memstream(&text, &len);
                int line = 0;
                if (!f) {
                        cli_error("out of memory");
                        goto done;
                }
                for (size_t i = 0; i < N_FLAG_KEYS; i++)
                        if (values[i]) {
                                fprintf(f, "%s=%s\n", flag_keys[i].key, values[i]);
                                line_flag[line++] = (int)i;
                        }
                for (; line < (int)N_FLAG_KEYS + 1; line++)
                        line_flag[line] = -1;
                if (fclose(f) != 0) {
                        cli_error("out of memory");
                        goto done;
                }
                memfd = memfd_create("vrt-create-flags", MFD_CLOEXEC);
                if (memfd < 0 || write(memfd, text, len) != (ssize_t)len) {
                        cli_error("memfd: %s", strerror(errno));
                        goto done;
                }
                snprintf(fd_path, sizeof fd_path, "/proc/self/fd/%d", memfd);
                props_path = strdup(fd_path);
                if (!props_path) {
                        cli_error("out of memory");
                        goto done;
                }
        }

        /* Ctrl-C or SIGTERM: stop at the next step and remove what was made. */
        struct sigaction sa = { .sa_handler = on_signal };
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);

        struct progress prog = { .last_percent = -1 };
        struct boot_note note = { .quiet = cli->json };
        struct instantiate_request req = {
                .create = {
                        .root = cli->root,
                        .runtime_dir = cli->runtime_dir,
                        .props_path = props_path,
                        .name = name,
                        .default_name = default_name,
                        .progress = !cli->json && isatty(STDERR_FILENO) ? show_progress : NULL,
                        .userdata = &prog,
                        .cancel = &create_cancel,
                },
                .source = fd_path[0] ? "command line" : props_path,
                .on_boot = on_new_vm_boot,
                .boot_userdata = &note,
        };
        struct instantiate_result res = { 0 };
        r = instantiate_vm(&req, &res, err, sizeof err);
        if (prog.shown && prog.last_percent != 100)
                fputc('\n', stderr);
        if (!res.exists) {
                if (fd_path[0])
                        rewrite_flag_error(err, sizeof err, fd_path, line_flag);
                cli_error("%s", err);
                status = r == -EINVAL ? CLI_INVALID : CLI_FAILED;
                goto done;
        }
        if (res.created.size_not_applied)
                cli_error("note: disk=copy keeps the template's size; the size class's larger disk was not applied");
        /* The VM exists whether or not its first boot succeeded, so its
         * name is printed either way. */
        bool started = false;
        if (r < 0) {
                cli_error("%s: %s", res.created.name, err);
                status = CLI_FAILED;
        } else {
                status = start ? start_vm(cli, res.created.name, &started) : CLI_OK;
        }
        if (cli->json)
                print_json(&res.created, res.image, &res.boot, start ? started : -1, r < 0 ? err : NULL);
        else
                printf("%s\n", res.created.name);
        instantiate_result_done(&res);
done:
        if (memfd >= 0)
                close(memfd);
        free(text);
        free(props_path);
        free(default_name);
        return status;
}

/* vrt init NAME [--reset] [--start]: the first boot again, for a VM whose
 * init script failed or never finished, once the script is fixed. The name
 * stays (names are never reused); --reset first gives the VM a fresh
 * overlay, so the script starts from the template. */
int cmd_init(struct cli *cli, int argc, char **argv) {
        static const struct option opts[] = {
                { "reset", no_argument, NULL, 'r' },
                { "start", no_argument, NULL, 'S' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        static const char usage[] = "usage: vrt init NAME [--reset] [--start]";
        bool reset = false, start = false;
        int c;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0)
                switch (c) {
                case 'r':
                        reset = true;
                        break;
                case 'S':
                        start = true;
                        break;
                case 'h':
                        printf("%s\nRuns the first boot (init=) again of a VM whose init script failed or never\n"
                               "finished. --reset first replaces its overlay with a fresh one on the template.\n"
                               "--start boots it for real afterwards.\n", usage);
                        return CLI_OK;
                default:
                        return CLI_INVALID;
                }
        if (argc - optind != 1) {
                cli_error("%s", usage);
                return CLI_INVALID;
        }
        const char *name = argv[optind];
        char err[4096] = "";
        struct vm_paths p = { 0 };
        struct instance *inst = NULL;
        struct stat st;
        int status = CLI_INVALID, r;

        if (config_check_vm_name(name, cli->runtime_dir, err, sizeof err) < 0) {
                cli_error("%s", err);
                return CLI_INVALID;
        }
        if (vm_paths_init(&p, cli->root, cli->runtime_dir, name) < 0) {
                cli_error("out of memory");
                return CLI_FAILED;
        }
        /* Everything that makes the request unusable is refused before the
         * VM is touched. */
        if (stat(p.instance, &st) < 0) {
                cli_error("no such VM %s (%s)", name, p.instance);
                goto out;
        }
        if (vmstate_is_destroyed(p.vm_dir)) {
                cli_error("%s is destroyed (%s exists)", name, p.destroyed);
                goto out;
        }
        if (instance_load(p.instance, name, cli->runtime_dir, &inst, err, sizeof err) < 0) {
                cli_error("%s", err);
                goto out;
        }
        if (!inst->init) {
                cli_error("%s has no init= in %s: there is no first boot to run", name, p.instance);
                goto out;
        }
        if (firstboot_state_of(p.vm_dir, true) == FIRSTBOOT_CREATED) {
                cli_error("%s is created already: its first boot ran with status 0", name);
                goto out;
        }
        if (firstboot_check_script(cli->root, inst->init, err, sizeof err) < 0) {
                cli_error("%s:%u: init=%s: %s", p.instance, inst->line_init, inst->init, err);
                goto out;
        }
        if (reset) {
                r = firstboot_reset_disk(cli->root, cli->runtime_dir, name, err, sizeof err);
                if (r < 0) {
                        cli_error("%s", err);
                        status = r == -EINVAL ? CLI_INVALID : CLI_FAILED;
                        goto out;
                }
                actionlog_append(cli->root, "create", "%s: disk reset to a fresh overlay for a new first boot", name);
        }

        struct sigaction sa = { .sa_handler = on_signal };
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        struct boot_note note = { .name = name, .quiet = cli->json };
        struct firstboot_request fbreq = {
                .root = cli->root,
                .runtime_dir = cli->runtime_dir,
                .name = name,
                .cancel = &create_cancel,
                .on_boot = on_first_boot,
                .userdata = &note,
        };
        struct firstboot_result fb = { 0 };
        r = firstboot_run(&fbreq, &fb, err, sizeof err);
        if (fb.ran)
                actionlog_append(cli->root, "create", "%s: first boot again with init script %s: %s", name, note.script,
                                 r == 0 ? "status 0, VM created" : err);
        if (r < 0) {
                cli_error("%s: %s", name, err);
                status = r == -EALREADY ? CLI_INVALID : CLI_FAILED;
                goto out;
        }
        bool started = false;
        status = start ? start_vm(cli, name, &started) : CLI_OK;
        if (cli->json) {
                struct json_object *o = json_object_new_object();
                json_object_object_add(o, "name", json_object_new_string(name));
                json_object_object_add(o, "state", json_object_new_string(firstboot_state_to_string(fb.state)));
                json_object_object_add(o, "init_status", json_object_new_int(fb.init_status));
                json_object_object_add(o, "init_log", json_object_new_string(p.init_log));
                if (start)
                        json_object_object_add(o, "started", json_object_new_boolean(started));
                printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(o);
        } else {
                printf("%s: created (init script %s, status 0)\n", name, inst->init);
        }
out:
        instance_free(inst);
        vm_paths_done(&p);
        return status;
}
