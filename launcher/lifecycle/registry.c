#include "launcher/lifecycle/registry.h"
#include "launcher/core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launcher/core/paths.h"
#include "launcher/core/util.h"

#define REGISTRY_MAX_FILE (64 * 1024 * 1024)

int registry_check_name(const char *name) {
        size_t n = name ? strlen(name) : 0;
        if (n == 0 || n > REGISTRY_NAME_MAX)
                return -EINVAL;
        if (strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != n)
                return -EINVAL;
        return 0;
}

/* Reads a whole list; a missing file is empty. */
static int read_list(const char *path, char **ret_buf, size_t *ret_len, char *err, size_t errlen) {
        int r = fileio_read_regular(path, REGISTRY_MAX_FILE, ret_buf, ret_len, err, errlen);
        if (r == -ENOENT) {
                *ret_buf = NULL;
                *ret_len = 0;
                return 0;
        }
        return r;
}

/* Calls add() for every entry line of buf (comments and blank lines
 * skipped). Returns 0, or -EINVAL with "path:line: ..." in err. */
static int push_name(struct registry *r, const char *name, unsigned line) {
        struct registry_name *n = realloc(r->names, (r->n_names + 1) * sizeof *n);
        if (!n)
                return -ENOMEM;
        r->names = n;
        n[r->n_names].name = strdup(name);
        if (!n[r->n_names].name)
                return -ENOMEM;
        n[r->n_names++].line = line;
        return 0;
}

static int push_mac(struct registry *r, const uint8_t mac[MAC_LEN], unsigned line) {
        struct registry_mac *m = realloc(r->macs, (r->n_macs + 1) * sizeof *m);
        if (!m)
                return -ENOMEM;
        r->macs = m;
        memcpy(m[r->n_macs].mac, mac, MAC_LEN);
        m[r->n_macs++].line = line;
        return 0;
}

static int parse_list(struct registry *r, const char *path, char *buf, size_t len, bool macs,
                      unsigned *ret_lines, char *err, size_t errlen) {
        unsigned lineno = 0;
        size_t pos = 0;

        while (pos < len) {
                char *line = buf + pos;
                char *nl = memchr(line, '\n', len - pos);
                size_t l = nl ? (size_t)(nl - line) : len - pos;
                lineno++;
                pos += l + (nl ? 1 : 0);
                if (memchr(line, '\0', l)) {
                        snprintf(err, errlen, "%s:%u: NUL byte in line", path, lineno);
                        return -EINVAL;
                }
                line[l] = '\0';
                char *s = str_trim(line);
                if (*s == '\0' || *s == '#')
                        continue;
                if (macs) {
                        uint8_t mac[MAC_LEN];
                        if (mac_parse(s, mac) < 0) {
                                snprintf(err, errlen, "%s:%u: invalid MAC address \"%.64s\" (expected xx:xx:xx:xx:xx:xx)",
                                         path, lineno, s);
                                return -EINVAL;
                        }
                        /* Duplicates are kept: lookups find the first line. */
                        if (push_mac(r, mac, lineno) < 0)
                                return -ENOMEM;
                } else {
                        if (registry_check_name(s) < 0) {
                                snprintf(err, errlen, "%s:%u: invalid VM name \"%.64s\" (expected [A-Za-z0-9._-], at most %d characters)",
                                         path, lineno, s, REGISTRY_NAME_MAX);
                                return -EINVAL;
                        }
                        if (push_name(r, s, lineno) < 0)
                                return -ENOMEM;
                }
        }
        *ret_lines = lineno;
        return 0;
}

static void registry_clear(struct registry *r) {
        for (size_t i = 0; i < r->n_names; i++)
                free(r->names[i].name);
        free(r->names);
        free(r->macs);
        r->names = NULL;
        r->macs = NULL;
        r->n_names = r->n_macs = 0;
        r->names_size = r->macs_size = 0;
        r->names_lines = r->macs_lines = 0;
}

static int registry_reload(struct registry *r, char *err, size_t errlen) {
        char *buf = NULL;
        size_t len = 0;
        int ret;

        registry_clear(r);
        ret = read_list(r->names_path, &buf, &len, err, errlen);
        if (ret < 0)
                return ret;
        r->names_size = (off_t)len;
        ret = parse_list(r, r->names_path, buf, len, false, &r->names_lines, err, errlen);
        free(buf);
        buf = NULL;
        if (ret < 0)
                return ret;
        ret = read_list(r->macs_path, &buf, &len, err, errlen);
        if (ret < 0)
                return ret;
        r->macs_size = (off_t)len;
        ret = parse_list(r, r->macs_path, buf, len, true, &r->macs_lines, err, errlen);
        free(buf);
        return ret;
}

static int registry_new(const char *root, struct registry **ret) {
        struct registry *r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->lock_fd = -1;
        r->dir = paths_join(root, "install");
        if (r->dir) {
                r->names_path = paths_join(r->dir, "installed.txt");
                r->macs_path = paths_join(r->dir, "mac-addresses.txt");
        }
        if (!r->dir || !r->names_path || !r->macs_path) {
                registry_free(r);
                return -ENOMEM;
        }
        *ret = r;
        return 0;
}

int registry_lock(const char *root, struct registry **ret, char *err, size_t errlen) {
        struct registry *r = NULL;
        char *lock_path = NULL;
        int ret_r;

        ret_r = registry_new(root, &r);
        if (ret_r < 0)
                return ret_r;
        if (mkdir(r->dir, 0755) < 0 && errno != EEXIST) {
                ret_r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", r->dir, strerror(-ret_r));
                goto fail;
        }
        lock_path = paths_join(r->dir, "registry.lock");
        if (!lock_path) {
                ret_r = -ENOMEM;
                goto fail;
        }
        r->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW, 0644);
        if (r->lock_fd < 0) {
                ret_r = -errno;
                snprintf(err, errlen, "cannot open %s: %s", lock_path, strerror(-ret_r));
                goto fail;
        }
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        if (fcntl(r->lock_fd, F_SETLKW, &fl) < 0) {
                ret_r = -errno;
                snprintf(err, errlen, "cannot lock %s: %s", lock_path, strerror(-ret_r));
                goto fail;
        }
        ret_r = registry_reload(r, err, errlen);
        if (ret_r < 0)
                goto fail;
        free(lock_path);
        *ret = r;
        return 0;
fail:
        free(lock_path);
        registry_free(r);
        return ret_r;
}

int registry_load(const char *root, struct registry **ret, char *err, size_t errlen) {
        struct registry *r = NULL;
        int ret_r = registry_new(root, &r);
        if (ret_r < 0)
                return ret_r;
        ret_r = registry_reload(r, err, errlen);
        if (ret_r < 0) {
                registry_free(r);
                return ret_r;
        }
        *ret = r;
        return 0;
}

bool registry_has_name(const struct registry *r, const char *name, unsigned *ret_line) {
        for (size_t i = 0; name && i < r->n_names; i++)
                if (strcasecmp(r->names[i].name, name) == 0) {
                        if (ret_line)
                                *ret_line = r->names[i].line;
                        return true;
                }
        return false;
}

bool registry_has_mac(const struct registry *r, const uint8_t mac[MAC_LEN], unsigned *ret_line) {
        for (size_t i = 0; i < r->n_macs; i++)
                if (memcmp(r->macs[i].mac, mac, MAC_LEN) == 0) {
                        if (ret_line)
                                *ret_line = r->macs[i].line;
                        return true;
                }
        return false;
}

/* Appends "entry\n" with one write (preceded by a newline if the file's
 * last line lacks one) and fsyncs; updates *size and *lines. */
static int append_line(struct registry *r, const char *path, const char *entry, off_t *size,
                       unsigned *lines, char *err, size_t errlen) {
        char buf[REGISTRY_NAME_MAX + 3];
        struct stat st;
        size_t len = 0;
        int fd = -1, ret;
        bool created = false;

        if (r->lock_fd < 0) {
                snprintf(err, errlen, "%s: appending needs the registry lock", path);
                return -ENOLCK;
        }
        fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        if (fd < 0 && errno == ENOENT) {
                fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW, 0644);
                created = fd >= 0;
        }
        if (fd < 0) {
                ret = -errno;
                snprintf(err, errlen, "cannot open %s: %s", path, strerror(-ret));
                return ret;
        }
        if (fstat(fd, &st) < 0) {
                ret = -errno;
                snprintf(err, errlen, "%s: %s", path, strerror(-ret));
                goto fail;
        }
        if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
                /* A second name of another file: appending would write there. */
                snprintf(err, errlen, "%s: %s: not written", path, S_ISREG(st.st_mode) ? "a hard link" : "not a regular file");
                ret = -EMLINK;
                goto fail;
        }
        if (st.st_size != *size) {
                /* Only lock holders append, and we hold it: someone wrote
                 * without the lock, or the file was edited meanwhile. */
                snprintf(err, errlen, "%s changed while locked (size %lld, expected %lld)", path,
                         (long long)st.st_size, (long long)*size);
                ret = -ESTALE;
                goto fail;
        }
        if (st.st_size > 0) {
                char last;
                if (pread(fd, &last, 1, st.st_size - 1) != 1) {
                        ret = errno ? -errno : -EIO;
                        snprintf(err, errlen, "%s: %s", path, strerror(-ret));
                        goto fail;
                }
                if (last != '\n')
                        buf[len++] = '\n';
        }
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s\n", entry);
        ssize_t n = write(fd, buf, len);
        if (n != (ssize_t)len) {
                ret = n < 0 ? -errno : -ENOSPC;
                /* Never leave a torn line behind. */
                if (ftruncate(fd, st.st_size) < 0) {
                        /* nothing more to do: the error below is what counts */
                }
                snprintf(err, errlen, "cannot append to %s: %s", path, strerror(-ret));
                goto fail;
        }
        if (fsync(fd) < 0) {
                ret = -errno;
                if (ftruncate(fd, st.st_size) < 0) {
                        /* as above */
                }
                snprintf(err, errlen, "cannot fsync %s: %s", path, strerror(-ret));
                goto fail;
        }
        if (created && (ret = fileio_fsync_dir(r->dir)) < 0) {
                snprintf(err, errlen, "cannot fsync %s: %s", r->dir, strerror(-ret));
                goto fail;
        }
        close(fd);
        *size = st.st_size + (off_t)len;
        /* An unterminated last line was counted already: ours is the next. */
        *lines += 1;
        return 0;
fail:
        close(fd);
        return ret;
}

int registry_add_name(struct registry *r, const char *name, char *err, size_t errlen) {
        unsigned line;
        int ret;

        if (registry_check_name(name) < 0) {
                snprintf(err, errlen, "invalid registry name \"%.64s\"", name ? name : "");
                return -EINVAL;
        }
        if (registry_has_name(r, name, &line)) {
                snprintf(err, errlen, "%s:%u: name %s is already registered", r->names_path, line, name);
                return -EEXIST;
        }
        ret = append_line(r, r->names_path, name, &r->names_size, &r->names_lines, err, errlen);
        if (ret < 0)
                return ret;
        return push_name(r, name, r->names_lines);
}

int registry_add_mac(struct registry *r, const uint8_t mac[MAC_LEN], char *err, size_t errlen) {
        char s[MAC_STRLEN];
        unsigned line;
        int ret;

        mac_format(mac, s);
        if (registry_has_mac(r, mac, &line)) {
                snprintf(err, errlen, "%s:%u: MAC %s is already registered", r->macs_path, line, s);
                return -EEXIST;
        }
        ret = append_line(r, r->macs_path, s, &r->macs_size, &r->macs_lines, err, errlen);
        if (ret < 0)
                return ret;
        return push_mac(r, mac, r->macs_lines);
}

static int truncate_to(const char *path, off_t size, char *err, size_t errlen) {
        struct stat st;
        int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW), r = 0;
        if (fd < 0 && errno == ENOENT)
                return 0;
        if (fd < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot open %s: %s", path, strerror(-r));
                return r;
        }
        if (fstat(fd, &st) < 0)
                r = -errno;
        else if (st.st_size > size && (ftruncate(fd, size) < 0 || fsync(fd) < 0))
                r = -errno;
        if (r < 0)
                snprintf(err, errlen, "cannot truncate %s: %s", path, strerror(-r));
        close(fd);
        return r;
}

int registry_truncate(struct registry *r, off_t names_size, off_t macs_size, char *err, size_t errlen) {
        int ret;
        if (r->lock_fd < 0) {
                snprintf(err, errlen, "%s: truncating needs the registry lock", r->dir);
                return -ENOLCK;
        }
        ret = truncate_to(r->names_path, names_size, err, errlen);
        if (ret == 0)
                ret = truncate_to(r->macs_path, macs_size, err, errlen);
        if (ret == 0)
                ret = registry_reload(r, err, errlen);
        return ret;
}

struct registry *registry_free(struct registry *r) {
        if (!r)
                return NULL;
        registry_clear(r);
        /* Closing the fd drops the fcntl lock. */
        if (r->lock_fd >= 0)
                close(r->lock_fd);
        free(r->dir);
        free(r->names_path);
        free(r->macs_path);
        free(r);
        return NULL;
}
