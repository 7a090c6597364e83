#include "launcher/lifecycle/service.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launcher/core/config.h"
#include "launcher/core/safepath.h"
#include "launcher/core/fileio.h"
#include "launcher/core/vmstate.h"
#include "launcher/core/paths.h"
#include "launcher/core/runtime.h"
#include "launcher/core/spawn.h"
#include "launcher/core/strv.h"
#include "launcher/core/util.h"
#include "launcher/lifecycle/stop.h"
#include "launcher/vm/launch.h"

#define UNIT_PROBE_TIMEOUT_MS 5000
#define PID_FILE_WAIT_MS STOP_PID_WAIT_MS
#define HANDOVER_POLL_MS 500

static const char *const manager_names[_SERVICE_MANAGER_MAX] = {
        [SERVICE_DETACHED] = "detached",
        [SERVICE_SYSTEMD] = "systemd",
};

const char *service_manager_to_string(enum service_manager m) {
        return m >= 0 && m < _SERVICE_MANAGER_MAX ? manager_names[m] : NULL;
}

enum service_manager service_manager_from_string(const char *s) {
        return (enum service_manager)table_lookup(manager_names, _SERVICE_MANAGER_MAX, s);
}

static void result_set(struct service_result *res, enum service_outcome outcome, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void result_set(struct service_result *res, enum service_outcome outcome, const char *fmt, ...) {
        va_list ap;
        res->outcome = outcome;
        va_start(ap, fmt);
        vsnprintf(res->message, sizeof res->message, fmt, ap);
        va_end(ap);
}

bool service_systemd_booted(void) {
        struct stat st;
        char exe[PATH_MAX];
        if (lstat("/run/systemd/system", &st) < 0 || !S_ISDIR(st.st_mode))
                return false;
        ssize_t n = readlink("/proc/1/exe", exe, sizeof exe - 1);
        if (n <= 0) {
                /* Only root may read PID 1's exe link; its comm is public. */
                int fd = open("/proc/1/comm", O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        return false;
                n = read(fd, exe, sizeof exe - 1);
                close(fd);
                if (n <= 0)
                        return false;
                exe[n] = '\0';
                exe[strcspn(exe, "\n")] = '\0';
                return strcmp(exe, "systemd") == 0;
        }
        exe[n] = '\0';
        const char *base = strrchr(exe, '/');
        base = base ? base + 1 : exe;
        /* "systemd", also while being replaced ("systemd (deleted)"). */
        return strncmp(base, "systemd", 7) == 0 && (base[7] == '\0' || base[7] == ' ');
}

int service_parse_unit_environment(const char *text, char **ret_root, char **ret_runtime) {
        char *root = NULL, *runtime = NULL, *word = NULL;
        size_t cap = strlen(text) + 1;
        const char *p = text;
        int r = 0;

        word = malloc(cap);
        if (!word)
                return -ENOMEM;
        for (;;) {
                size_t n = 0;
                bool quoted = false, any = false;
                while (*p == ' ' || *p == '\t' || *p == '\n')
                        p++;
                if (!*p)
                        break;
                /* One word: runs of plain and "quoted" text, with \-escapes inside quotes. */
                while (*p && (quoted || (*p != ' ' && *p != '\t' && *p != '\n'))) {
                        if (*p == '"') {
                                quoted = !quoted;
                                p++;
                                continue;
                        }
                        if (quoted && *p == '\\' && p[1])
                                p++;
                        word[n++] = *p++;
                        any = true;
                }
                if (quoted) {
                        r = -EINVAL;
                        goto fail;
                }
                word[n] = '\0';
                char **dst = !any ? NULL
                             : strncmp(word, "VRT_ROOT=", 9) == 0 ? &root
                             : strncmp(word, "VRT_RUNTIME_DIR=", 16) == 0 ? &runtime : NULL;
                if (dst) {
                        free(*dst);     /* the last assignment wins, as in systemd */
                        *dst = strdup(strchr(word, '=') + 1);
                        if (!*dst) {
                                r = -ENOMEM;
                                goto fail;
                        }
                }
        }
        free(word);
        *ret_root = root;
        *ret_runtime = runtime;
        return 0;
fail:
        free(word);
        free(root);
        free(runtime);
        return r;
}

/* Finds an executable in $PATH. New string or NULL. */
static char *path_search(const char *name) {
        const char *path = getenv("PATH");
        if (!path || !*path)
                path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        while (*path) {
                size_t n = strcspn(path, ":");
                char *cand = NULL;
                if (n > 0 && asprintf(&cand, "%.*s/%s", (int)n, path, name) >= 0) {
                        if (access(cand, X_OK) == 0)
                                return cand;
                        free(cand);
                }
                path += n;
                if (*path == ':')
                        path++;
        }
        return NULL;
}

int service_start_unit_nowait(const char *name, char *err, size_t errlen) {
        char *systemctl = path_search("systemctl"), *unit = NULL, out[1024] = "";
        int r;
        if (!systemctl) {
                snprintf(err, errlen, "systemctl not found");
                return -ENOENT;
        }
        if (asprintf(&unit, "vrt@%s.service", name) < 0) {
                free(systemctl);
                return -ENOMEM;
        }
        char *argv[] = { systemctl, "--no-ask-password", "--no-block", "start", unit, NULL };
        r = spawn_capture(argv, UNIT_PROBE_TIMEOUT_MS, out, sizeof out);
        if (r != 0) {
                out[strcspn(out, "\n")] = '\0';
                snprintf(err, errlen, "systemctl start %s: %s", unit, r < 0 ? strerror(-r) : out[0] ? out : "failed");
                r = r < 0 ? r : -EIO;
        }
        free(unit);
        free(systemctl);
        return r;
}

int service_find_launcher(char **ret) {
        char *found = paths_beside_self("vrt-launch");
        if (!found)
                found = path_search("vrt-launch");
        if (!found)
                return -ENOENT;
        *ret = found;
        return 0;
}

int service_manager_detect(const char *root, const char *runtime_dir, const char *probe_name,
                           enum service_manager *ret, char *note, size_t notelen) {
        const char *env = getenv("VRT_SERVICE_MANAGER");
        note[0] = '\0';
        if (env && *env && strcmp(env, "auto") != 0) {
                enum service_manager m = service_manager_from_string(env);
                if (m < 0) {
                        snprintf(note, notelen, "invalid VRT_SERVICE_MANAGER=%s (auto, systemd or detached)", env);
                        return -EINVAL;
                }
                *ret = m;
                return 0;
        }
        if (!service_systemd_booted()) {
                *ret = SERVICE_DETACHED;
                return 0;
        }
        /* vrt@.service knows one root: starting NAME there must mean our NAME. */
        char *systemctl = path_search("systemctl");
        char *unit = NULL, *unit_root = NULL, *unit_runtime = NULL;
        char out[4096];
        enum service_manager m = SERVICE_DETACHED;
        if (systemctl && asprintf(&unit, "vrt@%s.service", probe_name ? probe_name : "probe") >= 0) {
                char *argv[] = { systemctl, "show", "--property=Environment", "--value", unit, NULL };
                if (spawn_capture(argv, UNIT_PROBE_TIMEOUT_MS, out, sizeof out) == 0 &&
                    service_parse_unit_environment(out, &unit_root, &unit_runtime) == 0) {
                        const char *ur = unit_root ? unit_root : VRT_DEFAULT_ROOT;
                        const char *ut = unit_runtime ? unit_runtime : VRT_DEFAULT_RUNTIME_DIR;
                        if (strcmp(ur, root) == 0 && strcmp(ut, runtime_dir) == 0)
                                m = SERVICE_SYSTEMD;
                        else
                                snprintf(note, notelen, "vrt@.service runs VMs of %s (runtime %s), not of %s (runtime %s): starting vrt-launch detached",
                                         ur, ut, root, runtime_dir);
                } else {
                        snprintf(note, notelen, "cannot ask systemd about vrt@.service: starting vrt-launch detached");
                }
        } else {
                snprintf(note, notelen, "systemctl not found: starting vrt-launch detached");
        }
        free(systemctl);
        free(unit);
        free(unit_root);
        free(unit_runtime);
        *ret = m;
        return 0;
}

int service_launch_log_last(const char *log_path, pid_t pid, off_t from, char *buf, size_t len) {
        char data[8193], tag[64];
        int fd = open(log_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -ENOENT;
        struct stat st;
        if (fstat(fd, &st) < 0) {
                close(fd);
                return -ENOENT;
        }
        off_t start = st.st_size > (off_t)(sizeof data - 1) ? st.st_size - (off_t)(sizeof data - 1) : 0;
        if (start < from)
                start = from;
        ssize_t n = start < st.st_size ? pread(fd, data, sizeof data - 1, start) : 0;
        close(fd);
        if (n <= 0)
                return -ENOENT;
        data[n] = '\0';
        snprintf(tag, sizeof tag, "vrt-launch[%d]: ", (int)pid);
        const char *best = NULL;
        size_t best_len = 0;
        for (char *line = data; *line;) {
                char *end = strchr(line, '\n');
                size_t l = end ? (size_t)(end - line) : strlen(line);
                if (end)
                        *end = '\0';
                const char *text = NULL;
                if (pid > 0) {
                        char *t = strstr(line, tag);
                        text = t ? t + strlen(tag) : NULL;
                } else if (l > 0) {
                        char *t = strstr(line, "]: ");
                        text = t ? t + 3 : line;
                }
                if (text && *text) {
                        best = text;
                        best_len = strlen(text);
                }
                line += l + (end ? 1 : 0);
        }
        if (!best)
                return -ENOENT;
        snprintf(buf, len, "%.*s", (int)best_len, best);
        return 0;
}

static char *launch_log_path(const struct vm_paths *p) {
        return paths_join(p->log_dir, "launch.log");
}

/* Checks a name and whether it names an existing VM. Fills p on success. */
static bool vm_lookup(const struct service_options *o, const char *name, struct vm_paths *p,
                      struct service_result *res, bool need_instance) {
        char err[256];
        struct stat st;
        if (config_check_vm_name(name, o->runtime_dir, err, sizeof err) < 0) {
                result_set(res, SERVICE_INVALID, "%s", err);
                return false;
        }
        if (vm_paths_init(p, o->root, o->runtime_dir, name) < 0) {
                result_set(res, SERVICE_FAILED, "out of memory");
                return false;
        }
        if (need_instance && stat(p->instance, &st) < 0) {
                result_set(res, SERVICE_INVALID, "no such VM (%s: %s)", p->instance, strerror(errno));
                vm_paths_done(p);
                return false;
        }
        return true;
}

/* The running supervisor's pid, 0 if it does not run or its pid is not
 * known within PID_FILE_WAIT_MS. */
static pid_t running_pid(const struct vm_paths *p, bool *ret_running) {
        struct vm_running run = { 0 };
        bool running = vmstate_running(p, PID_FILE_WAIT_MS, 0, &run) > 0;
        if (ret_running)
                *ret_running = running;
        return running ? run.pid : 0;
}

/* ---- start ---- */

struct start_job {
        struct vm_paths p;
        bool have_paths;
        bool pending;
        char *log_path;
        off_t log_from;
        int log_fd;
        int notify_fd;
        int out_fd;             /* systemctl's output */
        char out[1024];
        size_t out_len;
        pid_t pid;
        int pidfd;
};

/* An abstract datagram socket that accepts credentials: vrt-launch's
 * READY=1 arrives here. Returns the fd and the NOTIFY_SOCKET value. */
static int notify_socket(size_t index, char *addr, size_t addrlen) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        uint32_t rnd = 0;
        int one = 1;
        if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != sizeof rnd)
                rnd = (uint32_t)now_ms() ^ (uint32_t)(index << 16);
        snprintf(addr, addrlen, "@vrt-start/%d/%zu/%08x", (int)getpid(), index, rnd);
        size_t n = strlen(addr);
        memcpy(sa.sun_path, addr, n);
        sa.sun_path[0] = '\0';
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0 ||
            bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

/* Reads queued notifications; true once `pid` sent READY=1. */
static bool notify_ready(int fd, pid_t pid) {
        for (;;) {
                char msg[4097];
                union {
                        struct cmsghdr h;
                        char buf[CMSG_SPACE(sizeof(struct ucred))];
                } control;
                struct iovec iov = { .iov_base = msg, .iov_len = sizeof msg - 1 };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control,
                                     .msg_controllen = sizeof control };
                ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                if (n < 0)
                        return false;
                msg[n] = '\0';
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_CREDENTIALS)
                        continue;
                struct ucred cred;
                memcpy(&cred, CMSG_DATA(c), sizeof cred);
                if (cred.pid != pid)
                        continue;       /* not our supervisor: ignore */
                for (char *line = msg; line && *line;) {
                        char *nl = strchr(line, '\n');
                        if (nl)
                                *nl = '\0';
                        if (strcmp(line, "READY=1") == 0)
                                return true;
                        line = nl ? nl + 1 : NULL;
                }
        }
}

static int start_detached(const struct service_options *o, const char *launcher, const char *name,
                          size_t index, struct start_job *j, struct service_result *res) {
        char addr[108], err[256];
        char **envp = NULL;
        int r;

        if (mkdir(j->p.log_dir, 0750) < 0 && errno != EEXIST) {
                result_set(res, SERVICE_FAILED, "cannot create %s: %s", j->p.log_dir, strerror(errno));
                return -errno;
        }
        j->log_path = launch_log_path(&j->p);
        if (!j->log_path) {
                result_set(res, SERVICE_FAILED, "out of memory");
                return -ENOMEM;
        }
        char why[1024];
        j->log_fd = safepath_open_beneath(j->p.vm_dir, j->log_path, O_WRONLY | O_APPEND | O_CREAT, 0640, SAFEPATH_ONE_LINK,
                                          why, sizeof why);
        if (j->log_fd < 0) {
                r = j->log_fd;
                j->log_fd = -1;
                result_set(res, SERVICE_FAILED, "cannot open %s", why);
                return r;
        }
        j->log_from = lseek(j->log_fd, 0, SEEK_END);
        if (j->log_from < 0)
                j->log_from = 0;
        j->notify_fd = notify_socket(index, addr, sizeof addr);
        if (j->notify_fd < 0) {
                r = j->notify_fd;
                result_set(res, SERVICE_FAILED, "cannot create a notify socket: %s", strerror(-r));
                return r;
        }
        envp = spawn_environment(o->root, o->runtime_dir, addr);
        if (!envp) {
                result_set(res, SERVICE_FAILED, "cannot prepare vrt-launch: %s", strerror(ENOMEM));
                r = -ENOMEM;
                goto out;
        }
        char *argv[] = { (char *)launcher, (char *)name, NULL };
        /* A session of its own: no terminal, no job control signals of ours;
         * it outlives us. */
        struct spawn_options so = {
                .argv = argv,
                .envp = envp,
                .stdout_fd = j->log_fd,
                .session = SPAWN_SESSION_NEW,
                .chdir_root = true,
                .fail_prefix = "vrt: cannot execute ",
        };
        struct spawn_result sr;
        r = spawn_process(&so, &sr, err, sizeof err);
        if (r < 0) {
                result_set(res, SERVICE_FAILED, "cannot start %s: %s", launcher, err);
                goto out;
        }
        j->pid = sr.pid;
        j->pidfd = sr.pidfd;
out:
        strv_free(envp);
        close_fd(&j->log_fd);
        return r;
}

static int start_systemd(const char *systemctl, const char *name, struct start_job *j, struct service_result *res) {
        char *unit = NULL;
        if (asprintf(&unit, "vrt@%s.service", name) < 0) {
                result_set(res, SERVICE_FAILED, "out of memory");
                return -ENOMEM;
        }
        char *argv[] = { (char *)systemctl, "--no-ask-password", "start", unit, NULL };
        struct spawn_options so = { .argv = argv, .stdout_fd = SPAWN_PIPE, .fail_prefix = "vrt: cannot execute " };
        struct spawn_result sr;
        char err[256];
        int r = spawn_process(&so, &sr, err, sizeof err);
        free(unit);
        if (r < 0) {
                result_set(res, SERVICE_FAILED, "cannot run %s: %s", systemctl, err);
                return r;
        }
        j->pid = sr.pid;
        j->pidfd = sr.pidfd;
        j->out_fd = sr.out_fd;
        return 0;
}

/* First line of a buffer, for a one-line message. */
static const char *first_line(char *s) {
        while (*s == '\n' || *s == ' ')
                s++;
        s[strcspn(s, "\n")] = '\0';
        return s;
}

static void start_finished(const struct service_options *o, const char *name, struct start_job *j,
                           struct service_result *res, int status) {
        char line[400];
        struct lease_holder holder;
        j->pending = false;
        /* Another host took the lease between our check and the supervisor's
         * (vrt-launch then exits 5, and systemd does not restart it). */
        if (status != 0 && vmstate_elsewhere(j->p.vm_dir, &holder) == 1) {
                vmstate_describe_elsewhere(&holder, line, sizeof line);
                res->pid = (pid_t)holder.pid;
                result_set(res, SERVICE_ELSEWHERE, "%s; not started", line);
                return;
        }
        if (o->manager == SERVICE_SYSTEMD) {
                if (status == 0) {
                        res->pid = running_pid(&j->p, NULL);
                        result_set(res, SERVICE_DONE, "started (vrt@%s.service)", name);
                } else {
                        result_set(res, SERVICE_FAILED, "systemctl start vrt@%s.service failed: %s", name,
                                   j->out_len ? first_line(j->out) : "no message");
                }
                return;
        }
        /* The supervisor ended before it was ready. */
        pid_t other = running_pid(&j->p, NULL);
        if (other > 0) {
                res->pid = other;
                result_set(res, SERVICE_ALREADY, "already running (supervisor pid %d, started concurrently)", (int)other);
                return;
        }
        if (service_launch_log_last(j->log_path, j->pid, j->log_from, line, sizeof line) < 0 &&
            service_launch_log_last(j->log_path, 0, j->log_from, line, sizeof line) < 0)
                snprintf(line, sizeof line, "no message in %s", j->log_path);
        if (status == 127 && strstr(line, "cannot execute"))
                result_set(res, SERVICE_FAILED, "%s", line);
        else
                result_set(res, SERVICE_FAILED, "vrt-launch exited with status %d: %s", status, line);
}

int service_start(const struct service_options *o, char *const *names, size_t n, struct service_result *results) {
        struct start_job *jobs = calloc(n ? n : 1, sizeof *jobs);
        char *launcher = NULL, *systemctl = NULL;
        int failed = 0;

        if (!jobs)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                jobs[i] = (struct start_job){ .log_fd = -1, .notify_fd = -1, .out_fd = -1, .pidfd = -1 };
                results[i] = (struct service_result){ .outcome = SERVICE_FAILED };
        }
        if (o->manager == SERVICE_SYSTEMD) {
                systemctl = path_search("systemctl");
        } else if (o->launcher) {
                launcher = strdup(o->launcher);
        } else {
                service_find_launcher(&launcher);
        }

        unsigned wait_s = o->wait_s ? o->wait_s : SERVICE_START_WAIT_S;
        int64_t deadline = now_ms() + (int64_t)wait_s * 1000;
        for (size_t i = 0; i < n; i++) {
                struct start_job *j = &jobs[i];
                struct service_result *res = &results[i];
                char why[sizeof res->message];
                int k = vmstate_check_startable(o->root, o->runtime_dir, names[i], why, sizeof why);
                if (k < 0) {
                        result_set(res, k == -ENOMEM ? SERVICE_FAILED : SERVICE_INVALID, "%s", why);
                        continue;
                }
                if ((k = launch_check(o->root, o->runtime_dir, names[i], why, sizeof why)) < 0) {
                        result_set(res, k == -ENOMEM ? SERVICE_FAILED : SERVICE_INVALID, "%s", why);
                        continue;
                }
                if (!vm_lookup(o, names[i], &j->p, res, true))
                        continue;
                j->have_paths = true;
                struct lease_holder holder;
                if (vmstate_elsewhere(j->p.vm_dir, &holder) == 1) {
                        char where[300];
                        vmstate_describe_elsewhere(&holder, where, sizeof where);
                        res->pid = (pid_t)holder.pid;
                        result_set(res, SERVICE_ELSEWHERE, "%s; not started", where);
                        continue;
                }
                bool running;
                pid_t pid = running_pid(&j->p, &running);
                if (running) {
                        res->pid = pid;
                        result_set(res, SERVICE_ALREADY, "already running (supervisor pid %d)", (int)pid);
                        continue;
                }
                int r;
                if (o->manager == SERVICE_SYSTEMD) {
                        if (!systemctl) {
                                result_set(res, SERVICE_FAILED, "systemctl not found in $PATH");
                                continue;
                        }
                        r = start_systemd(systemctl, names[i], j, res);
                } else {
                        if (!launcher) {
                                result_set(res, SERVICE_FAILED, "vrt-launch not found next to vrt nor in $PATH");
                                continue;
                        }
                        r = start_detached(o, launcher, names[i], i, j, res);
                }
                if (r == 0)
                        j->pending = true;
        }

        /* Wait for every READY=1 (detached) or systemctl (which waits for it). */
        struct pollfd *pfd = calloc(3 * (n ? n : 1), sizeof *pfd);
        if (!pfd) {
                failed = -ENOMEM;
                goto out;
        }
        for (;;) {
                size_t m = 0;
                for (size_t i = 0; i < n; i++) {
                        if (!jobs[i].pending)
                                continue;
                        pfd[m++] = (struct pollfd){ .fd = jobs[i].notify_fd, .events = POLLIN };
                        pfd[m++] = (struct pollfd){ .fd = jobs[i].out_fd, .events = POLLIN };
                        pfd[m++] = (struct pollfd){ .fd = jobs[i].pidfd, .events = POLLIN };
                }
                if (m == 0)
                        break;
                int64_t left = deadline - now_ms();
                if (left <= 0) {
                        for (size_t i = 0; i < n; i++) {
                                if (!jobs[i].pending)
                                        continue;
                                jobs[i].pending = false;
                                if (o->manager == SERVICE_SYSTEMD)
                                        result_set(&results[i], SERVICE_FAILED, "systemctl start vrt@%s.service did not finish within %us",
                                                   names[i], wait_s);
                                else
                                        result_set(&results[i], SERVICE_FAILED, "not running within %us (vrt-launch pid %d still starting; see %s)",
                                                   wait_s, (int)jobs[i].pid, jobs[i].log_path);
                                results[i].pid = jobs[i].pid;
                        }
                        break;
                }
                /* A pidfd that could not be opened is polled as -1 (ignored):
                 * fall back to checking the child every 100 ms. */
                if (poll(pfd, (nfds_t)m, left < 100 ? (int)left : 100) < 0 && errno != EINTR) {
                        failed = -errno;
                        goto out;
                }
                for (size_t i = 0; i < n; i++) {
                        struct start_job *j = &jobs[i];
                        if (!j->pending)
                                continue;
                        if (j->notify_fd >= 0 && notify_ready(j->notify_fd, j->pid)) {
                                j->pending = false;
                                results[i].pid = j->pid;
                                result_set(&results[i], SERVICE_DONE, "started (supervisor pid %d)", (int)j->pid);
                                continue;
                        }
                        if (j->out_fd >= 0 && !spawn_drain(j->out_fd, j->out, sizeof j->out, &j->out_len))
                                close_fd(&j->out_fd);
                        int status;
                        pid_t w = waitpid(j->pid, &status, WNOHANG);
                        if (w == j->pid) {
                                if (j->out_fd >= 0)
                                        spawn_drain(j->out_fd, j->out, sizeof j->out, &j->out_len);
                                /* A READY=1 sent just before exiting still counts. */
                                if (j->notify_fd >= 0 && notify_ready(j->notify_fd, j->pid)) {
                                        j->pending = false;
                                        result_set(&results[i], SERVICE_DONE, "started (supervisor pid %d), but it ended already",
                                                   (int)j->pid);
                                        continue;
                                }
                                start_finished(o, names[i], j, &results[i],
                                               WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
                        }
                }
        }
        for (size_t i = 0; i < n; i++)
                if (results[i].outcome == SERVICE_FAILED || results[i].outcome == SERVICE_INVALID)
                        failed++;
out:
        free(pfd);
        for (size_t i = 0; i < n; i++) {
                close_fd(&jobs[i].notify_fd);
                close_fd(&jobs[i].out_fd);
                close_fd(&jobs[i].pidfd);
                close_fd(&jobs[i].log_fd);
                free(jobs[i].log_path);
                if (jobs[i].have_paths)
                        vm_paths_done(&jobs[i].p);
        }
        free(jobs);
        free(launcher);
        free(systemctl);
        return failed;
}

/* ---- stop ---- */

struct stop_entry {
        struct vm_paths p;
        bool have_paths;
        bool pending;
        struct stop_job s;
        const char *how;        /* extra words for the result, may be "" */
        bool handed_over;       /* runs on holder.host: waiting for its lease to go */
        struct lease_holder holder;
        int64_t handover_deadline;
};

/* Writes ROOT/stop/NAME for the host that runs the VM. Written under a
 * hidden name and renamed, so that no spool ever reads half a request. */
static int write_stop_request(const char *root, const char *name, bool force, char *err, size_t errlen) {
        char *dir = paths_join(root, "stop"), *tmp = NULL, *path = NULL;
        char host[LEASE_HOST_MAX + 1] = "", text[256];
        int r = 0;

        if (!dir || asprintf(&tmp, "%s/.%s.request", dir, name) < 0 || asprintf(&path, "%s/%s", dir, name) < 0) {
                r = -ENOMEM;
                snprintf(err, errlen, "out of memory");
                goto out;
        }
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", dir, strerror(-r));
                goto out;
        }
        char why[64];
        lease_host_name(host, sizeof host, why, sizeof why);
        snprintf(text, sizeof text, "# vrt stop on host %s\n%s", host[0] ? host : "?", force ? "force=yes\n" : "");
        r = fileio_write_atomic(tmp, path, text, strlen(text), 0644);
        if (r < 0)
                snprintf(err, errlen, "cannot write %s: %s", path, strerror(-r));
out:
        free(dir);
        free(tmp);
        free(path);
        return r;
}

static void stop_one(const struct service_options *o, const char *name, struct stop_entry *j, struct service_result *res) {
        struct stat st;
        char err[512];

        if (!vm_lookup(o, name, &j->p, res, false))
                return;
        j->have_paths = true;
        j->how = "";
        struct stop_request req = {
                .force = o->force,
                .shutdown_timeout = o->shutdown_timeout,
                .wait_s = o->wait_s,
                .pid_wait_ms = STOP_PID_WAIT_MS,
        };
        int r = stop_begin(o->root, &j->p, name, &req, &j->s, err, sizeof err);
        if (r < 0) {
                result_set(res, SERVICE_FAILED, "%s", err);
                return;
        }
        if (r == 0 && vmstate_elsewhere(j->p.vm_dir, &j->holder) == 1) {
                r = write_stop_request(o->root, name, o->force, err, sizeof err);
                if (r < 0) {
                        result_set(res, SERVICE_FAILED, "%s", err);
                        return;
                }
                unsigned bound = o->wait_s ? o->wait_s
                                 : (o->force ? 0 : o->shutdown_timeout ? o->shutdown_timeout
                                                                        : stop_shutdown_timeout(o->root, &j->p, name)) +
                                           STOP_ESCALATION_S + SERVICE_HANDOVER_SLACK_S;
                j->handed_over = true;
                j->handover_deadline = now_ms() + (int64_t)bound * 1000;
                j->s.bound_s = bound;
                res->pid = (pid_t)j->holder.pid;
                j->pending = true;
                return;
        }
        if (r == 0) {
                if (stat(j->p.vm_dir, &st) < 0)
                        result_set(res, SERVICE_INVALID, "no such VM (%s: %s)", j->p.vm_dir, strerror(errno));
                else
                        result_set(res, SERVICE_ALREADY, "not running");
                return;
        }
        res->pid = j->s.pid;
        if (j->s.quit_failed)
                j->how = " (QMP quit failed, forced by vrt-launch after 1 s)";
        j->pending = true;
}

/* A stop handed to another host is done when the VM's lease is free. */
static void handover_check(const char *name, struct stop_entry *j, struct service_result *res, int64_t now) {
        struct lease_holder h;
        char where[300];
        int r = lease_probe(j->p.vm_dir, &h);
        if (r == 0) {
                j->pending = false;
                result_set(res, SERVICE_DONE, "stopped on host %s (handed over through stop/%s)", j->holder.host, name);
        } else if (r > 0 && (strcmp(h.host, j->holder.host) != 0 || h.pid != j->holder.pid)) {
                j->pending = false;
                vmstate_describe_elsewhere(&h, where, sizeof where);
                result_set(res, SERVICE_DONE, "stopped on host %s and started again: %s", j->holder.host, where);
        } else if (now >= j->handover_deadline) {
                j->pending = false;
                result_set(res, SERVICE_FAILED,
                           "runs on host %s; stop/%s was written for it, but it still runs after %us (does vrt spool watch the root there?)",
                           j->holder.host, name, j->s.bound_s);
        }
}

int service_stop(const struct service_options *o, char *const *names, size_t n, struct service_result *results) {
        struct stop_entry *jobs = calloc(n ? n : 1, sizeof *jobs);
        struct pollfd *pfd = calloc(n ? n : 1, sizeof *pfd);
        size_t *map = calloc(n ? n : 1, sizeof *map);
        int failed = 0;

        if (!jobs || !pfd || !map) {
                failed = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n; i++) {
                jobs[i] = (struct stop_entry){ .s = { .pidfd = -1 } };
                results[i] = (struct service_result){ .outcome = SERVICE_FAILED };
                stop_one(o, names[i], &jobs[i], &results[i]);
        }
        for (;;) {
                size_t m = 0;
                int64_t next = INT64_MAX, now = now_ms();
                for (size_t i = 0; i < n; i++) {
                        struct stop_entry *j = &jobs[i];
                        if (!j->pending)
                                continue;
                        if (j->handed_over) {
                                handover_check(names[i], j, &results[i], now);
                                if (j->pending && now + HANDOVER_POLL_MS < next)
                                        next = now + HANDOVER_POLL_MS;
                                continue;
                        }
                        if (now >= j->s.deadline) {
                                j->pending = false;
                                result_set(&results[i], SERVICE_FAILED, "still stopping after %us (supervisor pid %d)",
                                           j->s.bound_s, (int)j->s.pid);
                                continue;
                        }
                        if (j->s.deadline < next)
                                next = j->s.deadline;
                        map[m] = i;
                        pfd[m++] = (struct pollfd){ .fd = j->s.pidfd, .events = POLLIN };
                }
                if (m == 0 && next == INT64_MAX)
                        break;
                int r = poll(pfd, (nfds_t)m, (int)(next - now));
                if (r < 0 && errno != EINTR) {
                        failed = -errno;
                        goto out;
                }
                for (size_t k = 0; r > 0 && k < m; k++) {
                        if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        struct stop_entry *j = &jobs[map[k]];
                        char line[400], *log = launch_log_path(&j->p);
                        j->pending = false;
                        stop_job_done(&j->s);
                        if (log && service_launch_log_last(log, j->s.pid, 0, line, sizeof line) == 0)
                                result_set(&results[map[k]], SERVICE_DONE, "stopped%s: %s", j->how, line);
                        else
                                result_set(&results[map[k]], SERVICE_DONE, "stopped%s", j->how);
                        free(log);
                }
        }
        for (size_t i = 0; i < n; i++)
                if (results[i].outcome == SERVICE_FAILED || results[i].outcome == SERVICE_INVALID)
                        failed++;
out:
        for (size_t i = 0; jobs && i < n; i++) {
                stop_job_done(&jobs[i].s);
                if (jobs[i].have_paths)
                        vm_paths_done(&jobs[i].p);
        }
        free(jobs);
        free(pfd);
        free(map);
        return failed;
}
