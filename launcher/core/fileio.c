#include "launcher/core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fileio_read_regular(const char *path, size_t max, char **ret_buf, size_t *ret_len, char *err, size_t errlen) {
        char *buf = NULL;
        size_t got = 0;
        struct stat st;
        int fd, r;

        /* O_NONBLOCK: opening a FIFO must not hang; S_ISREG refuses it. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: %s", path, strerror(-r));
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
