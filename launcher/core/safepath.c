#include "launcher/core/safepath.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifdef __has_include
#if __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#define HAVE_OPENAT2_H 1
#endif
#endif

#ifndef HAVE_OPENAT2_H
struct open_how {
        uint64_t flags;
        uint64_t mode;
        uint64_t resolve;
};
#define RESOLVE_NO_SYMLINKS 0x04
#define RESOLVE_BENEATH 0x08
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif

/* 0 until tried, 1 works, -1 the kernel (or a seccomp filter) lacks it. */
static int openat2_state;

void safepath_without_openat2(void) {
        openat2_state = -1;
}

static int why(char *err, size_t errlen, const char *shown, int r) {
        if (r == -ELOOP)
                snprintf(err, errlen, "%s: a symbolic link (not followed)", shown);
        else if (r == -EXDEV)
                snprintf(err, errlen, "%s: leads out of its directory (not followed)", shown);
        else
                snprintf(err, errlen, "%s: %s", shown, strerror(-r));
        return r;
}

/* The walk without openat2: every directory component with O_NOFOLLOW,
 * no "." or ".." and no absolute path. */
static int walk_openat(int dfd, const char *rel, int flags, mode_t mode) {
        char *copy = strdup(rel), *p, *slash;
        int cur = dfd, r;

        if (!copy)
                return -ENOMEM;
        p = copy;
        while ((slash = strchr(p, '/'))) {
                *slash = '\0';
                if (!*p || strcmp(p, ".") == 0 || strcmp(p, "..") == 0) {
                        r = -EXDEV;
                        goto out;
                }
                int next = openat(cur, p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0) {
                        r = errno == ENOTDIR ? -ELOOP : -errno;
                        /* O_PATH|O_NOFOLLOW on a symlink gives ENOTDIR with O_DIRECTORY. */
                        if (r == -ELOOP) {
                                struct stat st;
                                if (fstatat(cur, p, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISLNK(st.st_mode))
                                        r = -ENOTDIR;
                        }
                        goto out;
                }
                if (cur != dfd)
                        close(cur);
                cur = next;
                p = slash + 1;
        }
        if (!*p || strcmp(p, ".") == 0 || strcmp(p, "..") == 0) {
                r = -EXDEV;
                goto out;
        }
        r = openat(cur, p, flags | O_NOFOLLOW, mode);
        if (r < 0)
                r = -errno;
out:
        if (cur != dfd)
                close(cur);
        free(copy);
        return r;
}

static int raw_openat(int dfd, const char *rel, int flags, mode_t mode) {
        if (rel[0] == '/')
                return -EXDEV;
        if (openat2_state >= 0) {
                struct open_how how = {
                        .flags = (uint64_t)flags | O_NOFOLLOW,
                        .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
                        .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH,
                };
                long fd = syscall(SYS_openat2, dfd, rel, &how, sizeof how);
                if (fd >= 0) {
                        openat2_state = 1;
                        return (int)fd;
                }
                /* ENOSYS: before Linux 5.6; EPERM: a seccomp filter that does not know it. */
                if (errno != ENOSYS && errno != EPERM) {
                        openat2_state = 1;
                        return -errno;
                }
                if (errno == ENOSYS)
                        openat2_state = -1;
        }
        return walk_openat(dfd, rel, flags, mode);
}

static int check_fd(int fd, const char *shown, unsigned checks, char *err, size_t errlen) {
        struct stat st;
        if (fstat(fd, &st) < 0)
                return why(err, errlen, shown, -errno);
        if ((checks & SAFEPATH_DIR) ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
                snprintf(err, errlen, "%s: not a %s", shown, (checks & SAFEPATH_DIR) ? "directory" : "regular file");
                return -EINVAL;
        }
        if ((checks & SAFEPATH_ONE_LINK) && !S_ISDIR(st.st_mode) && st.st_nlink != 1) {
                snprintf(err, errlen, "%s: a hard link (%ju names): not touched", shown, (uintmax_t)st.st_nlink);
                return -EMLINK;
        }
        return 0;
}

int safepath_openat(int dfd, const char *rel, const char *shown, int flags, mode_t mode, unsigned checks,
                    char *err, size_t errlen) {
        bool trunc = flags & O_TRUNC;
        /* A FIFO must not block the open; regular files ignore O_NONBLOCK. */
        int fd = raw_openat(dfd, rel, (flags & ~O_TRUNC) | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, mode);
        int r;

        if (fd == -ENOTDIR && (flags & O_DIRECTORY)) {
                /* O_DIRECTORY|O_NOFOLLOW on a symbolic link says ENOTDIR. */
                struct stat st;
                if (fstatat(dfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
                        fd = -ELOOP;
        }
        if (fd < 0)
                return why(err, errlen, shown ? shown : rel, fd);
        r = check_fd(fd, shown ? shown : rel, checks, err, errlen);
        if (r == 0 && !(checks & SAFEPATH_DIR)) {
                int fl = fcntl(fd, F_GETFL);
                if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
                        r = why(err, errlen, shown ? shown : rel, -errno);
        }
        if (r == 0 && trunc && ftruncate(fd, 0) < 0)
                r = why(err, errlen, shown ? shown : rel, -errno);
        if (r < 0) {
                close(fd);
                return r;
        }
        return fd;
}

/* safepath_openat() of rel below directory dir (freed here); path is
 * the whole name, for messages. */
static int open_in(char *dir, const char *rel, const char *path, int flags, mode_t mode, unsigned checks, char *err,
                   size_t errlen) {
        int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
                int r = -errno;
                snprintf(err, errlen, "%s: %s", dir, strerror(-r));
                free(dir);
                return r;
        }
        free(dir);
        int fd = safepath_openat(dfd, rel, path, flags, mode, checks, err, errlen);
        close(dfd);
        return fd;
}

int safepath_open(const char *path, int flags, mode_t mode, unsigned checks, char *err, size_t errlen) {
        const char *slash = strrchr(path, '/');
        char *dir;

        if (!slash)
                return safepath_openat(AT_FDCWD, path, path, flags, mode, checks, err, errlen);
        dir = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
        if (!dir)
                return -ENOMEM;
        return open_in(dir, slash + 1, path, flags, mode, checks, err, errlen);
}

int safepath_open_beneath(const char *base, const char *path, int flags, mode_t mode, unsigned checks, char *err,
                          size_t errlen) {
        size_t n = strlen(base);
        while (n > 1 && base[n - 1] == '/')
                n--;
        if (strncmp(path, base, n) != 0 || path[n] != '/' || !path[n + 1])
                return safepath_open(path, flags, mode, checks, err, errlen);
        char *dir = strndup(base, n);
        if (!dir)
                return -ENOMEM;
        const char *rel = path + n + 1;
        while (*rel == '/')
                rel++;
        return open_in(dir, rel, path, flags, mode, checks, err, errlen);
}

int safepath_hand_over(const char *path, uid_t uid, gid_t gid, mode_t mode, unsigned checks, char *err,
                       size_t errlen) {
        int flags = (checks & SAFEPATH_DIR) ? O_RDONLY | O_DIRECTORY : O_RDONLY;
        int fd = safepath_open(path, flags, 0, checks | SAFEPATH_ONE_LINK, err, errlen), r = 0;
        if (fd < 0)
                return fd;
        if (fchown(fd, uid, gid) < 0 || fchmod(fd, mode) < 0)
                r = why(err, errlen, path, -errno);
        close(fd);
        return r;
}

int safepath_open_shared(const char *path, char *err, size_t errlen) {
        struct stat lst, st;
        bool link = false;
        int fd;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
        if (fd < 0 && errno == ELOOP) {
                /* A link root made itself (an admin's images/x -> /srv/x) is followed. */
                if (lstat(path, &lst) < 0)
                        return why(err, errlen, path, -errno);
                if (lst.st_uid != geteuid()) {
                        snprintf(err, errlen, "%s: a symbolic link owned by uid %u, not root (not followed)", path,
                                 (unsigned)lst.st_uid);
                        return -ELOOP;
                }
                link = true;
                fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        }
        if (fd < 0)
                return why(err, errlen, path, -errno);
        if (link) {
                struct stat again;
                if (lstat(path, &again) < 0 || again.st_ino != lst.st_ino || again.st_dev != lst.st_dev ||
                    again.st_uid != geteuid()) {
                        close(fd);
                        snprintf(err, errlen, "%s: the symbolic link changed while it was opened (not read)", path);
                        return -ELOOP;
                }
        }
        if (fstat(fd, &st) < 0) {
                int r = -errno;
                close(fd);
                return why(err, errlen, path, r);
        }
        if (!S_ISREG(st.st_mode)) {
                close(fd);
                snprintf(err, errlen, "%s: not a regular file", path);
                return -EINVAL;
        }
        if (st.st_nlink > 1 && (st.st_mode & 0444) != 0444) {
                close(fd);
                snprintf(err, errlen, "%s: a hard link (%ju names) to a file not everybody may read: not read", path,
                         (uintmax_t)st.st_nlink);
                return -EMLINK;
        }
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0)
                (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
        return fd;
}

int safepath_check_planted(const char *path, unsigned checks, char *err, size_t errlen) {
        struct stat st;
        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : why(err, errlen, path, -errno);
        if (S_ISLNK(st.st_mode))
                return why(err, errlen, path, -ELOOP);
        if ((checks & SAFEPATH_DIR) ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
                snprintf(err, errlen, "%s: not a %s", path, (checks & SAFEPATH_DIR) ? "directory" : "regular file");
                return -EINVAL;
        }
        if (!S_ISDIR(st.st_mode) && st.st_nlink != 1) {
                snprintf(err, errlen, "%s: a hard link (%ju names): not touched", path, (uintmax_t)st.st_nlink);
                return -EMLINK;
        }
        return 0;
}
