#include "launcher/vm/supervisor.h"

#include <cap-ng.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launcher/vm/launch.h"
#include "launcher/core/log.h"
#include "launcher/vm/notify.h"
#include "launcher/vm/qemu_proc.h"
#include "launcher/core/runtime.h"
#include "launcher/core/safepath.h"
#include "launcher/core/spawn.h"
#include "launcher/core/strv.h"
#include "net/bridge.h"
#include "net/tap.h"
#include "qmp/agent.h"
#include "qmp/qmp.h"
#include "launcher/core/lease.h"
#include "launcher/core/hostconf.h"
#include "launcher/core/migreq.h"
#include "launcher/core/util.h"

#define QMP_TIMEOUT_MS 30000    /* TCG under sanitizers can be slow to greet */
#define QUIT_WAIT_S 10
#define AGENT_WAIT_S 10         /* after guest-shutdown was accepted */
#define SIGTERM_WAIT_S 5
#define SIGKILL_WAIT_S 5
#define TAIL_LINES 6

/* Where a stop request stands; each stage has a deadline. */
enum stop_stage {
        STAGE_RUNNING,
        STAGE_POWERDOWN,        /* system_powerdown sent, waiting for the guest */
        STAGE_AGENT,            /* guest-shutdown sent through the guest agent */
        STAGE_QUIT,             /* quit sent */
        STAGE_TERM,             /* SIGTERM sent to QEMU */
        STAGE_KILL,             /* SIGKILL sent */
};

struct supervisor {
        struct launch_context ctx;
        int lease_fd;           /* vm/NAME/lease on the shared root */
        int lock_fd;
        struct qemu_proc_fds fds;       /* for QEMU, until it is started */
        int out_read, out_write;        /* QEMU's stdout+stderr */
        int sig_fd;
        struct qemu_proc proc;          /* QEMU, once started */
        struct qemu_user user;
        unsigned shutdown_timeout;
        enum stop_stage stage;
        int64_t deadline;       /* CLOCK_MONOTONIC milliseconds */
        bool guest_shutdown;    /* SHUTDOWN event with guest=true seen */
        bool host_quit;         /* someone asked QEMU to quit over QMP */
        bool host_signal;       /* someone else sent QEMU SIGTERM/SIGINT/SIGHUP */
        bool timed_out;         /* the run timeout stopped the VM */
        int64_t run_deadline;   /* 0 = none */
        /* Live migration target (supervisor_options.incoming). */
        bool incoming;          /* still waiting for the guest to arrive */
        bool incoming_done;     /* MIGRATION status completed seen */
        bool incoming_failed;   /* given up: exit 5 */
        bool refused;           /* state=refused answered: keep that answer */
        bool migrated_out;      /* source: MIGRATION completed seen (vrt migrate) */
        int64_t incoming_deadline;
        char host[LEASE_HOST_MAX + 1];
        char qemu_version[64];
        bool caps_dropped;              /* drop_capabilities() ran */
        char out_buf[4096];
        size_t out_len;
        char tail[TAIL_LINES][256];
        unsigned tail_next;
};

/* Keeps QEMU's last output lines for the crash message, and logs them. */
static void output_line(struct supervisor *s, const char *line) {
        if (!*line)
                return;
        log_warning("qemu: %s", line);
        snprintf(s->tail[s->tail_next % TAIL_LINES], sizeof s->tail[0], "%s", line);
        s->tail_next++;
}

static void output_read(struct supervisor *s) {
        for (;;) {
                ssize_t n = read(s->out_read, s->out_buf + s->out_len, sizeof s->out_buf - 1 - s->out_len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        if (n == 0 || errno != EAGAIN) {
                                /* EOF: flush a partial last line. */
                                s->out_buf[s->out_len] = '\0';
                                output_line(s, s->out_buf);
                                s->out_len = 0;
                                close_fd(&s->out_read);
                        }
                        return;
                }
                s->out_len += (size_t)n;
                s->out_buf[s->out_len] = '\0';
                char *start = s->out_buf, *nl;
                while ((nl = strchr(start, '\n'))) {
                        *nl = '\0';
                        output_line(s, start);
                        start = nl + 1;
                }
                size_t rest = s->out_len - (size_t)(start - s->out_buf);
                if (rest == sizeof s->out_buf - 1) {
                        output_line(s, start);  /* overlong line: cut */
                        rest = 0;
                }
                memmove(s->out_buf, start, rest);
                s->out_len = rest;
        }
}

static void tail_join(const struct supervisor *s, char *buf, size_t len) {
        buf[0] = '\0';
        unsigned first = s->tail_next > TAIL_LINES ? s->tail_next - TAIL_LINES : 0;
        for (unsigned i = first; i < s->tail_next; i++) {
                size_t used = strlen(buf);
                snprintf(buf + used, len - used, "%s%s", used ? " | " : "", s->tail[i % TAIL_LINES]);
        }
}

/* The per-VM UEFI variable store starts as a copy of the host's template. */
static int ensure_uefi_vars(struct supervisor *s, char *err, size_t errlen) {
        const char *dst = s->ctx.paths.uefi_vars;
        int in = -1, out = -1, r = 0;
        char tmp[4200];

        if (s->ctx.launch.firmware != FIRMWARE_UEFI || access(dst, F_OK) == 0)
                return 0;
        snprintf(tmp, sizeof tmp, "%s.tmp", dst);
        in = open(s->ctx.host->ovmf_vars, O_RDONLY | O_CLOEXEC);
        if (in < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: cannot read ovmf_vars %s: %s", s->ctx.host->path, s->ctx.host->ovmf_vars, strerror(-r));
                goto fail;
        }
        out = safepath_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600, SAFEPATH_ONE_LINK, err, errlen);
        if (out < 0) {
                r = out;
                out = -1;
                goto fail;
        }
        for (;;) {
                char buf[65536];
                ssize_t n = read(in, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                /* A short write (disk full) is retried, so the error
                 * reported is the real one, not a stale errno. */
                for (ssize_t done = 0; n > 0 && done < n;) {
                        ssize_t w = write(out, buf + done, (size_t)(n - done));
                        if (w < 0 && errno == EINTR)
                                continue;
                        if (w <= 0) {
                                n = -1;
                                break;
                        }
                        done += w;
                }
                if (n < 0) {
                        r = errno ? -errno : -EIO;
                        snprintf(err, errlen, "cannot copy UEFI variables to %s: %s", tmp, strerror(-r));
                        goto fail;
                }
                if (n == 0)
                        break;
        }
        if (fsync(out) < 0 || close(out) < 0) {
                out = -1;
                r = -errno;
                snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(-r));
                goto fail;
        }
        out = -1;
        if (rename(tmp, dst) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot rename %s: %s", tmp, strerror(-r));
                goto fail;
        }
        close(in);
        return 0;
fail:
        close_fd(&in);
        close_fd(&out);
        unlink(tmp);
        return r;
}

/* QEMU writes the VM's own disk layer and UEFI variables, nothing else. */
static int grant_vm_files(struct supervisor *s, char *err, size_t errlen) {
        const char *files[3] = { NULL, NULL, NULL };
        if (!s->user.drop)
                return 0;
        if (s->ctx.launch.n_disk > 0)
                files[0] = s->ctx.launch.disk[0].path;
        if (s->ctx.launch.firmware == FIRMWARE_UEFI)
                files[1] = s->ctx.paths.uefi_vars;
        files[2] = s->ctx.launch.seed_image;    /* first boot: QEMU reads it, nobody else */
        for (size_t i = 0; i < 3; i++) {
                char why[1024];
                /* A link planted there would hand its target to QEMU's user. */
                int r = files[i] ? safepath_hand_over(files[i], s->user.uid, s->user.gid, 0600, 0, why, sizeof why) : 0;
                if (r < 0) {
                        snprintf(err, errlen, "%s (not handed to user %s)", why, s->ctx.host->user);
                        return r;
                }
        }
        return 0;
}

/* First boot: the guest's org.vrt.init port is written to this file. */
static int open_init_log(struct supervisor *s, const struct supervisor_options *o, char *err, size_t errlen) {
        if (!o->seed_image)
                return 0;
        if (!o->init_log) {
                snprintf(err, errlen, "a seed image needs an init log");
                return -EINVAL;
        }
        s->fds.init_log = safepath_open_beneath(s->ctx.paths.vm_dir, o->init_log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND,
                                                0640, SAFEPATH_ONE_LINK, err, errlen);
        if (s->fds.init_log < 0) {
                int r = s->fds.init_log;
                s->fds.init_log = -1;
                return r;
        }
        return 0;
}

/* NIC i's tap, attached to its bridge; its fd goes to QEMU. */
static int setup_tap(struct supervisor *s, unsigned i, char *err, size_t errlen) {
        const struct instance *inst = s->ctx.inst;
        const char *bridge = inst->nics[i].bridge ? inst->nics[i].bridge : s->ctx.host->bridge;
        char ifname[16];
        int r = bridge_check(bridge, err, errlen);
        if (r < 0) {
                if (i) {        /* say which NIC's bridge */
                        char msg[512];
                        snprintf(msg, sizeof msg, "%s", err);
                        snprintf(err, errlen, "%s: NIC %u: %s", s->ctx.paths.instance, i, msg);
                }
                return r;
        }
        r = tap_name_for_vm(inst->name, i, ifname);
        if (r < 0) {
                snprintf(err, errlen, "cannot name a tap for %s: %s", inst->name, strerror(-r));
                return r;
        }
        r = tap_open(ifname, true, &s->fds.tap[i], err, errlen);
        if (r < 0)
                return r;
        r = tap_set_alias(ifname, inst->name, err, errlen);
        if (r < 0)
                return r;
        r = bridge_attach(bridge, ifname, err, errlen);
        if (r < 0)
                return r;
        if (s->ctx.launch.fd_vhost[i] >= 0 && tap_vhost_open(&s->fds.vhost[i]) < 0) {
                log_warning("cannot open /dev/vhost-net; virtio-net runs in QEMU instead");
                s->ctx.launch.fd_vhost[i] = -1;
        }
        log_info("tap %s attached to bridge %s%s", ifname, bridge, s->fds.vhost[i] >= 0 ? " (vhost-net)" : "");
        return 0;
}

static int setup_network(struct supervisor *s, char *err, size_t errlen) {
        for (unsigned i = 0; i < s->ctx.inst->n_nics; i++)
                if (s->ctx.inst->nics[i].net == NET_BRIDGE) {
                        int r = setup_tap(s, i, err, errlen);
                        if (r < 0)
                                return r;
                }
        return 0;
}

static int setup_runtime(struct supervisor *s, char *err, size_t errlen) {
        const struct vm_paths *p = &s->ctx.paths;
        int r;

        s->lock_fd = runtime_lock(p, err, errlen);
        if (s->lock_fd < 0)
                return s->lock_fd;
        runtime_clean(p);       /* leftovers of a crashed run */
        char why[1024];
        r = safepath_hand_over(p->run_dir, (uid_t)-1, s->user.socket_gid, s->user.socket_gid != (gid_t)-1 ? 0750 : 0700,
                               SAFEPATH_DIR, why, sizeof why);
        if (r < 0) {
                snprintf(err, errlen, "cannot set up %s: %s", p->run_dir, why);
                return r;
        }
        /* The operator group may use the sockets, so vrt list, vrt qmp and
         * vrt console run by its members must see that the VM runs: they
         * probe the lock. */
        if (s->user.socket_gid != (gid_t)-1 &&
            (fchown(s->lock_fd, (uid_t)-1, s->user.socket_gid) < 0 || fchmod(s->lock_fd, 0640) < 0)) {
                r = -errno;
                snprintf(err, errlen, "cannot set up %s: %s", p->lock_file, strerror(-r));
                return r;
        }
        r = runtime_write_pid(p->pid_file, getpid());
        if (r < 0) {
                snprintf(err, errlen, "cannot write %s: %s", p->pid_file, strerror(-r));
                return r;
        }
        r = qemu_proc_listen(&s->fds, p, s->user.socket_gid, err, errlen);
        if (r < 0)
                return r;

        if (mkdir(p->log_dir, 0750) < 0 && errno != EEXIST) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", p->log_dir, strerror(-r));
                return r;
        }
        s->fds.console_log = safepath_open_beneath(p->vm_dir, p->console_log, O_WRONLY | O_APPEND | O_CREAT, 0640,
                                                   SAFEPATH_ONE_LINK, err, errlen);
        if (s->fds.console_log < 0) {
                r = s->fds.console_log;
                s->fds.console_log = -1;
                return r;
        }
        return 0;
}

/* The lease's text made durable (lease_acquire), off the critical path. */
static void sync_lease(struct supervisor *s) {
        if (s->lease_fd < 0)
                return;
        int r = lease_sync(s->lease_fd);
        if (r < 0)
                log_warning("cannot sync %s/%s: %s", s->ctx.paths.vm_dir, LEASE_FILE, strerror(-r));
}

static void drop_capabilities(struct supervisor *s);

/* While QEMU initialises (qemu_proc_request.while_starting): everything
 * that needs neither QEMU nor a privilege any more, so that the greeting
 * finds nothing left to do before cont. */
static void while_qemu_starts(void *arg) {
        struct supervisor *s = arg;
        sync_lease(s);
        drop_capabilities(s);
}

static int start_qemu(struct supervisor *s, char *err, size_t errlen) {
        int pipefd[2];
        char qpid[4200];
        if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0) {
                int r = -errno;
                snprintf(err, errlen, "pipe: %s", strerror(-r));
                return r;
        }
        s->out_read = pipefd[0];
        s->out_write = pipefd[1];
        snprintf(qpid, sizeof qpid, "%s/qemu.pid", s->ctx.paths.run_dir);
        /* An incoming guest takes its lease only at the handover. */
        struct qemu_proc_request req = {
                .launch = &s->ctx.launch,
                .fds = &s->fds,
                .qmp_sock = s->ctx.paths.qmp_sock,
                .pid_file = qpid,
                .stdout_fd = s->out_write,
                .user = &s->user,
                .timeout_ms = QMP_TIMEOUT_MS,
                .while_starting = while_qemu_starts,
                .while_starting_arg = s,
        };
        int r = qemu_proc_start(&req, &s->proc, err, errlen);
        close_fd(&s->out_write);
        if (s->proc.pid > 0)
                log_info("started QEMU pid %d%s", (int)s->proc.pid, s->user.drop ? "" : " (not root: running QEMU as the caller)");
        return r;
}

static void send_command(struct supervisor *s, const char *cmd) {
        char err[512];
        struct json_object *ret = NULL;
        if (!s->proc.qmp) {
                log_warning("cannot send %s: QMP is disconnected", cmd);
                return;
        }
        int r = qmp_execute(s->proc.qmp, cmd, NULL, 5000, &ret, err, sizeof err);
        if (r < 0)
                log_warning("%s failed: %s", cmd, err[0] ? err : strerror(-r));
        json_object_put(ret);
}

/* The guest ignored the ACPI button: ask its agent, if it has one, within
 * AGENT_TIMEOUT_MS. True when the agent took guest-shutdown. */
static bool agent_shutdown(struct supervisor *s) {
        struct agent *a = NULL;
        char err[512];
        log_warning("stopping: guest did not power off within %us, trying the guest agent (guest-shutdown)", s->shutdown_timeout);
        int r = agent_connect(s->ctx.paths.agent_sock, AGENT_TIMEOUT_MS, &a, err, sizeof err);
        if (r == 0) {
                struct json_object *args = json_object_new_object();
                json_object_object_add(args, "mode", json_object_new_string("powerdown"));
                r = agent_execute_noreply(a, "guest-shutdown", args, 500, err, sizeof err);
                json_object_put(args);
        }
        agent_free(a);
        if (r < 0) {
                log_warning("stopping: no guest agent shutdown (%s)", err);
                return false;
        }
        log_notice("stopping: guest agent accepted guest-shutdown, waiting up to %ds", AGENT_WAIT_S);
        notify_send("STATUS=guest ignored the power button, guest agent shutting it down");
        return true;
}

static void stage_enter(struct supervisor *s, enum stop_stage stage) {
        s->stage = stage;
        switch (stage) {
        case STAGE_POWERDOWN:
                log_notice("stopping: ACPI power button (system_powerdown), waiting up to %us for the guest", s->shutdown_timeout);
                notify_send("STOPPING=1\nSTATUS=shutting down the guest");
                send_command(s, "system_powerdown");
                s->deadline = now_ms() + (int64_t)s->shutdown_timeout * 1000;
                break;
        case STAGE_AGENT:
                if (agent_shutdown(s)) {
                        s->deadline = now_ms() + AGENT_WAIT_S * 1000;
                        break;
                }
                stage_enter(s, STAGE_QUIT);
                break;
        case STAGE_QUIT:
                log_warning("stopping: guest did not power off, sending quit");
                notify_send("STATUS=guest did not power off, quitting QEMU");
                send_command(s, "quit");
                s->deadline = now_ms() + QUIT_WAIT_S * 1000;
                break;
        case STAGE_TERM:
                log_warning("stopping: QEMU did not quit within %ds, sending SIGTERM", QUIT_WAIT_S);
                kill(s->proc.pid, SIGTERM);
                s->deadline = now_ms() + SIGTERM_WAIT_S * 1000;
                break;
        case STAGE_KILL:
                log_warning("stopping: QEMU ignored SIGTERM for %ds, sending SIGKILL", SIGTERM_WAIT_S);
                kill(s->proc.pid, SIGKILL);
                s->deadline = now_ms() + SIGKILL_WAIT_S * 1000;
                break;
        case STAGE_RUNNING:
                break;
        }
}

static void handle_event(struct supervisor *s, struct json_object *ev) {
        struct json_object *name = NULL, *data = NULL, *v = NULL;
        json_object_object_get_ex(ev, "event", &name);
        json_object_object_get_ex(ev, "data", &data);
        const char *n = json_object_get_string(name);
        if (!n)
                return;
        if (strcmp(n, "SHUTDOWN") == 0) {
                const char *reason = "";
                if (json_object_object_get_ex(data, "reason", &v))
                        reason = json_object_get_string(v);
                if (json_object_object_get_ex(data, "guest", &v) && json_object_get_boolean(v))
                        s->guest_shutdown = true;
                else if (strcmp(reason, "host-qmp-quit") == 0 && s->stage < STAGE_QUIT)
                        s->host_quit = true;
                else if (strcmp(reason, "host-signal") == 0 && s->stage < STAGE_TERM)
                        s->host_signal = true;
                log_notice("guest shutdown (%s)", reason);
        } else if (strcmp(n, "MIGRATION") == 0) {
                const char *st = "";
                if (json_object_object_get_ex(data, "status", &v))
                        st = json_object_get_string(v);
                if (s->incoming && strcmp(st, "completed") == 0) {
                        s->incoming_done = true;
                        log_notice("incoming migration completed; taking the lease");
                } else if (!s->incoming && strcmp(st, "completed") == 0) {
                        s->migrated_out = true;
                } else if (s->incoming && (strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0)) {
                        log_warning("incoming migration %s", st);
                }
        } else if (strcmp(n, "RESET") == 0 || strcmp(n, "STOP") == 0 || strcmp(n, "RESUME") == 0 ||
                   strcmp(n, "POWERDOWN") == 0 || strcmp(n, "GUEST_PANICKED") == 0) {
                log_info("event %s", n);
        }
}

static void drain_events(struct supervisor *s) {
        struct json_object *ev;
        while (s->proc.qmp && qmp_next_event(s->proc.qmp, &ev) > 0) {
                handle_event(s, ev);
                json_object_put(ev);
        }
}

static int exit_status(struct supervisor *s, const siginfo_t *si) {
        char tail[2048];
        tail_join(s, tail, sizeof tail);
        if (s->incoming || s->incoming_failed) {
                /* The source keeps the guest: a service manager must not retry. */
                log_warning("VM %s: incoming migration given up; QEMU ended (%s %d)%s%s", s->ctx.name,
                            si->si_code == CLD_EXITED ? "status" : "signal", si->si_status, tail[0] ? ": " : "", tail);
                return SUPERVISOR_EXIT_ELSEWHERE;
        }
        if (s->timed_out) {
                log_error("VM %s did not power off within its run timeout; it was stopped", s->ctx.name);
                return SUPERVISOR_EXIT_TIMEOUT;
        }
        if (si->si_code == CLD_EXITED && si->si_status == 0) {
                if (s->stage >= STAGE_QUIT && !s->guest_shutdown) {
                        log_warning("VM %s stopped forcibly after the shutdown timeout", s->ctx.name);
                        return SUPERVISOR_EXIT_FORCED;
                }
                log_notice("VM %s powered off%s", s->ctx.name,
                           s->host_quit ? " (quit over QMP)"
                           : s->host_signal ? " (QEMU was sent a signal from outside vrt, the guest did not shut down)" : "");
                return SUPERVISOR_EXIT_OK;
        }
        if (s->stage >= STAGE_TERM) {
                log_warning("VM %s killed after the shutdown timeout", s->ctx.name);
                return SUPERVISOR_EXIT_FORCED;
        }
        if (si->si_code == CLD_EXITED)
                log_error("QEMU exited with status %d%s%s", si->si_status, tail[0] ? ": " : "", tail);
        else
                log_error("QEMU was killed by signal %s%s%s", strsignal(si->si_status), tail[0] ? "; last output: " : "", tail);
        /* The operator asked for a stop and the VM is stopped: a service
         * manager must not restart it (vrt@.service: SuccessExitStatus=3). */
        if (s->stage != STAGE_RUNNING)
                return SUPERVISOR_EXIT_FORCED;
        return SUPERVISOR_EXIT_FAILED;
}

/* Reaps QEMU after its pidfd became readable and drains its last output. */
static int reap(struct supervisor *s) {
        siginfo_t si = { 0 };
        while (waitid(P_PID, (id_t)s->proc.pid, &si, WEXITED) < 0 && errno == EINTR)
                ;
        close_fd(&s->proc.pidfd);
        s->proc.pid = 0;
        if (s->out_read >= 0) {
                int fl = fcntl(s->out_read, F_GETFL);
                fcntl(s->out_read, F_SETFL, fl & ~O_NONBLOCK);
                while (s->out_read >= 0)
                        output_read(s);
        }
        return exit_status(s, &si);
}


/* QEMU's version as "7.2.0 (Debian 1:7.2+dfsg-7)" into s->qemu_version,
 * from the QMP greeting: no round trip before cont. */
static void note_qemu_version(struct supervisor *s) {
        const struct json_object *ver = qmp_server_version(s->proc.qmp);
        struct json_object *q = NULL, *v = NULL;
        if (!ver || !json_object_object_get_ex(ver, "qemu", &q))
                return;
        int maj = 0, min = 0, mic = 0;
        if (json_object_object_get_ex(q, "major", &v))
                maj = json_object_get_int(v);
        if (json_object_object_get_ex(q, "minor", &v))
                min = json_object_get_int(v);
        if (json_object_object_get_ex(q, "micro", &v))
                mic = json_object_get_int(v);
        const char *pkg = json_object_object_get_ex(ver, "package", &v) ? json_object_get_string(v) : "";
        snprintf(s->qemu_version, sizeof s->qemu_version, "%d.%d.%d%s%.30s%s", maj, min, mic, pkg && *pkg ? " (" : "",
                 pkg ? pkg : "", pkg && *pkg ? ")" : "");
        for (char *c = s->qemu_version; *c; c++)
                if ((unsigned char)*c < 0x20)
                        *c = '?';
}

/* ROOT/hosts/HOST rewritten with QEMU's version and the CPU model
 * (migreq.h), which `vrt migrate` compares between hosts. */
static void publish_host(struct supervisor *s) {
        char text[256];
        if (!s->host[0] || !s->qemu_version[0])
                return;
        snprintf(text, sizeof text, "qemu=%s\ncpu=%s\n", s->qemu_version,
                 s->ctx.host->cpu ? s->ctx.host->cpu : CONFIG_DEFAULT_CPU);
        int r = migreq_write(s->ctx.root, MIGREQ_HOSTS_DIR, s->host, text);
        if (r < 0)
                log_warning("cannot write %s/%s/%s: %s", s->ctx.root, MIGREQ_HOSTS_DIR, s->host, strerror(-r));
}

static void incoming_answer(struct supervisor *s, const char *text) {
        char file[300];
        if (!s->ctx.root)       /* the VM's name or vrt.conf were refused */
                return;
        if (strncmp(text, "state=refused", 13) == 0)
                s->refused = true;
        else if (s->refused)
                return;
        snprintf(file, sizeof file, "%s.answer", s->ctx.name);
        int r = migreq_write(s->ctx.root, MIGREQ_DIR, file, text);
        if (r < 0)
                log_warning("cannot write %s/%s/%s: %s", s->ctx.root, MIGREQ_DIR, file, strerror(-r));
}

static int qmp_simple(struct supervisor *s, const char *cmd, const char *json_args, struct json_object **ret,
                      char *err, size_t errlen) {
        struct json_object *args = json_args ? json_tokener_parse(json_args) : NULL, *reply = NULL;
        if (json_args && !args) {
                snprintf(err, errlen, "%s: bad arguments", cmd);
                return -EINVAL;
        }
        int r = qmp_execute(s->proc.qmp, cmd, args, 10000, &reply, err, errlen);
        json_object_put(args);
        if (r == 0 && ret)
                *ret = reply;
        else
                json_object_put(reply);
        return r;
}

/* The destination half: capabilities, migrate-incoming on host.conf's
 * migration_address with a port QEMU picks, and the answer with it. */
static int incoming_setup(struct supervisor *s, char *err, size_t errlen) {
        struct host_limits hl;
        struct json_object *ret = NULL, *sa = NULL, *a0 = NULL, *port = NULL;
        char args[256], text[512];
        int r;

        r = hostconf_load(hostconf_path(), &hl, err, errlen);
        if (r < 0)
                return r;
        if (!hl.migration_address[0]) {
                snprintf(err, errlen, "%s has no migration_address=: host %s takes no incoming migrations",
                         hostconf_path(), s->host);
                return -EINVAL;
        }
        /* late-block-activate: the disks are taken over only at cont, as libvirt does. */
        r = qmp_simple(s, "migrate-set-capabilities",
                       "{\"capabilities\":[{\"capability\":\"events\",\"state\":true},"
                       "{\"capability\":\"late-block-activate\",\"state\":true}]}", NULL, err, errlen);
        if (r < 0)
                return r;
        snprintf(args, sizeof args, "{\"uri\":\"tcp:%s:0\"}", hl.migration_address);
        r = qmp_simple(s, "migrate-incoming", args, NULL, err, errlen);
        if (r < 0)
                return r;
        r = qmp_simple(s, "query-migrate", NULL, &ret, err, errlen);
        if (r < 0)
                return r;
        if (!json_object_object_get_ex(ret, "socket-address", &sa) || !(a0 = json_object_array_get_idx(sa, 0)) ||
            !json_object_object_get_ex(a0, "port", &port)) {
                snprintf(err, errlen, "QEMU did not say which port it listens on (query-migrate: no socket-address)");
                json_object_put(ret);
                return -EPROTO;
        }
        snprintf(text, sizeof text, "state=listening\nhost=%s\naddress=tcp:%s:%s\nqemu=%s\ncpu=%s\n", s->host,
                 hl.migration_address, json_object_get_string(port), s->qemu_version,
                 s->ctx.host->cpu ? s->ctx.host->cpu : CONFIG_DEFAULT_CPU);
        log_notice("incoming migration: listening on tcp:%s:%s", hl.migration_address, json_object_get_string(port));
        json_object_put(ret);
        incoming_answer(s, text);
        return 0;
}

static void incoming_give_up(struct supervisor *s, const char *why) {
        log_warning("incoming migration given up: %s; quitting QEMU", why);
        s->incoming = false;
        s->incoming_failed = true;
        stage_enter(s, STAGE_QUIT);
}

/* Called on every turn of the event loop while the guest is on its way. */
static void incoming_tick(struct supervisor *s) {
        char req[MIGREQ_TEXT_MAX], host[LEASE_HOST_MAX + 1], err[1024], text[256];
        struct lease_holder stale;

        if (!s->incoming || s->stage != STAGE_RUNNING)
                return;
        if (migreq_read(s->ctx.root, MIGREQ_DIR, s->ctx.name, req, sizeof req) < 0 ||
            migreq_get(req, "host", host, sizeof host) < 0 || strcmp(host, s->host) != 0) {
                incoming_give_up(s, "the request was withdrawn by the source");
                return;
        }
        if (now_ms() >= s->incoming_deadline) {
                incoming_give_up(s, "timeout");
                return;
        }
        if (!s->incoming_done)
                return;
        /* The source holds the lease until its QEMU has quit. */
        s->lease_fd = lease_acquire(s->ctx.paths.vm_dir, s->ctx.name, s->host, &stale, err, sizeof err);
        if (s->lease_fd == -EBUSY)
                return;
        if (s->lease_fd < 0) {
                incoming_give_up(s, err);
                return;
        }
        int r = qemu_proc_cont(&s->proc, 10000, err, sizeof err);
        if (r < 0) {
                lease_release(&s->lease_fd);
                incoming_give_up(s, err);
                return;
        }
        /* When the guest ran again, for the source's measure of its pause. */
        long long resumed_us = (long long)realtime_us();
        /* After cont: the sync is not part of the guest's pause. */
        sync_lease(s);
        s->incoming = false;
        snprintf(text, sizeof text, "state=running\nhost=%s\nresumed_us=%lld\n", s->host, resumed_us);
        incoming_answer(s, text);
        notify_send("READY=1\nSTATUS=running");
        log_notice("VM %s running (migrated in; lease taken)", s->ctx.name);
}

/* Source of a live migration: once QEMU has completed it, the guest is
 * paused for good here (postmigrate) and lives on at the destination, which
 * waits for the lease before it lets the guest run. Hand it over at once
 * rather than after QEMU's exit: that is the guest's pause. */
static void migrated_out(struct supervisor *s) {
        struct json_object *ret = NULL, *v = NULL;
        char err[256];
        if (!s->migrated_out || s->lease_fd < 0 || !s->proc.qmp)
                return;
        s->migrated_out = false;
        /* Only `vrt migrate`'s live request hands the VM over: a migration
         * a script started (a save to a file, a socket) leaves the guest
         * paused here, still this host's. */
        char req[MIGREQ_TEXT_MAX], from[LEASE_HOST_MAX + 1] = "", to[LEASE_HOST_MAX + 1] = "", live[512];
        if (migreq_check_migrating(s->ctx.root, s->ctx.name, "", live, sizeof live) != -EAGAIN ||
            migreq_read(s->ctx.root, MIGREQ_DIR, s->ctx.name, req, sizeof req) < 0 ||
            migreq_get(req, "from", from, sizeof from) < 0 || migreq_get(req, "host", to, sizeof to) < 0 ||
            strcmp(from, s->host) != 0 || strcmp(to, s->host) == 0) {
                log_warning("a migration completed without a `vrt migrate` request from this host (%s/%s/%s); "
                            "keeping the lease, the guest stays paused here (`vrt qmp %s cont` resumes it)",
                            s->ctx.root, MIGREQ_DIR, s->ctx.name, s->ctx.name);
                return;
        }
        /* QEMU sends the event (status completed) and only then leaves
         * finish-migrate for postmigrate (migration_iteration_finish):
         * wait for that briefly rather than keep the lease until QEMU's
         * exit, which would be the guest's pause. */
        const char *st = "";
        for (int64_t until = now_ms() + 1000;;) {
                ret = NULL;
                if (qmp_execute(s->proc.qmp, "query-status", NULL, 5000, &ret, err, sizeof err) < 0 ||
                    !json_object_object_get_ex(ret, "status", &v)) {
                        st = "";
                        json_object_put(ret);
                        break;
                }
                st = strcmp(json_object_get_string(v), "postmigrate") == 0 ? "postmigrate"
                     : strcmp(json_object_get_string(v), "finish-migrate") == 0 ? "finish-migrate" : "other";
                json_object_put(ret);
                if (strcmp(st, "finish-migrate") != 0 || now_ms() >= until)
                        break;
                poll(NULL, 0, 1);
        }
        if (strcmp(st, "postmigrate") != 0) {
                log_warning("migration completed but QEMU is not in postmigrate (%s); keeping the lease",
                            st[0] ? st : "query-status failed");
                return;
        }
        /* QEMU fills in the times just after the status: for the log and vrt migrate. */
        long long total = 0, down = 0;
        for (int k = 0; k < 50 && total == 0; k++) {
                ret = NULL;
                if (qmp_execute(s->proc.qmp, "query-migrate", NULL, 5000, &ret, err, sizeof err) < 0)
                        break;
                if (json_object_object_get_ex(ret, "total-time", &v))
                        total = json_object_get_int64(v);
                if (json_object_object_get_ex(ret, "downtime", &v))
                        down = json_object_get_int64(v);
                json_object_put(ret);
                if (total == 0)
                        poll(NULL, 0, 1);
        }
        lease_release(&s->lease_fd);
        char file[300], text[128];
        snprintf(file, sizeof file, "%s.source", s->ctx.name);
        snprintf(text, sizeof text, "total_ms=%lld\ndowntime_ms=%lld\n", total, down);
        (void)migreq_write(s->ctx.root, MIGREQ_DIR, file, text);
        log_notice("VM %s migrated out (QEMU: %lld ms, downtime %lld ms): lease released, quitting QEMU",
                   s->ctx.name, total, down);
        send_command(s, "quit");
}

static int event_loop(struct supervisor *s) {
        for (;;) {
                /* Events read while waiting for a reply are already queued. */
                drain_events(s);
                struct pollfd pfd[4];
                int n = 0, i_sig, i_pid, i_qmp = -1, i_out = -1;
                i_sig = n;
                pfd[n++] = (struct pollfd){ .fd = s->sig_fd, .events = POLLIN };
                i_pid = n;
                pfd[n++] = (struct pollfd){ .fd = s->proc.pidfd, .events = POLLIN };
                if (s->proc.qmp) {
                        i_qmp = n;
                        pfd[n++] = (struct pollfd){ .fd = qmp_get_fd(s->proc.qmp), .events = POLLIN };
                }
                if (s->out_read >= 0) {
                        i_out = n;
                        pfd[n++] = (struct pollfd){ .fd = s->out_read, .events = POLLIN };
                }
                int timeout = -1;
                int64_t deadline = s->stage != STAGE_RUNNING ? s->deadline : s->run_deadline;
                if (deadline > 0) {
                        int64_t left = deadline - now_ms();
                        timeout = left > 0 ? (int)left : 0;
                }
                /* Incoming: look at the request often, at the lease very often. */
                if (s->incoming && (timeout < 0 || timeout > (s->incoming_done ? 1 : 100)))
                        timeout = s->incoming_done ? 1 : 100;
                int r = poll(pfd, (nfds_t)n, timeout);
                if (r < 0 && errno != EINTR) {
                        log_error("poll: %s", strerror(errno));
                        return SUPERVISOR_EXIT_FAILED;
                }
                if (r > 0 && (pfd[i_pid].revents & POLLIN))
                        return reap(s);
                if (r > 0 && i_out >= 0 && pfd[i_out].revents)
                        output_read(s);
                if (r > 0 && i_qmp >= 0 && pfd[i_qmp].revents) {
                        int q = qmp_process_input(s->proc.qmp);
                        drain_events(s);
                        if (q < 0) {
                                /* QEMU is exiting; its pidfd tells when it is gone. */
                                s->proc.qmp = qmp_free(s->proc.qmp);
                        }
                }
                if (r > 0 && (pfd[i_sig].revents & POLLIN)) {
                        struct signalfd_siginfo si;
                        if (read(s->sig_fd, &si, sizeof si) == sizeof si) {
                                if (si.ssi_signo == SIGHUP) {
                                        log_info("SIGHUP ignored");
                                } else if (s->stage == STAGE_RUNNING) {
                                        /* `vrt stop --timeout S` sends the timeout along with SIGTERM. */
                                        if (si.ssi_code == SI_QUEUE && si.ssi_int > 0)
                                                s->shutdown_timeout = (unsigned)si.ssi_int;
                                        log_notice("%s received", strsignal((int)si.ssi_signo));
                                        stage_enter(s, STAGE_POWERDOWN);
                                } else if (s->stage < STAGE_KILL) {
                                        /* Asked again while stopping: skip to the next step. */
                                        log_notice("%s received again, escalating", strsignal((int)si.ssi_signo));
                                        stage_enter(s, s->stage + 1);
                                }
                        }
                }
                incoming_tick(s);
                migrated_out(s);
                if (s->stage == STAGE_RUNNING && s->run_deadline > 0 && now_ms() >= s->run_deadline) {
                        log_warning("run timeout reached: stopping the VM");
                        s->timed_out = true;
                        stage_enter(s, STAGE_POWERDOWN);
                } else if (s->stage != STAGE_RUNNING && now_ms() >= s->deadline) {
                        if (s->stage == STAGE_KILL) {
                                log_error("QEMU pid %d survives SIGKILL; giving up", (int)s->proc.pid);
                                return SUPERVISOR_EXIT_FAILED;
                        }
                        stage_enter(s, s->stage + 1);
                }
        }
}

/* After QEMU runs, the supervisor only signals it (another uid: CAP_KILL)
 * and removes its own root-owned runtime files (no capability needed), so
 * everything else goes, including the bounding set. */
static void drop_capabilities(struct supervisor *s) {
        if (geteuid() != 0 || s->caps_dropped)
                return;
        s->caps_dropped = true;
        capng_clear(CAPNG_SELECT_BOTH);
        capng_update(CAPNG_ADD, CAPNG_EFFECTIVE | CAPNG_PERMITTED, CAP_KILL);
        if (capng_apply(CAPNG_SELECT_BOTH) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                log_warning("could not drop capabilities; continuing with them");
}

/* The lease says on the shared root that this host runs the VM. It is
 * taken before anything else is touched, so that a start on a second host
 * changes nothing and says where the VM runs. */
static int take_lease(struct supervisor *s, char *err, size_t errlen) {
        char host[LEASE_HOST_MAX + 1], who[256];
        struct lease_holder stale;
        int r;

        if (s->ctx.host->shared_root) {
                r = lease_check_root(s->ctx.root, "/proc/self/mountinfo", false, err, errlen);
                if (r < 0)
                        return r == -ENOLCK ? -EINVAL : r;
        }
        r = lease_host_name(host, sizeof host, err, errlen);
        if (r < 0)
                return r;
        /* Temporary (exit 1, so that systemd tries again): the request
         * goes when the migration ends, and a source whose QEMU died in
         * it must be restartable then. */
        r = migreq_check_migrating(s->ctx.root, s->ctx.name, "not started", err, errlen);
        if (r < 0)
                return r;
        s->lease_fd = lease_acquire(s->ctx.paths.vm_dir, s->ctx.name, host, &stale, err, errlen);
        if (s->lease_fd == -EBUSY) {
                struct lease_holder h;

                /* Held by this very host: the VM is simply already running
                 * here, which is a usage error (2) as before, not "elsewhere". */
                if (lease_probe(s->ctx.paths.vm_dir, &h) == 1 && strcmp(h.host, host) == 0) {
                        snprintf(err, errlen, "%s: VM is already running (supervisor pid %ld)",
                                 s->ctx.name, h.pid);
                        return -EEXIST;
                }
        }
        if (s->lease_fd < 0)
                return s->lease_fd;
        if (stale.host[0]) {
                lease_describe(&stale, who, sizeof who);
                log_warning("%s: took over the stale lease of %s: that run ended without stopping the VM",
                            s->ctx.name, who);
        }
        return 0;
}

static void supervisor_teardown(struct supervisor *s) {
        if (s->proc.pid > 0) {
                /* We are failing with QEMU still there: take it down with us. */
                kill(s->proc.pid, SIGKILL);
                while (waitpid(s->proc.pid, NULL, 0) < 0 && errno == EINTR)
                        ;
        }
        s->proc.qmp = qmp_free(s->proc.qmp);
        qemu_proc_fds_close(&s->fds);
        close_fd(&s->out_read);
        close_fd(&s->out_write);
        close_fd(&s->proc.pidfd);
        close_fd(&s->sig_fd);
        /* QEMU has exited (reaped above or by the event loop). The lease
         * goes before the runtime lock: once vrt list says the VM is not
         * running here, a destroy must not find the lease still held. */
        lease_release(&s->lease_fd);
        if (s->lock_fd >= 0) {
                runtime_remove(&s->ctx.paths);
                close_fd(&s->lock_fd);
        }
        /* An incoming migration that ended here tells the source it is gone. */
        if ((s->incoming || s->incoming_failed) && s->ctx.inst)
                incoming_answer(s, "state=gone\n");
        launch_context_done(&s->ctx);
}

int supervisor_run(const struct supervisor_options *o) {
        struct supervisor s = {
                .lease_fd = -1, .lock_fd = -1,
                .out_read = -1, .out_write = -1,
                .sig_fd = -1, .proc = { .pidfd = -1 },
        };
        char err[2048] = "";
        int r, status = SUPERVISOR_EXIT_FAILED;
        sigset_t mask;

        qemu_proc_fds_init(&s.fds);
        /* Signals are read from a signalfd, never delivered asynchronously. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        s.sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (s.sig_fd < 0) {
                log_error("signalfd: %s", strerror(errno));
                return SUPERVISOR_EXIT_FAILED;
        }

        /* What a lease needs first; the rest of the VM's files only under
         * the lease: a snapshot, revert or destroy on any host holds it
         * while it changes them. */
        r = launch_context_open(&s.ctx, o->root, o->runtime_dir, o->name, err, sizeof err);
        if (r == 0)
                r = lease_host_name(s.host, sizeof s.host, err, sizeof err);
        if (r == 0 && o->incoming) {
                /* The lease is the source's until the guest has arrived;
                 * a VM running here already is refused by the runtime lock.
                 * The lease taken at the handover must mean what it says. */
                s.incoming = true;
                s.incoming_deadline = now_ms() + (int64_t)(o->incoming_timeout > 0 ? o->incoming_timeout : 300) * 1000;
                if (s.ctx.host->shared_root &&
                    (r = lease_check_root(s.ctx.root, "/proc/self/mountinfo", false, err, sizeof err)) == -ENOLCK)
                        r = -EINVAL;
        } else if (r == 0)
                r = take_lease(&s, err, sizeof err);
        if (r == 0)
                r = launch_context_finish(&s.ctx, o->runtime_dir, err, sizeof err);
        if (r < 0) {
                if (o->incoming) {
                        char text[1200];
                        snprintf(text, sizeof text, "state=refused\nerror=%.1000s\n", err);
                        incoming_answer(&s, text);
                }
                log_error("%s", err);
                supervisor_teardown(&s);
                return r == -EBUSY ? SUPERVISOR_EXIT_ELSEWHERE
                       : r == -EINVAL || r == -ENOENT || r == -EEXIST ? SUPERVISOR_EXIT_INVALID : SUPERVISOR_EXIT_FAILED;
        }
        if (s.incoming)
                s.ctx.launch.incoming = "defer";
        s.shutdown_timeout = o->shutdown_timeout > 0 ? (unsigned)o->shutdown_timeout
                             : s.ctx.inst->shutdown_timeout ? s.ctx.inst->shutdown_timeout
                             : s.ctx.host->shutdown_timeout;
        if (o->seed_image) {
                s.ctx.launch.seed_image = o->seed_image;
                s.ctx.launch.fd_init_log = QEMU_FD_INIT_LOG;
        }
        /* Nothing is touched before the lock: the init log of a running
         * first boot must not be truncated by a second vrt-launch. */
        s.user = s.ctx.user;
        if ((r = setup_runtime(&s, err, sizeof err)) < 0 ||
            (r = open_init_log(&s, o, err, sizeof err)) < 0 ||
            (r = ensure_uefi_vars(&s, err, sizeof err)) < 0 ||
            (r = grant_vm_files(&s, err, sizeof err)) < 0 ||
            (r = setup_network(&s, err, sizeof err)) < 0) {
                log_error("%s: %s", o->name, err);
                if (o->incoming) {
                        char text[1200];
                        snprintf(text, sizeof text, "state=refused\nerror=%.20s: %.1000s\n", s.host, err);
                        incoming_answer(&s, text);
                }
                /* Configuration errors, including a bridge= that names no
                 * bridge (-ENOTTY) or one that is down. */
                status = r == -EINVAL || r == -ENOENT || r == -ENODEV || r == -ENETDOWN || r == -ENOTTY ||
                         r == -EBUSY || r == -ELOOP || r == -EMLINK      /* a link planted in the VM's files */
                         ? SUPERVISOR_EXIT_INVALID : SUPERVISOR_EXIT_FAILED;
                goto out;
        }
        notify_send("STATUS=starting QEMU");
        r = start_qemu(&s, err, sizeof err);
        if (r < 0) {
                if (s.proc.pid > 0) {
                        /* Wait briefly for QEMU to die on its own, for its message. */
                        struct pollfd pfd = { .fd = s.proc.pidfd, .events = POLLIN };
                        if (poll(&pfd, 1, 2000) <= 0)
                                kill(s.proc.pid, SIGKILL);
                        reap(&s);
                }
                char tail[2048];
                tail_join(&s, tail, sizeof tail);
                log_error("%s: QEMU did not come up: %s%s%s", o->name, err, tail[0] ? "; QEMU said: " : "", tail);
                if (o->incoming) {
                        char text[1200];
                        snprintf(text, sizeof text, "state=refused\nerror=%.20s: QEMU did not come up: %.900s\n", s.host, err);
                        incoming_answer(&s, text);
                        status = SUPERVISOR_EXIT_ELSEWHERE;
                }
                goto out;
        }
        /* Everything but READY=1 is done before cont: once the guest runs,
         * its vCPU thread takes a core (under TCG a whole one while a real
         * kernel boots), and every step after cont waits for the scheduler
         * (see tools/bench/README.md, rows 1a/1b). The host file is written
         * after READY=1: an fsync on the shared root is not the guest's
         * business. */
        drop_capabilities(&s);
        note_qemu_version(&s);
        if (s.incoming) {
                publish_host(&s);
                r = incoming_setup(&s, err, sizeof err);
                if (r < 0) {
                        char text[1200];
                        log_error("%s: incoming migration: %s", o->name, err);
                        snprintf(text, sizeof text, "state=refused\nerror=%.20s: %.1000s\n", s.host, err);
                        incoming_answer(&s, text);
                        status = SUPERVISOR_EXIT_ELSEWHERE;
                        goto out;
                }
                /* READY=1 comes once the guest runs here: under systemd the
                 * start may take the whole incoming timeout, not TimeoutStartSec. */
                char state[128];
                snprintf(state, sizeof state, "EXTEND_TIMEOUT_USEC=%lld\nSTATUS=waiting for the incoming migration",
                         (long long)((s.incoming_deadline - now_ms()) / 1000 + 30) * 1000000);
                notify_send(state);
                status = event_loop(&s);
                goto out;
        }
        r = qemu_proc_cont(&s.proc, 10000, err, sizeof err);
        if (r < 0) {
                log_error("%s: cont failed: %s", o->name, err);
                goto out;
        }
        notify_send("READY=1\nSTATUS=running");
        publish_host(&s);
        if (o->run_timeout > 0)
                s.run_deadline = now_ms() + (int64_t)o->run_timeout * 1000;
        log_notice("VM %s running", o->name);
        status = event_loop(&s);
out:
        supervisor_teardown(&s);
        return status;
}
