#include "launcher/core/fileio.h"
#include "launcher/core/safepath.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int read_regular(const char *path, bool untrusted, bool shared, size_t max, char **ret_buf, size_t *ret_len,
                        char *err, size_t errlen) {
        char *buf = NULL;
        size_t got = 0;
        struct stat st;
        int fd, r;

        /* O_NONBLOCK: opening a FIFO must not hang; S_ISREG refuses it. */
        if (shared) {
                fd = safepath_open_shared(path, err, errlen);
                if (fd < 0)
                        return fd == -ELOOP || fd == -EMLINK ? -EINVAL : fd;
        } else {
                fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (untrusted ? O_NOFOLLOW : 0));
        }
        if (fd < 0) {
                r = -errno;
                if (r == -ELOOP && untrusted) {
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: a symbolic link (not followed)", path);
                } else {
                        snprintf(err, errlen, "%s: %s", path, strerror(-r));
                }
                return r;
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: %s", path, strerror(-r));
                goto fail;
        }
        if (!S_ISREG(st.st_mode)) {
                r = -EINVAL;
                snprintf(err, errlen, "%s: not a regular file", path);
                goto fail;
        }
        /* A second name of some other file (say, a root-only one). */
        if (untrusted && st.st_nlink > 1) {
                r = -EINVAL;
                snprintf(err, errlen, "%s: a hard link (%ju names): not read", path, (uintmax_t)st.st_nlink);
                goto fail;
        }
        if ((unsigned long long)st.st_size > max) {
                r = -EINVAL;
                snprintf(err, errlen, "%s: %lld bytes, at most %zu", path, (long long)st.st_size, max);
                goto fail;
        }
        buf = malloc((size_t)st.st_size + 1);
        if (!buf) {
                r = -ENOMEM;
                goto fail;
        }
        while (got < (size_t)st.st_size) {
                ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = -errno;
                        snprintf(err, errlen, "%s: %s", path, strerror(-r));
                        goto fail;
                }
                if (n == 0)
                        break;
                got += (size_t)n;
        }
        buf[got] = '\0';
        close(fd);
        *ret_buf = buf;
        *ret_len = got;
        return 0;
fail:
        free(buf);
        close(fd);
        return r;
}

int fileio_read_regular(const char *path, size_t max, char **ret_buf, size_t *ret_len, char *err, size_t errlen) {
        return read_regular(path, false, false, max, ret_buf, ret_len, err, errlen);
}

int fileio_read_untrusted(const char *path, size_t max, char **ret_buf, size_t *ret_len, char *err, size_t errlen) {
        return read_regular(path, true, false, max, ret_buf, ret_len, err, errlen);
}

int fileio_read_shared(const char *path, size_t max, char **ret_buf, size_t *ret_len, char *err, size_t errlen) {
        return read_regular(path, false, true, max, ret_buf, ret_len, err, errlen);
}

int fileio_fsync_dir(const char *path) {
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        int r = fsync(fd) < 0 ? -errno : 0;
        close(fd);
        return r;
}

int fileio_rename_noreplace(int dfd, const char *from, const char *to) {
        struct stat st;
        if (renameat2(dfd, from, dfd, to, RENAME_NOREPLACE) == 0)
                return 0;
        if (errno != EINVAL && errno != ENOSYS)
                return -errno;
        if (fstatat(dfd, from, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode)) {
                /* link() fails on an existing target: atomic, like the real thing. */
                if (linkat(dfd, from, dfd, to, 0) < 0)
                        return -errno;
                unlinkat(dfd, from, 0);
                return 0;
        }
        if (fstatat(dfd, to, &st, AT_SYMLINK_NOFOLLOW) == 0)
                return -EEXIST;
        if (errno != ENOENT)
                return -errno;
        return renameat(dfd, from, dfd, to) < 0 ? -errno : 0;
}

static int write_replace(const char *tmp, const char *path, const void *buf, size_t len, mode_t mode, bool sync) {
        const char *p = buf;
        int r = 0;

        if (unlink(tmp) < 0 && errno != ENOENT)
                return -errno;
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, mode);
        if (fd < 0)
                return -errno;
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = -errno;
                        break;
                }
                p += n;
                len -= (size_t)n;
        }
        if (r == 0 && sync && fsync(fd) < 0)
                r = -errno;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r;
}

int fileio_write_atomic(const char *tmp, const char *path, const void *buf, size_t len, mode_t mode) {
        return write_replace(tmp, path, buf, len, mode, true);
}

int fileio_write_runtime(const char *tmp, const char *path, const void *buf, size_t len, mode_t mode) {
        return write_replace(tmp, path, buf, len, mode, false);
}
