#include "launcher/core/spawn.h"

#include <cap-ng.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* Only async-signal-safe calls from here until execve: the parent may be
 * multi-threaded under sanitizers. Errors go to the output pipe. */
static void child_fail(const char *what, int error) {
        char buf[256];
        int n = snprintf(buf, sizeof buf, "vrt-launch: cannot start QEMU: %s: %s\n", what, strerror(error));
        if (n > 0 && write(STDERR_FILENO, buf, (size_t)n) < 0) {
                /* nowhere left to report */
        }
        _exit(127);
}

static void child_run(const struct spawn_request *req, pid_t parent) {
        sigset_t all;
        int max_target = 2;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
                child_fail("PR_SET_PDEATHSIG", errno);
        if (getppid() != parent)
                _exit(127);     /* the supervisor is already gone */
        if (setpgid(0, 0) < 0)
                child_fail("setpgid", errno);
        for (int s = 1; s < NSIG; s++)
                signal(s, SIG_DFL);
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);

        /* Move every passed fd above all targets first, so no dup2 clobbers a
         * source that is still needed. */
        for (size_t i = 0; i < req->n_fds; i++)
                if (req->fds[i].target > max_target)
                        max_target = req->fds[i].target;
        int moved[64];
        if (req->n_fds > 64)
                child_fail("too many descriptors", E2BIG);
        for (size_t i = 0; i < req->n_fds; i++) {
                moved[i] = fcntl(req->fds[i].fd, F_DUPFD_CLOEXEC, max_target + 1);
                if (moved[i] < 0)
                        child_fail("F_DUPFD", errno);
        }
        int out = req->stdout_fd >= 0 ? fcntl(req->stdout_fd, F_DUPFD_CLOEXEC, max_target + 1) : -1;
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull < 0)
                child_fail("/dev/null", errno);
        if (dup2(devnull, STDIN_FILENO) < 0 ||
            dup2(out >= 0 ? out : devnull, STDOUT_FILENO) < 0 ||
            dup2(out >= 0 ? out : devnull, STDERR_FILENO) < 0)
                child_fail("dup2", errno);
        for (size_t i = 0; i < req->n_fds; i++)
                if (dup2(moved[i], req->fds[i].target) < 0)   /* dup2 clears FD_CLOEXEC */
                        child_fail("dup2", errno);
        /* Everything else goes: nothing of the supervisor leaks into QEMU,
         * including what it inherited without FD_CLOEXEC at a number below
         * the highest target that is no target itself. */
        for (int fd = 3; fd <= max_target; fd++) {
                bool wanted = false;
                for (size_t i = 0; i < req->n_fds; i++)
                        wanted = wanted || req->fds[i].target == fd;
                if (!wanted)
                        close(fd);
        }
        if (syscall(SYS_close_range, (unsigned)max_target + 1, ~0U, 0) < 0)
                for (int fd = max_target + 1; fd < 65536; fd++)
                        close(fd);

        if (chdir("/") < 0)
                child_fail("chdir /", errno);
        if (req->drop_privileges) {
                /* No supplementary groups, the target uid/gid, an empty
                 * bounding set and no capabilities in any set. */
                capng_clear(CAPNG_SELECT_BOTH);
                int r = capng_change_id((int)req->uid, (int)req->gid, CAPNG_DROP_SUPP_GRP | CAPNG_CLEAR_BOUNDING);
                if (r < 0)
                        child_fail("dropping privileges (capng_change_id)", EPERM);
                if (getuid() != req->uid || geteuid() != req->uid || getegid() != req->gid)
                        child_fail("dropping privileges", EPERM);
        }
        /* The kernel clears the parent-death signal when credentials
         * change, so it is (re)armed after the switch, then the parent
         * checked once more in case it died in between. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
                child_fail("PR_SET_PDEATHSIG", errno);
        if (getppid() != parent)
                _exit(127);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                child_fail("PR_SET_NO_NEW_PRIVS", errno);

        char *const envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL };
        execve(req->argv[0], req->argv, envp);
        child_fail(req->argv[0], errno);
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
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0) {
                int r = -errno;
                snprintf(err, errlen, "fork: %s", strerror(-r));
                return r;
        }
        if (pid == 0)
                child_run(req, parent);

        /* Also set it from the parent: whichever runs first wins the race
         * against a terminal signal sent to our process group. */
        setpgid(pid, pid);
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0) {
                int r = -errno;
                snprintf(err, errlen, "pidfd_open: %s", strerror(-r));
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                return r;
        }
        fcntl(pidfd, F_SETFD, FD_CLOEXEC);
        *ret_pid = pid;
        *ret_pidfd = pidfd;
        return 0;
}
