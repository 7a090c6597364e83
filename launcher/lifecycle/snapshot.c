#include "launcher/lifecycle/snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "images/chain.h"
#include "images/qcow2.h"
#include "launcher/core/config.h"
#include "launcher/core/fileio.h"
#include "launcher/core/safepath.h"
#include "launcher/core/lease.h"
#include "launcher/core/migreq.h"
#include "launcher/core/paths.h"
#include "launcher/core/runtime.h"
#include "launcher/core/snapstate.h"
#include "launcher/core/spawn.h"
#include "launcher/core/vmstate.h"
#include "launcher/lifecycle/blockjob.h"
#include "launcher/vm/qemu_argv.h"
#include "qmp/agent.h"
#include "qmp/qmp.h"

#define SNAP_QMP_TIMEOUT_MS 10000
/* guest-fsfreeze-freeze flushes every file system of the guest first. */
#define SNAP_FREEZE_TIMEOUT_MS 10000
#define SNAP_MERGE_TIMEOUT_MS (30 * 60 * 1000)
#define SNAP_LOCK_FILE SNAP_DIR "/.lock"

struct ctx {
        const char *root;
        const char *name;
        struct vm_paths p;
        struct snap_state st;
        char active[SNAP_LAYER_MAX];    /* the active layer, also without a state file */
        int lock_fd;                    /* flock of snapshots/.lock: one snapshot command at a time */
        int run_fd;                     /* the runtime lock while we work on a stopped VM, else -1 */
        int lease_fd;                   /* and its lease on the shared root, else -1 */
        bool running;
};

static void ctx_done(struct ctx *c) {
        lease_release(&c->lease_fd);
        if (c->run_fd >= 0) {
                runtime_remove(&c->p);
                close(c->run_fd);
        }
        if (c->lock_fd >= 0)
                close(c->lock_fd);
        vm_paths_done(&c->p);
        c->run_fd = c->lock_fd = c->lease_fd = -1;
}

static char *vm_file(const struct ctx *c, const char *rel) {
        return paths_join(c->p.vm_dir, rel);
}

/* The backing file name a layer in snapshots/ stores for the layer rel. */
static void backing_name(const char *rel, char *buf, size_t len) {
        if (strncmp(rel, SNAP_DIR "/", sizeof SNAP_DIR) == 0)
                snprintf(buf, len, "%s", rel + sizeof SNAP_DIR);
        else
                snprintf(buf, len, "../%s", rel);
}

/* Opens the VM for a snapshot command. need_stopped: refuse a running VM
 * (msg_running says why); modify: take the locks. */
static int ctx_open(struct ctx *c, const char *root, const char *runtime_dir, const char *name, bool modify,
                    bool need_stopped, const char *msg_running, char *err, size_t errlen) {
        char msg[1024];
        struct stat st;
        int r;

        *c = (struct ctx){ .root = root, .name = name, .lock_fd = -1, .run_fd = -1, .lease_fd = -1 };
        r = vmstate_check_exists(root, runtime_dir, name, err, errlen);
        if (r < 0)
                return r;
        if (vm_paths_init(&c->p, root, runtime_dir, name) < 0) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        if (vmstate_is_destroyed(c->p.vm_dir)) {
                snprintf(err, errlen, "destroyed (%s exists)", c->p.destroyed);
                return -EINVAL;
        }
        struct lease_holder holder;
        if (!runtime_is_running(&c->p) && vmstate_elsewhere(c->p.vm_dir, &holder) == 1) {
                char where[300];
                vmstate_describe_elsewhere(&holder, where, sizeof where);
                snprintf(err, errlen, "%s; run this there", where);
                return -EREMOTE;
        }
        /* Before anything is created: a stopped VM in transit (its lease
         * may be free for a moment at the handover) is not ours to change. */
        if (modify && !runtime_is_running(&c->p) &&
            (r = migreq_check_migrating(root, name, "try again when it has arrived", err, errlen)) < 0)
                return r;
        if (modify) {
                /* One snapshot command at a time (the callers' precheck()
                 * has refused bad input before this creates anything).
                 * Across hosts the lease (below) or the running VM's
                 * host decides. */
                char *dir = vm_file(c, SNAP_DIR), *lock = vm_file(c, SNAP_LOCK_FILE);
                r = 0;
                if (!dir || !lock)
                        r = -ENOMEM;
                else if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                        r = -errno;
                bool said = false;
                if (r == 0) {
                        /* Below vm/NAME/ with no link: snapshots/ planted as
                         * one would put the layers elsewhere. */
                        c->lock_fd = safepath_open_beneath(c->p.vm_dir, lock, O_RDWR | O_CREAT, 0644, SAFEPATH_ONE_LINK,
                                                           err, errlen);
                        if (c->lock_fd < 0) {
                                r = c->lock_fd == -ELOOP || c->lock_fd == -EMLINK ? -EINVAL : c->lock_fd;
                                c->lock_fd = -1;
                                said = true;
                        } else if (flock(c->lock_fd, LOCK_EX | LOCK_NB) < 0) {
                                r = errno == EWOULDBLOCK ? -EBUSY : -errno;
                        }
                }
                if (r == -EBUSY)
                        snprintf(err, errlen, "another snapshot command works on this VM (%s)", lock);
                else if (r < 0 && !said)
                        snprintf(err, errlen, "%s: %s", dir ? dir : "", strerror(-r));
                free(dir);
                free(lock);
                if (r < 0)
                        return r;
                /* Holding the runtime lock keeps a start out while we change
                 * the chain of a stopped VM. A running VM is seen first:
                 * runtime_lock() would wait out what looks like a
                 * momentary holder before saying it is busy. */
                c->run_fd = runtime_is_running(&c->p) ? -EBUSY : runtime_lock(&c->p, msg, sizeof msg);
                if (c->run_fd == -EBUSY) {
                        c->running = true;
                        c->run_fd = -1;
                } else if (c->run_fd < 0) {
                        r = c->run_fd;
                        c->run_fd = -1;
                        snprintf(err, errlen, "%s", msg);
                        return r;
                } else {
                        /* And the lease, so that no other host starts it
                         * meanwhile (as destroy does). */
                        char host[LEASE_HOST_MAX + 1];
                        struct lease_holder stale;
                        r = lease_host_name(host, sizeof host, err, errlen);
                        if (r < 0)
                                return r;
                        r = lease_acquire(c->p.vm_dir, name, host, &stale, msg, sizeof msg);
                        if (r == -EBUSY) {
                                struct lease_holder h;
                                char where[300];
                                lease_probe(c->p.vm_dir, &h);
                                vmstate_describe_elsewhere(&h, where, sizeof where);
                                snprintf(err, errlen, "%s; run this there", where);
                                return -EREMOTE;
                        }
                        if (r < 0) {
                                snprintf(err, errlen, "%s", msg);
                                return r;
                        }
                        c->lease_fd = r;
                        (void)lease_sync(r);
                }
        } else {
                c->running = runtime_is_running(&c->p);
        }
        if (c->running && need_stopped) {
                snprintf(err, errlen, "is running; %s", msg_running);
                return -EBUSY;
        }
        r = snap_state_load(c->p.vm_dir, &c->st, err, errlen);
        if (r < 0)
                return r;
        if (c->st.present) {
                snprintf(c->active, sizeof c->active, "%s", c->st.active);
        } else {
                const char *cand[] = { "hdd.ovl", "hdd.img" };
                for (size_t i = 0; i < 2 && !c->active[0]; i++) {
                        char *f = vm_file(c, cand[i]);
                        if (f && lstat(f, &st) == 0)
                                snprintf(c->active, sizeof c->active, "%s", cand[i]);
                        free(f);
                }
                if (!c->active[0]) {
                        snprintf(err, errlen, "has no disk (neither %s nor %s exists)", c->p.overlay, c->p.copy);
                        return -EINVAL;
                }
        }
        return 0;
}

/* Creates snapshots/NEXT.qcow2 over the layer rel with the native writer,
 * owned and permitted like that layer (QEMU may run as another user).
 * Returns 0 with the new layer's name in ret. */
static int new_layer(struct ctx *c, const char *over, char ret[SNAP_LAYER_MAX], char *err, size_t errlen) {
        struct image_chain *chain = NULL;
        char msg[1024], backing[SNAP_LAYER_MAX + 4];
        char *over_path = vm_file(c, over), *path = NULL;
        struct stat st;
        int r;

        snprintf(ret, SNAP_LAYER_MAX, SNAP_DIR "/%u.qcow2", c->st.next);
        path = vm_file(c, ret);
        char *dir = vm_file(c, SNAP_DIR);
        if (!over_path || !path || !dir) {
                free(dir);
                r = -ENOMEM;
                snprintf(err, errlen, "out of memory");
                goto out;
        }
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", dir, strerror(-r));
                free(dir);
                goto out;
        }
        free(dir);
        r = image_chain_inspect(over_path, &chain, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "%s", msg);
                goto out;
        }
        if (chain->n_layers >= IMAGE_CHAIN_MAX_DEPTH) {
                snprintf(err, errlen, "the chain of %s has %zu layers already, the most there may be: delete a snapshot first",
                         over_path, chain->n_layers);
                r = -E2BIG;
                goto out;
        }
        backing_name(over, backing, sizeof backing);
        unlink(path);   /* left by a command that was interrupted before it saved the state */
        /* The directory is fsynced once, by snap_state_save() right after:
         * the state naming this layer cannot be durable without its name
         * (the file's own fsync commits the journal that holds the link,
         * and NFS makes both synchronously). */
        r = qcow2_overlay_create_dir_unsynced(path, backing, chain->layers[0].format, 0, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "cannot create %s: %s", path, msg);
                goto out;
        }
        if (stat(over_path, &st) == 0 &&
            (r = safepath_hand_over(path, st.st_uid, st.st_gid, (st.st_mode & 0777) | 0600, 0, msg, sizeof msg)) < 0) {
                snprintf(err, errlen, "cannot give %s the owner of %s: %s", path, over_path, msg);
                unlink(path);
                goto out;
        }
out:
        image_chain_free(chain);
        free(over_path);
        free(path);
        return r;
}

static void unlink_layer(struct ctx *c, const char *rel) {
        char *path = vm_file(c, rel);
        if (path && strncmp(rel, SNAP_DIR "/", sizeof SNAP_DIR) == 0)
                unlink(path);
        free(path);
}

static bool referenced(const struct ctx *c, const char *rel) {
        if (strcmp(rel, c->st.active) == 0)
                return true;
        for (size_t i = 0; i < c->st.n; i++)
                if (strcmp(c->st.snaps[i].layer, rel) == 0)
                        return true;
        return false;
}

/* qemu-img next to the configured QEMU, else the Debian one. */
static void qemu_img_path(const struct ctx *c, char *buf, size_t len) {
        struct host_config *h = NULL;
        char msg[512], *conf = paths_join(c->root, "vrt.conf");
        snprintf(buf, len, "/usr/bin/qemu-img");
        if (conf && host_config_load(conf, &h, msg, sizeof msg) == 0 && h->qemu) {
                const char *slash = strrchr(h->qemu, '/');
                if (slash) {
                        snprintf(buf, len, "%.*s/qemu-img", (int)(slash - h->qemu), h->qemu);
                        if (access(buf, X_OK) < 0)
                                snprintf(buf, len, "/usr/bin/qemu-img");
                }
        }
        host_config_free(h);
        free(conf);
}

struct layer_file {
        char rel[SNAP_LAYER_MAX];
        char parent[SNAP_LAYER_MAX];    /* "" when the backing file is not one of the VM's layers */
        char backing_file[QCOW2_BACKING_FILE_MAX + 1];
        char backing_format[QCOW2_FORMAT_NAME_MAX + 1];
};

/* The layer files in snapshots/ with their parents, from their headers. */
static int scan_layers(struct ctx *c, struct layer_file **ret, size_t *ret_n, char *err, size_t errlen) {
        char *dir = vm_file(c, SNAP_DIR);
        struct layer_file *v = NULL;
        size_t n = 0;
        DIR *d = dir ? opendir(dir) : NULL;
        int r = 0;

        if (!d) {
                r = dir ? -errno : -ENOMEM;
                snprintf(err, errlen, "%s: %s", dir ? dir : "", strerror(-r));
                free(dir);
                return r;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
                char rel[SNAP_LAYER_MAX + 16];
                snprintf(rel, sizeof rel, SNAP_DIR "/%s", de->d_name);
                if (strlen(rel) >= SNAP_LAYER_MAX || !snap_layer_name_valid(rel))
                        continue;
                struct layer_file *nv = realloc(v, (n + 1) * sizeof *v);
                if (!nv) {
                        r = -ENOMEM;
                        snprintf(err, errlen, "out of memory");
                        break;
                }
                v = nv;
                struct layer_file *l = &v[n];
                *l = (struct layer_file){ 0 };
                snprintf(l->rel, sizeof l->rel, "%s", rel);
                char *path = vm_file(c, rel), msg[512];
                int fd = path ? open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : -1;
                struct qcow2_header h;
                if (fd < 0 || qcow2_header_read(fd, &h, msg, sizeof msg) < 0 || !h.has_backing_file || !h.has_backing_format) {
                        /* Not ours to judge: such a file is left alone. */
                        if (fd >= 0)
                                close(fd);
                        free(path);
                        snprintf(l->parent, sizeof l->parent, "?");
                        n++;
                        continue;
                }
                close(fd);
                free(path);
                snprintf(l->backing_file, sizeof l->backing_file, "%s", h.backing_file);
                snprintf(l->backing_format, sizeof l->backing_format, "%s", h.backing_format);
                char parent[SNAP_LAYER_MAX + 16];
                if (strncmp(h.backing_file, "../", 3) == 0)
                        snprintf(parent, sizeof parent, "%s", h.backing_file + 3);
                else
                        snprintf(parent, sizeof parent, SNAP_DIR "/%s", h.backing_file);
                if (strlen(parent) < SNAP_LAYER_MAX && snap_layer_name_valid(parent))
                        snprintf(l->parent, sizeof l->parent, "%s", parent);
                n++;
        }
        closedir(d);
        free(dir);
        if (r < 0) {
                free(v);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

static struct json_object *jstr(const char *s) {
        return json_object_new_string(s);
}

/* The running chain's QEMU nodes, by the real path of their files. */
struct live {
        struct qmp *q;
        struct json_object *nodes;      /* query-named-block-nodes */
};

static int live_open(struct ctx *c, struct live *l, char *err, size_t errlen) {
        char msg[1024];
        int r = qmp_connect_unix(c->p.monitor_sock, SNAP_QMP_TIMEOUT_MS, &l->q, msg, sizeof msg);
        if (r == 0)
                r = qmp_handshake(l->q, SNAP_QMP_TIMEOUT_MS, msg, sizeof msg);
        if (r < 0)
                snprintf(err, errlen, "%s: %s", c->p.monitor_sock, msg);
        return r;
}

static int live_refresh(struct live *l, char *err, size_t errlen) {
        json_object_put(l->nodes);
        l->nodes = NULL;
        return qmp_execute(l->q, "query-named-block-nodes", NULL, SNAP_QMP_TIMEOUT_MS, &l->nodes, err, errlen);
}

static void live_close(struct live *l) {
        json_object_put(l->nodes);
        qmp_free(l->q);
        *l = (struct live){ 0 };
}

static bool live_has(const struct live *l, const char *node, const char *drv) {
        for (size_t i = 0; json_object_is_type(l->nodes, json_type_array) && i < json_object_array_length(l->nodes); i++) {
                struct json_object *n = json_object_array_get_idx(l->nodes, i), *d, *name;
                if (json_object_object_get_ex(n, "drv", &d) && json_object_object_get_ex(n, "node-name", &name) &&
                    strcmp(json_object_get_string(name), node) == 0 && strcmp(json_object_get_string(d), drv) == 0)
                        return true;
        }
        return false;
}

/* The names of the qcow2 node of the layer rel (path) in QEMU, and of its
 * file node when that is one of its own: the nodes vrt gave it, "disk0",
 * "disk0-lI" with "disk0-lI-file" from the start (qemu_argv.c), or
 * "snap-N" for snapshots/N.qcow2 added live (its file node is implicit).
 * A qcow2 node's "file" in query-named-block-nodes is a json: name, so
 * the layer is found by its file node. Returns false when QEMU has no
 * node of that file. */
static bool live_node(const struct live *l, const char *rel, const char *path, char *fmt, size_t fmtlen,
                      char *file, size_t filelen) {
        char want[PATH_MAX];
        if (!realpath(path, want))
                return false;
        for (size_t i = 0; json_object_is_type(l->nodes, json_type_array) && i < json_object_array_length(l->nodes); i++) {
                struct json_object *n = json_object_array_get_idx(l->nodes, i), *f, *d, *name;
                char have[PATH_MAX];
                unsigned idx;
                int used = 0;
                if (!json_object_object_get_ex(n, "file", &f) || !json_object_object_get_ex(n, "drv", &d) ||
                    !json_object_object_get_ex(n, "node-name", &name) || strcmp(json_object_get_string(d), "file") != 0 ||
                    !realpath(json_object_get_string(f), have) || strcmp(have, want) != 0)
                        continue;
                const char *nn = json_object_get_string(name);
                file[0] = '\0';
                if (sscanf(nn, "disk0-l%u-file%n", &idx, &used) == 1 && nn[used] == '\0') {
                        if (idx == 0)
                                snprintf(fmt, fmtlen, "disk0");
                        else
                                snprintf(fmt, fmtlen, "disk0-l%u", idx);
                        snprintf(file, filelen, "%s", nn);
                } else if (nn[0] == '#' && strncmp(rel, SNAP_DIR "/", sizeof SNAP_DIR) == 0) {
                        snprintf(fmt, fmtlen, "snap-%.*s", (int)strcspn(rel + sizeof SNAP_DIR, "."), rel + sizeof SNAP_DIR);
                } else {
                        continue;
                }
                if (live_has(l, fmt, "qcow2"))
                        return true;
        }
        return false;
}

/* Streams the layer `lower` (open in QEMU) into the one layer above it
 * with block-stream, waits for the job, and takes `lower` out of QEMU. */
static int live_merge(struct ctx *c, struct live *l, const struct layer_file *lower, const struct layer_file *upper,
                      char *err, size_t errlen) {
        char msg[1024], job[64], *lower_path = vm_file(c, lower->rel), *upper_path = vm_file(c, upper->rel),
                                  *base_path = vm_file(c, lower->parent);
        char top_node[128], base_node[128], lower_node[128], lower_file[128] = "";
        int r;

        if (!lower_path || !upper_path || !base_path) {
                r = -ENOMEM;
                snprintf(err, errlen, "out of memory");
                goto out;
        }
        r = live_refresh(l, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "query-named-block-nodes: %s", msg);
                goto out;
        }
        char unused[128];
        bool ok_t = live_node(l, upper->rel, upper_path, top_node, sizeof top_node, unused, sizeof unused),
             ok_b = live_node(l, lower->parent, base_path, base_node, sizeof base_node, unused, sizeof unused),
             ok_l = live_node(l, lower->rel, lower_path, lower_node, sizeof lower_node, lower_file, sizeof lower_file);
        if (!ok_t || !ok_b || !ok_l) {
                snprintf(err, errlen, "QEMU has no node for %s", !ok_t ? upper_path : !ok_b ? base_path : lower_path);
                r = -ENODEV;
                goto out;
        }
        snprintf(job, sizeof job, "vrt-stream-%ld", (long)getpid());

        struct json_object *a = json_object_new_object();
        json_object_object_add(a, "job-id", jstr(job));
        json_object_object_add(a, "device", jstr(top_node));
        json_object_object_add(a, "base-node", jstr(base_node));
        json_object_object_add(a, "backing-file", jstr(lower->backing_file));
        r = qmp_execute(l->q, "block-stream", a, SNAP_QMP_TIMEOUT_MS, NULL, msg, sizeof msg);
        json_object_put(a);
        if (r < 0) {
                snprintf(err, errlen, "block-stream %s into %s: %s", lower->rel, upper->rel, msg);
                goto out;
        }
        /* Until BLOCK_JOB_COMPLETED (or _CANCELLED) for our job. */
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (bool done = false; !done;) {
                struct json_object *jobs = NULL, *ev;
                r = qmp_execute(l->q, "query-block-jobs", NULL, SNAP_QMP_TIMEOUT_MS, &jobs, msg, sizeof msg);
                json_object_put(jobs);
                if (r < 0) {
                        snprintf(err, errlen, "query-block-jobs: %s", msg);
                        goto out;
                }
                while (qmp_next_event(l->q, &ev) == 1) {
                        struct json_object *name, *data, *dev, *e = NULL;
                        if (json_object_object_get_ex(ev, "event", &name) &&
                            json_object_object_get_ex(ev, "data", &data) && json_object_object_get_ex(data, "device", &dev) &&
                            strcmp(json_object_get_string(dev), job) == 0) {
                                const char *what = json_object_get_string(name);
                                if (strcmp(what, "BLOCK_JOB_COMPLETED") == 0 || strcmp(what, "BLOCK_JOB_CANCELLED") == 0) {
                                        done = true;
                                        if (json_object_object_get_ex(data, "error", &e) || strcmp(what, "BLOCK_JOB_CANCELLED") == 0) {
                                                snprintf(err, errlen, "block-stream %s into %s: %s", lower->rel, upper->rel,
                                                         e ? json_object_get_string(e) : "cancelled");
                                                r = -EIO;
                                        }
                                }
                        }
                        json_object_put(ev);
                }
                clock_gettime(CLOCK_MONOTONIC, &now);
                if (!done && (now.tv_sec - start.tv_sec) * 1000 > SNAP_MERGE_TIMEOUT_MS) {
                        snprintf(err, errlen, "block-stream %s into %s: not done after %d s", lower->rel, upper->rel,
                                 SNAP_MERGE_TIMEOUT_MS / 1000);
                        r = -ETIMEDOUT;
                }
                if (r < 0)
                        goto out;
                if (!done) {
                        struct timespec ts = { 0, 20 * 1000000L };
                        nanosleep(&ts, NULL);
                }
        }
        /* The stream took lower out of the chain: close it in QEMU. */
        const char *dels[2] = { lower_node, lower_file[0] ? lower_file : NULL };
        for (size_t i = 0; i < 2 && dels[i]; i++) {
                struct json_object *d = json_object_new_object();
                json_object_object_add(d, "node-name", jstr(dels[i]));
                r = qmp_execute(l->q, "blockdev-del", d, SNAP_QMP_TIMEOUT_MS, NULL, msg, sizeof msg);
                json_object_put(d);
                if (r < 0) {
                        snprintf(err, errlen, "blockdev-del %s (%s): %s", dels[i], lower->rel, msg);
                        goto out;
                }
        }
out:
        free(lower_path);
        free(upper_path);
        free(base_path);
        return r;
}

/* Removes the layers in snapshots/ that neither the active layer nor a tag
 * needs: one with no layer above it is deleted; one with exactly one layer
 * above it is merged into that layer first, which then backs onto the
 * removed layer's backing file. A layer under several others stays.
 *
 * While the VM runs, a layer QEMU has open is merged by QEMU: block-stream
 * into the layer above with the removed layer's backing as base, then
 * blockdev-del (live_merge()). Any other merge runs `qemu-img rebase`
 * (safe mode: it copies into the upper
 * layer every cluster in which the old and the new backing chains differ,
 * then rewrites its backing file name). vrt's own qcow2 writer lays out
 * empty images only; merging needs data clusters, L2 tables and refcount
 * growth in an existing image, where QEMU's code is the reference. The
 * merge writes only the upper layer, never the removed one or anything
 * below it, so the template stays untouched, and an interrupted merge
 * leaves a chain that still reads the same data. */
static int collect(struct ctx *c, struct snapshot_result *res, char *err, size_t errlen) {
        char qemu_img[512];
        struct live l = { 0 };
        bool changed = true;
        int r = 0;

        qemu_img_path(c, qemu_img, sizeof qemu_img);
        if (c->running && (r = live_open(c, &l, err, errlen)) < 0)
                return r;
        while (changed && r == 0) {
                struct layer_file *v = NULL;
                size_t n = 0;
                changed = false;
                r = scan_layers(c, &v, &n, err, errlen);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n && !changed; i++) {
                        if (referenced(c, v[i].rel) || strcmp(v[i].parent, "?") == 0)
                                continue;
                        size_t kids = 0, kid = 0;
                        for (size_t k = 0; k < n; k++)
                                if (strcmp(v[k].parent, v[i].rel) == 0) {
                                        kids++;
                                        kid = k;
                                }
                        if (kids > 1)
                                continue;
                        /* A layer of the running chain is merged by QEMU. */
                        char *lower_path = c->running ? vm_file(c, v[i].rel) : NULL;
                        bool in_qemu = false;
                        char fmt_node[128], file_node[128];
                        if (lower_path && (r = live_refresh(&l, err, errlen)) == 0)
                                in_qemu = live_node(&l, v[i].rel, lower_path, fmt_node, sizeof fmt_node, file_node,
                                                    sizeof file_node);
                        free(lower_path);
                        if (r < 0)
                                break;
                        if (kids == 1 && in_qemu) {
                                r = live_merge(c, &l, &v[i], &v[kid], err, errlen);
                                if (r < 0)
                                        break;
                                res->merged++;
                        } else if (kids == 0 && in_qemu) {
                                continue;       /* cannot happen: an open layer has the active one above it */
                        } else if (kids == 1) {
                                char *upper = vm_file(c, v[kid].rel), out[4096] = "";
                                if (!upper) {
                                        r = -ENOMEM;
                                        break;
                                }
                                char *argv[] = { qemu_img, "rebase", "-q", "-f", "qcow2", "-b", v[i].backing_file,
                                                 "-F", v[i].backing_format, upper, NULL };
                                int s = spawn_capture(argv, SNAP_MERGE_TIMEOUT_MS, out, sizeof out);
                                free(upper);
                                if (s != 0) {
                                        out[strcspn(out, "\n")] = '\0';
                                        snprintf(err, errlen, "merging %s into %s: %s %s", v[i].rel, v[kid].rel,
                                                 s < 0 ? strerror(-s) : "qemu-img rebase failed:", s < 0 ? "" : out);
                                        r = s < 0 ? s : -EIO;
                                        break;
                                }
                                res->merged++;
                        }
                        unlink_layer(c, v[i].rel);
                        res->removed++;
                        changed = true;
                }
                free(v);
        }
        live_close(&l);
        if (r == 0) {
                char *dir = vm_file(c, SNAP_DIR);
                if (dir)
                        fileio_fsync_dir(dir);
                free(dir);
        }
        return r;
}

static int add_tag(struct ctx *c, const char *tag, const char *layer, char *err, size_t errlen) {
        if (c->st.n >= SNAP_MAX) {
                snprintf(err, errlen, "has %d snapshots already, the most there may be: delete one first", SNAP_MAX);
                return -E2BIG;
        }
        struct snap_entry *e = &c->st.snaps[c->st.n++];
        *e = (struct snap_entry){ .time = (long long)time(NULL) };
        snprintf(e->tag, sizeof e->tag, "%s", tag);
        snprintf(e->layer, sizeof e->layer, "%s", layer);
        return 0;
}

/* blockdev-add the new layer without backing, then blockdev-snapshot in a
 * transaction: the guest's writes go to the new layer from then on. */
/* --quiesce: the guest agent flushes and freezes the guest's file systems
 * (FIFREEZE) so that the snapshot holds them clean. Returns the connected
 * agent, or NULL with err set (no snapshot is taken then). */
static struct agent *freeze_guest(struct ctx *c, char *err, size_t errlen) {
        struct agent *a = NULL;
        char msg[512];
        int r = agent_connect(c->p.agent_sock, AGENT_TIMEOUT_MS, &a, msg, sizeof msg);
        if (r == 0)
                r = agent_execute(a, "guest-fsfreeze-freeze", NULL, SNAP_FREEZE_TIMEOUT_MS, NULL, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "--quiesce: %s%s", msg,
                         r == -ETIMEDOUT ? " (no guest agent answered; without --quiesce the snapshot is crash-consistent)" : "");
                /* A freeze that timed out may still happen: thaw on a new connection. */
                agent_free(a);
                a = NULL;
                if (r == -ETIMEDOUT && agent_connect(c->p.agent_sock, AGENT_TIMEOUT_MS, &a, msg, sizeof msg) == 0)
                        agent_execute(a, "guest-fsfreeze-thaw", NULL, AGENT_TIMEOUT_MS, NULL, msg, sizeof msg);
                agent_free(a);
                return NULL;
        }
        return a;
}

static double ms_since(const struct timespec *t0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

/* *frozen_ms: the time from the freeze's reply to the thaw's (not
 * changed without an agent). */
static void thaw_guest(struct agent *a, const struct timespec *frozen_at, double *frozen_ms) {
        char msg[512];
        if (a && agent_execute(a, "guest-fsfreeze-thaw", NULL, SNAP_FREEZE_TIMEOUT_MS, NULL, msg, sizeof msg) == 0)
                *frozen_ms = ms_since(frozen_at);
        agent_free(a);
}

static int live_snapshot(struct ctx *c, const char *layer, bool quiesce, bool *unknown, struct snapshot_result *res,
                         char *err, size_t errlen) {
        struct qmp *q = NULL;
        struct agent *frozen = NULL;
        struct timespec frozen_at = { 0 }, t0;
        char node[128], new_node[64], msg[1024];
        char *path = vm_file(c, layer);
        bool added = false;
        int r;

        if (!path)
                return -ENOMEM;
        if (quiesce && !(frozen = freeze_guest(c, err, errlen))) {
                free(path);
                return -EHOSTUNREACH;
        }
        if (frozen)
                clock_gettime(CLOCK_MONOTONIC, &frozen_at);
        r = qmp_connect_unix(c->p.monitor_sock, SNAP_QMP_TIMEOUT_MS, &q, msg, sizeof msg);
        if (r == 0)
                r = qmp_handshake(q, SNAP_QMP_TIMEOUT_MS, msg, sizeof msg);
        if (r == 0)
                r = blockjob_device_node(q, QEMU_DISK_DEVICE, node, sizeof node, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "%s: %s", c->p.monitor_sock, msg);
                goto out;
        }
        /* snap-N for snapshots/N.qcow2, as live_node() finds it again. */
        snprintf(new_node, sizeof new_node, "snap-%.*s", (int)strcspn(layer + sizeof SNAP_DIR, "."), layer + sizeof SNAP_DIR);

        struct json_object *file = json_object_new_object(), *add = json_object_new_object();
        json_object_object_add(file, "driver", jstr("file"));
        json_object_object_add(file, "filename", jstr(path));
        json_object_object_add(file, "discard", jstr("unmap"));
        json_object_object_add(add, "driver", jstr("qcow2"));
        json_object_object_add(add, "node-name", jstr(new_node));
        json_object_object_add(add, "discard", jstr("unmap"));
        json_object_object_add(add, "file", file);
        json_object_object_add(add, "backing", NULL);   /* blockdev-snapshot attaches it */
        r = qmp_execute(q, "blockdev-add", add, SNAP_QMP_TIMEOUT_MS, NULL, msg, sizeof msg);
        json_object_put(add);
        if (r < 0) {
                snprintf(err, errlen, "blockdev-add %s: %s", path, msg);
                goto out;
        }
        added = true;

        struct json_object *args = json_object_new_object(), *actions = json_object_new_array(),
                           *action = json_object_new_object(), *data = json_object_new_object();
        json_object_object_add(data, "node", jstr(node));
        json_object_object_add(data, "overlay", jstr(new_node));
        json_object_object_add(action, "type", jstr("blockdev-snapshot"));
        json_object_object_add(action, "data", data);
        json_object_array_add(actions, action);
        json_object_object_add(args, "actions", actions);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        r = qmp_execute(q, "transaction", args, SNAP_QMP_TIMEOUT_MS, NULL, msg, sizeof msg);
        res->transaction_ms = ms_since(&t0);
        json_object_put(args);
        if (r < 0) {
                /* Refused: nothing changed. Anything else (a timeout, QEMU
                 * gone): it may have happened. */
                *unknown = r != -EREMOTEIO;
                snprintf(err, errlen, "transaction blockdev-snapshot %s over %s: %s", new_node, node, msg);
                if (*unknown)
                        added = false;
                goto out;
        }
        added = false;
out:
        if (added) {
                struct json_object *del = json_object_new_object();
                json_object_object_add(del, "node-name", jstr(new_node));
                qmp_execute(q, "blockdev-del", del, SNAP_QMP_TIMEOUT_MS, NULL, msg, sizeof msg);
                json_object_put(del);
        }
        thaw_guest(frozen, &frozen_at, &res->frozen_ms);
        qmp_free(q);
        free(path);
        return r;
}

/* The checks of bad input, made before any lock is taken or file
 * created, so that a refused command changes nothing; ctx_open() and the
 * callers check again under the locks. want: 1 the tag must exist, 0 it
 * must not. */
static int precheck(const char *root, const char *runtime_dir, const char *name, const char *tag, int want,
                    bool need_stopped, const char *msg_running, char *err, size_t errlen) {
        struct ctx c;
        int r = snap_check_tag(tag, err, errlen);
        if (r < 0)
                return r;
        r = ctx_open(&c, root, runtime_dir, name, false, need_stopped, msg_running, err, errlen);
        if (r == 0 && want == 1 && snap_state_find(&c.st, tag) < 0) {
                snprintf(err, errlen, "no snapshot %s", tag);
                r = -ENOENT;
        } else if (r == 0 && want == 0 && snap_state_find(&c.st, tag) >= 0) {
                snprintf(err, errlen, "snapshot %s exists already", tag);
                r = -EEXIST;
        }
        ctx_done(&c);
        return r;
}

int snapshot_create(const char *root, const char *runtime_dir, const char *name, const char *tag, bool quiesce,
                    struct snapshot_result *res, char *err, size_t errlen) {
        struct ctx c;
        char layer[SNAP_LAYER_MAX], frozen[SNAP_LAYER_MAX];
        int r;

        *res = (struct snapshot_result){ .transaction_ms = -1, .frozen_ms = -1 };
        r = precheck(root, runtime_dir, name, tag, 0, false, NULL, err, errlen);
        if (r < 0)
                return r;
        r = ctx_open(&c, root, runtime_dir, name, true, false, NULL, err, errlen);
        if (r < 0)
                goto out;
        if (quiesce && !c.running) {
                snprintf(err, errlen, "--quiesce needs the running guest's agent; %s is stopped (its disks are quiet already)", name);
                r = -EINVAL;
                goto out;
        }
        if (snap_state_find(&c.st, tag) >= 0) {
                snprintf(err, errlen, "snapshot %s exists already", tag);
                r = -EEXIST;
                goto out;
        }
        if (c.st.n >= SNAP_MAX) {
                snprintf(err, errlen, "has %d snapshots already, the most there may be: delete one first", SNAP_MAX);
                r = -E2BIG;
                goto out;
        }
        snprintf(frozen, sizeof frozen, "%s", c.active);
        r = new_layer(&c, frozen, layer, err, errlen);
        if (r < 0)
                goto out;
        /* The state names the new layer before QEMU writes to it: should
         * vrt die in between, the next start opens the new, empty layer
         * over the one the guest wrote last, and nothing is lost. */
        struct snap_state before = c.st;
        if ((r = add_tag(&c, tag, frozen, err, errlen)) < 0) {
                unlink_layer(&c, layer);
                goto out;
        }
        snprintf(c.st.active, sizeof c.st.active, "%s", layer);
        c.st.next++;
        r = snap_state_save(c.p.vm_dir, &c.st, err, errlen);
        if (r < 0) {
                unlink_layer(&c, layer);
                goto out;
        }
        if (c.running) {
                bool unknown = false;
                r = live_snapshot(&c, layer, quiesce, &unknown, res, err, errlen);
                if (r < 0 && unknown) {
                        size_t n = strlen(err);
                        snprintf(err + n, errlen - n, "; the state names %s as the active layer, so no data is lost either way", layer);
                        goto out;
                }
                if (r < 0) {
                        char msg[512];
                        if (snap_state_save(c.p.vm_dir, &before, msg, sizeof msg) == 0) {
                                unlink_layer(&c, layer);
                        } else {
                                size_t n = strlen(err);
                                snprintf(err + n, errlen - n, "; and the state could not be restored: %s", msg);
                        }
                        goto out;
                }
                res->live = true;
        }
        snprintf(res->layer, sizeof res->layer, "%s", layer);
out:
        ctx_done(&c);
        return r;
}

int snapshot_revert(const char *root, const char *runtime_dir, const char *name, const char *tag,
                    struct snapshot_result *res, char *err, size_t errlen) {
        struct ctx c;
        char layer[SNAP_LAYER_MAX], old[SNAP_LAYER_MAX];
        int r, i;

        *res = (struct snapshot_result){ 0 };
        r = precheck(root, runtime_dir, name, tag, 1, true, "stop it before reverting", err, errlen);
        if (r < 0)
                return r;
        r = ctx_open(&c, root, runtime_dir, name, true, true, "stop it before reverting", err, errlen);
        if (r < 0)
                goto out;
        i = snap_state_find(&c.st, tag);
        if (i < 0) {
                snprintf(err, errlen, "no snapshot %s", tag);
                r = -ENOENT;
                goto out;
        }
        r = new_layer(&c, c.st.snaps[i].layer, layer, err, errlen);
        if (r < 0)
                goto out;
        snprintf(old, sizeof old, "%s", c.st.active);
        snprintf(c.st.active, sizeof c.st.active, "%s", layer);
        c.st.next++;
        r = snap_state_save(c.p.vm_dir, &c.st, err, errlen);
        if (r < 0) {
                unlink_layer(&c, layer);
                goto out;
        }
        snprintf(res->layer, sizeof res->layer, "%s", layer);
        /* What the VM wrote since its last snapshot goes with the old
         * active layer (a base disk, hdd.ovl or hdd.img, is never removed). */
        if (!referenced(&c, old) && strncmp(old, SNAP_DIR "/", sizeof SNAP_DIR) == 0) {
                unlink_layer(&c, old);
                res->removed++;
        }
        r = collect(&c, res, err, errlen);
out:
        ctx_done(&c);
        return r;
}

int snapshot_delete(const char *root, const char *runtime_dir, const char *name, const char *tag,
                    struct snapshot_result *res, char *err, size_t errlen) {
        struct ctx c;
        int r, i;

        *res = (struct snapshot_result){ 0 };
        r = precheck(root, runtime_dir, name, tag, 1, false, NULL, err, errlen);
        if (r < 0)
                return r;
        r = ctx_open(&c, root, runtime_dir, name, true, false, NULL, err, errlen);
        if (r < 0)
                goto out;
        i = snap_state_find(&c.st, tag);
        if (i < 0) {
                snprintf(err, errlen, "no snapshot %s", tag);
                r = -ENOENT;
                goto out;
        }
        memmove(&c.st.snaps[i], &c.st.snaps[i + 1], (c.st.n - (size_t)i - 1) * sizeof c.st.snaps[0]);
        c.st.n--;
        r = snap_state_save(c.p.vm_dir, &c.st, err, errlen);
        if (r < 0)
                goto out;
        snprintf(res->layer, sizeof res->layer, "%s", c.st.active);
        r = collect(&c, res, err, errlen);
out:
        ctx_done(&c);
        return r;
}

int snapshot_list(const char *root, const char *runtime_dir, const char *name, struct json_object **ret,
                  char *err, size_t errlen) {
        struct ctx c;
        struct image_chain *chain = NULL;
        struct json_object *o = NULL, *snaps, *jchain = NULL;
        char *active = NULL;
        int r;

        r = ctx_open(&c, root, runtime_dir, name, false, false, NULL, err, errlen);
        if (r < 0)
                goto out;
        active = vm_file(&c, c.active);
        if (!active) {
                r = -ENOMEM;
                goto out;
        }
        r = image_chain_inspect(active, &chain, err, errlen);
        if (r < 0)
                goto out;
        r = image_chain_to_json(chain, &jchain);
        if (r < 0)
                goto out;
        o = json_object_new_object();
        snaps = json_object_new_array();
        json_object_object_add(o, "name", jstr(name));
        json_object_object_add(o, "running", json_object_new_boolean(c.running));
        json_object_object_add(o, "active", jstr(active));
        for (size_t i = 0; i < c.st.n; i++) {
                struct json_object *s = json_object_new_object();
                char *path = vm_file(&c, c.st.snaps[i].layer);
                struct stat st;
                json_object_object_add(s, "tag", jstr(c.st.snaps[i].tag));
                json_object_object_add(s, "time", json_object_new_int64(c.st.snaps[i].time));
                json_object_object_add(s, "layer", jstr(path ? path : ""));
                json_object_object_add(s, "size", json_object_new_int64(path && stat(path, &st) == 0 ? (int64_t)st.st_blocks * 512 : 0));
                json_object_array_add(snaps, s);
                free(path);
        }
        json_object_object_add(o, "snapshots", snaps);
        json_object_object_add(o, "chain", jchain);
        jchain = NULL;
        *ret = o;
out:
        if (r == -ENOMEM)
                snprintf(err, errlen, "out of memory");
        json_object_put(jchain);
        image_chain_free(chain);
        free(active);
        ctx_done(&c);
        return r;
}
