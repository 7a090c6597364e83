#include "images/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Long target names are cut in the temporary name so it stays below
 * NAME_MAX; the random part keeps it unique. */
#define TMP_NAME_PREFIX_MAX 200

static uint64_t random_u64(void) {
        uint64_t v = 0;
        struct timespec ts;

        if (getrandom(&v, sizeof v, GRND_NONBLOCK) == (ssize_t)sizeof v)
                return v;
        /* Uniqueness, not secrecy, is what matters: O_EXCL catches clashes. */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ((uint64_t)getpid() << 40) ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)ts.tv_nsec;
}

static int split_path(const char *path, char **ret_dir, char **ret_name) {
        const char *slash = strrchr(path, '/');
        char *dir = NULL, *name = NULL;

        if (slash) {
                size_t dlen = slash == path ? 1 : (size_t)(slash - path);
                dir = strndup(path, dlen);
                name = strdup(slash + 1);
        } else {
                dir = strdup(".");
                name = strdup(path);
        }
        if (!dir || !name) {
                free(dir);
                free(name);
                return -ENOMEM;
        }
        *ret_dir = dir;
        *ret_name = name;
        return 0;
}

static int open_impl(const char *path, mode_t mode, bool named, struct atomic_file **ret, char *err,
                     size_t errlen) {
        struct atomic_file *af = NULL;
        char *dir = NULL;
        struct stat st;
        int r;

        if (!path || !*path) {
                snprintf(err, errlen, "empty file name");
                return -EINVAL;
        }
        af = calloc(1, sizeof *af);
        if (!af) {
                snprintf(err, errlen, "%s: out of memory", path);
                return -ENOMEM;
        }
        af->dir_fd = -1;
        af->fd = -1;
        af->path = strdup(path);
        if (!af->path || split_path(path, &dir, &af->name) < 0) {
                r = -ENOMEM;
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
        }
        if (!*af->name || strcmp(af->name, ".") == 0 || strcmp(af->name, "..") == 0) {
                r = -EISDIR;
                snprintf(err, errlen, "%s: names a directory, not a file", path);
                goto fail;
        }

        af->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (af->dir_fd < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: cannot open directory %s: %s", path, dir, strerror(errno));
                goto fail;
        }
        if (fstatat(af->dir_fd, af->name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                r = -EEXIST;
                snprintf(err, errlen, "%s: already exists", path);
                goto fail;
        }
        if (errno != ENOENT) {
                r = -errno;
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
                goto fail;
        }

        if (!named) {
                /* An unnamed file cannot be left behind, not even by SIGKILL
                 * or a power cut. NFS and some others lack O_TMPFILE. */
                af->fd = openat(af->dir_fd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, mode);
                if (af->fd < 0 && errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
                        r = -errno;
                        snprintf(err, errlen, "%s: cannot create a file in %s: %s", path, dir, strerror(errno));
                        goto fail;
                }
        }
        for (int attempt = 0; af->fd < 0 && attempt < 16; attempt++) {
                free(af->tmp_name);
                if (asprintf(&af->tmp_name, ".%.*s.%016llx.tmp", TMP_NAME_PREFIX_MAX, af->name,
                             (unsigned long long)random_u64()) < 0) {
                        af->tmp_name = NULL;
                        r = -ENOMEM;
                        snprintf(err, errlen, "%s: out of memory", path);
                        goto fail;
                }
                af->fd = openat(af->dir_fd, af->tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
                if (af->fd < 0 && errno != EEXIST)
                        break;
        }
        if (af->fd < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: cannot create a file in %s: %s", path, dir, strerror(errno));
                /* Nothing was created, so there is nothing to unlink. */
                free(af->tmp_name);
                af->tmp_name = NULL;
                goto fail;
        }

        free(dir);
        *ret = af;
        return 0;

fail:
        free(dir);
        atomic_file_free(af);
        return r;
}

int atomic_file_open(const char *path, mode_t mode, struct atomic_file **ret, char *err, size_t errlen) {
        return open_impl(path, mode, false, ret, err, errlen);
}

int atomic_file_open_named(const char *path, mode_t mode, struct atomic_file **ret, char *err, size_t errlen) {
        return open_impl(path, mode, true, ret, err, errlen);
}

/* Gives the file its final name without replacing an existing one. An
 * unnamed file is linked through /proc (linkat with AT_EMPTY_PATH would
 * need CAP_DAC_READ_SEARCH). A named one is renamed; NFS and some other
 * file systems lack RENAME_NOREPLACE, and link+unlink has the same
 * no-replace semantics there. */
static int publish(struct atomic_file *af) {
        char fdpath[64];

        if (!af->tmp_name) {
                snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", af->fd);
                return linkat(AT_FDCWD, fdpath, af->dir_fd, af->name, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
        }
        if (renameat2(af->dir_fd, af->tmp_name, af->dir_fd, af->name, RENAME_NOREPLACE) == 0)
                return 0;
        if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
                return -errno;
        if (linkat(af->dir_fd, af->tmp_name, af->dir_fd, af->name, 0) < 0)
                return -errno;
        /* The file is in place; a leftover temporary name would only be a
         * second link to the same complete file. */
        (void)unlinkat(af->dir_fd, af->tmp_name, 0);
        return 0;
}

int atomic_file_commit(struct atomic_file *af, char *err, size_t errlen) {
        int r;

        if (fsync(af->fd) < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: fsync: %s", af->path, strerror(errno));
                return r;
        }
        r = publish(af);
        if (r < 0) {
                if (r == -EEXIST)
                        snprintf(err, errlen, "%s: already exists", af->path);
                else
                        snprintf(err, errlen, "%s: cannot link into place: %s", af->path, strerror(-r));
                return r;
        }
        /* Without this the new name may vanish in a crash. A failure here
         * takes the name away again, so that failure always means "no file". */
        if (!af->skip_dir_sync && fsync(af->dir_fd) < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: fsync of directory: %s", af->path, strerror(errno));
                (void)unlinkat(af->dir_fd, af->name, 0);
                if (af->tmp_name)
                        (void)unlinkat(af->dir_fd, af->tmp_name, 0);
                return r;
        }
        af->committed = true;
        if (close(af->fd) < 0) {
                af->fd = -1;
                r = -errno;
                snprintf(err, errlen, "%s: close: %s", af->path, strerror(errno));
                return r;
        }
        af->fd = -1;
        return 0;
}

struct atomic_file *atomic_file_free(struct atomic_file *af) {
        if (!af)
                return NULL;
        if (af->fd >= 0)
                close(af->fd);
        af->fd = -1;
        if (!af->committed && af->tmp_name && af->dir_fd >= 0)
                (void)unlinkat(af->dir_fd, af->tmp_name, 0);
        if (af->dir_fd >= 0)
                close(af->dir_fd);
        af->dir_fd = -1;
        free(af->tmp_name);
        free(af->name);
        free(af->path);
        free(af);
        return NULL;
}
