#include "launcher/core/runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "launcher/core/fileio.h"

static int mkdir_p(const char *path, mode_t mode) {
        char *copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        for (char *p = copy + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(copy, 0755) < 0 && errno != EEXIST) {
                        int r = -errno;
                        free(copy);
                        return r;
                }
                *p = '/';
        }
        free(copy);
        if (mkdir(path, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static char *qemu_pid_path(const struct vm_paths *p) {
        char *s;
        return asprintf(&s, "%s/qemu.pid", p->run_dir) < 0 ? NULL : s;
}

/* How long a start waits for a momentary shared lock to go away. */
#define LOCK_BUSY_WAITS 20
#define LOCK_BUSY_WAIT_MS 10

int runtime_lock(const struct vm_paths *p, char *err, size_t errlen) {
        int r, fd = -1, busy_waits = 0;

        r = mkdir_p(p->run_dir, 0755);
        if (r < 0) {
                snprintf(err, errlen, "cannot create runtime directory %s: %s", p->run_dir, strerror(-r));
                return r;
        }
        for (int attempt = 0; attempt < 16; attempt++) {
                struct stat a, b;
                fd = open(p->lock_file, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (fd < 0 && errno == ENOENT) {
                        /* The holder removed the directory as it exited: recreate. */
                        r = mkdir_p(p->run_dir, 0755);
                        if (r < 0)
                                break;
                        continue;
                }
                if (fd < 0) {
                        r = -errno;
                        snprintf(err, errlen, "cannot open %s: %s", p->lock_file, strerror(-r));
                        return r;
                }
                if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                        r = -errno;
                        close(fd);
                        /* runtime_is_running() holds a shared lock for a
                         * moment (vrt list, vrt stop, the spool): wait that
                         * out rather than report a start as a second one. */
                        if (r == -EWOULDBLOCK && busy_waits++ < LOCK_BUSY_WAITS) {
                                struct timespec ts = { 0, LOCK_BUSY_WAIT_MS * 1000000L };
                                nanosleep(&ts, NULL);
                                attempt--;
                                continue;
                        }
                        if (r == -EWOULDBLOCK) {
                                pid_t pid = 0;
                                runtime_read_pid(p->pid_file, &pid);
                                if (pid > 0)
                                        snprintf(err, errlen, "VM is already running (supervisor pid %d)", (int)pid);
                                else
                                        snprintf(err, errlen, "VM is already running (lock %s is held)", p->lock_file);
                                return -EBUSY;
                        }
                        snprintf(err, errlen, "cannot lock %s: %s", p->lock_file, strerror(-r));
                        return r;
                }
                /* A previous holder may have unlinked the file between our
                 * open and flock: only a lock on the current file counts. */
                if (fstat(fd, &a) == 0 && stat(p->lock_file, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
                        return fd;
                close(fd);
                fd = -1;
        }
        snprintf(err, errlen, "cannot take the lock %s", p->lock_file);
        return -EAGAIN;
}

bool runtime_is_running(const struct vm_paths *p) {
        int fd = open(p->lock_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return false;
        bool held = flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
        close(fd);
        return held;
}

void runtime_clean(const struct vm_paths *p) {
        char *qpid = qemu_pid_path(p);
        unlink(p->qmp_sock);
        unlink(p->monitor_sock);
        unlink(p->console_sock);
        unlink(p->agent_sock);
        unlink(p->pid_file);
        if (qpid)
                unlink(qpid);
        free(qpid);
}

void runtime_remove(const struct vm_paths *p) {
        runtime_clean(p);
        unlink(p->lock_file);
        rmdir(p->run_dir);
}

int runtime_listen(const char *path, mode_t mode, gid_t gid, char *err, size_t errlen) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = -1, r;

        if (strlen(path) >= sizeof sa.sun_path) {
                snprintf(err, errlen, "socket path %s is too long", path);
                return -ENAMETOOLONG;
        }
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                r = -errno;
                goto fail;
        }
        unlink(path);
        /* Bind under a tight umask so the socket is never briefly open to all. */
        mode_t old = umask(0177);
        r = bind(fd, (struct sockaddr *)&sa, sizeof sa);
        umask(old);
        if (r < 0) {
                r = -errno;
                goto fail;
        }
        if (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) < 0) {
                r = -errno;
                goto fail;
        }
        if (chmod(path, mode) < 0 || listen(fd, 16) < 0) {
                r = -errno;
                goto fail;
        }
        return fd;
fail:
        snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(-r));
        if (fd >= 0) {
                close(fd);
                unlink(path);
        }
        return r;
}

int runtime_write_pid(const char *path, pid_t pid) {
        char tmp[4200], buf[32];
        int n = snprintf(buf, sizeof buf, "%d\n", (int)pid);
        if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
                return -ENAMETOOLONG;
        return fileio_write_runtime(tmp, path, buf, (size_t)n, 0644);
}

int runtime_read_pid(const char *path, pid_t *ret) {
        char buf[32];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0)
                return -EINVAL;
        buf[n] = '\0';
        char *end;
        long v = strtol(buf, &end, 10);
        if (v <= 0 || (*end && *end != '\n'))
                return -EINVAL;
        *ret = (pid_t)v;
        return 0;
}
