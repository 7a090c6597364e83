/* vrt check, showcmd, qmp, console: read-only views and the monitor. */
#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "launcher/cli/cli.h"
#include "launcher/core/hostconf.h"
#include "launcher/core/lease.h"
#include "launcher/core/vmstate.h"
#include "launcher/core/config.h"
#include "launcher/vm/launch.h"
#include "launcher/core/paths.h"
#include "launcher/vm/qemu_argv.h"
#include "launcher/core/runtime.h"
#include "launcher/core/strv.h"
#include "qmp/qmp.h"
#include "qmp/agent.h"
#include "launcher/core/util.h"

#define CLI_QMP_TIMEOUT_MS 10000
/* QEMU greets at once when it accepts; no greeting means another client
 * holds monitor.sock (QEMU serves one at a time). */
#define CLI_QMP_GREETING_MS 3000
#define CLI_AGENT_TIMEOUT_MS 2000     /* per guest agent command, after the sync */
#define CONSOLE_LINGER_MS 1000  /* reading on after piped input ended */

/* Checks every *.properties in ROOT/SUB with check(); first error wins. */
struct check_ctx {
        const struct cli *cli;
        const struct host_config *host;
};

static int check_dir(const struct check_ctx *c, const char *sub,
                     int (*check)(const char *path, const char *entry, const struct check_ctx *c, char *err, size_t errlen),
                     char *err, size_t errlen) {
        char *dir = paths_join(c->cli->root, sub);
        if (!dir)
                return -ENOMEM;
        DIR *d = opendir(dir);
        int r = 0;
        if (!d) {
                free(dir);
                return 0;       /* an absent directory holds nothing wrong */
        }
        struct dirent *de;
        while (r == 0 && (de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                char *path = paths_join(dir, de->d_name);
                if (!path) {
                        r = -ENOMEM;
                        break;
                }
                r = check(path, de->d_name, c, err, errlen);
                free(path);
        }
        closedir(d);
        free(dir);
        return r;
}

/* A VM is checked as `vrt showcmd` does it, so check passes exactly when
 * every VM would get an argv; a destroyed one is not started any more. */
static int check_vm(const char *path, const char *entry, const struct check_ctx *c, char *err, size_t errlen) {
        char *destroyed = paths_join(path, "DESTROYED");
        if (!destroyed)
                return -ENOMEM;
        bool skip = access(destroyed, F_OK) == 0;
        free(destroyed);
        if (skip)
                return 0;
        return launch_check(c->cli->root, c->cli->runtime_dir, entry, err, errlen);
}

static int check_inst(const char *path, const char *entry, const struct check_ctx *c, char *err, size_t errlen) {
        struct instance *inst = NULL;
        if (!has_suffix(entry, ".properties"))
                return 0;
        /* A request's name comes from name= or is chosen at creation. */
        int r = instance_load(path, "request", c->cli->runtime_dir, &inst, err, errlen);
        if (r == 0)
                r = instance_check(inst, c->host, err, errlen);
        instance_free(inst);
        return r;
}

static int check_image(const char *path, const char *entry, const struct check_ctx *c, char *err, size_t errlen) {
        struct image_meta *m = NULL;
        if (!has_suffix(entry, ".properties"))
                return 0;
        int r = image_meta_load(path, &m, err, errlen);
        image_meta_free(m);
        return r;
}

/* Leases (lease.h) keep a VM on one host only if locks reach every host:
 * a lock taken here must be seen through another open file, and an NFS
 * root must not keep locks local (nolock, local_lock=). With
 * shared_root=no that is only worth a note. */
static int check_locks(const char *root, const struct host_config *host, char *err, size_t errlen) {
        char why[1024];
        int r = lease_check_root(root, "/proc/self/mountinfo", true, why, sizeof why);
        if (r == 0)
                return 0;
        if (r != -ENOLCK && r != -EOPNOTSUPP) {
                snprintf(err, errlen, "%s: cannot test locks: %s", root, why);
                return r;
        }
        if (!host->shared_root) {
                fprintf(stderr, "vrt: note: %s (harmless with shared_root=no: one host only)\n", why);
                return 0;
        }
        snprintf(err, errlen, "WARNING: %s; vrt-launch refuses to start VMs on this root", why);
        return -EINVAL;
}

int cmd_check(struct cli *cli, int argc, char **argv) {
        char err[2048];
        struct host_config *host = NULL;
        char *conf = paths_join(cli->root, "vrt.conf");
        int r;
        if (argc != 1) {
                cli_error("usage: vrt check");
                free(conf);
                return CLI_INVALID;
        }
        if (!conf)
                return CLI_FAILED;
        r = host_config_load(conf, &host, err, sizeof err);
        struct check_ctx c = { cli, host };
        if (r == 0)
                r = check_dir(&c, "images", check_image, err, sizeof err);
        if (r == 0)
                r = check_dir(&c, "vm", check_vm, err, sizeof err);
        if (r == 0)
                r = check_dir(&c, "inst", check_inst, err, sizeof err);
        if (r == 0)
                r = check_locks(cli->root, host, err, sizeof err);
        if (r == 0) {
                struct host_limits limits;
                r = hostconf_load(hostconf_path(), &limits, err, sizeof err);
        }
        host_config_free(host);
        free(conf);
        if (r < 0) {
                cli_error("%s", err);
                return cli_status_for(r);
        }
        printf("configuration OK\n");
        return CLI_OK;
}

int cmd_showcmd(struct cli *cli, int argc, char **argv) {
        struct launch_context ctx;
        char err[2048];
        char **args = NULL;
        if (argc != 2) {
                cli_error("usage: vrt showcmd NAME");
                return CLI_INVALID;
        }
        int r = launch_context_load(&ctx, cli->root, cli->runtime_dir, argv[1], err, sizeof err);
        if (r < 0) {
                cli_error("%s", err);
                return cli_status_for(r);
        }
        r = qemu_argv_build(&ctx.launch, &args, err, sizeof err);
        launch_context_done(&ctx);
        if (r < 0) {
                cli_error("%s", err);
                return cli_status_for(r);
        }
        for (char **a = args; *a; a++) {
                if (a != args)
                        putchar(' ');
                cli_print_shell_quoted(*a);
        }
        putchar('\n');
        strv_free(args);
        return CLI_OK;
}

/* Opens the paths of a VM that must be running. */
static int running_vm(struct cli *cli, const char *name, struct vm_paths *p) {
        char err[512];
        if (config_check_vm_name(name, cli->runtime_dir, err, sizeof err) < 0) {
                cli_error("%s", err);
                return CLI_INVALID;
        }
        if (vm_paths_init(p, cli->root, cli->runtime_dir, name) < 0)
                return CLI_FAILED;
        /* An unknown name is bad input, as for vrt status/stop/showcmd. */
        if (!runtime_is_running(p) && access(p->vm_dir, F_OK) < 0) {
                cli_error("no such VM %s (%s: %s)", name, p->vm_dir, strerror(errno));
                vm_paths_done(p);
                return CLI_INVALID;
        }
        struct lease_holder holder;
        if (!runtime_is_running(p) && vmstate_elsewhere(p->vm_dir, &holder) == 1) {
                char where[300];
                vmstate_describe_elsewhere(&holder, where, sizeof where);
                cli_error("%s: %s; its sockets are on that host (run this there)", name, where);
                vm_paths_done(p);
                return CLI_ELSEWHERE;
        }
        if (!runtime_is_running(p)) {
                cli_error("VM %s is not running", name);
                vm_paths_done(p);
                return CLI_FAILED;
        }
        return CLI_OK;
}

/* The JSON-ARGUMENTS of vrt qmp and vrt agent: an object, else NULL
 * (said in one line, with an example). */
static struct json_object *json_args(const char *text, const char *example) {
        enum json_tokener_error jerr;
        struct json_object *args = json_tokener_parse_verbose(text, &jerr);
        if (!args || !json_object_is_type(args, json_type_object)) {
                cli_error("arguments must be a JSON object, e.g. '%s': %s", example,
                          args ? "not an object" : json_tokener_error_desc(jerr));
                json_object_put(args);
                return NULL;
        }
        return args;
}

int cmd_qmp(struct cli *cli, int argc, char **argv) {
        struct vm_paths p;
        struct json_object *args = NULL, *ret = NULL;
        struct qmp *q = NULL;
        char err[2048];
        int status;

        if (argc < 3 || argc > 4) {
                cli_error("usage: vrt qmp NAME COMMAND [JSON-ARGUMENTS]");
                return CLI_INVALID;
        }
        if (argc == 4 && !(args = json_args(argv[3], "{\"device\":\"disk0\"}")))
                return CLI_INVALID;
        status = running_vm(cli, argv[1], &p);
        if (status != CLI_OK) {
                json_object_put(args);
                return status;
        }
        int r = qmp_connect_unix(p.monitor_sock, CLI_QMP_TIMEOUT_MS, &q, err, sizeof err);
        if (r == 0) {
                r = qmp_handshake(q, CLI_QMP_GREETING_MS, err, sizeof err);
                if (r == -ETIMEDOUT)
                        snprintf(err, sizeof err, "%s is busy: another client is connected (QEMU serves one at a time; no greeting within %d s)",
                                 p.monitor_sock, CLI_QMP_GREETING_MS / 1000);
        }
        if (r == 0)
                r = qmp_execute(q, argv[2], args, CLI_QMP_TIMEOUT_MS, &ret, err, sizeof err);
        if (r < 0) {
                cli_error("%s: %s", argv[1], err[0] ? err : strerror(-r));
                status = CLI_FAILED;
        } else {
                printf("%s\n", json_object_to_json_string_ext(ret, (cli->json ? JSON_C_TO_STRING_PLAIN : JSON_C_TO_STRING_PRETTY) | JSON_C_TO_STRING_NOSLASHESCAPE));
        }
        json_object_put(ret);
        json_object_put(args);
        qmp_free(q);
        vm_paths_done(&p);
        return status;
}

int cmd_agent(struct cli *cli, int argc, char **argv) {
        struct vm_paths p;
        struct json_object *args = NULL, *ret = NULL;
        struct agent *a = NULL;
        char err[2048] = "";
        int status;

        if (argc < 3 || argc > 4) {
                cli_error("usage: vrt agent NAME COMMAND [JSON-ARGUMENTS]");
                return CLI_INVALID;
        }
        if (!*argv[2]) {
                cli_error("agent: empty command name");
                return CLI_INVALID;
        }
        if (argc == 4 && !(args = json_args(argv[3], "{\"path\":\"/etc/hostname\"}")))
                return CLI_INVALID;
        status = running_vm(cli, argv[1], &p);
        if (status != CLI_OK) {
                json_object_put(args);
                return status;
        }
        int r = agent_connect(p.agent_sock, AGENT_TIMEOUT_MS, &a, err, sizeof err);
        if (r < 0) {
                /* No socket (a VM started before vrt had one) or no answer. */
                cli_error("%s: no guest agent (%s)", argv[1], err);
                status = CLI_NO_AGENT;
        } else if (strcmp(argv[2], "guest-shutdown") == 0) {
                /* Success has no reply: the guest goes away. */
                r = agent_execute_noreply(a, argv[2], args, AGENT_TIMEOUT_MS, err, sizeof err);
                if (r < 0) {
                        cli_error("%s: %s", argv[1], err);
                        status = CLI_FAILED;
                } else {
                        printf("{}\n");
                }
        } else {
                r = agent_execute(a, argv[2], args, CLI_AGENT_TIMEOUT_MS, &ret, err, sizeof err);
                if (r < 0) {
                        cli_error("%s: %s", argv[1], err);
                        status = CLI_FAILED;
                } else {
                        printf("%s\n", json_object_to_json_string_ext(ret, (cli->json ? JSON_C_TO_STRING_PLAIN : JSON_C_TO_STRING_PRETTY) | JSON_C_TO_STRING_NOSLASHESCAPE));
                }
        }
        json_object_put(ret);
        json_object_put(args);
        agent_free(a);
        vm_paths_done(&p);
        return status;
}

static struct termios saved_tio;
static int tio_saved;

static void restore_tty(void) {
        if (tio_saved)
                tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
}

int cmd_console(struct cli *cli, int argc, char **argv) {
        struct vm_paths p;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = -1, status;

        if (argc != 2) {
                cli_error("usage: vrt console NAME   (leave with Ctrl-])");
                return CLI_INVALID;
        }
        status = running_vm(cli, argv[1], &p);
        if (status != CLI_OK)
                return status;
        /* QEMU serves one console client and queues the next without a
         * word: a second vrt console would wait silently. vrt consoles hold
         * a lock on the runtime directory while attached. */
        int busy_fd = open(p.run_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (busy_fd >= 0 && flock(busy_fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK) {
                cli_error("%s: console busy: another vrt console is attached (QEMU serves one client at a time)", argv[1]);
                close(busy_fd);
                vm_paths_done(&p);
                return CLI_FAILED;
        }
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", p.console_sock);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
                cli_error("%s: cannot connect to %s: %s", argv[1], p.console_sock, strerror(errno));
                if (fd >= 0)
                        close(fd);
                if (busy_fd >= 0)
                        close(busy_fd);
                vm_paths_done(&p);
                return CLI_FAILED;
        }
        vm_paths_done(&p);
        signal(SIGPIPE, SIG_IGN);
        if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
                struct termios raw = saved_tio;
                cfmakeraw(&raw);
                tio_saved = 1;
                atexit(restore_tty);
                tcsetattr(STDIN_FILENO, TCSANOW, &raw);
                fprintf(stderr, "Connected to %s (escape character is ^])\r\n", argv[1]);
        }
        int in_open = 1;
        int64_t linger_until = 0;
        for (;;) {
                struct pollfd pfd[2] = { { .fd = fd, .events = POLLIN }, { .fd = STDIN_FILENO, .events = POLLIN } };
                int timeout = -1;
                if (!in_open) {
                        int64_t left = linger_until - now_ms();
                        if (left <= 0)
                                break;
                        timeout = (int)left;
                }
                if (poll(pfd, in_open ? 2 : 1, timeout) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                char buf[4096];
                if (pfd[0].revents) {
                        ssize_t n = read(fd, buf, sizeof buf);
                        if (n <= 0)
                                break;
                        if (write(STDOUT_FILENO, buf, (size_t)n) != n)
                                break;
                }
                if (in_open && pfd[1].revents) {
                        ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
                        if (n <= 0) {
                                /* End of input (a script): stop sending, show the
                                 * guest's answer for a moment, then leave. No
                                 * half-close: QEMU would drop the connection at
                                 * once, and a guest that does not read its serial
                                 * port (paused, busy) would never let it end. */
                                in_open = 0;
                                linger_until = now_ms() + CONSOLE_LINGER_MS;
                                continue;
                        }
                        if (tio_saved && memchr(buf, 0x1d, (size_t)n))
                                break;
                        if (write(fd, buf, (size_t)n) != n)
                                break;
                }
        }
        close(fd);
        if (busy_fd >= 0)
                close(busy_fd);
        restore_tty();
        if (tio_saved)
                fprintf(stderr, "\n");
        return CLI_OK;
}
