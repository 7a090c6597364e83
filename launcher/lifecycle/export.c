#include "launcher/lifecycle/export.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "images/archive.h"
#include "images/atomic_file.h"
#include "images/chain.h"
#include "images/flatten.h"
#include "images/io.h"
#include "images/qcow2.h"
#include "launcher/core/actionlog.h"
#include "launcher/core/fileio.h"
#include "launcher/core/safepath.h"
#include "launcher/core/paths.h"
#include "launcher/core/props.h"
#include "launcher/core/runtime.h"
#include "launcher/core/snapstate.h"
#include "launcher/core/vmstate.h"
#include "launcher/lifecycle/blockjob.h"
#include "launcher/lifecycle/create.h"
#include "launcher/lifecycle/registry.h"
#include "qmp/qmp.h"

/* The manifest is written last into a placeholder of this size. */
#define MANIFEST_RESERVED 16384
#define MANIFEST_MAX (64 * 1024)
#define MAX_MEMBERS 24
#define SMALL_MAX (UINT64_C(1) << 20)           /* properties, markers, init.sh */
#define LOG_MAX (UINT64_C(64) << 20)            /* init.log, OVMF_VARS.fd */
#define BOOT_FILE_MAX (UINT64_C(2) << 30)       /* kernel, initrd */
#define DISK_MAX (QCOW2_MAX_VIRTUAL_SIZE + (UINT64_C(1) << 40))
#define IO_BUFFER (1024 * 1024)
#define STAGING_SUFFIX ".importing"
#define STAGING_LOCK ".lock"
#define STAGING_INTENT ".intent"
#define STAGING_IMAGES ".image"
#define DISK_MEMBER "disk.qcow2"
#define MAC_TRIES 1000

/* A running VM's disk (see backup_running). */
#define BACKUP_FILE ".export.qcow2"
#define BACKUP_LOCK ".export.lock"
#define BACKUP_NODE "vrt-export"
#define BACKUP_JOB "vrt-export"
#define QMP_CONNECT_MS 2000

/* Optional files of vm/NAME/ that travel as they are. */
static const char *const vm_files[] = { "OVMF_VARS.fd", "init.log", "init.sh", "CREATED", "INIT-FAILED" };

static uint64_t member_cap(const char *name) {
        if (strcmp(name, DISK_MEMBER) == 0)
                return DISK_MAX;
        if (strcmp(name, "init.log") == 0 || strcmp(name, "OVMF_VARS.fd") == 0)
                return LOG_MAX;
        if (strncmp(name, "image/", 6) == 0) {
                size_t n = strlen(name);
                if (n > 11 && strcmp(name + n - 11, ".properties") == 0)
                        return SMALL_MAX;
                return n > 6 + 6 && strcmp(name + n - 6, ".qcow2") == 0 ? DISK_MAX : BOOT_FILE_MAX;
        }
        return SMALL_MAX;
}

/* The member names an archive may hold: the fixed ones and image/FILE. */
static bool member_allowed(const char *name) {
        if (strcmp(name, "instance.properties") == 0 || strcmp(name, DISK_MEMBER) == 0)
                return true;
        for (size_t i = 0; i < sizeof vm_files / sizeof vm_files[0]; i++)
                if (strcmp(name, vm_files[i]) == 0)
                        return true;
        return strncmp(name, "image/", 6) == 0 && !strchr(name + 6, '/') && config_check_image_name(name + 6) == 0;
}

static int write_all(int fd, const void *buf, size_t len) {
        for (size_t done = 0; done < len;) {
                ssize_t n = write(fd, (const char *)buf + done, len - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                done += (size_t)n;
        }
        return 0;
}

static bool cancelled(volatile sig_atomic_t *c) {
        return c && *c;
}

/* The raw kernel= and initrd= values of a sidecar (image_meta_load makes
 * them absolute; the archive needs them as written). */
struct boot_names {
        char *kernel, *initrd;
};

static int boot_names_set(const char *key, const char *value, unsigned line, void *userdata, char *err, size_t errlen) {
        struct boot_names *b = userdata;
        (void)line, (void)err, (void)errlen;
        char **dst = strcmp(key, "kernel") == 0 ? &b->kernel : strcmp(key, "initrd") == 0 ? &b->initrd : NULL;
        if (dst) {
                free(*dst);
                *dst = strdup(value);
                if (!*dst)
                        return -ENOMEM;
        }
        return 0;
}

/* A file that travels with its sidecar: a plain name next to it. */
static bool boot_file_travels(const char *value) {
        return value && !strchr(value, '/') && config_check_image_name(value) == 0;
}

/* --- export --- */

struct member_info {
        char name[ARCHIVE_NAME_MAX + 1];
        uint64_t size;
        char sha256[ARCHIVE_SHA256_HEX];
};

struct exporter {
        const struct export_request *req;
        struct archive_writer *w;
        struct member_info members[MAX_MEMBERS];
        size_t n_members;
        uint64_t written, total;
        char write_err[256];    /* the archive writer's message: it names the output, not a layer */
};

static int export_progress(struct exporter *x, uint64_t add) {
        x->written += add;
        if (cancelled(x->req->cancel))
                return -ECANCELED;
        if (x->req->progress)
                return x->req->progress(x->written, x->total, x->req->userdata);
        return 0;
}

static struct member_info *new_member(struct exporter *x, const char *name) {
        struct member_info *m = &x->members[x->n_members++];
        snprintf(m->name, sizeof m->name, "%s", name);
        return m;
}

static int add_buffer(struct exporter *x, const char *name, const char *buf, size_t len, char *err, size_t errlen) {
        struct member_info *m = new_member(x, name);
        m->size = len;
        int r = archive_writer_add(x->w, name, buf, len, m->sha256, err, errlen);
        return r < 0 ? r : export_progress(x, len);
}

/* Streams a file. A symbolic link is followed only when root made it (the
 * test root links its kernel), a hard link only to a file everybody may
 * read: the archive is readable by others, images/ may be shared. */
static int add_file(struct exporter *x, const char *name, const char *path, char *err, size_t errlen) {
        struct member_info *m;
        char *buf = NULL;
        struct stat st;
        int fd = -1, r;

        fd = safepath_open_shared(path, err, errlen);
        if (fd < 0) {
                r = fd == -ELOOP || fd == -EMLINK ? -EINVAL : fd;
                goto fail;
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
                goto fail;
        }
        if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > member_cap(name)) {
                r = -EINVAL;
                snprintf(err, errlen, "%s: not a regular file of at most %" PRIu64 " bytes", path, member_cap(name));
                goto fail;
        }
        buf = malloc(IO_BUFFER);
        if (!buf) {
                r = -ENOMEM;
                goto fail;
        }
        m = new_member(x, name);
        m->size = (uint64_t)st.st_size;
        r = archive_writer_begin(x->w, name, m->size, err, errlen);
        for (uint64_t done = 0; r == 0 && done < m->size;) {
                ssize_t n = read(fd, buf, IO_BUFFER < m->size - done ? IO_BUFFER : (size_t)(m->size - done));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        r = n < 0 ? -errno : -EIO;
                        snprintf(err, errlen, "%s: %s", path, n < 0 ? strerror(errno) : "file shrank while being read");
                        break;
                }
                r = archive_writer_data(x->w, buf, (size_t)n, err, errlen);
                if (r == 0)
                        r = export_progress(x, (uint64_t)n);
                done += (uint64_t)n;
        }
        if (r == 0)
                r = archive_writer_end(x->w, m->sha256, err, errlen);
fail:
        free(buf);
        if (fd >= 0)
                close(fd);
        return r;
}

static int disk_write(const void *buf, size_t len, void *userdata) {
        struct exporter *x = userdata;
        /* image_flatten_write() keeps buf unchanged until the next call. */
        int r = archive_writer_data_deferred(x->w, buf, len, x->write_err, sizeof x->write_err);
        return r < 0 ? r : export_progress(x, len);
}


/* --- a running VM: a point-in-time copy of its disk through QMP ---
 *
 * The disk of a running VM is exported from a copy made by QEMU itself:
 * a blank standalone qcow2 of the disk's virtual size is created in the VM
 * directory (vm/NAME/.export.qcow2), added with blockdev-add, and filled
 * by a blockdev-backup job with sync=full from the VM's top node (disk0,
 * so through its whole backing chain). The backup job is copy-before-
 * write: the copy is the disk as it was when the job started, however the
 * guest writes meanwhile (crash-consistent, like pulling the plug at that
 * instant). The copy is then flattened into the archive like a stopped
 * VM's disk and deleted.
 *
 * Chosen over a temporary external snapshot (blockdev-snapshot of an
 * overlay, flatten the frozen chain, block-commit back) because the
 * running VM's block graph is never changed: nothing has to be merged
 * back, and an export that fails or is killed leaves at most a stray
 * copy next to the disk (removed by the next export), never a VM whose
 * disk lives in a temporary overlay. The price is room for a full copy in
 * the VM directory while the export runs. drive-backup would create the
 * target itself but is deprecated in QEMU. */

static int qmp_call(struct qmp *q, const char *cmd, struct json_object *args, struct json_object **ret, char *err,
                    size_t errlen) {
        return blockjob_call(q, cmd, args, ret, err, errlen);
}

static struct json_object *jobj(void) {
        return json_object_new_object();
}

static struct json_object *jstr(struct json_object *o, const char *key, const char *value) {
        return blockjob_str(o, key, value);
}

struct wait_ctx {
        struct exporter *x;
        uint64_t vsize, reported;
};

/* The job's progress as bytes of the archive's total. */
static int backup_progress(uint64_t cur, uint64_t tot, void *userdata) {
        struct wait_ctx *w = userdata;
        struct exporter *x = w->x;
        uint64_t now = tot ? cur * w->vsize / tot : 0;
        if (now > w->reported && now <= w->vsize) {
                x->written += now - w->reported;
                w->reported = now;
        }
        return x->req->progress ? x->req->progress(x->written, x->total, x->req->userdata) : 0;
}

/* Waits until the job concludes (blockjob_wait). Returns 0, or a negative
 * errno with the job's error in err; a cancel request cancels the job. */
static int backup_wait(struct exporter *x, struct qmp *q, uint64_t vsize, char *err, size_t errlen) {
        struct wait_ctx w = { .x = x, .vsize = vsize };
        char msg[512];
        int r = blockjob_wait(q, BACKUP_JOB, backup_progress, &w, x->req->cancel, msg, sizeof msg);
        if (r == -EIO || r == -ECANCELED)
                snprintf(err, errlen, "the backup of the running disk failed: %s", msg);
        else if (r < 0)
                snprintf(err, errlen, "%s", msg);
        if (r == 0 && w.reported < vsize)
                r = export_progress(x, vsize - w.reported);
        return r;
}

/* Copies the running VM's disk into tmp (see above). *lock_fd: the
 * export's lock on the VM directory, held until the copy is removed. */
static int backup_running(struct exporter *x, const struct vm_paths *p, const char *disk, const char *tmp,
                          uint64_t vsize, const char *backing, const char *backing_format, int *lock_fd, char *err, size_t errlen) {
        struct qmp *q = NULL;
        char msg[512], *lock = paths_join(p->vm_dir, BACKUP_LOCK);
        bool added = false, job = false;
        int r;

        if (!lock)
                return -ENOMEM;
        *lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        free(lock);
        if (*lock_fd < 0 || flock(*lock_fd, LOCK_EX | LOCK_NB) < 0) {
                r = errno == EWOULDBLOCK ? -EBUSY : -errno;
                snprintf(err, errlen, "VM %s: %s", x->req->name,
                         r == -EBUSY ? "another export of this VM is running" : strerror(-r));
                return r;
        }
        unlink(tmp);    /* left by an export that was killed */
        r = qmp_connect_unix(p->monitor_sock, QMP_CONNECT_MS, &q, msg, sizeof msg);
        if (r == 0)
                r = qmp_handshake(q, BLOCKJOB_QMP_TIMEOUT_MS, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "VM %s runs, but its QMP monitor %s does not answer: %s", x->req->name,
                         p->monitor_sock, msg);
                goto done;
        }
        /* With the template kept: an overlay on the same backing file, and
         * only what the VM's own layer holds (sync=top). */
        r = backing ? qcow2_overlay_create(tmp, backing, backing_format, vsize, msg, sizeof msg)
                    : qcow2_image_create(tmp, vsize, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "%s", msg);
                goto done;
        }
        /* QEMU may run as another user: the copy belongs to the disk's owner. */
        struct stat dst;
        if (stat(disk, &dst) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot give %s the owner of %s: %s", tmp, disk, strerror(-r));
                goto done;
        }
        r = safepath_hand_over(tmp, dst.st_uid, dst.st_gid, 0600, 0, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "cannot give %s the owner of %s: %s", tmp, disk, msg);
                goto done;
        }
        struct json_object *file = jstr(jstr(jobj(), "driver", "file"), "filename", tmp);
        struct json_object *add = jstr(jstr(jobj(), "driver", "qcow2"), "node-name", BACKUP_NODE);
        if (add) {
                json_object_object_add(add, "file", file);
                if (backing)    /* the data below is the VM's own chain's */
                        json_object_object_add(add, "backing", NULL);
        }
        r = qmp_call(q, "blockdev-add", add, NULL, err, errlen);
        if (r < 0)
                goto done;
        added = true;
        struct json_object *b = jstr(jstr(jstr(jstr(jobj(), "job-id", BACKUP_JOB), "device", "disk0"), "target", BACKUP_NODE),
                                     "sync", backing ? "top" : "full");
        if (b)
                json_object_object_add(b, "auto-dismiss", json_object_new_boolean(0));
        r = qmp_call(q, "blockdev-backup", b, NULL, err, errlen);
        if (r < 0)
                goto done;
        job = true;
        r = backup_wait(x, q, vsize, err, errlen);
done:
        if (job && r != 0 && r != -EIO && r != -ECANCELED)     /* else blockjob_wait dismissed it */
                qmp_call(q, "job-dismiss", jstr(jobj(), "id", BACKUP_JOB), NULL, msg, sizeof msg);
        if (added)
                qmp_call(q, "blockdev-del", jstr(jobj(), "node-name", BACKUP_NODE), NULL, msg, sizeof msg);
        qmp_free(q);
        if (r == -EREMOTEIO)
                r = -EIO;
        return r;
}

static char *manifest_json(const struct exporter *x, const struct instance *inst, uint64_t vsize, const char *disk_path,
                           unsigned n_layers, bool running, char *const *template_members, size_t n_template) {
        struct json_object *o = json_object_new_object(), *macs = json_object_new_array(),
                           *members = json_object_new_array();
        struct utsname u;
        char when[32];
        time_t now = time(NULL);
        struct tm tm;
        char *s = NULL;

        if (!o || !macs || !members)
                goto done;
        gmtime_r(&now, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_object_add(o, "format", json_object_new_string(EXPORT_FORMAT));
        json_object_object_add(o, "version", json_object_new_int(EXPORT_VERSION));
        json_object_object_add(o, "name", json_object_new_string(inst->name));
        json_object_object_add(o, "image", json_object_new_string(inst->image));
        for (unsigned i = 0; i < inst->n_nics; i++)
                if (inst->nics[i].mac)
                        json_object_array_add(macs, json_object_new_string(inst->nics[i].mac));
        json_object_object_add(o, "macs", macs);
        macs = NULL;
        json_object_object_add(o, "exported", json_object_new_string(when));
        json_object_object_add(o, "host", json_object_new_string(uname(&u) == 0 ? u.nodename : "unknown"));
        if (vsize) {
                struct json_object *d = json_object_new_object();
                json_object_object_add(d, "member", json_object_new_string(DISK_MEMBER));
                json_object_object_add(d, "virtual-size", json_object_new_int64((int64_t)vsize));
                json_object_object_add(d, "source", json_object_new_string(disk_path));
                json_object_object_add(d, "source-layers", json_object_new_int((int)n_layers));
                json_object_object_add(d, "running", json_object_new_boolean(running));
                if (n_template) {
                        struct json_object *t = json_object_new_array();
                        for (size_t i = 0; i < n_template; i++)
                                json_object_array_add(t, json_object_new_string(template_members[i]));
                        json_object_object_add(d, "template-layers", t);
                }
                json_object_object_add(o, "disk", d);
        }
        for (size_t i = 0; i < x->n_members; i++) {
                struct json_object *m = json_object_new_object();
                json_object_object_add(m, "name", json_object_new_string(x->members[i].name));
                json_object_object_add(m, "size", json_object_new_int64((int64_t)x->members[i].size));
                json_object_object_add(m, "sha256", json_object_new_string(x->members[i].sha256));
                json_object_array_add(members, m);
        }
        json_object_object_add(o, "members", members);
        members = NULL;
        const char *t = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
        s = t ? strdup(t) : NULL;
done:
        json_object_put(macs);
        json_object_put(members);
        json_object_put(o);
        return s;
}


/* --with-template: the layers below the VM's own, as members image/FILE.
 * They must be files in ROOT/images named as vrt create names them: the
 * VM's layer refers to ../../images/IMAGE.qcow2, every lower layer to a
 * plain name next to it, so the chain resolves the same on the target
 * root. */
static int template_layers(const char *root, const struct instance *inst, const struct image_chain *chain,
                           char **paths, char **members, size_t *n, char *err, size_t errlen) {
        char *images = paths_join(root, "images"), *real_images = NULL, expect[512];
        int r = 0;

        *n = 0;
        real_images = images ? realpath(images, NULL) : NULL;
        if (!real_images) {
                r = images ? -errno : -ENOMEM;
                snprintf(err, errlen, "%s: %s", images ? images : "images", strerror(-r));
                goto done;
        }
        for (size_t k = 1; k < chain->n_layers; k++) {
                const struct image_layer *l = &chain->layers[k];
                const char *written = chain->layers[k - 1].backing_file;
                const char *base = strrchr(l->path, '/') ? strrchr(l->path, '/') + 1 : l->path;
                char *real = realpath(l->path, NULL), *slash = real ? strrchr(real, '/') : NULL;
                if (k == 1)
                        snprintf(expect, sizeof expect, "../../images/%s.qcow2", inst->image);
                else
                        snprintf(expect, sizeof expect, "%s", base);
                bool ok = slash && (*slash = '\0', strcmp(real, real_images) == 0) && written && strcmp(written, expect) == 0 &&
                          config_check_image_name(base) == 0;
                free(real);
                if (!ok) {
                        r = -EINVAL;
                        snprintf(err, errlen, "--with-template: layer %zu of the disk (%s, named \"%s\") is not %s in %s; export it flattened instead",
                                 k, l->path, written ? written : "", expect, images);
                        goto done;
                }
                paths[*n] = strdup(l->path);
                if (asprintf(&members[*n], "image/%s", base) < 0)
                        members[*n] = NULL;
                if (!paths[*n] || !members[*n]) {
                        free(paths[*n]);
                        free(members[*n]);
                        r = -ENOMEM;
                        goto done;
                }
                (*n)++;
        }
done:
        free(images);
        free(real_images);
        return r;
}

int export_vm(const struct export_request *req, struct export_result *ret, char *err, size_t errlen) {
        struct exporter x = { .req = req };
        struct vm_paths p = { 0 };
        struct instance *inst = NULL;
        struct image_meta *meta = NULL;
        struct image_flatten *f = NULL;
        struct atomic_file *af = NULL;
        struct boot_names boot = { 0 };
        char *props = NULL, *sidecar = NULL, *sidecar_text = NULL, *sidecar_rel = NULL, *manifest = NULL, *placeholder = NULL;
        char *kernel_path = NULL, *initrd_path = NULL, *snap_disk = NULL;
        const char *disk = NULL, *busy;
        char msg[1024], fdpath[64];
        size_t props_len = 0, sidecar_len = 0;
        unsigned n_layers = 0;
        struct stat st;
        int r, lock_fd = -1, rw_fd = -1, backup_lock = -1;
        bool running = false;
        struct image_chain *chain = NULL;
        char *tmp = NULL, *tmpl_paths[IMAGE_CHAIN_MAX_DEPTH], *tmpl_members[IMAGE_CHAIN_MAX_DEPTH];
        size_t n_tmpl = 0;
        uint64_t vsize = 0, estimate = 0;

        err[0] = '\0';
        if (config_check_vm_name(req->name, req->runtime_dir, msg, sizeof msg) < 0) {
                snprintf(err, errlen, "%s", msg);
                return -EINVAL;
        }
        if (vm_paths_init(&p, req->root, req->runtime_dir, req->name) < 0)
                return -ENOMEM;
        if (lstat(p.vm_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
                r = -ENOENT;
                snprintf(err, errlen, "no such VM: %s (%s does not exist)", req->name, p.vm_dir);
                goto fail;
        }
        if (lstat(p.destroyed, &st) == 0) {
                r = -EINVAL;
                snprintf(err, errlen, "VM %s is destroyed (%s exists): its disk is gone, nothing to export", req->name,
                         p.destroyed);
                goto fail;
        }
        r = instance_load(p.instance, req->name, req->runtime_dir, &inst, err, errlen);
        if (r < 0)
                goto fail;
        /* Stopped, and kept so: a start now fails on the lock. Or running:
         * its disk is copied through QMP (backup_running). */
        lock_fd = runtime_lock(&p, msg, sizeof msg);
        if (lock_fd < 0) {
                r = lock_fd;
                lock_fd = -1;
                if (r == -EBUSY && runtime_is_running(&p)) {
                        running = true;
                } else {
                        snprintf(err, errlen, "%s: %s", req->name, msg);
                        goto fail;
                }
        }
        if (!running && (busy = vmstate_disk_in_use(&p))) {
                r = -EBUSY;
                snprintf(err, errlen, "VM %s: disk %s is in use by a QEMU (on this or another host sharing the root); stop it first",
                         req->name, busy);
                goto fail;
        }

        r = fileio_read_regular(p.instance, SMALL_MAX, &props, &props_len, err, errlen);
        if (r < 0)
                goto fail;
        if (lstat(p.overlay, &st) == 0)
                disk = p.overlay;
        else if (lstat(p.copy, &st) == 0)
                disk = p.copy;
        /* With snapshots, the newest data is in the active layer. */
        r = snap_active_path(p.vm_dir, &snap_disk, err, errlen);
        if (r < 0)
                goto fail;
        if (snap_disk)
                disk = snap_disk;
        if (disk) {
                r = image_chain_inspect(disk, &chain, err, errlen);
                if (r == 0) {
                        /* QEMU's user owns the disk and could name any backing file. */
                        char *images = paths_join(req->root, "images");
                        const char *const within[] = { p.vm_dir, images, NULL };
                        r = images ? image_chain_check_within(chain, within, err, errlen) : -ENOMEM;
                        free(images);
                }
                if (r < 0) {
                        r = r == -ENOMEM ? r : -EINVAL;
                        goto fail;
                }
                n_layers = (unsigned)chain->n_layers;
                vsize = chain->layers[0].virtual_size;
                if (req->with_template && n_layers > 1) {
                        r = template_layers(req->root, inst, chain, tmpl_paths, tmpl_members, &n_tmpl, err, errlen);
                        if (r < 0)
                                goto fail;
                        for (size_t i = 0; i < n_tmpl; i++)
                                if (stat(tmpl_paths[i], &st) == 0)
                                        x.total += (uint64_t)st.st_size;
                        estimate = stat(disk, &st) == 0 ? (uint64_t)st.st_size : 0;
                } else if (!running) {
                        r = image_flatten_open(disk, &f, err, errlen);
                        if (r < 0) {
                                r = r == -ENOMEM ? r : -EINVAL;
                                goto fail;
                        }
                        estimate = image_flatten_size(f);
                } else {
                        for (size_t i = 0; i < chain->n_layers; i++)
                                estimate += chain->layers[i].allocated_size;
                        if (estimate > vsize)
                                estimate = vsize;
                }
                x.total += estimate;
                if (running)
                        x.total += vsize;       /* the backup job's progress */
        }
        if (asprintf(&sidecar_rel, "images/%s.properties", inst->image) < 0 ||
            !(sidecar = paths_join(req->root, sidecar_rel))) {
                r = -ENOMEM;
                goto fail;
        }
        r = image_meta_load(sidecar, &meta, err, errlen);
        if (r < 0)
                goto fail;
        r = fileio_read_regular(sidecar, SMALL_MAX, &sidecar_text, &sidecar_len, msg, sizeof msg);
        if (r == -ENOENT) {
                free(sidecar);
                sidecar = NULL;
        } else if (r < 0) {
                snprintf(err, errlen, "%s", msg);
                goto fail;
        } else {
                r = props_parse_buffer(sidecar, sidecar_text, sidecar_len, boot_names_set, &boot, err, errlen);
                if (r < 0)
                        goto fail;
                char *images = paths_join(req->root, "images");
                if (!images) {
                        r = -ENOMEM;
                        goto fail;
                }
                if (boot_file_travels(boot.kernel))
                        kernel_path = paths_join(images, boot.kernel);
                if (boot_file_travels(boot.initrd))
                        initrd_path = paths_join(images, boot.initrd);
                free(images);
                if ((boot_file_travels(boot.kernel) && !kernel_path) || (boot_file_travels(boot.initrd) && !initrd_path)) {
                        r = -ENOMEM;
                        goto fail;
                }
                if (kernel_path && stat(kernel_path, &st) == 0)
                        x.total += (uint64_t)st.st_size;
                if (initrd_path && stat(initrd_path, &st) == 0)
                        x.total += (uint64_t)st.st_size;
        }
        if (disk && running) {
                /* Refuse a file that exists before the copy, not after. */
                if (lstat(req->file, &st) == 0) {
                        r = -EEXIST;
                        snprintf(err, errlen, "%s exists; give a new file name", req->file);
                        goto fail;
                }
                tmp = paths_join(p.vm_dir, BACKUP_FILE);
                if (!tmp) {
                        r = -ENOMEM;
                        goto fail;
                }
                r = backup_running(&x, &p, disk, tmp, vsize, n_tmpl ? chain->layers[0].backing_file : NULL,
                                   n_tmpl ? chain->layers[0].backing_format : NULL, &backup_lock, err, errlen);
                if (r < 0) {
                        if (r == -ECANCELED)
                                snprintf(err, errlen, "cancelled; %s was not written", req->file);
                        goto fail;
                }
                x.total -= estimate;
                if (n_tmpl) {
                        x.total += stat(tmp, &st) == 0 ? (uint64_t)st.st_size : 0;
                } else {
                        r = image_flatten_open(tmp, &f, err, errlen);
                        if (r < 0) {
                                r = r == -ENOMEM ? r : -EINVAL;
                                goto fail;
                        }
                        x.total += image_flatten_size(f);
                }
                disk = tmp;
        }
        r = atomic_file_open(req->file, 0644, &af, err, errlen);
        if (r < 0)
                goto fail;
        /* Readable too: the placeholder is checked before it is patched. */
        snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", af->fd);
        rw_fd = open(fdpath, O_RDWR | O_CLOEXEC);
        if (rw_fd < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: %s", req->file, strerror(errno));
                goto fail;
        }
        r = archive_writer_open(rw_fd, &x.w, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "%s: %s", req->file, msg);
                goto fail;
        }
        placeholder = malloc(MANIFEST_RESERVED);
        if (!placeholder) {
                r = -ENOMEM;
                goto fail;
        }
        memset(placeholder, ' ', MANIFEST_RESERVED);
        r = archive_writer_add(x.w, EXPORT_MANIFEST, placeholder, MANIFEST_RESERVED, NULL, msg, sizeof msg);
        if (r == 0)
                r = add_buffer(&x, "instance.properties", props, props_len, msg, sizeof msg);
        if (r == 0 && disk && !f)
                r = add_file(&x, DISK_MEMBER, disk, msg, sizeof msg);       /* --with-template: the VM's layer as it is */
        if (r == 0 && f) {
                struct member_info *m = new_member(&x, DISK_MEMBER);
                m->size = image_flatten_size(f);
                r = archive_writer_begin(x.w, DISK_MEMBER, m->size, msg, sizeof msg);
                if (r == 0)
                        r = image_flatten_write(f, disk_write, NULL, &x, msg, sizeof msg);
                if (r < 0 && x.write_err[0])
                        snprintf(msg, sizeof msg, "%s", x.write_err);
                if (r == 0)
                        r = archive_writer_end(x.w, m->sha256, msg, sizeof msg);
        }
        for (size_t i = 0; r == 0 && i < sizeof vm_files / sizeof vm_files[0]; i++) {
                char *path = paths_join(p.vm_dir, vm_files[i]);
                if (!path) {
                        r = -ENOMEM;
                        break;
                }
                if (lstat(path, &st) == 0)
                        r = add_file(&x, vm_files[i], path, msg, sizeof msg);
                free(path);
        }
        if (r == 0 && sidecar) {
                char name[ARCHIVE_NAME_MAX + 1];
                snprintf(name, sizeof name, "image/%s.properties", inst->image);
                r = add_file(&x, name, sidecar, msg, sizeof msg);
                if (r == 0 && kernel_path) {
                        snprintf(name, sizeof name, "image/%s", boot.kernel);
                        r = add_file(&x, name, kernel_path, msg, sizeof msg);
                }
                if (r == 0 && initrd_path && !(kernel_path && strcmp(boot.kernel, boot.initrd) == 0)) {
                        snprintf(name, sizeof name, "image/%s", boot.initrd);
                        r = add_file(&x, name, initrd_path, msg, sizeof msg);
                }
        }
        for (size_t i = 0; r == 0 && i < n_tmpl; i++)
                r = add_file(&x, tmpl_members[i], tmpl_paths[i], msg, sizeof msg);
        if (r == 0)
                r = archive_writer_close(x.w, msg, sizeof msg);
        if (r < 0) {
                if (r == -ECANCELED)
                        snprintf(err, errlen, "cancelled; %s was not written", req->file);
                else
                        snprintf(err, errlen, "%s: %s", req->file, msg);
                goto fail;
        }
        manifest = manifest_json(&x, inst, vsize, running ? "running VM (blockdev-backup)" : disk ? strrchr(disk, '/') + 1 : NULL,
                                 n_layers, running, tmpl_members, n_tmpl);
        if (!manifest) {
                r = -ENOMEM;
                goto fail;
        }
        size_t mlen = strlen(manifest);
        if (mlen + 1 > MANIFEST_RESERVED) {
                r = -E2BIG;
                snprintf(err, errlen, "%s: the manifest (%zu bytes) does not fit its %d-byte slot", req->file, mlen,
                         MANIFEST_RESERVED);
                goto fail;
        }
        memcpy(placeholder, manifest, mlen);
        placeholder[MANIFEST_RESERVED - 1] = '\n';
        r = archive_writer_patch_first(rw_fd, EXPORT_MANIFEST, placeholder, MANIFEST_RESERVED, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "%s: %s", req->file, msg);
                goto fail;
        }
        if (fstat(rw_fd, &st) == 0)
                ret->archive_size = (uint64_t)st.st_size;
        close(rw_fd);
        rw_fd = -1;
        r = atomic_file_commit(af, err, errlen);
        if (r < 0)
                goto fail;
        ret->disk_size = x.n_members > 1 && disk ? x.members[1].size : 0;
        ret->virtual_size = vsize;
        ret->running = running;
        ret->with_template = n_tmpl > 0;
        ret->n_layers = n_layers;
        ret->n_members = (unsigned)x.n_members + 1;
        actionlog_append(req->root, "export", "%s exported to %s (%u members, %" PRIu64 " bytes)", req->name,
                         req->file, ret->n_members, ret->archive_size);
        r = 0;
fail:
        archive_writer_free(x.w);
        if (rw_fd >= 0)
                close(rw_fd);
        atomic_file_free(af);
        if (lock_fd >= 0) {
                runtime_remove(&p);
                close(lock_fd);
        }
        image_flatten_free(f);
        if (tmp)
                unlink(tmp);
        if (backup_lock >= 0) {
                char *lock = paths_join(p.vm_dir, BACKUP_LOCK);
                if (lock)
                        unlink(lock);
                free(lock);
                close(backup_lock);
        }
        free(tmp);
        image_chain_free(chain);
        for (size_t i = 0; i < n_tmpl; i++) {
                free(tmpl_paths[i]);
                free(tmpl_members[i]);
        }
        instance_free(inst);
        image_meta_free(meta);
        vm_paths_done(&p);
        free(snap_disk);
        free(props);
        free(sidecar);
        free(sidecar_rel);
        free(sidecar_text);
        free(manifest);
        free(placeholder);
        free(kernel_path);
        free(initrd_path);
        free(boot.kernel);
        free(boot.initrd);
        return r;
}

/* --- import: the manifest --- */

struct manifest {
        char name[VM_NAME_MAX + 1];
        char image[256];
        uint8_t macs[VM_NICS_MAX][MAC_LEN];
        unsigned n_macs;
        bool has_disk;
        uint64_t disk_vsize;
        /* --with-template: the layers below disk.qcow2, top first */
        char layers[IMAGE_CHAIN_MAX_DEPTH][ARCHIVE_NAME_MAX + 1];
        size_t n_layers;
        struct member_info members[MAX_MEMBERS];
        size_t n_members;
};

static bool is_sha256_hex(const char *s) {
        return strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}

/* Keys and values of the manifest are echoed in messages: control
 * characters in them (a key holding a newline) must not split the line. */
static void one_line(char *s) {
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        *s = '?';
}

/* Every key checked, unknown ones refused: a newer exporter bumps the version. */
static int parse_manifest(const char *file, const char *text, size_t len, struct manifest *m, char *err,
                          size_t errlen) {
        struct json_tokener *tok = json_tokener_new();
        struct json_object *o = NULL;
        bool seen_format = false, seen_version = false, seen_members = false, seen_macs = false;
        char msg[256], why[512];
        int r = -EINVAL;

        if (!tok)
                return -ENOMEM;
        o = json_tokener_parse_ex(tok, text, (int)len);
        if (!o || json_tokener_get_error(tok) != json_tokener_success) {
                snprintf(err, errlen, "%s: %s: not valid JSON: %s", file, EXPORT_MANIFEST,
                         json_tokener_error_desc(json_tokener_get_error(tok)));
                goto done;
        }
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++)
                if (!strchr(" \t\r\n", text[i])) {
                        snprintf(err, errlen, "%s: %s: data after the JSON object", file, EXPORT_MANIFEST);
                        goto done;
                }
        if (!json_object_is_type(o, json_type_object)) {
                snprintf(err, errlen, "%s: %s: not a JSON object", file, EXPORT_MANIFEST);
                goto done;
        }
#define BAD(...)                                                                 \
        do {                                                                     \
                snprintf(why, sizeof why, __VA_ARGS__);                          \
                one_line(why);                                                   \
                snprintf(err, errlen, "%s: %s: %s", file, EXPORT_MANIFEST, why); \
                goto done;                                                       \
        } while (0)
        json_object_object_foreach(o, key, v) {
                if (strcmp(key, "format") == 0) {
                        if (!json_object_is_type(v, json_type_string) || strcmp(json_object_get_string(v), EXPORT_FORMAT))
                                BAD("format is not \"%s\" (not a vrt export archive)", EXPORT_FORMAT);
                        seen_format = true;
                } else if (strcmp(key, "version") == 0) {
                        if (!json_object_is_type(v, json_type_int))
                                BAD("version is not a number");
                        if (json_object_get_int64(v) != EXPORT_VERSION)
                                BAD("format version %" PRId64 " is not supported (this vrt reads version %d)",
                                    json_object_get_int64(v), EXPORT_VERSION);
                        seen_version = true;
                } else if (strcmp(key, "name") == 0) {
                        const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
                        if (config_check_vm_name(s, NULL, msg, sizeof msg) < 0)
                                BAD("name: %s", msg);
                        snprintf(m->name, sizeof m->name, "%s", s);
                } else if (strcmp(key, "image") == 0) {
                        const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
                        if (strlen(s) >= sizeof m->image || config_check_image_name(s) < 0)
                                BAD("image: invalid image name");
                        snprintf(m->image, sizeof m->image, "%s", s);
                } else if (strcmp(key, "macs") == 0) {
                        if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) > VM_NICS_MAX)
                                BAD("macs: not an array of at most %d MACs", VM_NICS_MAX);
                        for (size_t i = 0; i < json_object_array_length(v); i++) {
                                struct json_object *e = json_object_array_get_idx(v, i);
                                const char *s = json_object_is_type(e, json_type_string) ? json_object_get_string(e) : "";
                                if (mac_parse(s, m->macs[i]) < 0 || mac_validate(m->macs[i], NULL, 0) < 0)
                                        BAD("macs: invalid MAC \"%.20s\"", s);
                        }
                        m->n_macs = (unsigned)json_object_array_length(v);
                        seen_macs = true;
                } else if (strcmp(key, "exported") == 0 || strcmp(key, "host") == 0) {
                        if (!json_object_is_type(v, json_type_string))
                                BAD("%s is not a string", key);
                } else if (strcmp(key, "disk") == 0) {
                        struct json_object *vs = NULL, *mem = NULL, *tl = NULL;
                        if (json_object_is_type(v, json_type_object) && json_object_object_get_ex(v, "template-layers", &tl)) {
                                if (!json_object_is_type(tl, json_type_array) || json_object_array_length(tl) < 1 ||
                                    json_object_array_length(tl) > IMAGE_CHAIN_MAX_DEPTH)
                                        BAD("disk: template-layers is not an array of 1 to %d member names", IMAGE_CHAIN_MAX_DEPTH);
                                for (size_t i = 0; i < json_object_array_length(tl); i++) {
                                        struct json_object *e = json_object_array_get_idx(tl, i);
                                        const char *s = json_object_is_type(e, json_type_string) ? json_object_get_string(e) : "";
                                        if (strncmp(s, "image/", 6) != 0 || !member_allowed(s))
                                                BAD("disk: template-layers[%zu]: \"%.40s\" is not an image/FILE member", i, s);
                                        for (size_t k = 0; k < i; k++)
                                                if (strcmp(m->layers[k], s) == 0)
                                                        BAD("disk: template-layers: %s is listed twice", s);
                                        snprintf(m->layers[i], sizeof m->layers[i], "%s", s);
                                }
                                m->n_layers = json_object_array_length(tl);
                        }
                        if (!json_object_is_type(v, json_type_object) ||
                            !json_object_object_get_ex(v, "virtual-size", &vs) || !json_object_is_type(vs, json_type_int) ||
                            json_object_get_int64(vs) <= 0 || (uint64_t)json_object_get_int64(vs) > QCOW2_MAX_VIRTUAL_SIZE ||
                            !json_object_object_get_ex(v, "member", &mem) || !json_object_is_type(mem, json_type_string) ||
                            strcmp(json_object_get_string(mem), DISK_MEMBER) != 0)
                                BAD("disk: needs \"member\": \"%s\" and a valid \"virtual-size\"", DISK_MEMBER);
                        m->has_disk = true;
                        m->disk_vsize = (uint64_t)json_object_get_int64(vs);
                } else if (strcmp(key, "members") == 0) {
                        if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) > MAX_MEMBERS)
                                BAD("members: not an array of at most %d members", MAX_MEMBERS);
                        for (size_t i = 0; i < json_object_array_length(v); i++) {
                                struct json_object *e = json_object_array_get_idx(v, i), *n = NULL, *s = NULL, *h = NULL;
                                struct member_info *mi = &m->members[i];
                                if (!json_object_is_type(e, json_type_object) || json_object_object_length(e) != 3 ||
                                    !json_object_object_get_ex(e, "name", &n) || !json_object_is_type(n, json_type_string) ||
                                    !json_object_object_get_ex(e, "size", &s) || !json_object_is_type(s, json_type_int) ||
                                    !json_object_object_get_ex(e, "sha256", &h) || !json_object_is_type(h, json_type_string))
                                        BAD("members[%zu]: needs exactly name, size and sha256", i);
                                const char *name = json_object_get_string(n);
                                if (archive_check_name(name, msg, sizeof msg) < 0 || !member_allowed(name) ||
                                    strcmp(name, EXPORT_MANIFEST) == 0)
                                        BAD("members[%zu]: \"%.40s\" is not a member a vrt export holds", i, name);
                                int64_t size = json_object_get_int64(s);
                                if (size < 0 || (uint64_t)size > member_cap(name))
                                        BAD("members[%zu]: %s: size %" PRId64 " is out of range (at most %" PRIu64 ")", i,
                                            name, size, member_cap(name));
                                if (!is_sha256_hex(json_object_get_string(h)))
                                        BAD("members[%zu]: %s: sha256 is not 64 lowercase hex digits", i, name);
                                for (size_t k = 0; k < i; k++)
                                        if (strcmp(m->members[k].name, name) == 0)
                                                BAD("members: %s is listed twice", name);
                                snprintf(mi->name, sizeof mi->name, "%s", name);
                                mi->size = (uint64_t)size;
                                snprintf(mi->sha256, sizeof mi->sha256, "%s", json_object_get_string(h));
                        }
                        m->n_members = json_object_array_length(v);
                        seen_members = true;
                } else {
                        BAD("unknown key \"%.40s\"", key);
                }
        }
        if (!seen_format || !seen_version || !m->name[0] || !m->image[0] || !seen_macs || !seen_members)
                BAD("format, version, name, image, macs and members are required");
        bool has_props = false, has_disk_member = false;
        for (size_t i = 0; i < m->n_members; i++) {
                has_props |= strcmp(m->members[i].name, "instance.properties") == 0;
                has_disk_member |= strcmp(m->members[i].name, DISK_MEMBER) == 0;
        }
        if (!has_props)
                BAD("members: instance.properties is missing");
        if (has_disk_member != m->has_disk)
                BAD("disk and the member %s must come together", DISK_MEMBER);
        if (m->n_layers) {
                char first[ARCHIVE_NAME_MAX + 1];
                snprintf(first, sizeof first, "image/%s.qcow2", m->image);
                if (strcmp(m->layers[0], first) != 0)
                        BAD("disk: template-layers must begin with %s", first);
                for (size_t k = 0; k < m->n_layers; k++) {
                        bool listed = false;
                        for (size_t i = 0; i < m->n_members; i++)
                                listed |= strcmp(m->members[i].name, m->layers[k]) == 0;
                        if (!listed)
                                BAD("disk: template layer %s is not among the members", m->layers[k]);
                }
        }
#undef BAD
        r = 0;
done:
        json_object_put(o);
        json_tokener_free(tok);
        return r;
}

int export_parse_manifest(const char *file, const char *text, size_t len, struct export_manifest_info *ret, char *err,
                          size_t errlen) {
        struct manifest *m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        int r = parse_manifest(file, text, len, m, err, errlen);
        if (r == 0 && ret) {
                *ret = (struct export_manifest_info){ .n_members = m->n_members, .n_macs = m->n_macs,
                                                      .has_disk = m->has_disk, .n_template_layers = m->n_layers };
                snprintf(ret->name, sizeof ret->name, "%s", m->name);
        }
        free(m);
        return r;
}

/* --- import: staging, sweeping, committing --- */

static int rename_noreplace_at(int from_dfd, const char *from, int to_dfd, const char *to) {
        if (renameat2(from_dfd, from, to_dfd, to, RENAME_NOREPLACE) == 0)
                return 0;
        if (errno != EINVAL && errno != ENOSYS)
                return -errno;
        /* NFS: no RENAME_NOREPLACE; link refuses an existing name. */
        if (linkat(from_dfd, from, to_dfd, to, 0) == 0) {
                unlinkat(from_dfd, from, 0);
                return 0;
        }
        if (errno != EPERM)
                return -errno;
        struct stat st;
        if (fstatat(to_dfd, to, &st, AT_SYMLINK_NOFOLLOW) == 0)
                return -EEXIST;
        return renameat(from_dfd, from, to_dfd, to) < 0 ? -errno : 0;
}

/* Moves the staged image files into ROOT/images (an existing file stays:
 * it was found identical before the commit), then gives the directory its
 * name. Returns the number of files installed or a negative errno. */
static int finish_staging(const char *root, int vmfd, const char *entry, const char *name, char *err, size_t errlen) {
        int sfd = -1, ifd = -1, imgfd = -1, r = 0, installed = 0;
        DIR *d = NULL;
        struct dirent *de;
        char *images = paths_join(root, "images");

        if (!images)
                return -ENOMEM;
        sfd = openat(vmfd, entry, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sfd < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot open vm/%s: %s", entry, strerror(-r));
                goto done;
        }
        ifd = openat(sfd, STAGING_IMAGES, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (ifd >= 0) {
                if (mkdir(images, 0755) < 0 && errno != EEXIST) {
                        r = -errno;
                        snprintf(err, errlen, "cannot create %s: %s", images, strerror(-r));
                        goto done;
                }
                imgfd = open(images, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                d = imgfd >= 0 ? fdopendir(dup(ifd)) : NULL;
                if (!d) {
                        r = -errno;
                        snprintf(err, errlen, "cannot open %s: %s", images, strerror(-r));
                        goto done;
                }
                while ((de = readdir(d))) {
                        if (de->d_name[0] == '.')
                                continue;
                        int q = rename_noreplace_at(ifd, de->d_name, imgfd, de->d_name);
                        if (q == 0)
                                installed++;
                        else if (q != -EEXIST) {
                                r = q;
                                snprintf(err, errlen, "cannot install %s/%s: %s", images, de->d_name, strerror(-q));
                                goto done;
                        }
                        unlinkat(ifd, de->d_name, 0);
                }
                fsync(imgfd);
                unlinkat(sfd, STAGING_IMAGES, AT_REMOVEDIR);
        }
        unlinkat(sfd, STAGING_INTENT, 0);
        unlinkat(sfd, STAGING_LOCK, 0);
        fsync(sfd);
        r = rename_noreplace_at(vmfd, entry, vmfd, name);
        if (r < 0) {
                snprintf(err, errlen, "cannot rename vm/%s to vm/%s: %s", entry, name, strerror(-r));
                goto done;
        }
        fsync(vmfd);
        r = installed;
done:
        if (d)
                closedir(d);
        if (imgfd >= 0)
                close(imgfd);
        if (ifd >= 0)
                close(ifd);
        if (sfd >= 0)
                close(sfd);
        free(images);
        return r;
}

static bool staging_name_of(const char *entry, char name[VM_NAME_MAX + 1]) {
        size_t n = strlen(entry), s = strlen(STAGING_SUFFIX);
        char msg[128];
        if (entry[0] != '.' || n <= 1 + s || n - 1 - s > VM_NAME_MAX || strcmp(entry + n - s, STAGING_SUFFIX) != 0)
                return false;
        memcpy(name, entry + 1, n - 1 - s);
        name[n - 1 - s] = '\0';
        return config_check_vm_name(name, NULL, msg, sizeof msg) == 0;
}

/* Imports killed midway: completed when their name was registered (the
 * commit point), else removed. Their MAC lines, if any reached the
 * registry, stay: a MAC reserved for nothing is harmless, cutting the
 * registry back is not (a create may have appended since). Needs the
 * registry lock. skip: our own entry, never probed (see create.c). */
static int import_sweep(const char *root, struct registry *reg, const char *skip, char *err, size_t errlen) {
        char *vm_root = paths_join(root, "vm");
        struct dirent *de;
        DIR *d;
        int r = 0;

        if (!vm_root)
                return -ENOMEM;
        d = opendir(vm_root);
        if (!d) {
                free(vm_root);
                return errno == ENOENT ? 0 : -errno;
        }
        while ((de = readdir(d))) {
                char name[VM_NAME_MAX + 1];
                struct stat st;
                if (!staging_name_of(de->d_name, name) || (skip && strcmp(de->d_name, skip) == 0))
                        continue;
                int sfd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sfd < 0)
                        continue;
                int lfd = openat(sfd, STAGING_LOCK, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
                bool live = lfd >= 0 && flock(lfd, LOCK_EX | LOCK_NB) < 0;
                bool complete = fstatat(sfd, "instance.properties", &st, AT_SYMLINK_NOFOLLOW) == 0;
                if (lfd >= 0)
                        close(lfd);
                close(sfd);
                if (live)
                        continue;
                if (registry_has_name(reg, name, NULL) && complete && fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        r = finish_staging(root, dirfd(d), de->d_name, name, err, errlen);
                        if (r < 0)
                                break;
                        r = 0;
                } else {
                        char *path = paths_join(vm_root, de->d_name);
                        if (path)
                                create_remove_tree(path);
                        free(path);
                }
        }
        closedir(d);
        free(vm_root);
        return r;
}

struct importer {
        const struct import_request *req;
        struct manifest m;
        struct archive_reader *ar;
        struct host_config *host;
        struct instance *inst;
        char name[VM_NAME_MAX + 1];
        uint8_t macs[VM_NICS_MAX][MAC_LEN];
        bool new_macs;
        char *vm_root;
        char staging_name[VM_NAME_MAX + sizeof STAGING_SUFFIX + 2];
        char *staging;
        int staging_fd, lock_fd;
        uint64_t done, total;
};

static bool path_exists(const char *path) {
        struct stat st;
        return lstat(path, &st) == 0 || errno != ENOENT;
}

/* Phase 1, under the registry lock: sweep, check the name and MACs (or
 * choose new MACs), make the staging directory. */
static int import_reserve(struct importer *x, char *err, size_t errlen) {
        const char *file = x->req->file;
        struct registry *reg = NULL;
        char intent[VM_NAME_MAX + VM_NICS_MAX * (MAC_STRLEN + 8) + 16], mac[MAC_STRLEN], *p = NULL;
        unsigned line = 0;
        int r;

        r = registry_lock(x->req->root, &reg, err, errlen);
        if (r < 0)
                return r == -EINVAL ? -EUCLEAN : r;
        if (mkdir(x->vm_root, 0755) < 0 && errno != EEXIST) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", x->vm_root, strerror(-r));
                goto done;
        }
        r = create_sweep(x->req->root, reg, err, errlen);
        if (r >= 0)
                r = import_sweep(x->req->root, reg, NULL, err, errlen);
        if (r < 0)
                goto done;
        r = -EINVAL;
        if (registry_has_name(reg, x->name, &line)) {
                snprintf(err, errlen, "%s: name %s is already registered (%s:%u); names are never reused: use --name NEW",
                         file, x->name, reg->names_path, line);
                goto done;
        }
        snprintf(x->staging_name, sizeof x->staging_name, ".%s%s", x->name, STAGING_SUFFIX);
        char creating[VM_NAME_MAX + 16];
        snprintf(creating, sizeof creating, ".%s.creating", x->name);
        const char *entries[] = { x->name, creating, x->staging_name };
        for (size_t i = 0; i < 3; i++) {
                free(p);
                p = paths_join(x->vm_root, entries[i]);
                if (!p || path_exists(p)) {
                        snprintf(err, errlen, "%s: %s already exists%s", file, p ? p : entries[i],
                                 i ? " (being created or imported right now)" : "");
                        goto done;
                }
        }
        /* The archived MACs stay unless this root has registered one
         * already (MACs are never reused): that NIC gets a fresh one. */
        x->new_macs = false;
        for (unsigned i = 0; i < x->m.n_macs; i++) {
                bool taken = registry_has_mac(reg, x->m.macs[i], NULL);
                memcpy(x->macs[i], x->m.macs[i], MAC_LEN);
                for (unsigned k = 0; k < i; k++)
                        taken |= memcmp(x->macs[k], x->macs[i], MAC_LEN) == 0;
                if (!taken)
                        continue;
                x->new_macs = true;
                int attempt;
                for (attempt = 0; attempt < MAC_TRIES; attempt++) {
                        bool dup = false;
                        if ((r = mac_generate(x->macs[i])) < 0) {
                                snprintf(err, errlen, "cannot generate a MAC: %s", strerror(-r));
                                goto done;
                        }
                        for (unsigned k = 0; k < i; k++)
                                dup |= memcmp(x->macs[k], x->macs[i], MAC_LEN) == 0;
                        if (!dup && !registry_has_mac(reg, x->macs[i], NULL))
                                break;
                }
                r = -EINVAL;
                if (attempt == MAC_TRIES) {
                        r = -EADDRNOTAVAIL;
                        snprintf(err, errlen, "no free MAC address found in %d tries", MAC_TRIES);
                        goto done;
                }
        }
        x->staging = paths_join(x->vm_root, x->staging_name);
        if (!x->staging) {
                r = -ENOMEM;
                goto done;
        }
        if (mkdir(x->staging, 0755) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", x->staging, strerror(-r));
                free(x->staging);
                x->staging = NULL;
                goto done;
        }
        x->staging_fd = open(x->staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (x->staging_fd >= 0)
                x->lock_fd = openat(x->staging_fd, STAGING_LOCK, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (x->staging_fd < 0 || x->lock_fd < 0 || flock(x->lock_fd, LOCK_EX | LOCK_NB) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot prepare %s: %s", x->staging, strerror(-r));
                goto done;
        }
        int len = snprintf(intent, sizeof intent, "name=%s\nsource=import\n", x->name);
        for (unsigned i = 0; i < x->m.n_macs; i++) {
                mac_format(x->macs[i], mac);
                len += snprintf(intent + len, sizeof intent - (size_t)len, i ? "mac.%u=%s\n" : "mac%.0u=%s\n", i, mac);
        }
        int fd = openat(x->staging_fd, STAGING_INTENT, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        r = fd < 0 ? -errno : write_all(fd, intent, (size_t)len);
        if (fd >= 0)
                close(fd);
        if (r < 0) {
                snprintf(err, errlen, "cannot write %s/%s: %s", x->staging, STAGING_INTENT, strerror(-r));
                goto done;
        }
        r = 0;
done:
        free(p);
        registry_free(reg);
        return r;
}

/* Where a member goes in the staging directory. */
static void staged_name(const struct manifest *m, const char *member, char *out, size_t len) {
        if (strcmp(member, DISK_MEMBER) == 0)
                snprintf(out, len, m->n_layers ? "hdd.ovl" : "hdd.img");
        else if (strncmp(member, "image/", 6) == 0)
                snprintf(out, len, "%s/%s", STAGING_IMAGES, member + 6);
        else
                snprintf(out, len, "%s", member);
}

static bool all_zero(const char *p, size_t n) {
        return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Phase 2: every member, in the manifest's order, checked as it streams. */
static int import_extract(struct importer *x, char *buf, char *err, size_t errlen) {
        const char *file = x->req->file;
        struct archive_member am;
        char sum[ARCHIVE_SHA256_HEX], target[ARCHIVE_NAME_MAX + 16];
        int r, fd = -1;

        for (size_t i = 0; i < x->m.n_members; i++) {
                const struct member_info *mi = &x->m.members[i];
                r = archive_reader_next(x->ar, &am, err, errlen);
                /* A truncated or damaged archive is bad input, not an I/O failure. */
                if (r < 0)
                        return r == -ENOMEM ? r : -EINVAL;
                if (r == 0) {
                        snprintf(err, errlen, "%s: the archive ends before member %s (truncated)", file, mi->name);
                        return -EINVAL;
                }
                if (strcmp(am.name, mi->name) != 0) {
                        snprintf(err, errlen, "%s: member %s where the manifest lists %s", file, am.name, mi->name);
                        return -EINVAL;
                }
                if (am.size != mi->size) {
                        snprintf(err, errlen, "%s: member %s: its header says %" PRIu64 " bytes, the manifest %" PRIu64,
                                 file, am.name, am.size, mi->size);
                        return -EINVAL;
                }
                staged_name(&x->m, am.name, target, sizeof target);
                if (strncmp(am.name, "image/", 6) == 0 && mkdirat(x->staging_fd, STAGING_IMAGES, 0755) < 0 &&
                    errno != EEXIST) {
                        r = -errno;
                        snprintf(err, errlen, "cannot create %s/%s: %s", x->staging, STAGING_IMAGES, strerror(-r));
                        return r;
                }
                fd = openat(x->staging_fd, target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY,
                            strcmp(am.name, "OVMF_VARS.fd") == 0 ? 0600 : 0644);
                if (fd < 0) {
                        r = -errno;
                        snprintf(err, errlen, "cannot create %s/%s: %s", x->staging, target, strerror(-r));
                        return r;
                }
                uint64_t off = 0;
                for (;;) {
                        ssize_t n = archive_reader_read(x->ar, buf, IO_BUFFER, err, errlen);
                        if (n < 0) {
                                r = n == -ENOMEM ? -ENOMEM : -EINVAL;
                                goto fail;
                        }
                        if (n == 0)
                                break;
                        /* Zero blocks stay holes, as in the source. */
                        for (size_t b = 0; b < (size_t)n; b += 4096) {
                                size_t bl = (size_t)n - b < 4096 ? (size_t)n - b : 4096;
                                if (!all_zero(buf + b, bl) && (r = pwrite_full(fd, buf + b, bl, (off_t)(off + b))) < 0) {
                                        snprintf(err, errlen, "cannot write %s/%s: %s", x->staging, target, strerror(-r));
                                        goto fail;
                                }
                        }
                        off += (uint64_t)n;
                        x->done += (uint64_t)n;
                        if (cancelled(x->req->cancel)) {
                                r = -ECANCELED;
                                goto fail;
                        }
                        if (x->req->progress && (r = x->req->progress(x->done, x->total, x->req->userdata)) != 0) {
                                r = r < 0 ? r : -ECANCELED;
                                goto fail;
                        }
                }
                if (ftruncate(fd, (off_t)off) < 0 || fsync(fd) < 0) {
                        r = -errno;
                        snprintf(err, errlen, "cannot write %s/%s: %s", x->staging, target, strerror(-r));
                        goto fail;
                }
                close(fd);
                fd = -1;
                archive_reader_sha256(x->ar, sum);
                if (strcmp(sum, mi->sha256) != 0) {
                        snprintf(err, errlen, "%s: member %s: SHA-256 %.12s... does not match the manifest's %.12s... (damaged or altered)",
                                 file, am.name, sum, mi->sha256);
                        return -EINVAL;
                }
        }
        r = archive_reader_next(x->ar, &am, err, errlen);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        if (r > 0) {
                snprintf(err, errlen, "%s: member %s is not listed in the manifest", file, am.name);
                return -EINVAL;
        }
        return 0;
fail:
        if (fd >= 0)
                close(fd);
        return r;
}

/* "STAGING/instance.properties:3: ..." reads "FILE: instance.properties:3: ...". */
static void rename_in_message(char *err, size_t errlen, const char *staged, const char *file, const char *member) {
        size_t n = strlen(staged);
        char rest[1024];
        if (strncmp(err, staged, n) != 0)
                return;
        snprintf(rest, sizeof rest, "%s", err + n);
        snprintf(err, errlen, "%s: %s%s", file, member, rest);
}


/* --with-template: the VM's layer names ../../images/IMAGE.qcow2 and each
 * template layer the next by a plain name, the last one none, so that the
 * chain resolves inside images/ after the commit and nowhere else. Each
 * layer is read from the staging directory or, when it was found identical
 * there, from images/. */
static int check_template(struct importer *x, const char *images, char *err, size_t errlen) {
        const char *file = x->req->file;
        char path[4096], expect[512], msg[256];
        const char *what = DISK_MEMBER;
        struct qcow2_header h;
        int r = 0;

        snprintf(path, sizeof path, "%s/hdd.ovl", x->staging);
        for (size_t k = 0; k <= x->m.n_layers; k++) {
                int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
                uint8_t magic[4] = { 0 };
                bool qcow2 = fd >= 0 && pread(fd, magic, sizeof magic, 0) == (ssize_t)sizeof magic &&
                             qcow2_has_magic(magic, sizeof magic);
                r = qcow2 ? qcow2_header_read(fd, &h, msg, sizeof msg) : 0;
                if (fd >= 0)
                        close(fd);
                if (fd < 0) {
                        snprintf(err, errlen, "%s: %s: cannot be read: %s", file, what, strerror(errno));
                        return -EINVAL;
                }
                if (k == 0 && !qcow2) {
                        snprintf(err, errlen, "%s: %s is not a qcow2 image", file, what);
                        return -EINVAL;
                }
                if (r < 0) {
                        snprintf(err, errlen, "%s: %s: %s", file, what, msg);
                        return -EINVAL;
                }
                if (k == 0 && h.size != x->m.disk_vsize) {
                        snprintf(err, errlen, "%s: %s: virtual size %" PRIu64 ", the manifest says %" PRIu64, file, what,
                                 h.size, x->m.disk_vsize);
                        return -EINVAL;
                }
                if (k == x->m.n_layers) {
                        if (qcow2 && h.has_backing_file) {
                                snprintf(err, errlen, "%s: %s, the last template layer, names a backing file (%.60s)", file,
                                         what, h.backing_file);
                                return -EINVAL;
                        }
                        break;
                }
                const char *base = x->m.layers[k] + 6;
                if (k == 0)
                        snprintf(expect, sizeof expect, "../../images/%s", base);
                else
                        snprintf(expect, sizeof expect, "%s", base);
                if (!qcow2 || !h.has_backing_file || strcmp(h.backing_file, expect) != 0 || !h.has_backing_format) {
                        snprintf(err, errlen, "%s: %s must name the backing file %s, with its format", file, what, expect);
                        return -EINVAL;
                }
                bool last = k + 1 == x->m.n_layers;
                if (strcmp(h.backing_format, "qcow2") != 0 && !(last && strcmp(h.backing_format, "raw") == 0)) {
                        snprintf(err, errlen, "%s: %s: backing format %.20s is not allowed here", file, what, h.backing_format);
                        return -EINVAL;
                }
                what = x->m.layers[k];
                snprintf(path, sizeof path, "%s/%s/%s", x->staging, STAGING_IMAGES, base);
                if (!path_exists(path))
                        snprintf(path, sizeof path, "%s/%s", images, base);
        }
        return 0;
}

/* Phase 3: what the members say, against this root. Returns the number
 * of image files that would be installed. */
static int import_validate(struct importer *x, char *err, size_t errlen) {
        const char *file = x->req->file;
        struct image_chain *chain = NULL;
        struct boot_names boot = { 0 };
        char *props = NULL, *images = NULL, *text = NULL, *path = NULL;
        char sidecar_member[ARCHIVE_NAME_MAX + 1], msg[1024];
        int r;

        props = paths_join(x->staging, "instance.properties");
        images = paths_join(x->req->root, "images");
        if (!props || !images) {
                r = -ENOMEM;
                goto done;
        }
        r = instance_load(props, NULL, x->req->runtime_dir, &x->inst, err, errlen);
        if (r == 0)
                r = x->inst->line_name && strcmp(x->inst->name, x->m.name) == 0 ? 0 : -EINVAL;
        if (r < 0) {
                if (r == -EINVAL && x->inst)
                        snprintf(err, errlen, "%s: instance.properties: name=%s does not match the manifest's %s", file,
                                 x->inst->name, x->m.name);
                rename_in_message(err, errlen, props, file, "instance.properties");
                r = r == -ENOMEM ? r : -EINVAL;
                goto done;
        }
        if (strcmp(x->inst->image, x->m.image) != 0) {
                r = -EINVAL;
                snprintf(err, errlen, "%s: instance.properties: image=%s does not match the manifest's %s", file,
                         x->inst->image, x->m.image);
                goto done;
        }
        unsigned k = 0;
        for (unsigned i = 0; i < x->inst->n_nics; i++) {
                uint8_t mac[MAC_LEN];
                if (!x->inst->nics[i].mac)
                        continue;
                if (k >= x->m.n_macs || mac_parse(x->inst->nics[i].mac, mac) < 0 || memcmp(mac, x->m.macs[k], MAC_LEN)) {
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: instance.properties: the MACs differ from the manifest's", file);
                        goto done;
                }
                k++;
        }
        if (k != x->m.n_macs) {
                r = -EINVAL;
                snprintf(err, errlen, "%s: instance.properties: the MACs differ from the manifest's", file);
                goto done;
        }
        r = instance_check(x->inst, x->host, err, errlen);
        if (r < 0) {
                rename_in_message(err, errlen, props, file, "instance.properties");
                snprintf(msg, sizeof msg, "%s (on this root)", err);
                snprintf(err, errlen, "%s", msg);
                r = -EINVAL;
                goto done;
        }

        if (x->m.has_disk && !x->m.n_layers) {
                path = paths_join(x->staging, "hdd.img");
                if (!path) {
                        r = -ENOMEM;
                        goto done;
                }
                r = image_chain_inspect(path, &chain, msg, sizeof msg);
                if (r < 0) {
                        rename_in_message(msg, sizeof msg, path, file, DISK_MEMBER);
                        snprintf(err, errlen, "%s", msg);
                        r = r == -ENOMEM ? r : -EINVAL;
                        goto done;
                }
                /* A backing file would let the archive pick any file on this host. */
                if (chain->n_layers != 1 || strcmp(chain->layers[0].format, "qcow2") != 0 || chain->layers[0].backing_file) {
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: %s is not a standalone qcow2 image%s", file, DISK_MEMBER,
                                 chain->layers[0].backing_file ? " (it names a backing file)" : "");
                        goto done;
                }
                if (chain->layers[0].virtual_size != x->m.disk_vsize) {
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: %s: virtual size %" PRIu64 ", the manifest says %" PRIu64, file,
                                 DISK_MEMBER, chain->layers[0].virtual_size, x->m.disk_vsize);
                        goto done;
                }
        }

        /* The sidecar: identical files on this root are used, missing ones
         * installed at the commit, different ones refused. */
        r = 0;
        snprintf(sidecar_member, sizeof sidecar_member, "image/%s.properties", x->m.image);
        int installs = 0;
        for (size_t i = 0; i < x->m.n_members; i++) {
                const struct member_info *mi = &x->m.members[i];
                char sum[ARCHIVE_SHA256_HEX];
                if (strncmp(mi->name, "image/", 6) != 0)
                        continue;
                free(path);
                path = paths_join(images, mi->name + 6);
                if (!path) {
                        r = -ENOMEM;
                        goto done;
                }
                if (!path_exists(path)) {
                        installs++;
                        continue;
                }
                r = archive_file_sha256(path, sum, msg, sizeof msg);
                if (r < 0 || strcmp(sum, mi->sha256) != 0) {
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: %s differs from %s on this root; move that away or import into another root",
                                 file, mi->name, path);
                        goto done;
                }
                unlinkat(x->staging_fd, (snprintf(msg, sizeof msg, "%s/%s", STAGING_IMAGES, mi->name + 6), msg), 0);
        }
        free(path);
        path = NULL;
        if (x->m.n_layers && (r = check_template(x, images, err, errlen)) < 0)
                goto done;
        bool has_sidecar = false;
        for (size_t i = 0; i < x->m.n_members; i++)
                has_sidecar |= strcmp(x->m.members[i].name, sidecar_member) == 0;
        if (has_sidecar) {
                /* Checked from the archive's copy (the root's one is identical
                 * if present): boot files either travel or exist here. */
                size_t len = 0;
                struct image_meta *meta = NULL;
                if (asprintf(&path, "%s/%s/%s.properties", x->staging, STAGING_IMAGES, x->m.image) < 0) {
                        path = NULL;
                        r = -ENOMEM;
                        goto done;
                }
                if (!path_exists(path)) {
                        free(path);
                        path = paths_join(images, sidecar_member + 6);
                }
                r = path ? image_meta_load(path, &meta, msg, sizeof msg) : -ENOMEM;
                image_meta_free(meta);
                if (r == 0)
                        r = fileio_read_regular(path, SMALL_MAX, &text, &len, msg, sizeof msg);
                if (r == 0)
                        r = props_parse_buffer(path, text, len, boot_names_set, &boot, msg, sizeof msg);
                if (r < 0) {
                        rename_in_message(msg, sizeof msg, path, file, sidecar_member);
                        snprintf(err, errlen, "%s", msg);
                        r = r == -ENOMEM ? r : -EINVAL;
                        goto done;
                }
                const char *vals[2] = { boot.kernel, boot.initrd };
                for (size_t i = 0; i < 2; i++) {
                        if (!vals[i])
                                continue;
                        char member[ARCHIVE_NAME_MAX + 1];
                        bool listed = false;
                        snprintf(member, sizeof member, "image/%s", vals[i]);
                        for (size_t j = 0; j < x->m.n_members; j++)
                                listed |= strcmp(x->m.members[j].name, member) == 0;
                        if (boot_file_travels(vals[i]) && listed)
                                continue;
                        free(path);
                        path = vals[i][0] == '/' ? strdup(vals[i]) : paths_join(images, vals[i]);
                        if (!path || access(path, R_OK) < 0) {
                                r = -EINVAL;
                                snprintf(err, errlen, "%s: %s names %s=%s, which is neither in the archive nor on this root (%s)",
                                         file, sidecar_member, i ? "initrd" : "kernel", vals[i], path ? path : "");
                                goto done;
                        }
                }
        }
        r = installs;
done:
        image_chain_free(chain);
        free(boot.kernel);
        free(boot.initrd);
        free(props);
        free(images);
        free(text);
        free(path);
        return r;
}

/* The VM's own record: its new name and MACs, and its disk a copy now. */
static int import_rewrite(struct importer *x, char *err, size_t errlen) {
        char mac[MAC_STRLEN], *text;
        unsigned k = 0;
        int r, fd;

        free(x->inst->name);
        x->inst->name = strdup(x->name);
        if (!x->inst->name)
                return -ENOMEM;
        for (unsigned i = 0; i < x->inst->n_nics; i++) {
                if (!x->inst->nics[i].mac)
                        continue;
                mac_format(x->macs[k++], mac);
                free(x->inst->nics[i].mac);
                x->inst->nics[i].mac = strdup(mac);
                if (!x->inst->nics[i].mac)
                        return -ENOMEM;
        }
        if (x->m.has_disk)
                x->inst->disk = x->m.n_layers ? DISK_OVERLAY : DISK_COPY;
        text = instance_to_string(x->inst);
        if (!text)
                return -ENOMEM;
        unlinkat(x->staging_fd, "instance.properties", 0);
        fd = openat(x->staging_fd, "instance.properties", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        r = fd < 0 ? -errno : write_all(fd, text, strlen(text));
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (fd >= 0)
                close(fd);
        free(text);
        if (r == 0 && fsync(x->staging_fd) < 0)
                r = -errno;
        if (r < 0)
                snprintf(err, errlen, "cannot write %s/instance.properties: %s", x->staging, strerror(-r));
        return r;
}

/* Phase 4, under the registry lock: MACs, then the name (the commit point),
 * then the images and the rename. */
static int import_commit(struct importer *x, struct import_result *res, char *err, size_t errlen) {
        struct registry *reg = NULL;
        off_t names_size, macs_size;
        char mac[MAC_STRLEN];
        int r, vmfd = -1;
        bool appended = false;

        r = registry_lock(x->req->root, &reg, err, errlen);
        if (r < 0)
                return r == -EINVAL ? -EUCLEAN : r;
        /* A dead creator's tail must be cut before ours follows it. */
        r = create_sweep(x->req->root, reg, err, errlen);
        if (r >= 0)
                r = import_sweep(x->req->root, reg, x->staging_name, err, errlen);
        if (r < 0)
                goto fail;
        char *p = paths_join(x->vm_root, x->name);
        bool exists = !p || path_exists(p);
        free(p);
        if (registry_has_name(reg, x->name, NULL) || exists) {
                r = -EINVAL;
                snprintf(err, errlen, "%s: name %s was taken by someone else meanwhile", x->req->file, x->name);
                goto fail;
        }
        for (unsigned i = 0; i < x->m.n_macs; i++)
                if (registry_has_mac(reg, x->macs[i], NULL)) {
                        mac_format(x->macs[i], mac);
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: MAC %s was registered by someone else meanwhile", x->req->file, mac);
                        goto fail;
                }
        names_size = reg->names_size;
        macs_size = reg->macs_size;
        appended = true;
        for (unsigned i = 0; i < x->m.n_macs; i++)
                if ((r = registry_add_mac(reg, x->macs[i], err, errlen)) < 0)
                        goto fail;
        r = registry_add_name(reg, x->name, err, errlen);
        if (r < 0)
                goto fail;
        appended = false;       /* committed: from here on the VM exists */
        vmfd = open(x->vm_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        r = vmfd < 0 ? -errno : finish_staging(x->req->root, vmfd, x->staging_name, x->name, err, errlen);
        if (r < 0) {
                /* The next import completes it (the name is registered). */
                if (vmfd < 0)
                        snprintf(err, errlen, "cannot open %s: %s", x->vm_root, strerror(-r));
                goto fail;
        }
        res->images_installed = (unsigned)r;
        free(x->staging);
        x->staging = NULL;
        r = 0;
fail:
        if (appended) {
                char msg[512];
                /* Still under the lock: the tail is ours to cut. */
                registry_truncate(reg, names_size, macs_size, msg, sizeof msg);
        }
        if (vmfd >= 0)
                close(vmfd);
        registry_free(reg);
        return r;
}

int import_vm(const struct import_request *req, struct import_result *ret, char *err, size_t errlen) {
        struct importer x = { .req = req, .staging_fd = -1, .lock_fd = -1 };
        struct archive_member am;
        struct statvfs sv;
        char *buf = NULL, *conf = NULL, msg[1024];
        size_t got = 0;
        bool made_vm_root = false;
        int r;

        err[0] = '\0';
        *ret = (struct import_result){ 0 };
        x.vm_root = paths_join(req->root, "vm");
        conf = paths_join(req->root, "vrt.conf");
        buf = malloc(IO_BUFFER);
        if (!x.vm_root || !conf || !buf) {
                r = -ENOMEM;
                goto fail;
        }
        if (req->new_name && config_check_vm_name(req->new_name, req->runtime_dir, msg, sizeof msg) < 0) {
                r = -EINVAL;
                snprintf(err, errlen, "%s", msg);
                goto fail;
        }
        r = host_config_load(conf, &x.host, err, errlen);
        if (r < 0) {
                r = r == -ENOMEM ? r : -EINVAL;
                goto fail;
        }
        r = archive_reader_open(req->file, &x.ar, err, errlen);
        if (r < 0)
                goto fail;
        r = archive_reader_next(x.ar, &am, err, errlen);
        if (r == 0 || (r > 0 && strcmp(am.name, EXPORT_MANIFEST) != 0)) {
                r = -EINVAL;
                snprintf(err, errlen, "%s: the first member is %s, not %s: not a vrt export archive", req->file,
                         got ? am.name : (r == 0 ? "missing" : am.name), EXPORT_MANIFEST);
                goto fail;
        }
        if (r < 0) {
                r = -EINVAL;
                goto fail;
        }
        if (am.size > MANIFEST_MAX) {
                r = -EINVAL;
                snprintf(err, errlen, "%s: %s is %" PRIu64 " bytes, at most %d are allowed", req->file, EXPORT_MANIFEST,
                         am.size, MANIFEST_MAX);
                goto fail;
        }
        for (;;) {
                ssize_t n = archive_reader_read(x.ar, buf + got, IO_BUFFER - got, err, errlen);
                if (n < 0) {
                        r = -EINVAL;
                        goto fail;
                }
                if (n == 0)
                        break;
                got += (size_t)n;
        }
        r = parse_manifest(req->file, buf, got, &x.m, err, errlen);
        if (r < 0)
                goto fail;
        snprintf(x.name, sizeof x.name, "%s", req->new_name ? req->new_name : x.m.name);
        r = config_check_vm_name(x.name, req->runtime_dir, msg, sizeof msg);
        if (r < 0) {
                r = -EINVAL;
                snprintf(err, errlen, "%s: %s", req->file, msg);
                goto fail;
        }
        for (size_t i = 0; i < x.m.n_members; i++)
                x.total += x.m.members[i].size;
        if (mkdir(x.vm_root, 0755) == 0)
                made_vm_root = true;
        else if (errno != EEXIST) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", x.vm_root, strerror(-r));
                goto fail;
        }
        if (statvfs(x.vm_root, &sv) == 0 && (uint64_t)sv.f_bavail * sv.f_frsize < x.total) {
                r = -ENOSPC;
                snprintf(err, errlen, "%s: the archive holds %" PRIu64 " bytes, %s has %" PRIu64 " free", req->file,
                         x.total, x.vm_root, (uint64_t)sv.f_bavail * sv.f_frsize);
                goto fail;
        }
        r = import_reserve(&x, err, errlen);
        if (r == 0)
                r = import_extract(&x, buf, err, errlen);
        if (r == 0)
                r = import_validate(&x, err, errlen);
        if (r >= 0)
                r = import_rewrite(&x, err, errlen);
        if (r == 0 && cancelled(req->cancel))
                r = -ECANCELED;
        if (r == 0)
                r = import_commit(&x, ret, err, errlen);
        if (r < 0)
                goto fail;

        snprintf(ret->name, sizeof ret->name, "%s", x.name);
        for (unsigned i = 0; i < x.m.n_macs; i++) {
                char mac[MAC_STRLEN];
                mac_format(x.macs[i], mac);
                snprintf(ret->macs + strlen(ret->macs), sizeof ret->macs - strlen(ret->macs), "%s%s", i ? ", " : "", mac);
        }
        ret->new_macs = x.new_macs;
        ret->disk_size = x.m.has_disk ? x.m.disk_vsize : 0;
        snprintf(ret->vm_dir, sizeof ret->vm_dir, "%s/%s", x.vm_root, x.name);
        actionlog_append(req->root, "import", "%s imported from %s (exported as %s; MACs %s)", x.name, req->file,
                         x.m.name, ret->macs[0] ? ret->macs : "none");
        r = 0;
fail:
        if (r == -ECANCELED)
                snprintf(err, errlen, "cancelled; nothing was imported");
        else if (r < 0 && !err[0])
                snprintf(err, errlen, "%s: cannot import: %s", req->file, strerror(-r));
        if (x.staging)
                /* Our flock is still held: no sweeper touches it meanwhile. */
                create_remove_tree(x.staging);
        if (x.staging_fd >= 0)
                close(x.staging_fd);
        if (x.lock_fd >= 0)
                close(x.lock_fd);
        if (r < 0 && made_vm_root)
                rmdir(x.vm_root);       /* ours and empty: a failed import leaves no vm/ */
        free(x.staging);
        archive_reader_free(x.ar);
        host_config_free(x.host);
        instance_free(x.inst);
        free(x.vm_root);
        free(conf);
        free(buf);
        return r;
}

int import_disk_vm(const struct import_disk_request *req, struct import_result *ret, char *err, size_t errlen) {
        struct import_request ireq = { .root = req->root, .runtime_dir = req->runtime_dir, .file = req->source,
                                       .new_name = req->new_name, .cancel = req->cancel };
        struct importer x = { .req = &ireq, .staging_fd = -1, .lock_fd = -1 };
        struct instance *src = NULL;
        char *conf = NULL, *text = NULL, *disk = NULL, msg[1024];
        bool made_vm_root = false;
        int r, fd = -1;

        err[0] = '\0';
        *ret = (struct import_result){ 0 };
        x.vm_root = paths_join(req->root, "vm");
        conf = paths_join(req->root, "vrt.conf");
        if (!x.vm_root || !conf) {
                r = -ENOMEM;
                goto fail;
        }
        if (req->new_name && config_check_vm_name(req->new_name, req->runtime_dir, msg, sizeof msg) < 0) {
                r = -EINVAL;
                snprintf(err, errlen, "%s", msg);
                goto fail;
        }
        r = host_config_load(conf, &x.host, err, errlen);
        if (r < 0) {
                r = r == -ENOMEM ? r : -EINVAL;
                goto fail;
        }
        r = instance_load(req->props, req->default_name, req->runtime_dir, &src, err, errlen);
        if (r < 0) {
                r = r == -ENOMEM ? r : -EINVAL;
                goto fail;
        }
        snprintf(x.m.name, sizeof x.m.name, "%s", src->name);
        snprintf(x.m.image, sizeof x.m.image, "%s", src->image);
        for (unsigned i = 0; i < src->n_nics; i++) {
                if (!src->nics[i].mac)
                        continue;
                if (mac_parse(src->nics[i].mac, x.m.macs[x.m.n_macs]) < 0) {
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: invalid MAC %s", req->props, src->nics[i].mac);
                        goto fail;
                }
                x.m.n_macs++;
        }
        x.m.has_disk = true;
        x.m.disk_vsize = req->virtual_size;
        snprintf(x.name, sizeof x.name, "%s", req->new_name ? req->new_name : x.m.name);
        if (mkdir(x.vm_root, 0755) == 0)
                made_vm_root = true;
        else if (errno != EEXIST) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", x.vm_root, strerror(-r));
                goto fail;
        }
        r = import_reserve(&x, err, errlen);
        if (r < 0)
                goto fail;
        /* The saved record, with its name written out (import_validate wants it). */
        text = instance_to_string(src);
        if (!text) {
                r = -ENOMEM;
                goto fail;
        }
        fd = openat(x.staging_fd, "instance.properties", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        r = fd < 0 ? -errno : write_all(fd, text, strlen(text));
        if (fd >= 0)
                close(fd);
        if (r < 0) {
                snprintf(err, errlen, "cannot write %s/instance.properties: %s", x.staging, strerror(-r));
                goto fail;
        }
        disk = paths_join(x.staging, "hdd.img");
        r = disk ? req->write_disk(disk, req->userdata, err, errlen) : -ENOMEM;
        if (r == 0 && cancelled(req->cancel))
                r = -ECANCELED;
        if (r == 0)
                r = import_validate(&x, err, errlen);
        if (r >= 0)
                r = import_rewrite(&x, err, errlen);
        if (r == 0 && cancelled(req->cancel))
                r = -ECANCELED;
        if (r == 0)
                r = import_commit(&x, ret, err, errlen);
        if (r < 0)
                goto fail;
        snprintf(ret->name, sizeof ret->name, "%s", x.name);
        for (unsigned i = 0; i < x.m.n_macs; i++) {
                char mac[MAC_STRLEN];
                mac_format(x.macs[i], mac);
                snprintf(ret->macs + strlen(ret->macs), sizeof ret->macs - strlen(ret->macs), "%s%s", i ? ", " : "", mac);
        }
        ret->new_macs = x.new_macs;
        ret->disk_size = x.m.disk_vsize;
        snprintf(ret->vm_dir, sizeof ret->vm_dir, "%s/%s", x.vm_root, x.name);
        actionlog_append(req->root, "restore", "%s restored from %s (backed up as %s; MACs %s)", x.name, req->source,
                         x.m.name, ret->macs[0] ? ret->macs : "none");
        r = 0;
fail:
        if (r == -ECANCELED)
                snprintf(err, errlen, "cancelled; nothing was restored");
        else if (r < 0 && !err[0])
                snprintf(err, errlen, "%s: cannot restore: %s", req->source, strerror(-r));
        if (x.staging)
                create_remove_tree(x.staging);
        if (x.staging_fd >= 0)
                close(x.staging_fd);
        if (x.lock_fd >= 0)
                close(x.lock_fd);
        if (r < 0 && made_vm_root)
                rmdir(x.vm_root);
        free(x.staging);
        host_config_free(x.host);
        instance_free(x.inst);
        instance_free(src);
        free(x.vm_root);
        free(conf);
        free(text);
        free(disk);
        return r;
}
