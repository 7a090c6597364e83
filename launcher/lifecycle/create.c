#include "launcher/lifecycle/create.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images/chain.h"
#include "images/qcow2.h"
#include "launcher/lifecycle/firstboot.h"
#include "launcher/core/fileio.h"
#include "launcher/core/safepath.h"
#include "launcher/core/paths.h"
#include "launcher/core/props.h"
#include "launcher/lifecycle/registry.h"
#include "launcher/core/util.h"
#include "net/mac.h"

#define STAGING_SUFFIX ".creating"
#define STAGING_LOCK ".lock"
#define STAGING_INTENT ".intent"
#define STAGING_COMMIT ".commit"
#define NAME_TRIES 200
#define MAC_TRIES 1000

/* A staging directory whose creator is alive, and the MACs it chose. */
struct live_staging {
        char name[VM_NAME_MAX + 1];
        uint8_t macs[VM_NICS_MAX][MAC_LEN];
        unsigned n_macs;
};

struct creation {
        const struct create_request *req;
        struct host_config *host;
        struct instance *inst;
        const struct size_class *size;
        struct image_meta *meta;
        char *conf_path;
        char *vm_root;                  /* ROOT/vm */
        char *template_path;
        int template_fd;                /* opened as safepath_open_shared() allows */
        char *template_format;
        char *backing_file;             /* "../../images/IMAGE.qcow2" */
        uint64_t template_size;
        uint64_t disk_size;
        bool size_not_applied;
        bool generate_name;
        char name[VM_NAME_MAX + 1];
        uint8_t macs[VM_NICS_MAX][MAC_LEN];     /* one per NIC, inst->n_nics of them */
        char mac_strs[VM_NICS_MAX][MAC_STRLEN];
        char staging_name[VM_NAME_MAX + sizeof STAGING_SUFFIX + 2];
        char *staging;                  /* ROOT/vm/.NAME.creating */
        int staging_fd;                 /* the staging directory */
        int staging_lock_fd;            /* flock()ed for our whole life */
        struct live_staging *live;
        size_t n_live;
};

/* --- small file helpers --- */

static int remove_tree_at(int parent, const char *name) {
        int fd, r = 0;
        DIR *d;
        struct dirent *de;

        fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        return 0;
                if (errno == ENOTDIR || errno == ELOOP)
                        return unlinkat(parent, name, 0) < 0 && errno != ENOENT ? -errno : 0;
                return -errno;
        }
        d = fdopendir(fd);
        if (!d) {
                r = -errno;
                close(fd);
                return r;
        }
        while ((de = readdir(d))) {
                int q;
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (de->d_type == DT_DIR || de->d_type == DT_UNKNOWN)
                        q = remove_tree_at(dirfd(d), de->d_name);
                else
                        q = unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT ? -errno : 0;
                if (q < 0 && r == 0)
                        r = q;
        }
        closedir(d);
        if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT && r == 0)
                r = -errno;
        return r;
}

int create_remove_tree(const char *path) {
        return remove_tree_at(AT_FDCWD, path);
}

static int fsync_fd_dir(int dfd) {
        return fsync(dfd) < 0 ? -errno : 0;
}

/* Writes a new file in dfd (refusing an existing one) and fsyncs it. */
static int write_file_at(int dfd, const char *name, const char *text, mode_t mode) {
        size_t len = strlen(text), done = 0;
        int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, mode);
        int r = 0;
        if (fd < 0)
                return -errno;
        while (done < len) {
                ssize_t n = write(fd, text + done, len - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        r = n < 0 ? -errno : -EIO;
                        break;
                }
                done += (size_t)n;
        }
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r < 0)
                unlinkat(dfd, name, 0);
        return r;
}

/* --- staging control files: .intent (name, mac, mac.N) and .commit (sizes) --- */

struct control {
        char name[VM_NAME_MAX + 1];
        uint8_t macs[VM_NICS_MAX][MAC_LEN];
        unsigned n_macs;
        long long names_size, macs_size;
        bool has_sizes;
};

static int control_set(const char *key, const char *value, unsigned line, void *userdata, char *err, size_t errlen) {
        struct control *c = userdata;
        char *end;
        (void)line;
        if (strcmp(key, "name") == 0) {
                snprintf(c->name, sizeof c->name, "%s", value);
                return 0;
        }
        if (strncmp(key, "mac", 3) == 0 && (key[3] == '\0' || key[3] == '.')) {
                /* Order does not matter here: only the set of MACs is used. */
                if (c->n_macs < VM_NICS_MAX && mac_parse(value, c->macs[c->n_macs]) == 0)
                        c->n_macs++;
                return 0;
        }
        if (strcmp(key, "names_size") == 0 || strcmp(key, "macs_size") == 0) {
                errno = 0;
                long long v = strtoll(value, &end, 10);
                if (errno || *end || v < 0 || end == value) {
                        snprintf(err, errlen, "bad %s", key);
                        return -EINVAL;
                }
                if (key[0] == 'n')
                        c->names_size = v;
                else
                        c->macs_size = v;
                c->has_sizes = true;
                return 0;
        }
        return 0;
}

static int control_read(const char *dir, const char *file, struct control *c) {
        char err[512];
        char *path = paths_join(dir, file);
        if (!path)
                return -ENOMEM;
        int r = props_parse_file(path, control_set, c, err, sizeof err);
        free(path);
        return r;
}

/* --- sweeping --- */

static bool staging_entry_name(const char *entry, char name[VM_NAME_MAX + 1]) {
        size_t n = strlen(entry), s = strlen(STAGING_SUFFIX);
        char msg[256];
        if (entry[0] != '.' || n <= 1 + s || strcmp(entry + n - s, STAGING_SUFFIX) != 0 || n - 1 - s > VM_NAME_MAX)
                return false;
        memcpy(name, entry + 1, n - 1 - s);
        name[n - 1 - s] = '\0';
        return config_check_vm_name(name, NULL, msg, sizeof msg) == 0;
}

static bool has_file_at(int dfd, const char *name) {
        struct stat st;
        return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* Completes or removes one stale staging directory. Returns 1 when it was
 * swept, 0 when it belongs to a live creator (appended to *live). */
static int sweep_one(const char *vm_root, int vmfd, const char *entry, const char *name, struct registry *reg,
                     struct live_staging **live, size_t *n_live, char *err, size_t errlen) {
        int sfd = -1, lfd = -1, r;
        char *path = paths_join(vm_root, entry);

        if (!path)
                return -ENOMEM;
        sfd = openat(vmfd, entry, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sfd < 0) {
                r = errno == ENOENT ? 0 : -errno;
                if (r < 0)
                        snprintf(err, errlen, "cannot open %s: %s", path, strerror(-r));
                free(path);
                return r;
        }
        lfd = openat(sfd, STAGING_LOCK, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        if (lfd < 0 && errno != ENOENT) {
                /* Cannot tell whether its creator lives: leave it alone. */
                r = -errno;
                snprintf(err, errlen, "cannot open %s/%s: %s", path, STAGING_LOCK, strerror(-r));
                goto done;
        }
        if (lfd >= 0 && flock(lfd, LOCK_EX | LOCK_NB) < 0) {
                r = -errno;
                if (r != -EWOULDBLOCK) {
                        snprintf(err, errlen, "cannot lock %s/%s: %s", path, STAGING_LOCK, strerror(-r));
                        goto done;
                }
                /* A creator is working here: remember its choices. */
                struct control c = { 0 };
                struct live_staging *n = realloc(*live, (*n_live + 1) * sizeof *n);
                if (!n) {
                        r = -ENOMEM;
                        goto done;
                }
                *live = n;
                control_read(path, STAGING_INTENT, &c);
                n[*n_live] = (struct live_staging){ .n_macs = c.n_macs };
                snprintf(n[*n_live].name, sizeof n[*n_live].name, "%s", name);
                memcpy(n[*n_live].macs, c.macs, sizeof c.macs);
                (*n_live)++;
                r = 0;
                goto done;
        }
        /* No lock file, or nobody holds it: the creator is gone. The lock
         * file is made under the registry lock, which we hold, so a
         * directory without one is not a creator's first moment. */
        bool committed = registry_has_name(reg, name, NULL);
        if (committed && has_file_at(sfd, "instance.properties") &&
            (has_file_at(sfd, "hdd.ovl") || has_file_at(sfd, "hdd.img")) && !has_file_at(vmfd, name)) {
                /* The commit point was passed: finish the rename. */
                unlinkat(sfd, STAGING_COMMIT, 0);
                unlinkat(sfd, STAGING_INTENT, 0);
                unlinkat(sfd, STAGING_LOCK, 0);
                r = fileio_rename_noreplace(vmfd, entry, name);
                if (r < 0) {
                        snprintf(err, errlen, "cannot complete the interrupted creation of %s: %s", name, strerror(-r));
                        goto done;
                }
                fsync_fd_dir(vmfd);
                r = 1;
                goto done;
        }
        if (!committed) {
                struct control c = { 0 };
                /* Cut back what the dead creator appended, if anything. */
                if (control_read(path, STAGING_COMMIT, &c) == 0 && c.has_sizes) {
                        r = registry_truncate(reg, (off_t)c.names_size, (off_t)c.macs_size, err, errlen);
                        if (r < 0)
                                goto done;
                }
        }
        r = remove_tree_at(vmfd, entry);
        if (r < 0) {
                snprintf(err, errlen, "cannot remove the stale %s: %s", entry, strerror(-r));
                goto done;
        }
        r = 1;
done:
        free(path);
        if (lfd >= 0)
                close(lfd);
        if (sfd >= 0)
                close(sfd);
        return r;
}

/* Sweeps ROOT/vm; skip is our own staging entry (never probed: on NFS a
 * second flock of our own file would succeed and its close drop our lock). */
static int sweep(const char *root, struct registry *reg, const char *skip,
                 struct live_staging **live, size_t *n_live, char *err, size_t errlen) {
        char *vm_root = paths_join(root, "vm");
        struct dirent *de;
        DIR *d = NULL;
        int r = 0, count = 0;

        if (!vm_root)
                return -ENOMEM;
        d = opendir(vm_root);
        if (!d) {
                r = errno == ENOENT ? 0 : -errno;
                if (r < 0)
                        snprintf(err, errlen, "cannot read %s: %s", vm_root, strerror(-r));
                free(vm_root);
                return r;
        }
        while ((de = readdir(d))) {
                char name[VM_NAME_MAX + 1];
                if (!staging_entry_name(de->d_name, name) || (skip && strcmp(de->d_name, skip) == 0))
                        continue;
                r = sweep_one(vm_root, dirfd(d), de->d_name, name, reg, live, n_live, err, errlen);
                if (r < 0)
                        break;
                count += r;
                r = 0;
        }
        closedir(d);
        free(vm_root);
        return r < 0 ? r : count;
}

int create_sweep(const char *root, struct registry *reg, char *err, size_t errlen) {
        struct live_staging *live = NULL;
        size_t n_live = 0;
        int r = sweep(root, reg, NULL, &live, &n_live, err, errlen);
        free(live);
        return r;
}

int create_default_name(const char *path, char **ret) {
        const char *base = strrchr(path, '/');
        char msg[256];
        char *stem;
        base = base ? base + 1 : path;
        stem = strdup(base);
        if (!stem)
                return -ENOMEM;
        size_t n = strlen(stem), s = strlen(".properties");
        if (n > s && strcmp(stem + n - s, ".properties") == 0)
                stem[n - s] = '\0';
        if (strncmp(stem, "instance", 8) == 0 || config_check_vm_name(stem, NULL, msg, sizeof msg) < 0) {
                free(stem);
                stem = NULL;
        }
        *ret = stem;
        return 0;
}

/* --- validation: everything that needs no lock --- */

static int fail_invalid(int r) {
        /* Bad input stays -EINVAL; resource errors keep their code. */
        return r == -ENOMEM || r == -EIO ? r : -EINVAL;
}

static int validate(struct creation *c, char *err, size_t errlen) {
        const struct create_request *req = c->req;
        char *rel = NULL, *meta_path = NULL;
        struct image_chain *chain = NULL;
        char msg[1024];
        struct stat st;
        int r;

        c->conf_path = paths_join(req->root, "vrt.conf");
        c->vm_root = paths_join(req->root, "vm");
        if (!c->conf_path || !c->vm_root)
                return -ENOMEM;
        r = host_config_load(c->conf_path, &c->host, err, errlen);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        /* A placeholder lets instance_load() accept a file without name=;
         * line_name == 0 tells us no name was written. */
        r = instance_load(req->props_path, req->default_name ? req->default_name : "unnamed",
                          req->runtime_dir, &c->inst, err, errlen);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        if (req->name) {
                if (c->inst->line_name && strcmp(c->inst->name, req->name) != 0) {
                        snprintf(err, errlen, "%s:%u: name=%s conflicts with the name %s given", req->props_path,
                                 c->inst->line_name, c->inst->name, req->name);
                        return -EINVAL;
                }
                r = config_check_vm_name(req->name, req->runtime_dir, msg, sizeof msg);
                if (r < 0) {
                        snprintf(err, errlen, "%s", msg);
                        return -EINVAL;
                }
                free(c->inst->name);
                c->inst->name = strdup(req->name);
                if (!c->inst->name)
                        return -ENOMEM;
        }
        c->generate_name = c->inst->line_name == 0 && !req->default_name && !req->name;
        r = instance_check(c->inst, c->host, err, errlen);
        if (r < 0)
                return r;
        c->size = host_config_find_size(c->host, c->inst->size);

        if (asprintf(&rel, "images/%s.qcow2", c->inst->image) < 0)
                return -ENOMEM;
        c->template_path = paths_join(req->root, rel);
        free(rel);
        rel = NULL;
        if (asprintf(&c->backing_file, "../../images/%s.qcow2", c->inst->image) < 0)
                c->backing_file = NULL;
        if (asprintf(&rel, "images/%s.properties", c->inst->image) < 0)
                rel = NULL;
        meta_path = rel ? paths_join(req->root, rel) : NULL;
        free(rel);
        if (!c->template_path || !c->backing_file || !meta_path) {
                r = -ENOMEM;
                goto done;
        }
        if (lstat(c->template_path, &st) < 0) {
                r = -errno;
                snprintf(err, errlen, "%s:%u: image=%s: template %s: %s", c->inst->path, c->inst->line_image,
                         c->inst->image, c->template_path, strerror(-r));
                r = fail_invalid(r);
                goto done;
        }
        /* images/ may be shared: a link root did not make is not followed. */
        c->template_fd = safepath_open_shared(c->template_path, msg, sizeof msg);
        if (c->template_fd < 0) {
                r = c->template_fd;
                c->template_fd = -1;
                snprintf(err, errlen, "%s:%u: image=%s: template %s", c->inst->path, c->inst->line_image,
                         c->inst->image, msg);
                r = fail_invalid(r);
                goto done;
        }
        r = image_meta_load(meta_path, &c->meta, err, errlen);
        if (r < 0) {
                r = fail_invalid(r);
                goto done;
        }
        r = image_chain_inspect(c->template_path, &chain, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "%s:%u: image=%s: %s", c->inst->path, c->inst->line_image, c->inst->image, msg);
                r = fail_invalid(r);
                goto done;
        }
        c->template_size = chain->layers[0].virtual_size;
        c->template_format = strdup(chain->layers[0].format);
        if (!c->template_format) {
                r = -ENOMEM;
                goto done;
        }
        if (c->inst->disk == DISK_OVERLAY) {
                if (c->size->disk && c->size->disk < c->template_size) {
                        char a[32], b[32];
                        format_size(c->size->disk, FORMAT_SIZE_EXACT, a, sizeof a);
                        format_size(c->template_size, FORMAT_SIZE_EXACT, b, sizeof b);
                        snprintf(err, errlen, "%s:%u: size=%s: its disk of %s is smaller than template %s (%s); a disk cannot shrink",
                                 c->inst->path, c->inst->line_size, c->inst->size, a, c->inst->image, b);
                        r = -EINVAL;
                        goto done;
                }
                c->disk_size = c->size->disk > c->template_size ? c->size->disk : c->template_size;
                /* Checked before rounding, which would wrap near 2^64. */
                if (c->disk_size > QCOW2_MAX_VIRTUAL_SIZE) {
                        char a[32];
                        format_size(c->disk_size, FORMAT_SIZE_EXACT, a, sizeof a);
                        snprintf(err, errlen, "%s:%u: size=%s: its disk of %s exceeds the qcow2 limit of 2P",
                                 c->inst->path, c->inst->line_size, c->inst->size, a);
                        r = -EINVAL;
                        goto done;
                }
                c->disk_size = (c->disk_size + 511) & ~(uint64_t)511;
        } else {
                /* A copy keeps the template's header: a relative backing
                 * file would then be looked up in vm/NAME/ and not found. */
                const char *bf = chain->layers[0].backing_file;
                if (bf && bf[0] != '/') {
                        snprintf(err, errlen, "%s:%u: image=%s: disk=copy cannot copy template %s: it is an overlay on %s, "
                                 "which would not resolve from the VM's directory (use disk=overlay)",
                                 c->inst->path, c->inst->line_image, c->inst->image, c->template_path, bf);
                        r = -EINVAL;
                        goto done;
                }
                c->disk_size = c->template_size;
                c->size_not_applied = c->size->disk > c->template_size;
        }
        if (c->inst->init) {
                /* Missing, not a file, too big, binary: refused before anything exists. */
                r = firstboot_check_script(req->root, c->inst->init, msg, sizeof msg);
                if (r < 0) {
                        snprintf(err, errlen, "%s:%u: init=%s: %s", c->inst->path, c->inst->line_init, c->inst->init, msg);
                        r = fail_invalid(r);
                        goto done;
                }
        }
        for (unsigned i = 0; i < c->inst->n_nics; i++) {
                const struct nic *n = &c->inst->nics[i];
                if (n->mac && mac_parse(n->mac, c->macs[i]) < 0) {
                        /* config.c validated it already; be safe anyway. */
                        snprintf(err, errlen, "%s:%u: invalid mac \"%s\"", c->inst->path, n->line_mac, n->mac);
                        r = -EINVAL;
                        goto done;
                }
        }
        r = 0;
done:
        free(meta_path);
        image_chain_free(chain);
        return r;
}

/* --- choosing a name and a MAC (registry lock held) --- */

static bool live_has_name(const struct creation *c, const char *name) {
        for (size_t i = 0; i < c->n_live; i++)
                if (strcmp(c->live[i].name, name) == 0)
                        return true;
        return false;
}

static const struct live_staging *live_has_mac(const struct creation *c, const uint8_t mac[MAC_LEN]) {
        for (size_t i = 0; i < c->n_live; i++)
                for (unsigned k = 0; k < c->live[i].n_macs; k++)
                        if (memcmp(c->live[i].macs[k], mac, MAC_LEN) == 0)
                                return &c->live[i];
        return NULL;
}

/* True when one of this VM's NICs before NIC n has the MAC. */
static bool own_has_mac(const struct creation *c, unsigned n, const uint8_t mac[MAC_LEN]) {
        for (unsigned i = 0; i < n; i++)
                if (memcmp(c->macs[i], mac, MAC_LEN) == 0)
                        return true;
        return false;
}

static bool name_is_free(const struct creation *c, const struct registry *reg, const char *name) {
        char staging[VM_NAME_MAX + sizeof STAGING_SUFFIX + 2];
        char *p;
        bool taken;
        if (registry_has_name(reg, name, NULL) || live_has_name(c, name))
                return false;
        snprintf(staging, sizeof staging, ".%s%s", name, STAGING_SUFFIX);
        p = paths_join(c->vm_root, name);
        taken = !p || access(p, F_OK) == 0 || errno != ENOENT;
        free(p);
        if (taken)
                return false;
        p = paths_join(c->vm_root, staging);
        taken = !p || access(p, F_OK) == 0 || errno != ENOENT;
        free(p);
        return !taken;
}

/* "Debian_12.5" -> "debian-12-5": the template's name as a host name label. */
static void name_stem(const char *image, size_t maxlen, char *out) {
        size_t n = 0;
        for (const char *p = image; *p && n < maxlen; p++) {
                char ch = (char)tolower((unsigned char)*p);
                if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))
                        out[n++] = ch;
                else if (n > 0 && out[n - 1] != '-')
                        out[n++] = '-';
        }
        while (n > 0 && out[n - 1] == '-')
                n--;
        if (n == 0)
                n = (size_t)snprintf(out, maxlen + 1, "vm");
        out[n] = '\0';
}

static int random_u32(uint32_t *ret) {
        for (;;) {
                ssize_t n = getrandom(ret, sizeof *ret, 0);
                if (n == (ssize_t)sizeof *ret)
                        return 0;
                if (n < 0 && errno != EINTR)
                        return -errno;
        }
}

static int choose_name(struct creation *c, const struct registry *reg, char *err, size_t errlen) {
        if (!c->generate_name) {
                const char *name = c->inst->name;
                unsigned line = 0;
                char where[PATH_MAX + 16];
                if (c->inst->line_name)
                        snprintf(where, sizeof where, "%s:%u", c->inst->path, c->inst->line_name);
                else
                        snprintf(where, sizeof where, "%s", c->inst->path);
                if (registry_has_name(reg, name, &line)) {
                        snprintf(err, errlen, "%s: name %s is already registered (%s:%u); names are never reused",
                                 where, name, reg->names_path, line);
                        return -EINVAL;
                }
                if (live_has_name(c, name)) {
                        snprintf(err, errlen, "%s: VM %s is being created right now by another vrt create", where, name);
                        return -EINVAL;
                }
                if (!name_is_free(c, reg, name)) {
                        snprintf(err, errlen, "%s: %s/%s already exists", where, c->vm_root, name);
                        return -EINVAL;
                }
                snprintf(c->name, sizeof c->name, "%s", name);
                return 0;
        }
        /* IMAGE-NNNN like the seed's pluto-4711; six digits if crowded. */
        size_t limit = VM_NAME_MAX;
        size_t rt = strlen(c->req->runtime_dir);
        if (rt + 1 + sizeof "/monitor.sock" + 8 > UNIX_PATH_MAX_BYTES) {
                snprintf(err, errlen, "runtime directory %s is too long for any VM name", c->req->runtime_dir);
                return -EINVAL;
        }
        if (UNIX_PATH_MAX_BYTES - rt - 1 - sizeof "/monitor.sock" < limit)
                limit = UNIX_PATH_MAX_BYTES - rt - 1 - sizeof "/monitor.sock";
        for (int attempt = 0; attempt < NAME_TRIES; attempt++) {
                bool wide = attempt >= NAME_TRIES / 2;
                char stem[VM_NAME_MAX + 1], candidate[VM_NAME_MAX + 1], msg[256];
                uint32_t v;
                int r = random_u32(&v);
                if (r < 0) {
                        snprintf(err, errlen, "getrandom: %s", strerror(-r));
                        return r;
                }
                name_stem(c->inst->image, limit - (wide ? 7 : 5), stem);
                if (wide)
                        snprintf(candidate, sizeof candidate, "%s-%06u", stem, 100000 + v % 900000);
                else
                        snprintf(candidate, sizeof candidate, "%s-%04u", stem, 1000 + v % 9000);
                if (config_check_vm_name(candidate, c->req->runtime_dir, msg, sizeof msg) < 0)
                        continue;
                if (name_is_free(c, reg, candidate)) {
                        snprintf(c->name, sizeof c->name, "%s", candidate);
                        return 0;
                }
        }
        snprintf(err, errlen, "no free name for image %s after %d tries", c->inst->image, NAME_TRIES);
        return -EADDRNOTAVAIL;
}

/* A MAC for each NIC: the one its mac= names, which must be free, or a
 * generated one. */
static int choose_macs(struct creation *c, const struct registry *reg, char *err, size_t errlen) {
        for (unsigned i = 0; i < c->inst->n_nics; i++) {
                const struct nic *n = &c->inst->nics[i];
                uint8_t *mac = c->macs[i];
                unsigned line = 0;
                if (n->mac) {
                        const struct live_staging *l;
                        char key[8] = "mac";
                        if (i)
                                snprintf(key, sizeof key, "mac.%u", i);
                        if (registry_has_mac(reg, mac, &line)) {
                                snprintf(err, errlen, "%s:%u: %s=%s is already registered (%s:%u); MACs are never reused",
                                         c->inst->path, n->line_mac, key, n->mac, reg->macs_path, line);
                                return -EINVAL;
                        }
                        if ((l = live_has_mac(c, mac))) {
                                snprintf(err, errlen, "%s:%u: %s=%s is being given to %s right now by another vrt create",
                                         c->inst->path, n->line_mac, key, n->mac, l->name);
                                return -EINVAL;
                        }
                } else {
                        int attempt;
                        for (attempt = 0; attempt < MAC_TRIES; attempt++) {
                                int r = mac_generate(mac);
                                if (r < 0) {
                                        snprintf(err, errlen, "cannot generate a MAC: %s", strerror(-r));
                                        return r;
                                }
                                /* Given MACs of later NICs count as taken. */
                                bool taken = false;
                                for (unsigned k = i + 1; k < c->inst->n_nics; k++)
                                        taken |= c->inst->nics[k].mac && memcmp(c->macs[k], mac, MAC_LEN) == 0;
                                if (!taken && !own_has_mac(c, i, mac) && !registry_has_mac(reg, mac, NULL) &&
                                    !live_has_mac(c, mac))
                                        break;
                        }
                        if (attempt == MAC_TRIES) {
                                snprintf(err, errlen, "no free MAC address found in %d tries", MAC_TRIES);
                                return -EADDRNOTAVAIL;
                        }
                }
                mac_format(mac, c->mac_strs[i]);
        }
        return 0;
}

/* Phase 1, under the registry lock: sweep, choose, reserve the staging dir. */
static int reserve(struct creation *c, char *err, size_t errlen) {
        struct registry *reg = NULL;
        char intent[VM_NAME_MAX + VM_NICS_MAX * (MAC_STRLEN + 8) + 16];
        int r;

        r = registry_lock(c->req->root, &reg, err, errlen);
        if (r < 0)
                return r == -EINVAL ? -EUCLEAN : r;
        if (mkdir(c->vm_root, 0755) < 0 && errno != EEXIST) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", c->vm_root, strerror(-r));
                goto done;
        }
        r = sweep(c->req->root, reg, NULL, &c->live, &c->n_live, err, errlen);
        if (r < 0)
                goto done;
        r = choose_name(c, reg, err, errlen);
        if (r < 0)
                goto done;
        r = choose_macs(c, reg, err, errlen);
        if (r < 0)
                goto done;

        snprintf(c->staging_name, sizeof c->staging_name, ".%s%s", c->name, STAGING_SUFFIX);
        c->staging = paths_join(c->vm_root, c->staging_name);
        if (!c->staging) {
                r = -ENOMEM;
                goto done;
        }
        if (mkdir(c->staging, 0755) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", c->staging, strerror(-r));
                goto done;
        }
        c->staging_fd = open(c->staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (c->staging_fd < 0) {
                r = -errno;
                goto fail_staging;
        }
        c->staging_lock_fd = openat(c->staging_fd, STAGING_LOCK, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (c->staging_lock_fd < 0 || flock(c->staging_lock_fd, LOCK_EX | LOCK_NB) < 0) {
                r = -errno;
                goto fail_staging;
        }
        int len = snprintf(intent, sizeof intent, "name=%s\nmac=%s\n", c->name, c->mac_strs[0]);
        for (unsigned i = 1; i < c->inst->n_nics && len > 0 && (size_t)len < sizeof intent; i++)
                len += snprintf(intent + len, sizeof intent - (size_t)len, "mac.%u=%s\n", i, c->mac_strs[i]);
        r = write_file_at(c->staging_fd, STAGING_INTENT, intent, 0644);
        if (r < 0)
                goto fail_staging;
        r = fsync_fd_dir(c->staging_fd);
        if (r < 0)
                goto fail_staging;
        registry_free(reg);
        return 0;
fail_staging:
        snprintf(err, errlen, "cannot prepare %s: %s", c->staging, strerror(-r));
        remove_tree_at(AT_FDCWD, c->staging);
        free(c->staging);
        c->staging = NULL;
done:
        registry_free(reg);
        return r;
}

/* --- phase 2: build the VM in the staging directory (no registry lock) --- */

static bool cancelled(const struct creation *c) {
        return c->req->cancel && *c->req->cancel;
}

static int copy_progress(uint64_t done, uint64_t total, void *userdata) {
        struct creation *c = userdata;
        if (cancelled(c))
                return -ECANCELED;
        return c->req->progress ? c->req->progress(done, total, c->req->userdata) : 0;
}

static int build(struct creation *c, char *err, size_t errlen) {
        char *text = NULL, *disk = NULL;
        struct image_chain *chain = NULL;
        char msg[1024];
        int r;

        /* The file records the name and MACs the VM got. */
        char *s = strdup(c->name);
        if (!s)
                return -ENOMEM;
        free(c->inst->name);
        c->inst->name = s;
        for (unsigned i = 0; i < c->inst->n_nics; i++) {
                char *m = strdup(c->mac_strs[i]);
                if (!m)
                        return -ENOMEM;
                free(c->inst->nics[i].mac);
                c->inst->nics[i].mac = m;
        }
        text = instance_to_string(c->inst);
        if (!text)
                return -ENOMEM;
        r = write_file_at(c->staging_fd, "instance.properties", text, 0644);
        free(text);
        if (r < 0) {
                snprintf(err, errlen, "cannot write %s/instance.properties: %s", c->staging, strerror(-r));
                return r;
        }
        if (mkdirat(c->staging_fd, "log", 0755) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s/log: %s", c->staging, strerror(-r));
                return r;
        }
        if (cancelled(c))
                return -ECANCELED;

        disk = paths_join(c->staging, c->inst->disk == DISK_OVERLAY ? "hdd.ovl" : "hdd.img");
        if (!disk)
                return -ENOMEM;
        if (c->inst->disk == DISK_OVERLAY) {
                /* Relative, as written in the header: the root may be
                 * mounted elsewhere on another host. */
                r = qcow2_overlay_create(disk, c->backing_file, c->template_format, c->disk_size, msg, sizeof msg);
                if (r == 0) {
                        /* Read back: the backing file must resolve. */
                        r = image_chain_inspect(disk, &chain, msg, sizeof msg);
                        image_chain_free(chain);
                }
        } else {
                /* Exactly the file checked when it was opened, not what the name holds now. */
                char src[64];
                snprintf(src, sizeof src, "/proc/self/fd/%d", c->template_fd);
                char why[sizeof msg];
                r = image_copy_sparse(src, disk, copy_progress, c, why, sizeof why);
                if (r < 0)
                        snprintf(msg, sizeof msg, "copying template %s: %s", c->template_path, why);
        }
        free(disk);
        if (r == -ECANCELED)
                return r;
        if (r < 0) {
                snprintf(err, errlen, "%s", msg);
                return r;
        }
        r = fsync_fd_dir(c->staging_fd);
        if (r < 0) {
                snprintf(err, errlen, "cannot fsync %s: %s", c->staging, strerror(-r));
                return r;
        }
        return cancelled(c) ? -ECANCELED : 0;
}

/* --- phase 3: commit under the registry lock --- */

static int commit(struct creation *c, char *err, size_t errlen) {
        struct registry *reg = NULL;
        char sizes[128];
        off_t names_size = 0, macs_size = 0;
        int r, vmfd = -1;
        bool appended = false;

        r = registry_lock(c->req->root, &reg, err, errlen);
        if (r < 0)
                return r == -EINVAL ? -EUCLEAN : r;
        /* Sweep first: a dead creator's tail must be cut before ours follows. */
        free(c->live);
        c->live = NULL;
        c->n_live = 0;
        r = sweep(c->req->root, reg, c->staging_name, &c->live, &c->n_live, err, errlen);
        if (r < 0)
                goto fail;
        /* Cannot happen while every creator follows the protocol. */
        if (registry_has_name(reg, c->name, NULL)) {
                snprintf(err, errlen, "name %s was registered by someone else meanwhile", c->name);
                r = -EEXIST;
                goto fail;
        }
        for (unsigned i = 0; i < c->inst->n_nics; i++)
                if (registry_has_mac(reg, c->macs[i], NULL)) {
                        snprintf(err, errlen, "MAC %s was registered by someone else meanwhile", c->mac_strs[i]);
                        r = -EEXIST;
                        goto fail;
                }
        names_size = reg->names_size;
        macs_size = reg->macs_size;
        snprintf(sizes, sizeof sizes, "names_size=%lld\nmacs_size=%lld\n", (long long)names_size, (long long)macs_size);
        r = write_file_at(c->staging_fd, STAGING_COMMIT, sizes, 0644);
        if (r == 0)
                r = fsync_fd_dir(c->staging_fd);
        if (r < 0) {
                snprintf(err, errlen, "cannot write %s/%s: %s", c->staging, STAGING_COMMIT, strerror(-r));
                goto fail;
        }
        appended = true;
        for (unsigned i = 0; i < c->inst->n_nics; i++) {
                r = registry_add_mac(reg, c->macs[i], err, errlen);
                if (r < 0)
                        goto fail;
        }
        /* The commit point: from here on the VM exists. */
        r = registry_add_name(reg, c->name, err, errlen);
        if (r < 0)
                goto fail;

        unlinkat(c->staging_fd, STAGING_COMMIT, 0);
        unlinkat(c->staging_fd, STAGING_INTENT, 0);
        unlinkat(c->staging_fd, STAGING_LOCK, 0);
        vmfd = open(c->vm_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (vmfd < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot open %s: %s", c->vm_root, strerror(-r));
                goto fail;
        }
        r = fsync_fd_dir(c->staging_fd);
        if (r == 0)
                r = fileio_rename_noreplace(vmfd, c->staging_name, c->name);
        if (r < 0) {
                snprintf(err, errlen, "cannot rename %s to %s/%s: %s", c->staging, c->vm_root, c->name, strerror(-r));
                goto fail;
        }
        /* Past the rename the VM is complete. Should this fsync be lost in a
         * crash, the staging dir reappears and the next sweep finishes the
         * rename, since the name is registered. */
        fsync_fd_dir(vmfd);
        close(vmfd);
        registry_free(reg);
        free(c->staging);
        c->staging = NULL;
        return 0;
fail:
        if (appended) {
                char msg[512];
                /* Still under the lock, so the tail is ours to cut. */
                if (registry_truncate(reg, names_size, macs_size, msg, sizeof msg) < 0 && !err[0])
                        snprintf(err, errlen, "%s", msg);
        }
        if (vmfd >= 0)
                close(vmfd);
        remove_tree_at(AT_FDCWD, c->staging);
        free(c->staging);
        c->staging = NULL;
        registry_free(reg);
        return r;
}

static void creation_done(struct creation *c) {
        if (c->staging) {
                /* A failure in phase 2: our flock is still held, so no
                 * sweeper touches this directory while we remove it. */
                remove_tree_at(AT_FDCWD, c->staging);
                free(c->staging);
        }
        if (c->staging_fd >= 0)
                close(c->staging_fd);
        if (c->staging_lock_fd >= 0)
                close(c->staging_lock_fd);
        host_config_free(c->host);
        instance_free(c->inst);
        image_meta_free(c->meta);
        free(c->conf_path);
        free(c->vm_root);
        free(c->template_path);
        if (c->template_fd >= 0)
                close(c->template_fd);
        free(c->template_format);
        free(c->backing_file);
        free(c->live);
}

int create_vm(const struct create_request *req, struct create_result *ret, char *err, size_t errlen) {
        struct creation c = { .req = req, .staging_fd = -1, .staging_lock_fd = -1, .template_fd = -1 };
        struct create_result res = { 0 };
        int r;

        if (errlen)
                err[0] = '\0';
        r = validate(&c, err, errlen);
        if (r == 0 && cancelled(&c))
                r = -ECANCELED;
        if (r == 0)
                r = reserve(&c, err, errlen);
        if (r == 0)
                r = build(&c, err, errlen);
        if (r == 0)
                r = commit(&c, err, errlen);
        if (r < 0) {
                if (r == -ECANCELED)
                        snprintf(err, errlen, "cancelled; nothing was created");
                else if (!err[0])
                        snprintf(err, errlen, "cannot create VM: %s", strerror(-r));
                creation_done(&c);
                return r;
        }

        res.name = strdup(c.name);
        res.mac = strdup(c.mac_strs[0]);
        char macs[VM_NICS_MAX * (MAC_STRLEN + 2)] = "";
        for (unsigned i = 0; i < c.inst->n_nics; i++)
                snprintf(macs + strlen(macs), sizeof macs - strlen(macs), "%s%s", i ? ", " : "", c.mac_strs[i]);
        res.macs = strdup(macs);
        res.vm_dir = paths_join(c.vm_root, c.name);
        res.disk = res.vm_dir ? paths_join(res.vm_dir, c.inst->disk == DISK_OVERLAY ? "hdd.ovl" : "hdd.img") : NULL;
        res.template_path = strdup(c.template_path);
        res.backing_file = c.inst->disk == DISK_OVERLAY ? strdup(c.backing_file) : NULL;
        res.disk_mode = c.inst->disk;
        res.disk_size = c.disk_size;
        res.name_generated = c.generate_name;
        res.size_not_applied = c.size_not_applied;
        creation_done(&c);
        if (!res.name || !res.mac || !res.macs || !res.disk || !res.template_path ||
            (res.disk_mode == DISK_OVERLAY && !res.backing_file)) {
                /* The VM exists; only the report failed. */
                create_result_done(&res);
                snprintf(err, errlen, "out of memory after creating the VM");
                return -ENOMEM;
        }
        *ret = res;
        return 0;
}

void create_result_done(struct create_result *r) {
        if (!r)
                return;
        free(r->name);
        free(r->mac);
        free(r->macs);
        free(r->vm_dir);
        free(r->disk);
        free(r->template_path);
        free(r->backing_file);
        *r = (struct create_result){ 0 };
}
