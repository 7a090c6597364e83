#include "launcher/core/lease.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "launcher/core/props.h"

static bool host_name_valid(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > LEASE_HOST_MAX)
                return false;
        for (const char *c = s; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                      *c == '.' || *c == '_' || *c == '-'))
                        return false;
        return true;
}

int lease_host_name(char *buf, size_t len, char *err, size_t errlen) {
        const char *env = getenv("VRT_HOST");
        struct utsname u;
        const char *name = env;

        if (!name || !*name) {
                if (uname(&u) < 0) {
                        int r = -errno;
                        snprintf(err, errlen, "uname: %s", strerror(-r));
                        return r;
                }
                name = u.nodename;
        }
        if (!host_name_valid(name)) {
                snprintf(err, errlen, "%s \"%.80s\" is not a usable host name (letters, digits, '.', '_', '-'; at most %d)",
                         env && *env ? "VRT_HOST" : "the node name", name, LEASE_HOST_MAX);
                return -EINVAL;
        }
        snprintf(buf, len, "%s", name);
        return 0;
}

static int parse_number(const char *v, long long max, long long *ret) {
        char *end;
        errno = 0;
        if (*v < '0' || *v > '9')
                return -EINVAL;
        long long n = strtoll(v, &end, 10);
        if (errno || *end || n > max)
                return -EINVAL;
        *ret = n;
        return 0;
}

static int lease_key(const char *key, const char *value, unsigned line, void *userdata, char *err, size_t errlen) {
        struct lease_holder *h = userdata;
        long long n;

        if (strcmp(key, "host") == 0) {
                if (!host_name_valid(value))
                        goto bad;
                snprintf(h->host, sizeof h->host, "%s", value);
        } else if (strcmp(key, "pid") == 0) {
                if (parse_number(value, INT32_MAX, &n) < 0)
                        goto bad;
                h->pid = (long)n;
        } else if (strcmp(key, "since") == 0) {
                if (parse_number(value, INT64_MAX / 2, &n) < 0)
                        goto bad;
                h->since = n;
        } else if (strcmp(key, "boot_id") == 0) {
                size_t l = strlen(value);
                if (l == 0 || l >= sizeof h->boot_id || strspn(value, "0123456789abcdef-") != l)
                        goto bad;
                memcpy(h->boot_id, value, l + 1);
        }
        return 0;
bad:
        snprintf(err, errlen, "invalid %s=%.80s", key, value);
        return -EINVAL;
}

int lease_parse(const char *text, size_t len, struct lease_holder *ret, char *err, size_t errlen) {
        *ret = (struct lease_holder){ 0 };
        return props_parse_buffer(LEASE_FILE, text, len, lease_key, ret, err, errlen);
}

void lease_describe(const struct lease_holder *h, char *buf, size_t len) {
        char since[32] = "an unknown time";
        struct tm tm;
        time_t t = (time_t)h->since;

        if (h->since > 0 && localtime_r(&t, &tm))
                strftime(since, sizeof since, "%Y-%m-%d %H:%M:%S", &tm);
        if (!h->host[0])
                snprintf(buf, len, "a host that is still taking the lease");
        else if (h->pid > 0)
                snprintf(buf, len, "host %s (pid %ld, since %s)", h->host, h->pid, since);
        else
                snprintf(buf, len, "host %s (since %s)", h->host, since);
}

/* Opens vm_dir/lease without following a link and checks that it is a
 * regular file with one name: root writes it, and a link planted in a
 * directory someone else can write must not make root truncate another
 * file. */
static int open_lease(const char *vm_dir, int flags, char *err, size_t errlen) {
        int dfd = open(vm_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
                int r = -errno;
                snprintf(err, errlen, "%s: %s", vm_dir, strerror(-r));
                return r;
        }
        int fd = openat(dfd, LEASE_FILE, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, 0644);
        int r = fd < 0 ? -errno : 0;
        close(dfd);
        if (fd < 0) {
                snprintf(err, errlen, "%s/%s: %s", vm_dir, LEASE_FILE,
                         r == -ELOOP ? "is a symbolic link" : strerror(-r));
                return r == -ELOOP ? -EINVAL : r;
        }
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
                snprintf(err, errlen, "%s/%s: not a regular file with a single name", vm_dir, LEASE_FILE);
                close(fd);
                return -EINVAL;
        }
        return fd;
}

static void read_holder(int fd, struct lease_holder *h) {
        char buf[LEASE_TEXT_MAX], msg[256];
        ssize_t n = pread(fd, buf, sizeof buf, 0);

        *h = (struct lease_holder){ 0 };
        if (n > 0 && (size_t)n < sizeof buf && lease_parse(buf, (size_t)n, h, msg, sizeof msg) < 0)
                *h = (struct lease_holder){ 0 };
}

static int lock_whole(int fd, short type, int cmd, struct flock *fl) {
        *fl = (struct flock){ .l_type = type, .l_whence = SEEK_SET };
        return fcntl(fd, cmd, fl);
}

static void read_boot_id(char *buf, size_t len) {
        FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
        buf[0] = '\0';
        if (f) {
                if (fgets(buf, (int)len, f))
                        buf[strcspn(buf, "\n")] = '\0';
                fclose(f);
        }
}

int lease_acquire(const char *vm_dir, const char *name, const char *host,
                  struct lease_holder *stale, char *err, size_t errlen) {
        struct flock fl;
        struct lease_holder h;
        char text[LEASE_TEXT_MAX], who[256], boot_id[40];
        int fd, r;

        *stale = (struct lease_holder){ 0 };
        fd = open_lease(vm_dir, O_RDWR | O_CREAT, err, errlen);
        if (fd < 0)
                return fd;
        if (lock_whole(fd, F_WRLCK, F_OFD_SETLK, &fl) < 0) {
                r = -errno;
                if (r == -EAGAIN || r == -EACCES) {
                        read_holder(fd, &h);
                        lease_describe(&h, who, sizeof who);
                        snprintf(err, errlen, "%s runs on %s; not started", name, who);
                        r = -EBUSY;
                } else
                        snprintf(err, errlen, "cannot lock %s/%s: %s", vm_dir, LEASE_FILE, strerror(-r));
                close(fd);
                return r;
        }
        read_holder(fd, stale);
        read_boot_id(boot_id, sizeof boot_id);
        int n = snprintf(text, sizeof text, "host=%s\npid=%ld\nsince=%lld\n%s%s%s", host, (long)getpid(),
                         (long long)time(NULL), boot_id[0] ? "boot_id=" : "", boot_id, boot_id[0] ? "\n" : "");
        if (ftruncate(fd, 0) < 0 || pwrite(fd, text, (size_t)n, 0) != n) {
                r = errno ? -errno : -EIO;
                snprintf(err, errlen, "cannot write %s/%s: %s", vm_dir, LEASE_FILE, strerror(-r));
                close(fd);
                return r;
        }
        return fd;
}

int lease_sync(int fd) {
        return fsync(fd) < 0 ? -errno : 0;
}

void lease_release(int *fd) {
        if (*fd < 0)
                return;
        /* Empty first: a file with text and no lock reads as a crash. */
        if (ftruncate(*fd, 0) == 0)
                (void)fsync(*fd);
        close(*fd);
        *fd = -1;
}

int lease_probe(const char *vm_dir, struct lease_holder *ret) {
        struct flock fl;
        char msg[256];
        int fd;

        *ret = (struct lease_holder){ 0 };
        fd = open_lease(vm_dir, O_RDONLY, msg, sizeof msg);
        if (fd == -ENOENT)
                return 0;
        if (fd < 0)
                return fd;
        /* F_OFD_GETLK only asks; it takes nothing, so it never delays a start. */
        if (lock_whole(fd, F_WRLCK, F_OFD_GETLK, &fl) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        if (fl.l_type == F_UNLCK) {
                close(fd);
                return 0;
        }
        read_holder(fd, ret);
        close(fd);
        return 1;
}

/* Undoes mountinfo's octal escapes (\040 for a blank) in place. */
static void unescape_octal(char *s) {
        char *w = s;
        for (char *r = s; *r; r++, w++) {
                if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
                    r[3] <= '7') {
                        *w = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
                        r += 3;
                } else
                        *w = *r;
        }
        *w = '\0';
}

/* The option of a comma-separated list that keeps NFS locks local, or NULL. */
static const char *local_lock_option(char *opts) {
        for (char *save = NULL, *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save))
                if (strcmp(o, "nolock") == 0 || (strncmp(o, "local_lock=", 11) == 0 && strcmp(o + 11, "none") != 0))
                        return o;
        return NULL;
}

static bool path_under(const char *path, const char *mnt) {
        size_t n = strlen(mnt);
        if (strcmp(mnt, "/") == 0)
                return true;
        return strncmp(path, mnt, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static int check_mount_options(const char *root, const char *mountinfo, char *err, size_t errlen) {
        char *real = realpath(root, NULL);
        struct stat st;
        FILE *f;
        char *line = NULL, best_mnt[PATH_MAX] = "", best_opt[128] = "", best_type[32] = "";
        size_t cap = 0, best_len = 0;
        int r = 0;

        if (!real || stat(real, &st) < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: %s", root, strerror(-r));
                free(real);
                return r;
        }
        f = fopen(mountinfo, "re");
        if (!f) {
                free(real);
                return 0;       /* no /proc: nothing to learn from it */
        }
        while (getline(&line, &cap, f) > 0) {
                /* id parent major:minor root mountpoint options [optional...] - fstype source superoptions */
                unsigned maj, min;
                char mnt[PATH_MAX], opts[1024], type[64], super[1024];
                const char *sep = strstr(line, " - ");
                if (!sep || sscanf(line, "%*u %*u %u:%u %*s %4095s %1023s", &maj, &min, mnt, opts) != 4 ||
                    sscanf(sep + 3, "%63s %*s %1023s", type, super) != 2)
                        continue;
                if (makedev(maj, min) != st.st_dev)
                        continue;
                unescape_octal(mnt);
                size_t len = strlen(mnt);
                if (!path_under(real, mnt) || len < best_len)
                        continue;
                best_len = len;
                snprintf(best_mnt, sizeof best_mnt, "%s", mnt);
                snprintf(best_type, sizeof best_type, "%s", type);
                const char *o = strncmp(type, "nfs", 3) == 0 ? local_lock_option(super) : NULL;
                if (!o && strncmp(type, "nfs", 3) == 0)
                        o = local_lock_option(opts);
                snprintf(best_opt, sizeof best_opt, "%s", o ? o : "");
        }
        free(line);
        fclose(f);
        if (best_opt[0]) {
                snprintf(err, errlen,
                         "%s is on %s %s mounted with %s: locks are not shared between hosts, so two hosts could run one VM "
                         "(mount it without %s, or set shared_root=no in vrt.conf for a single host)",
                         root, best_type, best_mnt, best_opt, best_opt);
                r = -ENOLCK;
        }
        free(real);
        return r;
}

static int check_live_lock(const char *root, char *err, size_t errlen) {
        char *path = NULL;
        struct flock fl;
        int a = -1, b = -1, r = 0;

        if (asprintf(&path, "%s/.vrt-lockcheck.XXXXXX", root) < 0)
                return -ENOMEM;
        a = mkostemp(path, O_CLOEXEC);
        if (a < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot test locks in %s: %s", root, strerror(-r));
                free(path);
                return r;
        }
        b = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        unlink(path);
        if (b < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot test locks in %s: %s", root, strerror(-r));
        } else if (lock_whole(a, F_WRLCK, F_OFD_SETLK, &fl) < 0) {
                r = -errno;
                snprintf(err, errlen, "locks do not work on %s: %s", root, strerror(-r));
                r = r == -ENOLCK || r == -EINVAL ? -EOPNOTSUPP : r;
        } else if (lock_whole(b, F_WRLCK, F_OFD_SETLK, &fl) == 0) {
                snprintf(err, errlen, "locks do not work on %s: a second open file took a lock that was already held",
                         root);
                r = -EOPNOTSUPP;
        }
        if (b >= 0)
                close(b);
        close(a);
        free(path);
        return r;
}

int lease_check_root(const char *root, const char *mountinfo, bool live, char *err, size_t errlen) {
        int r = check_mount_options(root, mountinfo, err, errlen);
        if (r < 0 || !live)
                return r;
        return check_live_lock(root, err, errlen);
}
