#include "launcher/core/migreq.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int dir_path(const char *root, const char *dir, const char *file, char *buf, size_t len) {
        if ((size_t)snprintf(buf, len, "%s/%s%s%s", root, dir, file ? "/" : "", file ? file : "") >= len)
                return -ENAMETOOLONG;
        return 0;
}

int migreq_write(const char *root, const char *dir, const char *file, const char *text) {
        char d[4096], path[4200], tmp[4300];
        size_t n = strlen(text);
        int fd, r = 0;

        if ((r = dir_path(root, dir, NULL, d, sizeof d)) < 0 || (r = dir_path(root, dir, file, path, sizeof path)) < 0)
                return r;
        if (mkdir(d, 0755) < 0 && errno != EEXIST)
                return -errno;
        snprintf(tmp, sizeof tmp, "%s/.%s.%ld.tmp", d, file, (long)getpid());
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return -errno;
        if (write(fd, text, n) != (ssize_t)n || fsync(fd) < 0)
                r = errno ? -errno : -EIO;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r;
}

int migreq_read(const char *root, const char *dir, const char *file, char *buf, size_t len) {
        char path[4200];
        int r = dir_path(root, dir, file, path, sizeof path);
        if (r < 0)
                return r;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        ssize_t n = read(fd, buf, len - 1);
        r = n < 0 ? -errno : 0;
        close(fd);
        if (r < 0)
                return r;
        if ((size_t)n == len - 1)
                return -EFBIG;
        buf[n] = '\0';
        return 0;
}

void migreq_remove(const char *root, const char *dir, const char *file) {
        char path[4200];
        if (dir_path(root, dir, file, path, sizeof path) == 0)
                (void)unlink(path);
}

int migreq_get(const char *text, const char *key, char *buf, size_t len) {
        size_t k = strlen(key);
        for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
                if (strncmp(l, key, k) != 0 || l[k] != '=')
                        continue;
                const char *v = l + k + 1;
                size_t n = strcspn(v, "\n");
                if (n >= len)
                        n = len - 1;
                for (size_t i = 0; i < n; i++)
                        buf[i] = (unsigned char)v[i] < 0x20 || v[i] == 0x7f ? '?' : v[i];
                buf[n] = '\0';
                return 0;
        }
        return -ENOENT;
}

int migreq_incoming_mark(const char *runtime_dir, const char *name, unsigned timeout_s) {
        char file[300], text[128];
        if ((size_t)snprintf(file, sizeof file, "%s%s", name, MIGREQ_INCOMING_SUFFIX) >= sizeof file)
                return -ENAMETOOLONG;
        if (mkdir(runtime_dir, 0755) < 0 && errno != EEXIST)
                return -errno;
        snprintf(text, sizeof text, "timeout=%u\nsince=%lld\n", timeout_s, (long long)time(NULL));
        return migreq_write(runtime_dir, ".", file, text);
}

int migreq_incoming_take(const char *runtime_dir, const char *name, unsigned *ret_timeout_s) {
        char file[300], path[4400], text[256], v[32];
        struct stat st;
        if ((size_t)snprintf(file, sizeof file, "%s%s", name, MIGREQ_INCOMING_SUFFIX) >= sizeof file ||
            dir_path(runtime_dir, file, NULL, path, sizeof path) < 0)
                return -ENAMETOOLONG;
        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISREG(st.st_mode) || st.st_uid != geteuid())
                return 0;       /* not ours: not taken, not trusted */
        int r = migreq_read(runtime_dir, ".", file, text, sizeof text);
        (void)unlink(path);
        if (r < 0)
                return r == -ENOENT ? 0 : r;
        if (migreq_get(text, "timeout", v, sizeof v) < 0)
                return 0;
        long long t = atoll(v);
        if (migreq_get(text, "since", v, sizeof v) < 0)
                return 0;
        long long age = (long long)time(NULL) - atoll(v);
        if (t < 1 || t > 86400 || age < -5 || age > MIGREQ_INCOMING_MAX_AGE_S)
                return 0;
        *ret_timeout_s = (unsigned)t;
        return 1;
}

void migreq_incoming_remove(const char *runtime_dir, const char *name) {
        char file[300];
        if ((size_t)snprintf(file, sizeof file, "%s%s", name, MIGREQ_INCOMING_SUFFIX) < sizeof file)
                migreq_remove(runtime_dir, ".", file);
}

int migreq_check_migrating(const char *root, const char *name, const char *what, char *err, size_t errlen) {
        char path[4200], text[MIGREQ_TEXT_MAX], from[128] = "?", to[128] = "?", timeout[32] = "";
        struct stat st;
        int r = dir_path(root, MIGREQ_DIR, name, path, sizeof path);
        if (r < 0)
                return r;
        if (lstat(path, &st) < 0) {
                if (errno == ENOENT)
                        return 0;
                r = -errno;
                snprintf(err, errlen, "cannot read %s: %s", path, strerror(-r));
                return r;
        }
        if (!S_ISREG(st.st_mode))
                return 0;       /* not a request vrt migrate wrote */
        r = migreq_read(root, MIGREQ_DIR, name, text, sizeof text);
        if (r == -ENOENT || r == -EFBIG)
                return 0;       /* gone meanwhile, or longer than any request vrt migrate writes */
        if (r < 0) {
                snprintf(err, errlen, "cannot read %s: %s", path, strerror(-r));
                return r;
        }
        (void)migreq_get(text, "from", from, sizeof from);
        (void)migreq_get(text, "host", to, sizeof to);
        long long t = migreq_get(text, "timeout", timeout, sizeof timeout) == 0 ? atoll(timeout) : 0;
        if (t <= 0 || t > 86400)
                t = 86400;      /* unreadable: count it as going on for a day at most */
        if ((long long)time(NULL) - (long long)st.st_mtime > t + MIGREQ_LIVE_SLACK_S)
                return 0;
        snprintf(err, errlen, "%s is being migrated from host %s to host %s; %s", name, from, to, what);
        return -EAGAIN;
}
