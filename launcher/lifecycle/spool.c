#include "launcher/lifecycle/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launcher/core/actionlog.h"
#include "launcher/core/config.h"
#include "launcher/lifecycle/create.h"
#include "launcher/core/migreq.h"
#include "launcher/core/paths.h"
#include "launcher/core/safepath.h"
#include "launcher/core/spawn.h"
#include "launcher/lifecycle/migrate.h"
#include "launcher/core/util.h"
#include "launcher/core/vmstate.h"
#include "launcher/lifecycle/placement.h"

/* Bursts of requests (`touch start/a start/b`) are taken in one run. */
#define WATCH_DEBOUNCE_MS 20
/* A start run that found start.lock held is retried this much later. */
#define WATCH_LOCK_RETRY_MS 2000
#define WORKER_EXIT_SKIPPED 3

static const char *const queue_names[_SPOOL_QUEUE_MAX] = {
        [SPOOL_INST] = "inst",
        [SPOOL_DESTROY] = "destroy",
        [SPOOL_STOP] = "stop",
        [SPOOL_START] = "start",
};

/* The activity log each queue writes to (log/NAME.log). */
static const char *const log_names[_SPOOL_QUEUE_MAX] = {
        [SPOOL_INST] = "create",
        [SPOOL_DESTROY] = "destroy",
        [SPOOL_STOP] = "stop",
        [SPOOL_START] = "start",
};

const char *spool_queue_to_string(enum spool_queue q) {
        return q >= 0 && q < _SPOOL_QUEUE_MAX ? queue_names[q] : NULL;
}

enum spool_queue spool_queue_from_string(const char *s) {
        return (enum spool_queue)table_lookup(queue_names, _SPOOL_QUEUE_MAX, s);
}

/* One line to the queue's log and to the caller's report hook. */
static void note(const struct spool *s, enum spool_queue q, bool failure, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void note(const struct spool *s, enum spool_queue q, bool failure, const char *fmt, ...) {
        char line[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        int r = actionlog_append(s->root, log_names[q], "%s", line);
        if (s->h->report) {
                s->h->report(s->h->userdata, q, failure, line);
                if (r < 0) {
                        char why[256];
                        snprintf(why, sizeof why, "cannot write %s/log/%s.log: %s", s->root, log_names[q], strerror(-r));
                        s->h->report(s->h->userdata, q, true, why);
                }
        }
}

int spool_dirs_prepare(const char *root, long gid, char *err, size_t errlen) {
        int rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (rfd < 0) {
                int r = -errno;
                snprintf(err, errlen, "%s: %s", root, strerror(-r));
                return r;
        }
        mode_t mode = gid >= 0 ? 02775 : 0755;
        int r = 0;
        for (int q = 0; q < _SPOOL_QUEUE_MAX && r == 0; q++) {
                const char *name = queue_names[q];
                if (mkdirat(rfd, name, 0755) < 0 && errno != EEXIST) {
                        r = -errno;
                        snprintf(err, errlen, "cannot create %s/%s: %s", root, name, strerror(-r));
                        break;
                }
                int fd = openat(rfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                struct stat st;
                if (fd < 0 || fstat(fd, &st) < 0) {
                        r = errno == ELOOP || errno == ENOTDIR ? -ENOTDIR : -errno;
                        snprintf(err, errlen, "%s/%s: %s", root, name,
                                 r == -ENOTDIR ? "not a directory (a symbolic link is not followed)" : strerror(-r));
                } else if (st.st_uid != 0 && st.st_uid != geteuid()) {
                        r = -EPERM;
                        snprintf(err, errlen, "%s/%s: owned by uid %u, not root: not changed", root, name, (unsigned)st.st_uid);
                } else if ((gid >= 0 && st.st_gid != (gid_t)gid && fchown(fd, (uid_t)-1, (gid_t)gid) < 0) ||
                           ((st.st_mode & 07777) != mode && fchmod(fd, mode) < 0)) {
                        r = -errno;
                        snprintf(err, errlen, "%s/%s: cannot set group and mode: %s", root, name, strerror(-r));
                }
                if (fd >= 0)
                        close(fd);
        }
        close(rfd);
        return r;
}

bool spool_root_ready(const char *root) {
        char *conf = paths_join(root, "vrt.conf"), *vm = paths_join(root, "vm");
        struct stat st;
        bool ready = (conf && stat(conf, &st) == 0) || (vm && stat(vm, &st) == 0 && S_ISDIR(st.st_mode));
        free(conf);
        free(vm);
        return ready;
}

int spool_wait_root(const char *root, unsigned wait_s) {
        int64_t deadline = now_ms() + (int64_t)wait_s * 1000;
        for (;;) {
                if (spool_root_ready(root))
                        return 0;
                if (now_ms() >= deadline)
                        return -ETIMEDOUT;
                struct timespec ts = { 0, 250 * 1000 * 1000 };
                nanosleep(&ts, NULL);
        }
}

struct names {
        char **v;
        size_t n, cap;
};

static int names_add(struct names *l, const char *s) {
        for (size_t i = 0; i < l->n; i++)
                if (strcmp(l->v[i], s) == 0)
                        return 0;
        if (l->n == l->cap) {
                size_t cap = l->cap ? 2 * l->cap : 16;
                char **v = realloc(l->v, cap * sizeof *v);
                if (!v)
                        return -ENOMEM;
                l->v = v;
                l->cap = cap;
        }
        if (!(l->v[l->n] = strdup(s)))
                return -ENOMEM;
        l->n++;
        return 0;
}

static void names_done(struct names *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->v[i]);
        free(l->v);
        *l = (struct names){ 0 };
}

/* Drops the requests for VMs a cluster manages (vmstate_cluster_managed):
 * Pacemaker decides where they run, and a request here would fight it. */
static void leave_to_cluster(const struct spool *s, enum spool_queue q, struct names *l, struct spool_stats *st) {
        size_t m = 0;
        for (size_t i = 0; i < l->n; i++) {
                if (vmstate_cluster_managed(s->root, s->runtime_dir, l->v[i])) {
                        note(s, q, true, "%s: managed_by=pacemaker: request ignored (the cluster decides; use pcs resource)", l->v[i]);
                        st->failed++;
                        free(l->v[i]);
                        continue;
                }
                l->v[m++] = l->v[i];
        }
        l->n = m;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The visible entries of a directory (not ".", "..", ".hidden"), sorted
 * so that requests are carried out and logged in a predictable order. */
static int list_dir(const char *dir, struct names *out) {
        DIR *d = opendir(dir);
        if (!d)
                return errno == ENOENT ? 0 : -errno;
        struct dirent *de;
        int r = 0;
        while (r == 0 && (de = readdir(d)))
                if (de->d_name[0] != '.')
                        r = names_add(out, de->d_name);
        closedir(d);
        if (out->n > 1)
                qsort(out->v, out->n, sizeof *out->v, cmp_str);
        return r;
}

/* Checks that a request names an existing VM that may get the action
 * (vmstate's one answer for start/). Returns false (having logged why)
 * when it must be dropped: a bad name, an unknown or destroyed VM is
 * malformed; a VM whose first boot did not succeed is a failed start. */
static bool request_valid(const struct spool *s, enum spool_queue q, const char *entry, struct spool_stats *st) {
        char err[1024];
        int r = q == SPOOL_START ? vmstate_check_startable(s->root, s->runtime_dir, entry, err, sizeof err)
                                 : vmstate_check_exists(s->root, s->runtime_dir, entry, err, sizeof err);
        if (r == 0)
                return true;
        if (r == -EINVAL)
                note(s, q, true, "%s/%.80s: %s: request removed", queue_names[q], entry, err);
        else
                note(s, q, r != -ESTALE, "%s: %s: request removed", entry, err);
        if (r == -EINVAL || r == -ENOENT || r == -ESTALE)
                st->dropped++;
        else
                st->failed++;
        return false;
}

/* Whether this host is the one to carry out request e (placement.h).
 * Returns true to claim it; false to leave it for another host (logged
 * unless s->quiet_skip, as watch mode looks again and again). A request
 * whose text is malformed is claimed (and *bad set) to be dropped. */
static bool request_is_ours(const struct spool *s, enum spool_queue q, const char *dir, const char *e,
                            struct spool_request *req, bool *bad, struct spool_stats *st) {
        char err[512], why[512], label[128];
        struct vm_paths p;
        struct lease_holder holder;
        bool ours = true;

        *req = (struct spool_request){ 0 };
        *bad = false;
        /* Bad names are dropped by request_valid() after the claim. */
        if (config_check_vm_name(e, s->runtime_dir, err, sizeof err) < 0)
                return true;
        snprintf(label, sizeof label, "%s/%s", queue_names[q], e);
        char *path = paths_join(dir, e);
        if (!path)
                return false;
        int r = spool_request_load(path, label, req, err, sizeof err);
        free(path);
        if (r == -ENOENT)
                return false;   /* another run took it */
        if (r < 0) {
                note(s, q, true, "%s: request removed", err);
                st->dropped++;
                *bad = true;
                return true;
        }
        if (vm_paths_init(&p, s->root, s->runtime_dir, e) < 0)
                return false;
        if (q == SPOOL_START) {
                r = placement_take_start(s->root, s->runtime_dir, e, req, why, sizeof why);
                if (r < 0) {
                        note(s, q, true, "%s: not taken: %s", label, why);
                        ours = false;
                } else if (r == 0) {
                        /* What every host sees on the shared root is not left
                         * to the named one: a start of an unknown or destroyed
                         * VM is claimed here, and request_valid() drops it. */
                        if (vmstate_check_startable(s->root, s->runtime_dir, e, err, sizeof err) == 0) {
                                if (!s->quiet_skip)
                                        note(s, q, false, "%s: left for another host: %s", label, why);
                                st->left++;
                                ours = false;
                        }
                }
        } else if (vmstate_elsewhere(p.vm_dir, &holder) == 1) {
                /* Its host's spool carries it out. */
                vmstate_describe_elsewhere(&holder, why, sizeof why);
                if (!s->quiet_skip)
                        note(s, q, false, "%s: left for its host: %s %s", label, e, why);
                st->left++;
                ours = false;
        }
        vm_paths_done(&p);
        return ours;
}

/* Claims the requests in start/, stop/ or destroy/: an entry is ours when
 * our unlink() of it succeeded. Directories are removed as malformed.
 * Forced stops (force=yes) go to out_force when it is given. */
static int claim_requests(const struct spool *s, enum spool_queue q, struct names *out, struct names *out_force,
                          struct spool_stats *st) {
        struct names entries = { 0 };
        char *dir = paths_join(s->root, queue_names[q]);
        int r, dfd = -1;
        if (!dir)
                return -ENOMEM;
        r = list_dir(dir, &entries);
        if (r < 0 || entries.n == 0)
                goto out;
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
                r = errno == ENOENT ? 0 : -errno;
                goto out;
        }
        for (size_t i = 0; i < entries.n; i++) {
                const char *e = entries.v[i];
                struct stat sb;
                if (fstatat(dfd, e, &sb, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;       /* another run took it */
                if (S_ISDIR(sb.st_mode)) {
                        char *path = paths_join(dir, e);
                        int k = path ? create_remove_tree(path) : -ENOMEM;
                        free(path);
                        if (k < 0)
                                note(s, q, true, "%s/%.80s: a directory, not a request: cannot remove it: %s",
                                     queue_names[q], e, strerror(-k));
                        else
                                note(s, q, true, "%s/%.80s: a directory, not a request: removed", queue_names[q], e);
                        st->dropped++;
                        continue;
                }
                struct spool_request req;
                bool bad;
                if (!request_is_ours(s, q, dir, e, &req, &bad, st))
                        continue;
                if (unlinkat(dfd, e, 0) < 0) {
                        if (errno != ENOENT) {
                                note(s, q, true, "%s/%.80s: cannot remove the request: %s; not processed",
                                     queue_names[q], e, strerror(errno));
                                st->failed++;
                        }
                        continue;
                }
                /* Operators (vrt.conf group=) may drop requests: say whose it was. */
                struct passwd *pw = getpwuid(sb.st_uid);
                note(s, q, false, "%s/%.80s: request by uid %u (%s)", queue_names[q], e, (unsigned)sb.st_uid,
                     pw ? pw->pw_name : "unknown user");
                if (bad || !request_valid(s, q, e, st))
                        continue;
                r = names_add(req.force && out_force ? out_force : out, e);
                if (r < 0)
                        break;
        }
out:
        if (dfd >= 0)
                close(dfd);
        names_done(&entries);
        free(dir);
        return r;
}

static void log_results(const struct spool *s, enum spool_queue q, const struct names *l, int r,
                        const struct service_result *res, struct spool_stats *st) {
        for (size_t i = 0; i < l->n; i++) {
                if (r < 0) {
                        note(s, q, true, "%s: %s failed: %s", l->v[i], queue_names[q], strerror(-r));
                        st->failed++;
                        continue;
                }
                bool bad = res[i].outcome == SERVICE_FAILED || res[i].outcome == SERVICE_INVALID;
                note(s, q, bad, "%s: %s", l->v[i], res[i].message);
                if (bad)
                        st->failed++;
                else
                        st->done++;
        }
}

static int run_start_or_stop(const struct spool *s, enum spool_queue q, struct spool_stats *st) {
        struct names l = { 0 }, lf = { 0 };
        struct service_result *res = NULL;
        int lock_fd = -1, r;

        if (q == SPOOL_START) {
                char *lock = paths_join(s->root, "start.lock");
                if (!lock)
                        return -ENOMEM;
                lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
                if (lock_fd < 0) {
                        r = -errno;
                        note(s, q, true, "start run failed: cannot open %s: %s", lock, strerror(-r));
                        free(lock);
                        return r;
                }
                if (flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
                        r = -errno;
                        if (r == -EWOULDBLOCK) {
                                if (!s->quiet_skip)
                                        note(s, q, false, "start run skipped: %s is held by another run", lock);
                                st->start_skipped = true;
                                r = 0;
                        } else {
                                note(s, q, true, "start run failed: cannot lock %s: %s", lock, strerror(-r));
                        }
                        free(lock);
                        close(lock_fd);
                        return r;
                }
                free(lock);
        }
        r = claim_requests(s, q, &l, q == SPOOL_STOP ? &lf : NULL, st);
        if (r < 0)
                note(s, q, true, "cannot read %s/%s: %s", s->root, queue_names[q], strerror(-r));
        leave_to_cluster(s, q, &l, st);
        leave_to_cluster(s, q, &lf, st);
        for (int forced = 0; forced < 2; forced++) {
                struct names *b = forced ? &lf : &l;
                if (b->n == 0)
                        continue;
                free(res);
                res = calloc(b->n, sizeof *res);
                int k = !res ? -ENOMEM
                        : q == SPOOL_START ? s->h->start(s->h->userdata, b->v, b->n, res)
                        : s->h->stop(s->h->userdata, b->v, b->n, forced, res);
                log_results(s, q, b, k < 0 ? k : 0, res, st);
        }
        /* The lock is released when the whole run is over, as the seed's cron job did. */
        if (lock_fd >= 0)
                close(lock_fd);
        free(res);
        names_done(&l);
        names_done(&lf);
        return r;
}

static int run_destroy(const struct spool *s, struct spool_stats *st) {
        struct names l = { 0 };
        int r = claim_requests(s, SPOOL_DESTROY, &l, NULL, st);
        if (r < 0)
                note(s, SPOOL_DESTROY, true, "cannot read %s/destroy: %s", s->root, strerror(-r));
        leave_to_cluster(s, SPOOL_DESTROY, &l, st);
        for (size_t i = 0; i < l.n; i++) {
                struct service_result res = { .outcome = SERVICE_FAILED };
                int k = s->h->destroy(s->h->userdata, l.v[i], &res);
                if (k < 0 && !res.message[0])
                        snprintf(res.message, sizeof res.message, "destroy failed: %s", strerror(-k));
                note(s, SPOOL_DESTROY, k < 0, "%s: %s", l.v[i], res.message);
                if (k < 0)
                        st->failed++;
                else
                        st->done++;
        }
        names_done(&l);
        return r;
}

/* ---- inst/ ---- */

/* ".claim-HOST-PID": where a run keeps the requests it took. HOST is the
 * lease's host name (VRT_HOST or the node name): hosts told apart only by
 * VRT_HOST must not take each other's claims for their own dead runs. */
static void claim_dir_name(char *buf, size_t len, pid_t pid) {
        char host[LEASE_HOST_MAX + 1] = "", why[128];
        if (lease_host_name(host, sizeof host, why, sizeof why) < 0)
                host[0] = '\0';
        for (char *p = host; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
                        *p = '_';
        snprintf(buf, len, ".claim-%s-%d", host[0] ? host : "localhost", (int)pid);
}

/* True when dir_fd/name is a real directory (not a symlink) of ours: inst/
 * may be writable by those who drop requests, and nothing they put there
 * may redirect where this root process moves or writes files. */
static bool own_dir_at(int dir_fd, const char *name) {
        struct stat st;
        return fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid();
}

/* Moves dir_fd/from to dir_fd/sub/name, or name.1, name.2, ... when taken,
 * and with a reason writes it next to it as NAME.error. sub is used only
 * as a real directory, never through a symlink. Returns the final name's
 * suffix number (0 for none) or a negative errno. */
static int move_into(int dir_fd, const char *from, const char *sub, const char *name, const char *reason) {
        int sub_fd, r = -EEXIST;
        if (mkdirat(dir_fd, sub, 0755) < 0 && errno != EEXIST)
                return -errno;
        sub_fd = openat(dir_fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub_fd < 0)
                return -errno;
        /* Ours, checked on the fd: an operator's own done/ could hold a
         * hard link in place of NAME.error. */
        struct stat sst;
        if (fstat(sub_fd, &sst) < 0 || sst.st_uid != geteuid()) {
                close(sub_fd);
                return -EPERM;
        }
        for (int i = 0; i < 1000; i++) {
                char to[1024];
                struct stat st;
                if (i == 0)
                        snprintf(to, sizeof to, "%s", name);
                else
                        snprintf(to, sizeof to, "%s.%d", name, i);
                if (fstatat(sub_fd, to, &st, AT_SYMLINK_NOFOLLOW) == 0)
                        continue;
                if (renameat(dir_fd, from, sub_fd, to) < 0) {
                        r = -errno;
                        break;
                }
                if (reason) {
                        char path[1100];
                        snprintf(path, sizeof path, "%s.error", to);
                        char why[256];
                        int fd = safepath_openat(sub_fd, path, path, O_WRONLY | O_CREAT | O_TRUNC, 0644,
                                                 SAFEPATH_ONE_LINK, why, sizeof why);
                        if (fd >= 0) {
                                dprintf(fd, "%s\n", reason);
                                close(fd);
                        }
                }
                r = i;
                break;
        }
        close(sub_fd);
        return r;
}

/* Puts the requests of a dead run on this host back into inst/. */
static void requeue_stale_claims(const struct spool *s, int dfd) {
        char mine[128];
        claim_dir_name(mine, sizeof mine, 0);
        mine[strlen(mine) - 1] = '\0';  /* ".claim-HOST-" */
        int dup_fd = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
        DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
        if (!d) {
                if (dup_fd >= 0)
                        close(dup_fd);
                return;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strncmp(de->d_name, mine, strlen(mine)) != 0)
                        continue;
                char *end;
                long pid = strtol(de->d_name + strlen(mine), &end, 10);
                if (*end || pid <= 0 || pid == getpid())
                        continue;
                /* Only a claim directory a run made: never one planted as a
                 * symlink (its entries would be moved out of anywhere). */
                if (!own_dir_at(dfd, de->d_name))
                        continue;
                /* One look at whether its run still lives (EPERM: it does). */
                if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
                        continue;
                int cfd = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (cfd < 0)
                        continue;
                int lfd = fcntl(cfd, F_DUPFD_CLOEXEC, 3);
                DIR *cd = lfd >= 0 ? fdopendir(lfd) : NULL;
                if (!cd && lfd >= 0)
                        close(lfd);
                struct dirent *ce;
                while (cd && (ce = readdir(cd))) {
                        if (ce->d_name[0] == '.')
                                continue;
                        if (renameat(cfd, ce->d_name, dfd, ce->d_name) == 0)
                                note(s, SPOOL_INST, false, "inst/%s: requeued (its run, pid %ld, ended unfinished)", ce->d_name, pid);
                }
                if (cd)
                        closedir(cd);
                close(cfd);
                unlinkat(dfd, de->d_name, AT_REMOVEDIR);
        }
        closedir(d);
}

static int run_inst(const struct spool *s, struct spool_stats *st) {
        struct names entries = { 0 };
        char *dir = paths_join(s->root, "inst");
        char claim[128];
        bool have_claim_dir = false;
        int dfd = -1, r;

        if (!dir)
                return -ENOMEM;
        claim_dir_name(claim, sizeof claim, getpid());
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
                r = errno == ENOENT ? 0 : -errno;
                if (r < 0)
                        note(s, SPOOL_INST, true, "cannot read %s: %s", dir, strerror(-r));
                free(dir);
                return r;
        }
        requeue_stale_claims(s, dfd);
        r = list_dir(dir, &entries);
        for (size_t i = 0; r == 0 && i < entries.n; i++) {
                const char *e = entries.v[i];
                struct stat sb;
                char taken[1024], err[1024] = "", *vm = NULL;
                if (!has_suffix(e, ".properties") || fstatat(dfd, e, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
                    !(S_ISREG(sb.st_mode) || S_ISLNK(sb.st_mode)))
                        continue;
                if (!have_claim_dir) {
                        if (mkdirat(dfd, claim, 0700) < 0 && errno != EEXIST) {
                                r = -errno;
                                note(s, SPOOL_INST, true, "cannot create inst/%s: %s", claim, strerror(-r));
                                break;
                        }
                        if (!own_dir_at(dfd, claim)) {
                                r = -ENOTDIR;
                                note(s, SPOOL_INST, true, "inst/%s: not a directory of ours; inst/ not processed", claim);
                                break;
                        }
                        have_claim_dir = true;
                }
                snprintf(taken, sizeof taken, "%s/%s", claim, e);
                if (renameat(dfd, e, dfd, taken) < 0)
                        continue;       /* another run took it */
                char *path = NULL;
                int k;
                /* Claimed, so it cannot change any more: a symlink is not
                 * followed (it would make root read any file on the host). */
                if (fstatat(dfd, taken, &sb, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(sb.st_mode)) {
                        snprintf(err, sizeof err, "inst/%s: not a regular file (symbolic links are not followed)", e);
                        k = -EINVAL;
                } else if (sb.st_nlink > 1) {
                        /* A second name of another file (say, a root-only one). */
                        snprintf(err, sizeof err, "inst/%s: a hard link (%ju names): not read", e, (uintmax_t)sb.st_nlink);
                        k = -EINVAL;
                } else {
                        struct passwd *pw = getpwuid(sb.st_uid);
                        note(s, SPOOL_INST, false, "inst/%.80s: request by uid %u (%s)", e, (unsigned)sb.st_uid,
                             pw ? pw->pw_name : "unknown user");
                        k = asprintf(&path, "%s/%s", dir, taken) < 0 ? -ENOMEM
                                : s->h->instantiate(s->h->userdata, path, &vm, err, sizeof err);
                }
                free(path);
                if (k == 0) {
                        int m = move_into(dfd, taken, "done", e, NULL);
                        if (m < 0)
                                unlinkat(dfd, taken, 0);        /* never processed twice */
                        note(s, SPOOL_INST, false, "inst/%s: created VM %s%s%s", e, vm ? vm : "?",
                             m < 0 ? "; the request is removed, it cannot be moved to inst/done: " : "", m < 0 ? strerror(-m) : "");
                        st->done++;
                } else {
                        if (!err[0])
                                snprintf(err, sizeof err, "%s", strerror(-k));
                        int m = move_into(dfd, taken, "failed", e, err);
                        if (m < 0)
                                unlinkat(dfd, taken, 0);
                        note(s, SPOOL_INST, true, "inst/%s: failed: %s%s", e, err,
                             m < 0 ? " (and it cannot be moved to inst/failed: removed)" : "");
                        st->failed++;
                }
                free(vm);
        }
        if (have_claim_dir)
                unlinkat(dfd, claim, AT_REMOVEDIR);     /* fails, rightly, if something is stuck in it */
        close(dfd);
        names_done(&entries);
        free(dir);
        return r;
}

int spool_run_queue(const struct spool *s, enum spool_queue q, struct spool_stats *stats) {
        switch (q) {
        case SPOOL_INST:
                return run_inst(s, stats);
        case SPOOL_DESTROY:
                return run_destroy(s, stats);
        case SPOOL_STOP:
                return run_start_or_stop(s, q, stats);
        case SPOOL_START:
                /* Incoming live migrations meant for this host are starts too (migrate.h). */
                if (!s->h->no_migrate)
                        (void)migrate_spool_incoming(s->root, s->runtime_dir, NULL);
                return run_start_or_stop(s, q, stats);
        default:
                return -EINVAL;
        }
}

int spool_run(const struct spool *s, struct spool_stats *stats) {
        int first = 0;
        if (!spool_root_ready(s->root))
                return -ENOENT;
        for (int q = 0; q < _SPOOL_QUEUE_MAX; q++) {
                int r = spool_run_queue(s, (enum spool_queue)q, stats);
                if (r < 0 && first == 0)
                        first = r;
        }
        return first;
}

/* ---- watch ---- */

static uint32_t watch_mask(enum spool_queue q) {
        /* inst/ requests are read: wait until they are written completely. */
        if (q == SPOOL_INST)
                return IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR;
        return IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ATTRIB | IN_ONLYDIR;
}

/* Creates ROOT/NAME if need be and watches it; -1 when it cannot. */
static int add_watch(const struct spool *s, int ifd, const char *name, uint32_t mask) {
        char *dir = paths_join(s->root, name);
        if (!dir)
                return -1;
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
                /* Not there and not creatable: the rescans still look. */
        }
        int w = inotify_add_watch(ifd, dir, mask);
        free(dir);
        return w;
}

/* The queues, and ROOT/migrate/ (wd_migrate), whose requests the start
 * queue's run takes (migrate_spool_incoming). */
static void add_watches(const struct spool *s, int ifd, int wd[], int *wd_migrate) {
        for (int q = 0; q < _SPOOL_QUEUE_MAX; q++) {
                int w = add_watch(s, ifd, queue_names[q], watch_mask((enum spool_queue)q));
                if (w >= 0)
                        wd[q] = w;
        }
        if (!s->h->no_migrate) {
                /* migreq_write renames a complete request into place. */
                int w = add_watch(s, ifd, MIGREQ_DIR, IN_MOVED_TO | IN_CLOSE_WRITE | IN_ONLYDIR);
                if (w >= 0)
                        *wd_migrate = w;
        }
}

struct worker {
        pid_t pid;
        int pidfd;
};

struct worker_job {
        const struct spool *s;
        enum spool_queue q;
        bool quiet;
};

static int worker_main(void *userdata) {
        const struct worker_job *job = userdata;
        struct spool w = *job->s;
        struct spool_stats st = { 0 };
        w.quiet_skip = job->quiet;
        spool_run_queue(&w, job->q, &st);
        return st.start_skipped ? WORKER_EXIT_SKIPPED : st.failed ? 1 : 0;
}

/* Runs one queue in a child. Returns 0 and the worker, or a negative errno. */
static int start_worker(const struct spool *s, enum spool_queue q, bool quiet, const sigset_t *old, int *close_fds,
                        size_t n_close, struct worker *ret) {
        struct worker_job job = { .s = s, .q = q, .quiet = quiet };
        struct spawn_options o = {
                .fn = worker_main,
                .userdata = &job,
                .close_fds = close_fds,
                .n_close_fds = n_close,
                .fn_sigmask = old,
        };
        struct spawn_result res;
        char err[256];
        int r = spawn_process(&o, &res, err, sizeof err);
        if (r < 0)
                return r;
        *ret = (struct worker){ res.pid, res.pidfd };
        return 0;
}

int spool_watch(const struct spool *s, unsigned rescan_s) {
        sigset_t mask, old;
        int sfd = -1, ifd = -1, r = 0;
        int wd[_SPOOL_QUEUE_MAX], wd_migrate = -1;
        struct worker workers[_SPOOL_QUEUE_MAX];
        int64_t due[_SPOOL_QUEUE_MAX];
        bool retrying[_SPOOL_QUEUE_MAX] = { false };
        bool stopping = false;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, &old);
        sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (sfd < 0 || ifd < 0) {
                r = -errno;
                goto out;
        }
        int64_t now = now_ms(), next_rescan = now + (int64_t)rescan_s * 1000;
        for (int q = 0; q < _SPOOL_QUEUE_MAX; q++) {
                wd[q] = -1;
                workers[q] = (struct worker){ 0, -1 };
                due[q] = now;   /* everything once at startup */
        }
        add_watches(s, ifd, wd, &wd_migrate);

        for (;;) {
                now = now_ms();
                if (!stopping && now >= next_rescan) {
                        /* inotify does not see other NFS clients' changes; a
                         * removed and recreated queue directory needs a new watch. */
                        add_watches(s, ifd, wd, &wd_migrate);
                        for (int q = 0; q < _SPOOL_QUEUE_MAX; q++)
                                if (due[q] > now)
                                        due[q] = now;
                        next_rescan = now + (int64_t)rescan_s * 1000;
                }
                int64_t next = next_rescan;
                bool busy = false;
                for (int q = 0; q < _SPOOL_QUEUE_MAX; q++) {
                        if (workers[q].pid > 0) {
                                busy = true;
                                continue;
                        }
                        if (stopping || due[q] == INT64_MAX)
                                continue;
                        if (due[q] <= now) {
                                int close_fds[] = { sfd, ifd };
                                if (start_worker(s, (enum spool_queue)q, retrying[q], &old, close_fds, 2, &workers[q]) < 0) {
                                        due[q] = now + 1000;    /* try again shortly */
                                } else {
                                        due[q] = INT64_MAX;
                                        busy = true;
                                        continue;
                                }
                        }
                        if (due[q] < next)
                                next = due[q];
                }
                if (stopping && !busy)
                        break;

                struct pollfd pfd[2 + _SPOOL_QUEUE_MAX];
                int map[_SPOOL_QUEUE_MAX], n = 0;
                pfd[n++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
                pfd[n++] = (struct pollfd){ .fd = ifd, .events = POLLIN };
                for (int q = 0; q < _SPOOL_QUEUE_MAX; q++)
                        if (workers[q].pid > 0) {
                                map[n - 2] = q;
                                pfd[n++] = (struct pollfd){ .fd = workers[q].pidfd, .events = POLLIN };
                        }
                int64_t wait = next - now;
                if (wait < 0)
                        wait = 0;
                /* A worker without a pidfd is checked every 100 ms. */
                if (wait > 100 && busy)
                        wait = 100;
                if (poll(pfd, (nfds_t)n, stopping ? 100 : (int)wait) < 0 && errno != EINTR) {
                        r = -errno;
                        break;
                }
                now = now_ms();
                if (pfd[0].revents & POLLIN) {
                        struct signalfd_siginfo si;
                        while (read(sfd, &si, sizeof si) == sizeof si)
                                stopping = true;
                }
                if (pfd[1].revents & POLLIN) {
                        char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
                        ssize_t len;
                        while ((len = read(ifd, buf, sizeof buf)) > 0) {
                                for (char *p = buf; p < buf + len;) {
                                        struct inotify_event *ev = (struct inotify_event *)p;
                                        p += sizeof *ev + ev->len;
                                        if (ev->mask & IN_Q_OVERFLOW) {
                                                for (int q = 0; q < _SPOOL_QUEUE_MAX; q++)
                                                        if (due[q] > now + WATCH_DEBOUNCE_MS)
                                                                due[q] = now + WATCH_DEBOUNCE_MS;
                                                continue;
                                        }
                                        if (ev->wd == wd_migrate) {
                                                if (ev->mask & IN_IGNORED)
                                                        wd_migrate = -1;
                                                /* migrate/NAME only: not NAME.answer, NAME.source, .tmp files */
                                                else if (ev->len > 0 && !strchr(ev->name, '.') &&
                                                         due[SPOOL_START] > now + WATCH_DEBOUNCE_MS)
                                                        due[SPOOL_START] = now + WATCH_DEBOUNCE_MS;
                                                continue;
                                        }
                                        for (int q = 0; q < _SPOOL_QUEUE_MAX; q++) {
                                                if (ev->wd != wd[q])
                                                        continue;
                                                if (ev->mask & IN_IGNORED) {
                                                        wd[q] = -1;     /* re-added at the next rescan */
                                                        continue;
                                                }
                                                if (ev->len == 0 || ev->name[0] == '.')
                                                        continue;       /* our own claims, NFS silly renames */
                                                if (q == SPOOL_INST && !has_suffix(ev->name, ".properties"))
                                                        continue;
                                                if (due[q] > now + WATCH_DEBOUNCE_MS)
                                                        due[q] = now + WATCH_DEBOUNCE_MS;
                                        }
                                }
                        }
                }
                for (int k = 2; k < n; k++) {
                        int q = map[k - 2];
                        if (!(pfd[k].revents & POLLIN) && workers[q].pidfd >= 0)
                                continue;
                        int status;
                        pid_t w = waitpid(workers[q].pid, &status, workers[q].pidfd >= 0 ? 0 : WNOHANG);
                        if (w != workers[q].pid)
                                continue;
                        if (workers[q].pidfd >= 0)
                                close(workers[q].pidfd);
                        workers[q] = (struct worker){ 0, -1 };
                        retrying[q] = WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_SKIPPED;
                        if (retrying[q] && due[q] > now + WATCH_LOCK_RETRY_MS)
                                due[q] = now + WATCH_LOCK_RETRY_MS;
                }
        }
out:
        if (sfd >= 0)
                close(sfd);
        if (ifd >= 0)
                close(ifd);
        sigprocmask(SIG_SETMASK, &old, NULL);
        return r;
}

/* ---- autostart ---- */

int spool_autostart(const struct spool *s, struct spool_stats *st) {
        struct names entries = { 0 }, vms = { 0 }, start = { 0 };
        struct service_result *res = NULL;
        char *dir = paths_join(s->root, "autostart"), *vmdir = paths_join(s->root, "vm");
        char err[512];
        int r;

        if (!dir || !vmdir) {
                r = -ENOMEM;
                goto out;
        }
        r = list_dir(dir, &entries);
        if (r < 0) {
                note(s, SPOOL_START, true, "autostart: cannot read %s: %s", dir, strerror(-r));
                goto out;
        }
        /* autostart/NAME, or the seed's autostart/NAME.sh -> ../vm/NAME/start.sh */
        for (size_t i = 0; i < entries.n; i++) {
                char name[256];
                snprintf(name, sizeof name, "%s", entries.v[i]);
                if (has_suffix(name, ".sh"))
                        name[strlen(name) - 3] = '\0';
                int k = vmstate_check_exists(s->root, s->runtime_dir, name, err, sizeof err);
                if (k == -ENOENT) {
                        note(s, SPOOL_START, true, "autostart: %s: %s (autostart/%.80s): ignored", name, err, entries.v[i]);
                        st->dropped++;
                        continue;
                }
                if (k < 0) {
                        note(s, SPOOL_START, true, "autostart: autostart/%.80s: %s: ignored", entries.v[i], err);
                        st->dropped++;
                        continue;
                }
                if ((r = names_add(&start, name)) < 0)
                        goto out;
        }
        r = list_dir(vmdir, &vms);
        if (r < 0) {
                note(s, SPOOL_START, true, "autostart: cannot read %s: %s", vmdir, strerror(-r));
                goto out;
        }
        for (size_t i = 0; i < vms.n; i++) {
                struct instance *inst = NULL;
                char *props = NULL;
                if (config_check_vm_name(vms.v[i], s->runtime_dir, err, sizeof err) < 0)
                        continue;
                if (asprintf(&props, "%s/%s/instance.properties", vmdir, vms.v[i]) < 0) {
                        r = -ENOMEM;
                        goto out;
                }
                int k = instance_load(props, vms.v[i], s->runtime_dir, &inst, err, sizeof err);
                free(props);
                if (k == 0 && inst->autostart && (r = names_add(&start, vms.v[i])) < 0) {
                        instance_free(inst);
                        goto out;
                }
                instance_free(inst);
        }
        leave_to_cluster(s, SPOOL_START, &start, st);
        /* Destroyed VMs stay down, whatever still points at them, and so
         * do those whose first boot did not succeed. */
        size_t m = 0;
        for (size_t i = 0; i < start.n; i++) {
                int k = vmstate_check_startable(s->root, s->runtime_dir, start.v[i], err, sizeof err);
                if (k < 0) {
                        note(s, SPOOL_START, k != -ESTALE, "autostart: %s: %s", start.v[i], err);
                        if (k != -ESTALE)
                                st->failed++;
                        free(start.v[i]);
                        continue;
                }
                start.v[m++] = start.v[i];
        }
        start.n = m;
        if (start.n == 0)
                goto out;
        res = calloc(start.n, sizeof *res);
        if (!res) {
                r = -ENOMEM;
                goto out;
        }
        int k = s->h->start(s->h->userdata, start.v, start.n, res);
        for (size_t i = 0; i < start.n; i++) {
                bool bad = k < 0 || res[i].outcome == SERVICE_FAILED || res[i].outcome == SERVICE_INVALID;
                note(s, SPOOL_START, bad, "autostart: %s: %s", start.v[i], k < 0 ? strerror(-k) : res[i].message);
                if (bad)
                        st->failed++;
                else
                        st->done++;
        }
        r = 0;
out:
        free(res);
        names_done(&entries);
        names_done(&vms);
        names_done(&start);
        free(dir);
        free(vmdir);
        return r;
}
