#include "launcher/lifecycle/migrate.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "launcher/core/actionlog.h"
#include "launcher/core/safepath.h"
#include "launcher/core/config.h"
#include "launcher/core/lease.h"
#include "launcher/core/migreq.h"
#include "launcher/core/paths.h"
#include "launcher/core/spawn.h"
#include "launcher/core/strv.h"
#include "launcher/core/util.h"
#include "launcher/lifecycle/service.h"
#include "qmp/qmp.h"

#define ANSWER_SUFFIX ".answer"
#define QMP_MS 10000
#define HANDOVER_S 30           /* source quit until the destination runs */
#define GONE_S 15               /* withdrawn until the destination has cleaned up */
#define QUIT_FALLBACK_MS 3000   /* completed until vrt migrate quits the source QEMU itself */

static void sleep_ms(int ms) {
        poll(NULL, 0, ms);
}

static long long get_ll(struct json_object *o, const char *k) {
        struct json_object *v;
        return json_object_object_get_ex(o, k, &v) ? (long long)json_object_get_int64(v) : 0;
}

/* Takes the queued events: the time of the guest's last STOP (QEMU's
 * timestamp, wall clock) into *stop_us; true if one was a MIGRATION. */
static bool take_events(struct qmp *q, long long *stop_us) {
        struct json_object *ev = NULL, *v = NULL, *ts = NULL;
        bool migration = false;
        while (qmp_next_event(q, &ev) > 0) {
                const char *n = json_object_object_get_ex(ev, "event", &v) ? json_object_get_string(v) : "";
                if (n && strcmp(n, "MIGRATION") == 0)
                        migration = true;
                if (n && strcmp(n, "STOP") == 0 && json_object_object_get_ex(ev, "timestamp", &ts))
                        *stop_us = get_ll(ts, "seconds") * 1000000 + get_ll(ts, "microseconds");
                json_object_put(ev);
        }
        return migration;
}

/* Waits up to ms for QEMU to say something: a MIGRATION event ends the
 * wait at once (the caller asks query-migrate again), so the end of the
 * migration is seen when it happens rather than at the next poll. */
static void wait_migration_event(struct qmp *q, int ms, long long *stop_us) {
        int64_t until = now_ms() + ms;
        /* Queued while a reply was awaited: older than that reply. */
        (void)take_events(q, stop_us);
        for (int left = ms; left > 0; left = (int)(until - now_ms())) {
                struct pollfd pfd = { .fd = qmp_get_fd(q), .events = POLLIN };
                int r = poll(&pfd, 1, left);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        return;
                if (qmp_process_input(q) < 0)
                        return;         /* closed: the next command says so */
                if (take_events(q, stop_us))
                        return;
        }
}

static void answer_file(const char *name, char *buf, size_t len) {
        snprintf(buf, len, "%s%s", name, ANSWER_SUFFIX);
}

static bool host_valid(const char *h) {
        char text[128], msg[128];
        struct lease_holder lh;
        if (strlen(h) > LEASE_HOST_MAX || strchr(h, '\n'))
                return false;
        snprintf(text, sizeof text, "host=%s\n", h);
        return lease_parse(text, strlen(text), &lh, msg, sizeof msg) == 0 && strcmp(lh.host, h) == 0;
}

static int qmp_cmd(struct qmp *q, const char *cmd, struct json_object *args, struct json_object **ret, char *err,
                   size_t errlen) {
        struct json_object *reply = NULL;
        int r = qmp_execute(q, cmd, args, QMP_MS, &reply, err, errlen);
        json_object_put(args);
        if (r == 0 && ret)
                *ret = reply;
        else
                json_object_put(reply);
        return r;
}

/* Reads the answer into buf and its state into st ("" when none). */
static void read_answer(const char *root, const char *name, char *buf, size_t len, char *st, size_t stlen) {
        char f[300];
        answer_file(name, f, sizeof f);
        st[0] = '\0';
        if (migreq_read(root, MIGREQ_DIR, f, buf, len) < 0) {
                buf[0] = '\0';
                return;
        }
        if (migreq_get(buf, "state", st, stlen) < 0)
                st[0] = '\0';
}

/* The handover is done: the destination answered state=running and holds
 * the lease. */
static bool runs_there(const struct migrate_options *o, const char *vm_dir, const char *st) {
        struct lease_holder h;
        return strcmp(st, "running") == 0 && lease_probe(vm_dir, &h) == 1 && strcmp(h.host, o->host) == 0;
}

/* The source gives up: the destination sees the request go and quits. */
static void withdraw(const struct migrate_options *o, bool wait_gone) {
        char buf[MIGREQ_TEXT_MAX], st[32], f[300];
        migreq_remove(o->root, MIGREQ_DIR, o->name);
        for (int i = 0; wait_gone && i < GONE_S * 20; i++) {
                read_answer(o->root, o->name, buf, sizeof buf, st, sizeof st);
                if (!st[0] || strcmp(st, "gone") == 0 || strcmp(st, "refused") == 0)
                        break;
                sleep_ms(50);
        }
        answer_file(o->name, f, sizeof f);
        migreq_remove(o->root, MIGREQ_DIR, f);
}

/* Puts the source guest back to running after a failed migration. Returns
 * true, resuming nothing, when the migration completed all the same: the
 * destination has the guest's state and its supervisor takes the lease
 * from the source's, so a cont here would run the guest twice. */
static bool resume_source(struct qmp *q, const char *name, const char *root) {
        struct json_object *st = NULL, *v = NULL;
        char err[512];
        bool completed = false;
        for (int i = 0; i < 100; i++) {
                struct json_object *m = NULL;
                if (qmp_cmd(q, "query-migrate", NULL, &m, err, sizeof err) < 0)
                        break;
                const char *s = json_object_object_get_ex(m, "status", &v) ? json_object_get_string(v) : "";
                bool busy = strcmp(s, "active") == 0 || strcmp(s, "cancelling") == 0 || strcmp(s, "setup") == 0 ||
                            strcmp(s, "device") == 0 || strcmp(s, "pre-switchover") == 0;
                completed = strcmp(s, "completed") == 0;
                json_object_put(m);
                if (!busy)
                        break;
                sleep_ms(50);
        }
        if (completed) {
                actionlog_append(root, "migrate", "%s: the migration completed as it was given up: source not resumed", name);
                return true;
        }
        if (qmp_cmd(q, "query-status", NULL, &st, err, sizeof err) == 0 &&
            json_object_object_get_ex(st, "running", &v) && !json_object_get_boolean(v)) {
                if (qmp_cmd(q, "cont", NULL, NULL, err, sizeof err) == 0)
                        actionlog_append(root, "migrate", "%s: source guest resumed (cont)", name);
                else
                        actionlog_append(root, "migrate", "%s: cont of the source guest failed: %s", name, err);
        }
        json_object_put(st);
        return false;
}

static int check_versions(const struct migrate_options *o, const char *me, const char *their_text, char *err,
                          size_t errlen) {
        char mine[MIGREQ_TEXT_MAX], a[128], b[128];
        if (migreq_read(o->root, MIGREQ_HOSTS_DIR, me, mine, sizeof mine) < 0)
                return 0;       /* nothing known about ourselves: QEMU refuses a bad stream itself */
        const char *keys[2] = { "qemu", "cpu" };
        for (int i = 0; i < 2; i++) {
                if (migreq_get(mine, keys[i], a, sizeof a) < 0 || migreq_get(their_text, keys[i], b, sizeof b) < 0)
                        continue;
                if (strcmp(a, b) != 0) {
                        snprintf(err, errlen, "%s: not migrated: host %s runs %s %s, host %s %s %s (%s must match)",
                                 o->name, me, i ? "CPU model" : "QEMU", a, o->host, i ? "CPU model" : "QEMU", b,
                                 i ? "cpu= in vrt.conf" : "the QEMU version");
                        return -EPERM;
                }
        }
        return 0;
}

static void progress(const struct migrate_options *o, struct json_object *m, const char *status) {
        struct json_object *ram = NULL, *v;
        struct migrate_progress p = { .status = status };
        if (!o->progress)
                return;
        if (json_object_object_get_ex(m, "ram", &ram)) {
                p.transferred = (uint64_t)get_ll(ram, "transferred");
                p.remaining = (uint64_t)get_ll(ram, "remaining");
                if (json_object_object_get_ex(ram, "mbps", &v))
                        p.mbps = json_object_get_double(v);
        }
        o->progress(o->userdata, &p);
}

int migrate_run(const struct migrate_options *o, struct migrate_result *ret, char *err, size_t errlen) {
        struct vm_paths p = { 0 };
        struct lease_holder h;
        struct qmp *q = NULL;
        char me[LEASE_HOST_MAX + 1], msg[1024], text[512], answer[MIGREQ_TEXT_MAX], st[32], addr[128];
        unsigned timeout = o->timeout_s ? o->timeout_s : MIGRATE_DEFAULT_TIMEOUT_S;
        int64_t t0 = now_ms(), deadline = t0 + (int64_t)timeout * 1000;
        bool requested = false, started = false;
        long long stop_us = -1;
        int r;

        *ret = (struct migrate_result){ .pause_us = -1 };
        if (config_check_vm_name(o->name, o->runtime_dir, msg, sizeof msg) < 0) {
                snprintf(err, errlen, "%s", msg);
                return -EINVAL;
        }
        if (!host_valid(o->host)) {
                snprintf(err, errlen, "invalid host name \"%.80s\" (letters, digits, '.', '_', '-'; at most %d)", o->host,
                         LEASE_HOST_MAX);
                return -EINVAL;
        }
        r = lease_host_name(me, sizeof me, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "%s", msg);
                return -EINVAL;
        }
        if (strcmp(me, o->host) == 0) {
                snprintf(err, errlen, "%s: host %s is this host; name another host on this root", o->name, o->host);
                return -EINVAL;
        }
        if (vm_paths_init(&p, o->root, o->runtime_dir, o->name) < 0)
                return -ENOMEM;
        if (access(p.vm_dir, F_OK) < 0) {
                snprintf(err, errlen, "no such VM: %s (%s does not exist)", o->name, p.vm_dir);
                r = -EINVAL;
                goto out;
        }
        r = lease_probe(p.vm_dir, &h);
        if (r <= 0 || strcmp(h.host, me) != 0) {
                char who[256];
                if (r == 1)
                        lease_describe(&h, who, sizeof who);
                if (r == 1)
                        snprintf(err, errlen, "%s runs on %s, not here (host %s): run vrt migrate there", o->name, who, me);
                else
                        snprintf(err, errlen, "%s is not running", o->name);
                r = -EINVAL;
                goto out;
        }
        /* Before anything is started: what the destination last ran VMs with. */
        if (migreq_read(o->root, MIGREQ_HOSTS_DIR, o->host, answer, sizeof answer) == 0 &&
            (r = check_versions(o, me, answer, err, errlen)) < 0)
                goto out;

        answer_file(o->name, msg, sizeof msg);
        migreq_remove(o->root, MIGREQ_DIR, msg);
        snprintf(text, sizeof text, "host=%s\nfrom=%s\ntimeout=%u\n", o->host, me, timeout);
        r = migreq_write(o->root, MIGREQ_DIR, o->name, text);
        if (r < 0) {
                snprintf(err, errlen, "cannot write %s/%s/%s: %s", o->root, MIGREQ_DIR, o->name, strerror(-r));
                goto out;
        }
        requested = true;
        actionlog_append(o->root, "migrate", "%s: migration to host %s requested by host %s (timeout %us)", o->name,
                         o->host, me, timeout);

        /* The destination's spool starts vrt-launch --incoming, which answers. */
        for (;;) {
                read_answer(o->root, o->name, answer, sizeof answer, st, sizeof st);
                if (strcmp(st, "listening") == 0 || strcmp(st, "refused") == 0 || strcmp(st, "gone") == 0)
                        break;
                if (now_ms() >= deadline) {
                        snprintf(err, errlen, "%s: host %s did not answer within %us (is its vrt spool running, and does it share %s?)",
                                 o->name, o->host, timeout, o->root);
                        r = -ETIMEDOUT;
                        goto fail;
                }
                sleep_ms(st[0] ? 10 : 50);
        }
        if (strcmp(st, "refused") == 0 || strcmp(st, "gone") == 0) {
                if (migreq_get(answer, "error", msg, sizeof msg) < 0)
                        snprintf(msg, sizeof msg, "its vrt-launch --incoming ended (see vm/%s/log/launch.log there)", o->name);
                snprintf(err, errlen, "%s: host %s refused: %s", o->name, o->host, msg);
                r = -ECONNREFUSED;
                goto fail;
        }
        if ((r = check_versions(o, me, answer, err, errlen)) < 0)
                goto fail;
        if (migreq_get(answer, "address", addr, sizeof addr) < 0 || strncmp(addr, "tcp:", 4) != 0) {
                snprintf(err, errlen, "%s: host %s answered without a tcp address", o->name, o->host);
                r = -EPROTO;
                goto fail;
        }
        actionlog_append(o->root, "migrate", "%s: host %s listens on %s", o->name, o->host, addr);

        r = qmp_connect_unix(p.monitor_sock, 1000, &q, msg, sizeof msg);
        if (r == 0)
                r = qmp_handshake(q, QMP_MS, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "%s: cannot use %s: %s", o->name, p.monitor_sock, msg);
                goto fail;
        }
        struct json_object *caps = json_tokener_parse("{\"capabilities\":[{\"capability\":\"events\",\"state\":true}]}");
        struct json_object *params = json_object_new_object();
        /* 0 = as fast as the link goes (QEMU's own default is a throttle). */
        int64_t bw = o->bandwidth_mib ? (int64_t)o->bandwidth_mib << 20 : (int64_t)1 << 40;
        json_object_object_add(params, "max-bandwidth", json_object_new_int64(bw));
        json_object_object_add(params, "downtime-limit",
                               json_object_new_int64(o->downtime_ms ? o->downtime_ms : MIGRATE_DEFAULT_DOWNTIME_MS));
        struct json_object *margs = json_object_new_object();
        json_object_object_add(margs, "uri", json_object_new_string(addr));
        if ((r = qmp_cmd(q, "migrate-set-capabilities", caps, NULL, msg, sizeof msg)) < 0 ||
            (r = qmp_cmd(q, "migrate-set-parameters", params, NULL, msg, sizeof msg)) < 0) {
                json_object_put(margs);
                snprintf(err, errlen, "%s: %s", o->name, msg);
                goto fail;
        }
        started = true;
        r = qmp_cmd(q, "migrate", margs, NULL, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "%s: migrate: %s", o->name, msg);
                goto fail;
        }
        actionlog_append(o->root, "migrate", "%s: migrating to %s (bandwidth %s%u MiB/s, downtime limit %u ms)", o->name,
                         addr, o->bandwidth_mib ? "" : "unlimited, ", o->bandwidth_mib,
                         o->downtime_ms ? o->downtime_ms : MIGRATE_DEFAULT_DOWNTIME_MS);
        for (int wait = 5;; wait = wait < 50 ? wait + 5 : 50) {
                struct json_object *m = NULL, *v = NULL;
                r = qmp_cmd(q, "query-migrate", NULL, &m, msg, sizeof msg);
                if (r < 0 && (r == -ECONNRESET || r == -ENOTCONN || r == -EPIPE)) {
                        /* The supervisor quits QEMU as soon as the migration
                         * has completed (and hands the lease over): whether
                         * it did shows at the destination. */
                        break;
                }
                if (r < 0) {
                        snprintf(err, errlen, "%s: query-migrate: %s", o->name, msg);
                        goto fail;
                }
                const char *s = json_object_object_get_ex(m, "status", &v) ? json_object_get_string(v) : "";
                if (strcmp(s, "completed") == 0) {
                        /* QEMU sets the status before it fills in the times
                         * (migration_calculate_complete): ask again briefly. */
                        for (int k = 0; k < 50 && get_ll(m, "total-time") == 0; k++) {
                                struct json_object *again = NULL;
                                sleep_ms(2);
                                if (qmp_cmd(q, "query-migrate", NULL, &again, msg, sizeof msg) < 0)
                                        break;
                                json_object_put(m);
                                m = again;
                        }
                        ret->qemu_total_ms = get_ll(m, "total-time");
                        ret->qemu_downtime_ms = get_ll(m, "downtime");
                        progress(o, m, s);
                        json_object_put(m);
                        break;
                }
                if (strcmp(s, "failed") == 0 || strcmp(s, "cancelled") == 0) {
                        const char *d = json_object_object_get_ex(m, "error-desc", &v) ? json_object_get_string(v) : s;
                        snprintf(err, errlen, "%s: migration to host %s failed: %s", o->name, o->host, d);
                        json_object_put(m);
                        r = -EIO;
                        goto fail;
                }
                progress(o, m, s);
                json_object_put(m);
                read_answer(o->root, o->name, answer, sizeof answer, st, sizeof st);
                if (strcmp(st, "gone") == 0) {
                        snprintf(err, errlen, "%s: the destination on host %s gave up", o->name, o->host);
                        r = -EIO;
                        goto fail;
                }
                if (now_ms() >= deadline) {
                        snprintf(err, errlen, "%s: migration to host %s did not complete within %us", o->name, o->host,
                                 timeout);
                        r = -ETIMEDOUT;
                        goto fail;
                }
                wait_migration_event(q, wait, &stop_us);
        }
        /* Completed: the source is paused with nothing left to send. Its
         * supervisor saw that too: it releases the lease (which the
         * destination takes before cont) and quits QEMU, ending with
         * status 0. A quit from here as well would race it: QEMU's exit
         * before the release makes the lease wait for the supervisor's
         * end. Only a supervisor that does not hand over is helped. */
        if (q)
                (void)take_events(q, &stop_us);  /* the STOP may have come with the last reply */
        int64_t tq = now_ms();
        bool quit_sent = false;
        actionlog_append(o->root, "migrate", "%s: migration completed (QEMU: %lld ms, downtime %lld ms)", o->name,
                         ret->qemu_total_ms, ret->qemu_downtime_ms);
        for (;;) {
                if (q && !quit_sent && now_ms() - tq > QUIT_FALLBACK_MS) {
                        actionlog_append(o->root, "migrate", "%s: the source supervisor did not hand over in %d ms; quitting QEMU",
                                         o->name, QUIT_FALLBACK_MS);
                        (void)qmp_cmd(q, "quit", NULL, NULL, msg, sizeof msg);
                        quit_sent = true;
                }
                read_answer(o->root, o->name, answer, sizeof answer, st, sizeof st);
                if (runs_there(o, p.vm_dir, st))
                        break;
                if (strcmp(st, "gone") == 0 || now_ms() - tq > HANDOVER_S * 1000) {
                        snprintf(err, errlen, "%s: the guest was sent to host %s but does not run there (%s); see %s/log/migrate.log",
                                 o->name, o->host, st[0] ? st : "no answer", o->root);
                        actionlog_append(o->root, "migrate", "%s", err);
                        r = -EIO;
                        requested = false;
                        withdraw(o, false);
                        goto out;
                }
                sleep_ms(2);
        }
        ret->handover_ms = now_ms() - tq;
        ret->total_ms = now_ms() - t0;
        q = qmp_free(q);
        if (migreq_get(answer, "resumed_us", msg, 32) == 0 && stop_us > 0 && atoll(msg) >= stop_us)
                ret->pause_us = atoll(msg) - stop_us;
        {
                char src[256], f[300], v[32];
                snprintf(f, sizeof f, "%s.source", o->name);
                if (migreq_read(o->root, MIGREQ_DIR, f, src, sizeof src) == 0) {
                        if (migreq_get(src, "total_ms", v, sizeof v) == 0 && atoll(v) > 0)
                                ret->qemu_total_ms = atoll(v);
                        if (migreq_get(src, "downtime_ms", v, sizeof v) == 0 && atoll(v) > 0)
                                ret->qemu_downtime_ms = atoll(v);
                }
                migreq_remove(o->root, MIGREQ_DIR, f);
        }
        withdraw(o, false);
        actionlog_append(o->root, "migrate", "%s: runs on host %s now (lease handed over in %lld ms, %lld ms in all)",
                         o->name, o->host, ret->handover_ms, ret->total_ms);
        r = 0;
        goto out;
fail:
        if (q && started) {
                qmp_cmd(q, "migrate_cancel", NULL, NULL, msg, sizeof msg);
                if (resume_source(q, o->name, o->root)) {
                        /* The source supervisor hands over on the request:
                         * let it, as a success would, then withdraw it. */
                        for (int64_t until = now_ms() + HANDOVER_S * 1000; now_ms() < until; sleep_ms(2)) {
                                read_answer(o->root, o->name, answer, sizeof answer, st, sizeof st);
                                if (strcmp(st, "gone") == 0 || runs_there(o, p.vm_dir, st))
                                        break;
                        }
                        withdraw(o, false);
                        requested = false;
                        size_t n = strlen(err);
                        snprintf(err + n, errlen - n, "; but the migration completed meanwhile: the guest %s host %s (see `vrt list`)",
                                 strcmp(st, "running") == 0 ? "runs on" : "was handed to", o->host);
                }
        }
        if (requested)
                withdraw(o, true);
        actionlog_append(o->root, "migrate", "%s: not migrated: %s", o->name, err);
out:
        qmp_free(q);
        vm_paths_done(&p);
        return r;
}

/* ---- destination: the spool's part ---- */

/* Where systemd runs VMs, the incoming one is vrt@NAME.service too, so
 * that it is the unit of the VM once the guest has arrived: the unit's
 * vrt-launch NAME finds the marker (migreq.h) and runs as --incoming. */
static int start_incoming_unit(const char *root, const char *runtime_dir, const char *name, unsigned timeout) {
        char err[512];
        int r = migreq_incoming_mark(runtime_dir, name, timeout);
        if (r < 0)
                snprintf(err, sizeof err, "cannot write %s/%s%s: %s", runtime_dir, name, MIGREQ_INCOMING_SUFFIX,
                         strerror(-r));
        else
                r = service_start_unit_nowait(name, err, sizeof err);
        if (r == 0) {
                actionlog_append(root, "migrate", "%s: incoming: started vrt@%s.service (systemd; marker %s/%s%s)", name,
                                 name, runtime_dir, name, MIGREQ_INCOMING_SUFFIX);
                return 0;
        }
        migreq_incoming_remove(runtime_dir, name);
        actionlog_append(root, "migrate", "%s: incoming: %s", name, err);
        return r;
}

static int start_incoming(const char *root, const char *runtime_dir, const char *launcher, const char *name,
                          unsigned timeout) {
        struct vm_paths p = { 0 };
        char err[512], tbuf[16];
        char *log_path = NULL, **envp = NULL;
        int log_fd = -1, r;
        enum service_manager m = SERVICE_DETACHED;

        if (service_manager_detect(root, runtime_dir, name, &m, err, sizeof err) < 0 || err[0])
                actionlog_append(root, "migrate", "%s: incoming: %s", name, err);
        if (m == SERVICE_SYSTEMD)
                return start_incoming_unit(root, runtime_dir, name, timeout);
        if (vm_paths_init(&p, root, runtime_dir, name) < 0)
                return -ENOMEM;
        if (mkdir(p.log_dir, 0750) < 0 && errno != EEXIST) {
                r = -errno;
                goto out;
        }
        log_path = paths_join(p.log_dir, "launch.log");
        envp = spawn_environment(root, runtime_dir, NULL);
        if (!log_path || !envp) {
                r = -ENOMEM;
                goto out;
        }
        log_fd = safepath_open_beneath(p.vm_dir, log_path, O_WRONLY | O_APPEND | O_CREAT, 0640, SAFEPATH_ONE_LINK, err,
                                       sizeof err);
        if (log_fd < 0) {
                r = log_fd;
                log_fd = -1;
                goto out;
        }
        snprintf(tbuf, sizeof tbuf, "%u", timeout);
        char *argv[] = { (char *)launcher, "--incoming", "--incoming-timeout", tbuf, (char *)name, NULL };
        struct spawn_options so = {
                .argv = argv,
                .envp = envp,
                .stdout_fd = log_fd,
                .session = SPAWN_SESSION_NEW,
                .chdir_root = true,
                .fail_prefix = "vrt: cannot execute ",
        };
        struct spawn_result sr;
        r = spawn_process(&so, &sr, err, sizeof err);
        if (r == 0) {
                actionlog_append(root, "migrate", "%s: incoming: started vrt-launch --incoming (pid %d)", name, (int)sr.pid);
                close_fd(&sr.pidfd);
        } else
                actionlog_append(root, "migrate", "%s: incoming: cannot start %s: %s", name, launcher, err);
out:
        close_fd(&log_fd);
        strv_free(envp);
        free(log_path);
        vm_paths_done(&p);
        return r;
}

int migrate_spool_incoming(const char *root, const char *runtime_dir, const char *launcher) {
        char me[LEASE_HOST_MAX + 1], msg[512], req[MIGREQ_TEXT_MAX], host[LEASE_HOST_MAX + 1], tbuf[16];
        char *dir = paths_join(root, MIGREQ_DIR), *found = NULL;
        DIR *d = NULL;
        int n = 0;

        if (!dir)
                return -ENOMEM;
        if (lease_host_name(me, sizeof me, msg, sizeof msg) < 0 || !(d = opendir(dir))) {
                free(dir);
                return 0;
        }
        for (struct dirent *e; (e = readdir(d));) {
                char f[300], path[4400];
                unsigned timeout = MIGRATE_DEFAULT_TIMEOUT_S;
                if (e->d_name[0] == '.' || strchr(e->d_name, '.') ||
                    config_check_vm_name(e->d_name, runtime_dir, msg, sizeof msg) < 0)
                        continue;
                if (migreq_read(root, MIGREQ_DIR, e->d_name, req, sizeof req) < 0 ||
                    migreq_get(req, "host", host, sizeof host) < 0 || strcmp(host, me) != 0)
                        continue;
                if (migreq_get(req, "timeout", tbuf, sizeof tbuf) == 0)
                        (void)config_parse_uint(tbuf, 1, 86400, &timeout);
                /* Claimed by whoever creates the answer. */
                answer_file(e->d_name, f, sizeof f);
                snprintf(path, sizeof path, "%s/%s", dir, f);
                int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
                if (fd < 0)
                        continue;
                (void)!write(fd, "state=starting\n", 15);
                close(fd);
                if (!launcher && !found && service_find_launcher(&found) < 0) {
                        migreq_write(root, MIGREQ_DIR, f, "state=refused\nerror=vrt-launch not found\n");
                        continue;
                }
                if (start_incoming(root, runtime_dir, launcher ? launcher : found, e->d_name, timeout) == 0)
                        n++;
                else
                        migreq_write(root, MIGREQ_DIR, f, "state=refused\nerror=cannot start vrt-launch --incoming\n");
        }
        closedir(d);
        free(found);
        free(dir);
        return n;
}
