/* vrt-bench: the timing probes behind tools/bench/run.
 *
 * Each subcommand measures one thing and prints one line per sample,
 * "KEY value..." with times in microseconds; the runner computes medians
 * and ratios. Every child is started with PR_SET_PDEATHSIG (SIGKILL; SIGTERM
 * for the daemon under subreaper), so no QEMU or supervisor outlives this
 * process, whatever ends it.
 *
 *   launch   paired single starts: raw QEMU (this program plays the
 *            minimal manager: sockets on fds 3..6, QMP handshake, cont)
 *            against vrt-launch (exec until sd_notify READY=1)
 *   scale    N starts in parallel, the same pair, then N parallel stops
 *   exec     whole-process wall time of one or more commands, interleaved
 *   spool    creates a file, then polls a monitor socket until "running"
 *   wait-running, quit    for VMs the runner starts itself
 *   mem      a process's private and resident memory (smaps_rollup)
 *   subreaper             runs a daemon as PR_SET_CHILD_SUBREAPER (libvirtd)
 *   halt-kernel           writes a multiboot image that only halts
 *
 * QMP is handled with plain string matching on QEMU's one-object-per-line
 * output: enough for a probe, and no dependency. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define QMP_CAPS "{\"execute\":\"qmp_capabilities\"}\n"
#define QMP_CONT "{\"execute\":\"cont\"}\n"
#define QMP_QUIT "{\"execute\":\"quit\"}\n"
#define QMP_STATUS "{\"execute\":\"query-status\"}\n"
#define MAX_VMS 256
#define MAX_CMDS 8

static int64_t now_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...) {
        va_list ap;
        fprintf(stderr, "vrt-bench: ");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        /* Children die with us (PR_SET_PDEATHSIG). */
        exit(1);
}

static void close_fd(int *fd) {
        if (*fd >= 0)
                close(*fd);
        *fd = -1;
}

static int pidfd_open_(pid_t pid) {
        return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* ---- unix sockets ---- */

static void sun_set(struct sockaddr_un *sa, const char *path) {
        memset(sa, 0, sizeof *sa);
        sa->sun_family = AF_UNIX;
        if (strlen(path) >= sizeof sa->sun_path)
                die("socket path too long: %s", path);
        strcpy(sa->sun_path, path);
}

static int listen_unix(const char *path) {
        struct sockaddr_un sa;
        sun_set(&sa, path);
        unlink(path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 16) < 0)
                die("listen %s: %s", path, strerror(errno));
        return fd;
}

static int notify_socket(const char *path) {
        struct sockaddr_un sa;
        sun_set(&sa, path);
        unlink(path);
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
                die("bind %s: %s", path, strerror(errno));
        return fd;
}

/* Returns a connected fd, or -errno (ENOENT/ECONNREFUSED: not there yet). */
static int connect_unix(const char *path) {
        struct sockaddr_un sa;
        sun_set(&sa, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                die("socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

static void write_all(int fd, const char *s) {
        size_t n = strlen(s);
        while (n > 0) {
                ssize_t w = write(fd, s, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0)
                        return;         /* the peer is gone; the reader sees EOF */
                s += w;
                n -= (size_t)w;
        }
}

/* ---- a QMP session: greeting, then a fixed list of commands ---- */

struct qsess {
        int fd;
        char buf[16384];
        size_t len;
        bool greeted;
        const char *cmds[MAX_CMDS];
        int n_cmds, next;
        bool done, failed, eof;
        bool last_running;      /* the last reply said "running": true */
        char last_error[256];
};

static void qsess_start(struct qsess *q, int fd, const char *const *cmds) {
        memset(q, 0, sizeof *q);
        q->fd = fd;
        for (; cmds[q->n_cmds]; q->n_cmds++)
                q->cmds[q->n_cmds] = cmds[q->n_cmds];
}

static void qsess_line(struct qsess *q, const char *line) {
        if (!q->greeted) {
                if (strstr(line, "\"QMP\"")) {
                        q->greeted = true;
                        write_all(q->fd, q->cmds[0]);
                }
                return;
        }
        if (strstr(line, "\"event\""))
                return;
        bool is_return = strstr(line, "\"return\"") != NULL;
        if (!is_return && !strstr(line, "\"error\""))
                return;
        if (!is_return) {
                q->failed = true;
                snprintf(q->last_error, sizeof q->last_error, "%.200s", line);
        }
        q->last_running = strstr(line, "\"running\": true") || strstr(line, "\"running\":true");
        if (++q->next == q->n_cmds)
                q->done = true;
        else
                write_all(q->fd, q->cmds[q->next]);
}

/* Reads what is there and advances the session. */
static void qsess_input(struct qsess *q) {
        for (;;) {
                if (q->len == sizeof q->buf - 1)
                        q->len = 0;     /* an overlong line: a probe can drop it */
                ssize_t n = recv(q->fd, q->buf + q->len, sizeof q->buf - 1 - q->len, MSG_DONTWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        return;
                if (n <= 0) {
                        q->eof = true;
                        /* The reply to quit may be lost with the connection. */
                        if (q->next == q->n_cmds - 1 && strstr(q->cmds[q->next], "\"quit\""))
                                q->done = true;
                        return;
                }
                q->len += (size_t)n;
                q->buf[q->len] = '\0';
                char *start = q->buf, *nl;
                while (!q->done && (nl = strchr(start, '\n'))) {
                        *nl = '\0';
                        qsess_line(q, start);
                        start = nl + 1;
                }
                /* Keep only what is not consumed, also when done: a caller
                 * may go on with the same session. */
                q->len -= (size_t)(start - q->buf);
                memmove(q->buf, start, q->len);
                q->buf[q->len] = '\0';
                if (q->done)
                        return;
        }
}

/* Runs one session to its end; false on timeout, EOF or a QMP error. */
static bool qsess_run(struct qsess *q, int timeout_ms) {
        int64_t deadline = now_us() + (int64_t)timeout_ms * 1000;
        while (!q->done && !q->eof) {
                int left = (int)((deadline - now_us()) / 1000);
                if (left <= 0)
                        return false;
                struct pollfd p = { .fd = q->fd, .events = POLLIN };
                if (poll(&p, 1, left) > 0)
                        qsess_input(q);
        }
        return q->done && !q->failed;
}

/* ---- children ---- */

struct fdmap {
        int fd, target;
};

/* Forks and execs argv with fds moved to their targets, stdin on
 * /dev/null, stdout+stderr to out_path (or /dev/null), env additions. */
static pid_t spawn(char *const *argv, const struct fdmap *fds, int n_fds, const char *out_path,
                   const char *env_add) {
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0)
                die("fork: %s", strerror(errno));
        if (pid > 0)
                return pid;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
                _exit(127);
        int moved[16];
        for (int i = 0; i < n_fds; i++)
                moved[i] = fcntl(fds[i].fd, F_DUPFD_CLOEXEC, 32);  /* above every target fd (24 is the agent) */
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        int out = out_path ? open(out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : null;
        if (null < 0 || out < 0)
                _exit(127);
        dup2(null, 0);
        dup2(out, 1);
        dup2(out, 2);
        for (int i = 0; i < n_fds; i++)
                dup2(moved[i], fds[i].target);
        if (env_add)
                putenv((char *)env_add);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], argv);
        dprintf(2, "vrt-bench: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
}

/* ---- one VM, started either way ---- */

/* MODE_RAW: this process is the minimal manager. MODE_RAW_MANAGER: a
 * forked copy of this process is, one per VM, so that N parallel raw
 * starts have N managers just as N vrt-launch processes do (one manager
 * process for 50 VMs would get 1/50 of the CPU the supervisors get while
 * the guests boot under TCG). */
enum mode { MODE_RAW, MODE_RAW_MANAGER, MODE_VRT };

static const char *mode_name(enum mode m) {
        return m == MODE_VRT ? "vrt-launch" : "raw QEMU";
}

struct vm {
        enum mode mode;
        char name[64];
        char dir[512];          /* raw: its sockets; vrt: notify socket */
        pid_t pid;
        int pidfd;
        int notify_fd;
        struct qsess q;
        bool ready, exited;
        int status;
        int64_t t0, t_ready, t_exit;
};

struct env {
        const char *vrt_launch;
        const char *runtime_dir;
        const char *work;       /* scratch dir for sockets and logs */
        char **qemu_argv;
};

static void vm_init(struct vm *v, enum mode mode, const char *name, const struct env *e, int idx) {
        memset(v, 0, sizeof *v);
        v->mode = mode;
        v->pidfd = v->notify_fd = v->q.fd = -1;
        snprintf(v->name, sizeof v->name, "%s", name);
        snprintf(v->dir, sizeof v->dir, "%s/%s-%d", e->work, mode == MODE_VRT ? "vrt" : "raw", idx);
        mkdir(v->dir, 0755);
}

static void vm_log_tail(const struct vm *v) {
        char path[600], buf[2048];
        snprintf(path, sizeof path, "%s/out.log", v->dir);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        off_t size = lseek(fd, 0, SEEK_END);
        lseek(fd, size > (off_t)sizeof buf - 1 ? size - (off_t)sizeof buf + 1 : 0, SEEK_SET);
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n > 0) {
                buf[n] = '\0';
                fprintf(stderr, "vrt-bench: --- %s output (%s) ---\n%s\n", v->name, path, buf);
        }
}

static void vm_start(struct vm *v, const struct env *e);
static void wait_all(struct vm *vms, int n, int what, int timeout_s);
static void vm_reap(struct vm *v);

/* The forked per-VM manager of MODE_RAW_MANAGER: starts QEMU as MODE_RAW
 * does, reports READY=1 like vrt-launch, and lives until QEMU exits. */
static void raw_manager(struct vm *parent_vm, const struct env *e, const char *notify_path) {
        struct vm v = *parent_vm;
        v.mode = MODE_RAW;
        v.pid = 0;
        v.pidfd = v.notify_fd = v.q.fd = -1;
        close_fd(&parent_vm->notify_fd);
        vm_start(&v, e);
        wait_all(&v, 1, 0, 120);
        struct sockaddr_un sa;
        sun_set(&sa, notify_path);
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || sendto(fd, "READY=1", 7, 0, (struct sockaddr *)&sa, sizeof sa) < 0)
                _exit(1);
        close(fd);
        close_fd(&v.q.fd);
        vm_reap(&v);
        _exit(WIFEXITED(v.status) ? WEXITSTATUS(v.status) : 1);
}

static void vm_start(struct vm *v, const struct env *e) {
        char out[600];
        snprintf(out, sizeof out, "%s/out.log", v->dir);
        if (v->mode == MODE_RAW) {
                /* What a minimal manager does: the listening sockets and the
                 * console log on the fds the argv names, then QMP. */
                char p[600];
                snprintf(p, sizeof p, "%s/qmp.sock", v->dir);
                int qmp = listen_unix(p);
                snprintf(p, sizeof p, "%s/monitor.sock", v->dir);
                int mon = listen_unix(p);
                snprintf(p, sizeof p, "%s/console.sock", v->dir);
                int con = listen_unix(p);
                snprintf(p, sizeof p, "%s/agent.sock", v->dir);
                int agent = listen_unix(p);     /* the argv's agent chardev, fd 24 */
                snprintf(p, sizeof p, "%s/console.log", v->dir);
                int log = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (log < 0)
                        die("open %s: %s", p, strerror(errno));
                struct fdmap fds[] = { { qmp, 3 }, { mon, 4 }, { con, 5 }, { log, 6 }, { agent, 24 } };
                v->t0 = now_us();
                v->pid = spawn(e->qemu_argv, fds, 5, out, NULL);
                snprintf(p, sizeof p, "%s/qmp.sock", v->dir);
                int fd = connect_unix(p);       /* waits in the backlog */
                if (fd < 0)
                        die("connect %s: %s", p, strerror(-fd));
                close(qmp);
                close(mon);
                close(con);
                close(agent);
                close(log);
                static const char *const cmds[] = { QMP_CAPS, QMP_CONT, NULL };
                qsess_start(&v->q, fd, cmds);
        } else if (v->mode == MODE_RAW_MANAGER) {
                char sock[600];
                snprintf(sock, sizeof sock, "%s/notify.sock", v->dir);
                v->notify_fd = notify_socket(sock);
                fflush(NULL);
                v->t0 = now_us();
                pid_t parent = getpid();
                v->pid = fork();
                if (v->pid < 0)
                        die("fork: %s", strerror(errno));
                if (v->pid == 0) {
                        prctl(PR_SET_PDEATHSIG, SIGKILL);
                        if (getppid() != parent)
                                _exit(127);
                        raw_manager(v, e, sock);
                }
        } else {
                char sock[600], env_ns[700];
                snprintf(sock, sizeof sock, "%s/notify.sock", v->dir);
                v->notify_fd = notify_socket(sock);
                snprintf(env_ns, sizeof env_ns, "NOTIFY_SOCKET=%s", sock);
                char *argv[] = { (char *)e->vrt_launch, v->name, NULL };
                v->t0 = now_us();
                /* putenv keeps the pointer: the child execs before it matters. */
                v->pid = spawn(argv, NULL, 0, out, env_ns);
        }
        v->pidfd = pidfd_open_(v->pid);
        if (v->pidfd < 0)
                die("pidfd_open: %s", strerror(errno));
}

/* Stop: quit over a fresh monitor connection; the caller then waits for
 * the child's exit. */
static void vm_stop(struct vm *v, const struct env *e) {
        static const char *const caps_quit[] = { QMP_CAPS, QMP_QUIT, NULL };
        char p[600];
        v->t0 = now_us();
        /* Both sides stop through their monitor socket, as an operator's
         * script would; raw QEMU has one on fd 4 as well. */
        if (v->mode != MODE_VRT)
                snprintf(p, sizeof p, "%s/monitor.sock", v->dir);
        else
                snprintf(p, sizeof p, "%s/%s/monitor.sock", e->runtime_dir, v->name);
        close_fd(&v->q.fd);
        int fd = connect_unix(p);
        if (fd < 0)
                die("%s: connect %s: %s", v->name, p, strerror(-fd));
        qsess_start(&v->q, fd, caps_quit);
}

static void vm_reap(struct vm *v) {
        int st = 0;
        while (waitpid(v->pid, &st, 0) < 0 && errno == EINTR)
                ;
        v->exited = true;
        v->status = st;
        v->t_exit = now_us();
        close_fd(&v->pidfd);
}

static void vm_done(struct vm *v) {
        if (!v->exited && v->pid > 0) {
                kill(v->pid, SIGKILL);
                vm_reap(v);
        }
        close_fd(&v->pidfd);
        close_fd(&v->notify_fd);
        close_fd(&v->q.fd);
}

enum wait_for { WAIT_READY = 0, WAIT_EXIT = 1 };

/* Drives all VMs until each is ready (or has exited, for WAIT_EXIT). */
static void wait_all(struct vm *vms, int n, int what, int timeout_s) {
        int64_t deadline = now_us() + (int64_t)timeout_s * 1000000;
        struct pollfd pfd[3 * MAX_VMS];
        struct { int vm, kind; } who[3 * MAX_VMS];
        for (;;) {
                int np = 0, pending = 0;
                for (int i = 0; i < n; i++) {
                        struct vm *v = &vms[i];
                        bool finished = what == WAIT_READY ? v->ready : v->exited;
                        if (finished)
                                continue;
                        pending++;
                        if (v->q.fd >= 0 && !v->q.done && !v->q.eof) {
                                pfd[np] = (struct pollfd){ .fd = v->q.fd, .events = POLLIN };
                                who[np].vm = i, who[np++].kind = 0;
                        }
                        if (v->notify_fd >= 0 && !v->ready) {
                                pfd[np] = (struct pollfd){ .fd = v->notify_fd, .events = POLLIN };
                                who[np].vm = i, who[np++].kind = 1;
                        }
                        if (v->pidfd >= 0) {
                                pfd[np] = (struct pollfd){ .fd = v->pidfd, .events = POLLIN };
                                who[np].vm = i, who[np++].kind = 2;
                        }
                }
                if (pending == 0)
                        return;
                int left = (int)((deadline - now_us()) / 1000);
                if (left <= 0) {
                        for (int i = 0; i < n; i++)
                                if (!(what == WAIT_READY ? vms[i].ready : vms[i].exited))
                                        vm_log_tail(&vms[i]);
                        die("timeout after %d s waiting for %d of %d VMs to %s", timeout_s, pending, n,
                            what == WAIT_READY ? "run" : "exit");
                }
                int r = poll(pfd, (nfds_t)np, left);
                if (r < 0 && errno != EINTR)
                        die("poll: %s", strerror(errno));
                for (int k = 0; r > 0 && k < np; k++) {
                        if (!pfd[k].revents)
                                continue;
                        struct vm *v = &vms[who[k].vm];
                        if (who[k].kind == 0) {
                                qsess_input(&v->q);
                                if (v->q.failed)
                                        die("%s: QMP error: %s", v->name, v->q.last_error);
                                if (what == WAIT_READY && v->q.done && !v->ready) {
                                        v->ready = true;
                                        v->t_ready = now_us();
                                }
                        } else if (who[k].kind == 1) {
                                char msg[4096];
                                ssize_t m;
                                while ((m = recv(v->notify_fd, msg, sizeof msg - 1, 0)) > 0) {
                                        msg[m] = '\0';
                                        if (!v->ready && strstr(msg, "READY=1")) {
                                                v->ready = true;
                                                v->t_ready = now_us();
                                        }
                                }
                        } else {
                                vm_reap(v);
                                if (what == WAIT_READY && !v->ready) {
                                        vm_log_tail(v);
                                        die("%s (%s) exited before running (status 0x%x)", v->name,
                                            mode_name(v->mode), v->status);
                                }
                        }
                }
        }
}

/* Private_Clean + Private_Dirty and Rss of a process, in KiB. */
static void proc_memory(pid_t pid, long *ret_private, long *ret_rss) {
        char path[64], line[256];
        long priv = 0, rss = 0, val;
        snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
        FILE *f = fopen(path, "re");
        if (!f)
                die("%s: %s", path, strerror(errno));
        while (fgets(line, sizeof line, f)) {
                if (sscanf(line, "Private_Clean: %ld kB", &val) == 1 || sscanf(line, "Private_Dirty: %ld kB", &val) == 1)
                        priv += val;
                else if (sscanf(line, "Rss: %ld kB", &val) == 1)
                        rss = val;
        }
        fclose(f);
        *ret_private = priv;
        *ret_rss = rss;
}

static int cmp_long(const void *a, const void *b) {
        long x = *(const long *)a, y = *(const long *)b;
        return (x > y) - (x < y);
}

/* ---- subcommands ---- */

struct opts {
        int runs, count, timeout, rotate;
        pid_t pid;
        const char *name, *prefix, *sock, *file, *expect;
        struct env env;
        int argc;
        char **argv;            /* after "--" */
};

static void usage(void) {
        fprintf(stderr,
                "usage: vrt-bench launch --runs N --name NAME --vrt-launch PATH --runtime DIR --work DIR -- QEMU-ARGV\n"
                "       vrt-bench scale --runs N --count N --prefix P --vrt-launch PATH --runtime DIR --work DIR -- QEMU-ARGV\n"
                "       vrt-bench exec --runs N [--expect TEXT] [--rotate 0] -- CMD ARGS [--- CMD ARGS]...\n"
                "       vrt-bench mem --pid PID\n"
                "       vrt-bench subreaper --file PIDFILE -- CMD ARGS\n"
                "       vrt-bench spool --file PATH --sock PATH [--timeout S]\n"
                "       vrt-bench wait-running --sock PATH [--timeout S]\n"
                "       vrt-bench quit --sock PATH\n"
                "       vrt-bench halt-kernel --file PATH\n");
        exit(2);
}

static void parse(int argc, char **argv, struct opts *o) {
        *o = (struct opts){ .runs = 1, .count = 1, .timeout = 60, .rotate = 1 };
        for (int i = 2; i < argc; i++) {
                const char *a = argv[i];
                if (strcmp(a, "--") == 0) {
                        o->argc = argc - i - 1;
                        o->argv = argv + i + 1;
                        return;
                }
                if (i + 1 >= argc)
                        usage();
                const char *v = argv[++i];
                if (strcmp(a, "--runs") == 0)
                        o->runs = atoi(v);
                else if (strcmp(a, "--count") == 0)
                        o->count = atoi(v);
                else if (strcmp(a, "--rotate") == 0)
                        o->rotate = atoi(v);
                else if (strcmp(a, "--pid") == 0)
                        o->pid = atoi(v);
                else if (strcmp(a, "--timeout") == 0)
                        o->timeout = atoi(v);
                else if (strcmp(a, "--name") == 0)
                        o->name = v;
                else if (strcmp(a, "--prefix") == 0)
                        o->prefix = v;
                else if (strcmp(a, "--sock") == 0)
                        o->sock = v;
                else if (strcmp(a, "--file") == 0)
                        o->file = v;
                else if (strcmp(a, "--expect") == 0)
                        o->expect = v;
                else if (strcmp(a, "--vrt-launch") == 0)
                        o->env.vrt_launch = v;
                else if (strcmp(a, "--runtime") == 0)
                        o->env.runtime_dir = v;
                else if (strcmp(a, "--work") == 0)
                        o->env.work = v;
                else
                        usage();
        }
}

static void need_env(const struct opts *o) {
        if (!o->env.vrt_launch || !o->env.runtime_dir || !o->env.work || o->argc < 1 || o->runs < 1)
                usage();
        if (mkdir(o->env.work, 0755) < 0 && errno != EEXIST)
                die("mkdir %s: %s", o->env.work, strerror(errno));
}

/* One VM started and stopped; returns microseconds to running. */
static int64_t launch_one(enum mode mode, const char *name, struct env *e, int idx, long *ret_priv, long *ret_rss) {
        struct vm v;
        vm_init(&v, mode, name, e, idx);
        vm_start(&v, e);
        wait_all(&v, 1, WAIT_READY, 60);
        int64_t t = v.t_ready - v.t0;
        if (mode == MODE_VRT && ret_priv)
                proc_memory(v.pid, ret_priv, ret_rss);
        vm_stop(&v, e);
        wait_all(&v, 1, WAIT_EXIT, 30);
        if (!WIFEXITED(v.status) || WEXITSTATUS(v.status) != 0) {
                vm_log_tail(&v);
                die("%s: %s ended with status 0x%x after quit", name, mode_name(mode), v.status);
        }
        vm_done(&v);
        return t;
}

static int cmd_launch(struct opts *o) {
        need_env(o);
        if (!o->name)
                usage();
        o->env.qemu_argv = o->argv;
        for (int i = 0; i < o->runs; i++) {
                int64_t raw, vrt;
                long priv = 0, rss = 0;
                /* Alternate the order so drift hits both sides alike. */
                if (i % 2 == 0) {
                        raw = launch_one(MODE_RAW, o->name, &o->env, i, NULL, NULL);
                        vrt = launch_one(MODE_VRT, o->name, &o->env, i, &priv, &rss);
                } else {
                        vrt = launch_one(MODE_VRT, o->name, &o->env, i, &priv, &rss);
                        raw = launch_one(MODE_RAW, o->name, &o->env, i, NULL, NULL);
                }
                printf("launch %d %lld %lld %ld %ld\n", i, (long long)raw, (long long)vrt, priv, rss);
                fflush(stdout);
        }
        return 0;
}

/* Starts count VMs at once, waits until all run, then stops all at once. */
static void scale_round(enum mode mode, struct opts *o, int round) {
        static struct vm vms[MAX_VMS];
        int n = o->count;
        for (int i = 0; i < n; i++) {
                char name[64];
                snprintf(name, sizeof name, "%s%d", o->prefix, i + 1);
                vm_init(&vms[i], mode, name, &o->env, round * MAX_VMS + i);
        }
        int64_t t0 = now_us();
        for (int i = 0; i < n; i++)
                vm_start(&vms[i], &o->env);
        wait_all(vms, n, WAIT_READY, o->timeout);
        int64_t t_all = 0;
        for (int i = 0; i < n; i++)
                if (vms[i].t_ready - t0 > t_all)
                        t_all = vms[i].t_ready - t0;

        long priv[MAX_VMS], rss[MAX_VMS], pmed = 0, pmax = 0, rmed = 0;
        if (mode == MODE_VRT) {
                for (int i = 0; i < n; i++)
                        proc_memory(vms[i].pid, &priv[i], &rss[i]);
                qsort(priv, (size_t)n, sizeof priv[0], cmp_long);
                qsort(rss, (size_t)n, sizeof rss[0], cmp_long);
                pmed = priv[n / 2];
                pmax = priv[n - 1];
                rmed = rss[n / 2];
        }

        int64_t s0 = now_us();
        for (int i = 0; i < n; i++)
                vm_stop(&vms[i], &o->env);
        wait_all(vms, n, WAIT_EXIT, o->timeout);
        int64_t t_stop = 0;
        int bad = 0;
        for (int i = 0; i < n; i++) {
                if (vms[i].t_exit - s0 > t_stop)
                        t_stop = vms[i].t_exit - s0;
                if (!WIFEXITED(vms[i].status) || WEXITSTATUS(vms[i].status) != 0) {
                        vm_log_tail(&vms[i]);
                        bad++;
                }
                vm_done(&vms[i]);
        }
        if (bad)
                die("%d %s VMs did not end cleanly after quit", bad, mode == MODE_VRT ? "vrt" : "raw");
        printf("scale %d %s %d %lld %lld %ld %ld %ld\n", round, mode == MODE_VRT ? "vrt" : "raw", n,
               (long long)t_all, (long long)t_stop, pmed, pmax, rmed);
        fflush(stdout);
}

static int cmd_scale(struct opts *o) {
        need_env(o);
        if (!o->prefix || o->count < 1 || o->count > MAX_VMS)
                usage();
        o->env.qemu_argv = o->argv;
        for (int r = 0; r < o->runs; r++) {
                if (r % 2 == 0) {
                        scale_round(MODE_RAW_MANAGER, o, r);
                        scale_round(MODE_VRT, o, r);
                } else {
                        scale_round(MODE_VRT, o, r);
                        scale_round(MODE_RAW_MANAGER, o, r);
                }
        }
        return 0;
}

/* Runs argv to completion with its output in a pipe; microseconds. */
static int64_t exec_once(char **argv, const char *expect) {
        static char out[65536];
        size_t len = 0;
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                die("pipe: %s", strerror(errno));
        int64_t t0 = now_us();
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0)
                die("fork: %s", strerror(errno));
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                dup2(null, 0);
                dup2(pipefd[1], 1);
                dup2(pipefd[1], 2);
                execvp(argv[0], argv);
                dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        close(pipefd[1]);
        for (;;) {
                ssize_t n = read(pipefd[0], out + len, sizeof out - 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                len += (size_t)n;
                if (len == sizeof out - 1)
                        len = 0;
        }
        close(pipefd[0]);
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        int64_t t = now_us() - t0;
        out[len] = '\0';
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || (expect && !strstr(out, expect)))
                die("%s failed (status 0x%x%s): %s", argv[0], st, expect && !strstr(out, expect) ? ", expected output missing" : "", out);
        return t;
}

static int cmd_exec(struct opts *o) {
        char **cmds[16];
        int n = 0;
        if (o->argc < 1)
                usage();
        cmds[n++] = o->argv;
        for (int i = 0; i < o->argc; i++)
                if (strcmp(o->argv[i], "---") == 0) {
                        o->argv[i] = NULL;
                        if (n == 16)
                                usage();
                        cmds[n++] = o->argv + i + 1;
                }
        for (int r = 0; r < o->runs; r++)
                for (int k = 0; k < n; k++) {
                        int c = o->rotate ? (k + r) % n : k;    /* who goes first */
                        printf("exec %d %d %lld\n", r, c, (long long)exec_once(cmds[c], o->expect));
                        fflush(stdout);
                }
        return 0;
}

/* Polls sock until QMP reports running; returns microseconds since t0. */
static int64_t poll_running(const char *sock, int64_t t0, int timeout_s) {
        static const char *const cmds[] = { QMP_CAPS, QMP_STATUS, NULL };
        int64_t deadline = t0 + (int64_t)timeout_s * 1000000;
        struct qsess q;
        q.fd = -1;
        while (now_us() < deadline) {
                if (q.fd < 0) {
                        int fd = connect_unix(sock);
                        if (fd < 0) {
                                usleep(1000);
                                continue;
                        }
                        qsess_start(&q, fd, cmds);
                }
                /* Bounded per attempt: a connection that gets no answer
                 * is dropped and made anew rather than waited on. */
                int left = (int)((deadline - now_us()) / 1000);
                if (left > 2000)
                        left = 2000;
                if (!qsess_run(&q, left > 0 ? left : 1)) {
                        fprintf(stderr, "vrt-bench: %s: %s, reconnecting\n", sock,
                                q.failed ? q.last_error : q.eof ? "connection closed" :
                                q.greeted ? "no reply within 2 s" : "no greeting within 2 s");
                        close_fd(&q.fd);
                        usleep(1000);
                        continue;
                }
                if (q.last_running) {
                        int64_t t = now_us() - t0;
                        close_fd(&q.fd);
                        return t;
                }
                usleep(1000);
                q.done = false;
                q.next = 1;
                write_all(q.fd, QMP_STATUS);
        }
        die("%s: not running after %d s", sock, timeout_s);
}

static int cmd_spool(struct opts *o) {
        if (!o->file || !o->sock)
                usage();
        int64_t t0 = now_us();
        int fd = open(o->file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
                die("create %s: %s", o->file, strerror(errno));
        close(fd);
        printf("spool %lld\n", (long long)poll_running(o->sock, t0, o->timeout));
        return 0;
}

static int cmd_wait_running(struct opts *o) {
        if (!o->sock)
                usage();
        printf("running %lld\n", (long long)poll_running(o->sock, now_us(), o->timeout));
        return 0;
}

static int cmd_quit(struct opts *o) {
        static const char *const cmds[] = { QMP_CAPS, QMP_QUIT, NULL };
        struct qsess q;
        if (!o->sock)
                usage();
        int fd = connect_unix(o->sock);
        if (fd < 0)
                die("connect %s: %s", o->sock, strerror(-fd));
        qsess_start(&q, fd, cmds);
        if (!qsess_run(&q, 10000) && !q.done)
                die("%s: quit failed", o->sock);
        close(fd);
        return 0;
}

static void put32(unsigned char *p, uint32_t v) {
        p[0] = (unsigned char)v;
        p[1] = (unsigned char)(v >> 8);
        p[2] = (unsigned char)(v >> 16);
        p[3] = (unsigned char)(v >> 24);
}

/* A guest that costs no CPU: a multiboot image (a.out kludge, loaded at
 * 1 MiB) whose code is "cli; hlt; jmp $-2". QEMU loads it with -kernel; the
 * vCPU halts at once with interrupts off and the TCG thread sleeps. Padded
 * to 8 KiB, the size QEMU reads to look for a Linux header. */
static int cmd_halt_kernel(struct opts *o) {
        static unsigned char img[8192];
        const uint32_t magic = 0x1BADB002, flags = 0x00010000, base = 0x100000;
        if (!o->file)
                usage();
        put32(img + 0, magic);
        put32(img + 4, flags);
        put32(img + 8, (uint32_t)-(magic + flags));
        put32(img + 12, base);          /* header_addr */
        put32(img + 16, base);          /* load_addr */
        put32(img + 20, 0);             /* load_end_addr: the whole file */
        put32(img + 24, 0);             /* bss_end_addr: none */
        put32(img + 28, base + 32);     /* entry_addr: right after the header */
        static const unsigned char code[] = { 0xFA, 0xF4, 0xEB, 0xFD };
        memcpy(img + 32, code, sizeof code);
        int fd = open(o->file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, img, sizeof img) != (ssize_t)sizeof img || close(fd) < 0)
                die("write %s: %s", o->file, strerror(errno));
        return 0;
}

static int cmd_mem(struct opts *o) {
        long priv, rss;
        if (o->pid <= 0)
                usage();
        proc_memory(o->pid, &priv, &rss);
        printf("mem %ld %ld\n", priv, rss);
        return 0;
}

static volatile sig_atomic_t forward_sig;

static void on_signal(int sig) {
        forward_sig = sig;
}

/* Runs CMD as a child subreaper: daemons that double-fork (libvirtd's
 * QEMU) become our children and are reaped at once, where this host's
 * PID 1 would leave them as zombies for a second or more. SIGTERM/SIGINT
 * go to CMD; we exit with its status once every descendant is gone. */
static int cmd_subreaper(struct opts *o) {
        if (!o->file || o->argc < 1)
                usage();
        if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
                die("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
        struct sigaction sa = { .sa_handler = on_signal };
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        pid_t parent = getpid();
        pid_t main_pid = fork();
        if (main_pid < 0)
                die("fork: %s", strerror(errno));
        if (main_pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGTERM);
                if (getppid() != parent)
                        _exit(127);
                signal(SIGTERM, SIG_DFL);
                signal(SIGINT, SIG_DFL);
                execvp(o->argv[0], o->argv);
                dprintf(2, "vrt-bench: exec %s: %s\n", o->argv[0], strerror(errno));
                _exit(127);
        }
        FILE *f = fopen(o->file, "we");
        if (!f || fprintf(f, "%d\n", (int)main_pid) < 0 || fclose(f) != 0)
                die("write %s: %s", o->file, strerror(errno));
        int status = 1;
        for (;;) {
                int st;
                pid_t p = waitpid(-1, &st, 0);
                if (p < 0 && errno == EINTR) {
                        if (forward_sig) {
                                kill(main_pid, forward_sig);
                                forward_sig = 0;
                        }
                        continue;
                }
                if (p < 0)
                        break;          /* ECHILD: nothing left */
                if (p == main_pid)
                        status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        return status;
}

int main(int argc, char **argv) {
        struct opts o;
        if (argc < 2)
                usage();
        signal(SIGPIPE, SIG_IGN);
        parse(argc, argv, &o);
        if (strcmp(argv[1], "launch") == 0)
                return cmd_launch(&o);
        if (strcmp(argv[1], "scale") == 0)
                return cmd_scale(&o);
        if (strcmp(argv[1], "exec") == 0)
                return cmd_exec(&o);
        if (strcmp(argv[1], "spool") == 0)
                return cmd_spool(&o);
        if (strcmp(argv[1], "wait-running") == 0)
                return cmd_wait_running(&o);
        if (strcmp(argv[1], "quit") == 0)
                return cmd_quit(&o);
        if (strcmp(argv[1], "mem") == 0)
                return cmd_mem(&o);
        if (strcmp(argv[1], "subreaper") == 0)
                return cmd_subreaper(&o);
        if (strcmp(argv[1], "halt-kernel") == 0)
                return cmd_halt_kernel(&o);
        usage();
}
