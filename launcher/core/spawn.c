#include "launcher/core/spawn.h"

#include <errno.h>
#include <linux/capability.h>
#include <pthread.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launcher/core/strv.h"
#include "launcher/core/util.h"

extern char **environ;

#define SPAWN_MAX_FDS 64

/* Only async-signal-safe calls from here until execve: the parent may be
 * multi-threaded under sanitizers. Errors go to the child's stderr. */
static void child_fail(const struct spawn_options *o, const char *what, int error) {
        char buf[512];
        int n = snprintf(buf, sizeof buf, "%s%s: %s\n", o->fail_prefix ? o->fail_prefix : "cannot execute ", what,
                         strerror(error));
        if (n > 0 && write(STDERR_FILENO, buf, (size_t)n) < 0) {
                /* nowhere left to report */
        }
        _exit(127);
}

static void child_signals(void) {
        struct sigaction sa = { .sa_handler = SIG_DFL };
        sigset_t none;
        for (int s = 1; s < NSIG; s++)
                sigaction(s, &sa, NULL);        /* fails harmlessly for SIGKILL/SIGSTOP */
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Stdin /dev/null, stdout+stderr out (or /dev/null), the passed fds at
 * their targets, nothing else. */
static void child_fds(const struct spawn_options *o, int out) {
        int max_target = 2;
        int moved[SPAWN_MAX_FDS];

        /* Move every passed fd above all targets first, so no dup2 clobbers a
         * source that is still needed. */
        for (size_t i = 0; i < o->n_fds; i++)
                if (o->fds[i].target > max_target)
                        max_target = o->fds[i].target;
        if (o->n_fds > SPAWN_MAX_FDS)
                child_fail(o, "too many descriptors", E2BIG);
        for (size_t i = 0; i < o->n_fds; i++) {
                moved[i] = fcntl(o->fds[i].fd, F_DUPFD_CLOEXEC, max_target + 1);
                if (moved[i] < 0)
                        child_fail(o, "F_DUPFD", errno);
        }
        if (out >= 0 && (out = fcntl(out, F_DUPFD_CLOEXEC, max_target + 1)) < 0)
                child_fail(o, "F_DUPFD", errno);
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull < 0)
                child_fail(o, "/dev/null", errno);
        if (dup2(devnull, STDIN_FILENO) < 0 ||
            dup2(out >= 0 ? out : devnull, STDOUT_FILENO) < 0 ||
            dup2(out >= 0 ? out : devnull, STDERR_FILENO) < 0)
                child_fail(o, "dup2", errno);
        for (size_t i = 0; i < o->n_fds; i++)
                if (dup2(moved[i], o->fds[i].target) < 0)   /* dup2 clears FD_CLOEXEC */
                        child_fail(o, "dup2", errno);
        /* Everything else goes, including what we inherited without
         * FD_CLOEXEC at a number below the highest target that is no
         * target itself. */
        for (int fd = 3; fd <= max_target; fd++) {
                bool wanted = false;
                for (size_t i = 0; i < o->n_fds; i++)
                        wanted = wanted || o->fds[i].target == fd;
                if (!wanted)
                        close(fd);
        }
        if (syscall(SYS_close_range, (unsigned)max_target + 1, ~0U, 0) < 0)
                for (int fd = max_target + 1; fd < 65536; fd++)
                        close(fd);
}

/* No supplementary groups, the target uid/gid, an empty bounding set and
 * no capabilities in any set. Raw system calls only: this runs in a vfork
 * child, which shares the parent's memory (libcap-ng's state, glibc's
 * all-threads setxid machinery). */
static void child_drop_privileges(const struct spawn_options *o) {
        struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct none[2] = { { 0 } };

        if (syscall(SYS_setgroups, 0, NULL) < 0)
                child_fail(o, "dropping privileges (setgroups)", errno);
        if (syscall(SYS_setresgid, o->gid, o->gid, o->gid) < 0)
                child_fail(o, "dropping privileges (setresgid)", errno);
        /* Every capability the kernel knows, up to the first it does not. */
        for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
                if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
                        child_fail(o, "dropping privileges (PR_CAPBSET_DROP)", errno);
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
                child_fail(o, "dropping privileges (PR_CAP_AMBIENT)", errno);
        /* Leaving uid 0 clears the permitted and effective sets; then the
         * rest (inheritable), which dropping needs no privilege for. */
        if (syscall(SYS_setresuid, o->uid, o->uid, o->uid) < 0)
                child_fail(o, "dropping privileges (setresuid)", errno);
        if (syscall(SYS_capset, &hdr, none) < 0)
                child_fail(o, "dropping privileges (capset)", errno);
        if (getuid() != o->uid || geteuid() != o->uid || getegid() != o->gid)
                child_fail(o, "dropping privileges", EPERM);
}

static void child_run(const struct spawn_options *o, pid_t parent, int out) {
        if (o->death_signal) {
                if (prctl(PR_SET_PDEATHSIG, o->death_signal) < 0)
                        child_fail(o, "PR_SET_PDEATHSIG", errno);
                if (getppid() != parent)
                        _exit(127);     /* the parent is already gone */
        }
        if (o->session == SPAWN_SESSION_GROUP && setpgid(0, 0) < 0)
                child_fail(o, "setpgid", errno);
        if (o->session == SPAWN_SESSION_NEW && setsid() < 0)
                child_fail(o, "setsid", errno);
        if (!o->argv) {
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, o->fn_sigmask ? o->fn_sigmask : &none, NULL);
                for (size_t i = 0; i < o->n_close_fds; i++)
                        if (o->close_fds[i] >= 0)
                                close(o->close_fds[i]);
                int status = o->fn(o->userdata);
                fflush(NULL);
                _exit(status);
        }
        child_signals();
        child_fds(o, out);
        if (o->chdir_root && chdir("/") < 0)
                child_fail(o, "chdir /", errno);
        if (o->drop_privileges)
                child_drop_privileges(o);
        /* The kernel clears the parent-death signal when credentials
         * change, so it is (re)armed after the switch, then the parent
         * checked once more in case it died in between. */
        if (o->death_signal) {
                if (prctl(PR_SET_PDEATHSIG, o->death_signal) < 0)
                        child_fail(o, "PR_SET_PDEATHSIG", errno);
                if (getppid() != parent)
                        _exit(127);
        }
        if (o->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                child_fail(o, "PR_SET_NO_NEW_PRIVS", errno);
        execve(o->argv[0], o->argv, o->envp ? o->envp : environ);
        child_fail(o, o->argv[0], errno);
}

/* A program: vfork, as posix_spawn does. The child borrows our memory
 * until execve, so no page is copied or write-faulted on either side (a
 * few ms per start on a virtualised host, tools/bench/README.md row 1).
 * Every signal stays blocked until the child has reset its handlers, so
 * none of ours runs on the borrowed stack. Returns the pid or -1 (errno).
 * Its own function, so that nothing of the caller lives across vfork. */
static __attribute__((noinline)) pid_t vfork_exec(const struct spawn_options *o, pid_t parent, int out) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pid_t pid = vfork();
        if (pid == 0)
                child_run(o, parent, out);
        int saved = errno;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        errno = saved;
        return pid;
}

int spawn_process(const struct spawn_options *o, struct spawn_result *ret, char *err, size_t errlen) {
        int pipefd[2] = { -1, -1 }, out = o->stdout_fd, r;

        if (out == SPAWN_PIPE) {
                if (pipe2(pipefd, O_CLOEXEC) < 0) {
                        r = -errno;
                        snprintf(err, errlen, "pipe: %s", strerror(-r));
                        return r;
                }
                out = pipefd[1];
        }
        fflush(NULL);   /* a fn child must not write our buffered output again */
        pid_t parent = getpid();
        pid_t pid = o->argv ? vfork_exec(o, parent, out) : fork();
        if (pid == 0)
                child_run(o, parent, out);      /* a function, in a real fork */
        if (pid < 0) {
                r = -errno;
                snprintf(err, errlen, "fork: %s", strerror(-r));
                close_fd(&pipefd[0]);
                close_fd(&pipefd[1]);
                return r;
        }
        /* Also set it from the parent: whichever runs first wins the race
         * against a terminal signal sent to our process group. */
        if (o->session == SPAWN_SESSION_GROUP)
                setpgid(pid, pid);
        close_fd(&pipefd[1]);
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0) {
                r = -errno;
                snprintf(err, errlen, "pidfd_open: %s", strerror(-r));
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                close_fd(&pipefd[0]);
                return r;
        }
        fcntl(pidfd, F_SETFD, FD_CLOEXEC);
        if (pipefd[0] >= 0)
                fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
        *ret = (struct spawn_result){ .pid = pid, .pidfd = pidfd, .out_fd = pipefd[0] };
        return 0;
}

int spawn_resolve_user(const struct host_config *h, struct qemu_user *ret, char *err, size_t errlen) {
        struct qemu_user u = { .socket_gid = (gid_t)-1 };
        if (geteuid() == 0) {
                /* file:line of user= and group= (the file alone for the default user). */
                char at_user[4200], at_group[4200];
                snprintf(at_user, sizeof at_user, h->line_user ? "%s:%u" : "%s", h->path, h->line_user);
                snprintf(at_group, sizeof at_group, "%s:%u", h->path, h->line_group);
                struct passwd *pw = getpwnam(h->user);
                if (!pw) {
                        snprintf(err, errlen, "%s: user=%s does not exist (create it: useradd --system --no-create-home --shell /usr/sbin/nologin %s)",
                                 at_user, h->user, h->user);
                        return -EINVAL;
                }
                if (pw->pw_uid == 0) {
                        snprintf(err, errlen, "%s: user=%s is root; QEMU must run unprivileged", at_user, h->user);
                        return -EINVAL;
                }
                u.drop = true;
                u.uid = pw->pw_uid;
                u.gid = pw->pw_gid;
                if (h->group) {
                        struct group *gr = getgrnam(h->group);
                        if (!gr) {
                                snprintf(err, errlen, "%s: group=%s does not exist", at_group, h->group);
                                return -EINVAL;
                        }
                        u.socket_gid = gr->gr_gid;
                }
        }
        *ret = u;
        return 0;
}

int spawn_child(const struct spawn_request *req, pid_t *ret_pid, int *ret_pidfd, char *err, size_t errlen) {
        static char *const envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL };
        struct spawn_options o = {
                .argv = req->argv,
                .envp = envp,
                .fds = req->fds,
                .n_fds = req->n_fds,
                .stdout_fd = req->stdout_fd,
                .session = SPAWN_SESSION_GROUP,
                .death_signal = SIGKILL,
                .chdir_root = true,
                .drop_privileges = req->drop_privileges,
                .no_new_privs = true,
                .uid = req->uid,
                .gid = req->gid,
                .fail_prefix = "vrt-launch: cannot start QEMU: ",
        };
        struct spawn_result res;
        int r = spawn_process(&o, &res, err, errlen);
        if (r < 0)
                return r;
        *ret_pid = res.pid;
        *ret_pidfd = res.pidfd;
        return 0;
}

char **spawn_environment(const char *root, const char *runtime_dir, const char *notify) {
        static const char *const drop[] = { "NOTIFY_SOCKET=", "VRT_ROOT=", "VRT_RUNTIME_DIR=", "JOURNAL_STREAM=",
                                            "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=", "WATCHDOG_USEC=",
                                            "WATCHDOG_PID=", "INVOCATION_ID=" };
        struct strv v = { 0 };
        for (char **e = environ; e && *e; e++) {
                bool skip = false;
                for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
                        skip = skip || strncmp(*e, drop[i], strlen(drop[i])) == 0;
                if (!skip)
                        strv_add(&v, *e);
        }
        strv_addf(&v, "VRT_ROOT=%s", root);
        strv_addf(&v, "VRT_RUNTIME_DIR=%s", runtime_dir);
        if (notify)
                strv_addf(&v, "NOTIFY_SOCKET=%s", notify);
        if (v.error) {
                strv_done(&v);
                return NULL;
        }
        return v.items;
}

bool spawn_drain(int fd, char *buf, size_t cap, size_t *len) {
        for (;;) {
                char tmp[1024];
                ssize_t n = read(fd, tmp, sizeof tmp);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 && errno == EAGAIN;
                size_t take = (size_t)n < cap - 1 - *len ? (size_t)n : cap - 1 - *len;
                memcpy(buf + *len, tmp, take);
                *len += take;
                buf[*len] = '\0';
        }
}

int spawn_capture(char *const *argv, int timeout_ms, char *out, size_t outlen) {
        struct spawn_options o = { .argv = argv, .stdout_fd = SPAWN_PIPE, .fail_prefix = "vrt: cannot execute " };
        struct spawn_result res;
        char err[256];
        int status = 0;
        size_t len = 0;
        out[0] = '\0';
        int r = spawn_process(&o, &res, err, sizeof err);
        if (r < 0)
                return r;
        int64_t deadline = now_ms() + timeout_ms;
        bool open_ = true;
        while (open_) {
                int64_t left = deadline - now_ms();
                if (left <= 0) {
                        kill(res.pid, SIGKILL);
                        break;
                }
                struct pollfd pfd = { .fd = res.out_fd, .events = POLLIN };
                if (poll(&pfd, 1, (int)left) > 0)
                        open_ = spawn_drain(res.out_fd, out, outlen, &len);
        }
        close(res.out_fd);
        close(res.pidfd);
        while (waitpid(res.pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (open_)
                return -ETIMEDOUT;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
