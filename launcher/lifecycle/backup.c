#include "launcher/lifecycle/backup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
#include "launcher/vm/qemu_argv.h"
#include "qmp/qmp.h"

#define JOB_ID "vrt-backup"
#define TARGET_NODE "vrt-backup-target"
#define TMP_BITMAP "vrt-backup-tmp"
#define BITMAP_PREFIX "vrt-backup-"
#define VM_LOCK ".backup.lock"
#define DEST_LOCK ".lock"
#define PARTIAL ".partial"
#define ORPHAN ".orphan"
#define DEVICE QEMU_DISK_DEVICE
#define QMP_CONNECT_MS 2000
#define REAP_MS 30000
#define STATE_MAX (256 * 1024)
#define PROPS_MAX (1024 * 1024)

/* --- backup.state --- */

struct parse_ctx {
        struct backup_state *s;
        bool vm, chain, next;
};

static int parse_u64(const char *s, uint64_t *ret) {
        char *end;
        if (!*s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || *end)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int state_set(const char *key, const char *value, unsigned line, void *userdata, char *err, size_t errlen) {
        struct parse_ctx *c = userdata;
        struct backup_state *s = c->s;
        char msg[128];
        uint64_t v;
        (void)line;
        if (strcmp(key, "vm") == 0) {
                if (config_check_vm_name(value, NULL, msg, sizeof msg) < 0) {
                        snprintf(err, errlen, "vm: %s", msg);
                        return -EINVAL;
                }
                snprintf(s->vm, sizeof s->vm, "%s", value);
                c->vm = true;
        } else if (strcmp(key, "chain") == 0) {
                if (strlen(value) != BACKUP_CHAIN_LEN || strspn(value, "0123456789abcdef") != BACKUP_CHAIN_LEN) {
                        snprintf(err, errlen, "chain: not %d lowercase hex digits", BACKUP_CHAIN_LEN);
                        return -EINVAL;
                }
                snprintf(s->chain, sizeof s->chain, "%s", value);
                c->chain = true;
        } else if (strcmp(key, "next") == 0) {
                if (parse_u64(value, &v) < 0 || v > BACKUP_POINTS_MAX) {
                        snprintf(err, errlen, "next: not a number from 0 to %d", BACKUP_POINTS_MAX);
                        return -EINVAL;
                }
                s->next = (unsigned)v;
                c->next = true;
        } else if (strncmp(key, "point.", 6) == 0) {
                struct backup_point p = { 0 };
                char kind[16], tm[24], size[24];
                int used = 0;
                if (parse_u64(key + 6, &v) < 0 || v >= BACKUP_POINTS_MAX || (key[6] == '0' && key[7])) {
                        snprintf(err, errlen, "%s: not point.N with N below %d", key, BACKUP_POINTS_MAX);
                        return -EINVAL;
                }
                p.n = (unsigned)v;
                uint64_t t = 0;
                if (sscanf(value, "%15s %23s %23s%n", kind, tm, size, &used) != 3 || value[used] ||
                    (strcmp(kind, "full") != 0 && strcmp(kind, "incremental") != 0) || parse_u64(tm, &t) < 0 ||
                    t > INT64_MAX || parse_u64(size, &p.size) < 0) {
                        snprintf(err, errlen, "%s: not \"full|incremental TIME SIZE\"", key);
                        return -EINVAL;
                }
                p.kind = strcmp(kind, "full") == 0 ? BACKUP_FULL : BACKUP_INCREMENTAL;
                p.time = (long long)t;
                if (s->n && s->points[s->n - 1].n >= p.n) {
                        snprintf(err, errlen, "%s: points must be listed in ascending order", key);
                        return -EINVAL;
                }
                if (!s->n && p.kind != BACKUP_FULL) {
                        snprintf(err, errlen, "%s: the first point must be a full backup", key);
                        return -EINVAL;
                }
                if (s->n >= BACKUP_POINTS_MAX)
                        return -EINVAL;
                s->points[s->n++] = p;
        } else {
                snprintf(err, errlen, "unknown key \"%.40s\"", key);
                return -EINVAL;
        }
        return 0;
}

int backup_state_parse(const char *name, const char *text, size_t len, struct backup_state *ret, char *err,
                       size_t errlen) {
        struct parse_ctx c = { .s = ret };
        memset(ret, 0, sizeof *ret);
        int r = props_parse_buffer(name, text, len, state_set, &c, err, errlen);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        if (!c.vm || !c.chain || !c.next) {
                snprintf(err, errlen, "%s: vm, chain and next are required", name);
                return -EINVAL;
        }
        if (ret->n && ret->points[ret->n - 1].n >= ret->next) {
                snprintf(err, errlen, "%s: point.%u is not below next=%u", name, ret->points[ret->n - 1].n, ret->next);
                return -EINVAL;
        }
        return 0;
}

static char *state_format(const struct backup_state *s) {
        size_t cap = 128 + s->n * 80;
        char *buf = malloc(cap);
        if (!buf)
                return NULL;
        int len = snprintf(buf, cap, "# vrt backup chain (written by vrt backup; see vrt(8))\nvm=%s\nchain=%s\nnext=%u\n", s->vm,
                           s->chain, s->next);
        for (size_t i = 0; i < s->n; i++)
                len += snprintf(buf + len, cap - (size_t)len, "point.%u=%s %lld %" PRIu64 "\n", s->points[i].n,
                                s->points[i].kind == BACKUP_FULL ? "full" : "incremental", s->points[i].time,
                                s->points[i].size);
        return buf;
}

static void point_file(const char *vm, unsigned n, const char *ext, char *buf, size_t len) {
        snprintf(buf, len, "%s-%04u%s", vm, n, ext);
}

/* Loads DEST's state: 0 (present), 1 (no state file), or -EINVAL. */
static int state_load(const char *dest, struct backup_state *s, char *err, size_t errlen) {
        char *path = paths_join(dest, BACKUP_STATE_FILE), *text = NULL;
        size_t len = 0;
        if (!path)
                return -ENOMEM;
        int r = fileio_read_regular(path, STATE_MAX, &text, &len, err, errlen);
        if (r == -ENOENT)
                r = 1;
        else if (r == 0)
                r = backup_state_parse(path, text, len, s, err, errlen);
        else
                r = r == -ENOMEM ? r : -EINVAL;
        free(path);
        free(text);
        return r;
}

static int state_save(const char *dest, const struct backup_state *s, char *err, size_t errlen) {
        char *path = paths_join(dest, BACKUP_STATE_FILE), *tmp = paths_join(dest, "." BACKUP_STATE_FILE ".tmp");
        char *text = state_format(s);
        int r = path && tmp && text ? fileio_write_atomic(tmp, path, text, strlen(text), 0644) : -ENOMEM;
        if (r == 0)
                r = fileio_fsync_dir(dest);
        if (r < 0)
                snprintf(err, errlen, "cannot write %s: %s", path ? path : BACKUP_STATE_FILE, strerror(-r));
        free(path);
        free(tmp);
        free(text);
        return r;
}

/* --- backup --- */

struct job {
        const struct backup_request *req;
        struct vm_paths p;
        struct backup_state st;
        bool have_state;
        char *disk;                     /* the active layer */
        uint64_t vsize;
        char file[4096], partial[4096], props[4096];
        char bitmap[64];                /* the chain's persistent bitmap */
        char node[128];
        unsigned point;
        uint64_t copied;
};

static int progress(struct job *j, uint64_t done, uint64_t total) {
        j->copied = done;
        if (j->req->cancel && *j->req->cancel)
                return -ECANCELED;
        return j->req->progress ? j->req->progress(done, total, j->req->userdata) : 0;
}

static int job_progress(uint64_t cur, uint64_t tot, void *userdata) {
        return progress(userdata, cur, tot);
}

/* image_flatten_write() hands the same userdata to write and progress. */
struct sink {
        int fd;
        void *ctx;
        uint64_t unflushed;     /* bytes since the last writeback start */
        int write_error;        /* the errno a write failed with: the message names the output */
};

static int flatten_progress(uint64_t done, uint64_t total, void *userdata) {
        return progress(((struct sink *)userdata)->ctx, done, total);
}

static int fd_write(const void *buf, size_t len, void *userdata) {
        struct sink *sk = userdata;
        for (size_t done = 0; done < len;) {
                ssize_t n = write(sk->fd, (const char *)buf + done, len - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        sk->write_error = n < 0 ? errno : EIO;
                        return -sk->write_error;
                }
                done += (size_t)n;
        }
        /* publish() fsyncs the file: let the disk start on it now. */
        sk->unflushed += len;
        if (sk->unflushed >= WRITEBACK_STEP) {
                start_writeback(sk->fd);
                sk->unflushed = 0;
        }
        return 0;
}

/* fsync of a finished file, its final name (never replacing), fsync of DEST. */
static int publish(const char *dest, const char *partial, const char *file, char *err, size_t errlen) {
        int fd = open(partial, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        int r = fd < 0 || fsync(fd) < 0 ? -errno : 0;
        if (fd >= 0)
                close(fd);
        if (r == 0)
                r = fileio_rename_noreplace(AT_FDCWD, partial, file);
        if (r == 0)
                r = fileio_fsync_dir(dest);
        if (r < 0)
                snprintf(err, errlen, "cannot complete %s: %s", file, strerror(-r));
        return r;
}

/* Tests only: VRT_TEST_BACKUP_KILL=POINT makes `vrt backup` kill itself
 * (SIGKILL, as a crash or `kill -9` would) at POINT: "published", the file
 * under its point's name and DEST synced, backup.state not yet written. */
static void test_kill_point(const char *point) {
        const char *want = getenv("VRT_TEST_BACKUP_KILL");
        if (want && strcmp(want, point) == 0)
                raise(SIGKILL);
}

/* Offline: the active chain flattened into the partial file. */
static int backup_offline(struct job *j, char *err, size_t errlen) {
        struct image_flatten *f = NULL;
        int fd = -1;
        int r = image_flatten_open(j->disk, &f, err, errlen);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        fd = open(j->partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", j->partial, strerror(-r));
                goto done;
        }
        struct sink sk = { .fd = fd, .ctx = j };
        r = image_flatten_write(f, fd_write, flatten_progress, &sk, err, errlen);
        if (r < 0 && sk.write_error)
                snprintf(err, errlen, "cannot write %s: %s", j->file, strerror(sk.write_error));
done:
        if (fd >= 0)
                close(fd);
        image_flatten_free(f);
        return r;
}

struct bitmap_info {
        bool present, inconsistent, busy, recording;
};

/* The bitmaps on node: fn is called for each name. */
static int node_bitmaps(struct qmp *q, const char *node, const char *want, struct bitmap_info *info,
                        char names[][64], size_t *n_names, size_t max, char *err, size_t errlen) {
        struct json_object *nodes = NULL, *args = json_object_new_object();
        if (args)
                json_object_object_add(args, "flat", json_object_new_boolean(1));
        int r = blockjob_call(q, "query-named-block-nodes", args, &nodes, err, errlen);
        if (r < 0)
                return r;
        if (info)
                *info = (struct bitmap_info){ 0 };
        if (n_names)
                *n_names = 0;
        for (size_t i = 0; json_object_is_type(nodes, json_type_array) && i < json_object_array_length(nodes); i++) {
                struct json_object *e = json_object_array_get_idx(nodes, i), *nn = NULL, *bms = NULL;
                if (!json_object_object_get_ex(e, "node-name", &nn) || strcmp(json_object_get_string(nn), node) != 0 ||
                    !json_object_object_get_ex(e, "dirty-bitmaps", &bms) || !json_object_is_type(bms, json_type_array))
                        continue;
                for (size_t k = 0; k < json_object_array_length(bms); k++) {
                        struct json_object *b = json_object_array_get_idx(bms, k), *name = NULL, *v = NULL;
                        if (!json_object_object_get_ex(b, "name", &name))
                                continue;
                        const char *s = json_object_get_string(name);
                        if (want && info && strcmp(s, want) == 0) {
                                info->present = true;
                                info->inconsistent = json_object_object_get_ex(b, "inconsistent", &v) && json_object_get_boolean(v);
                                info->busy = json_object_object_get_ex(b, "busy", &v) && json_object_get_boolean(v);
                                info->recording = !json_object_object_get_ex(b, "recording", &v) || json_object_get_boolean(v);
                        }
                        if (names && *n_names < max && strncmp(s, BITMAP_PREFIX, strlen(BITMAP_PREFIX)) == 0 &&
                            strcmp(s, TMP_BITMAP) != 0 && strlen(s) < 64)
                                snprintf(names[(*n_names)++], 64, "%s", s);
                }
                break;
        }
        json_object_put(nodes);
        return 0;
}

static struct json_object *action(const char *type, struct json_object *data) {
        struct json_object *a = json_object_new_object();
        json_object_object_add(a, "type", json_object_new_string(type));
        json_object_object_add(a, "data", data);
        return a;
}

static struct json_object *bitmap_ref(const char *node, const char *name) {
        return blockjob_str(blockjob_str(json_object_new_object(), "node", node), "name", name);
}

static int transaction(struct qmp *q, struct json_object *actions, char *err, size_t errlen) {
        struct json_object *args = json_object_new_object();
        json_object_object_add(args, "actions", actions);
        return blockjob_call(q, "transaction", args, NULL, err, errlen);
}

/* The job and target node a killed `vrt backup` of this VM left in QEMU
 * (its tmp bitmap goes once the disk's node is known). */
static void reap_stale(struct qmp *q, char *err, size_t errlen) {
        char msg[512];
        blockjob_reap(q, JOB_ID, REAP_MS, err, errlen);
        blockjob_call(q, "blockdev-del", blockjob_str(json_object_new_object(), "node-name", TARGET_NODE), NULL, msg,
                      sizeof msg);
}

/* The point's tmp bitmap becomes the chain's persistent one (see backup.h).
 * Returns 0 or a negative errno (the point stands; the next backup will
 * have to be full, or the bitmap stays a superset). */
static int bitmap_commit(struct qmp *q, struct job *j, bool full, char *err, size_t errlen) {
        char others[16][64];
        size_t n = 0;
        struct json_object *acts = json_object_new_array();
        int r = node_bitmaps(q, j->node, NULL, NULL, others, &n, 16, err, errlen);
        if (r < 0) {
                json_object_put(acts);
                return r;
        }
        for (size_t i = 0; full && i < n; i++)
                json_object_array_add(acts, action("block-dirty-bitmap-remove", bitmap_ref(j->node, others[i])));
        if (full) {
                struct json_object *add = bitmap_ref(j->node, j->bitmap);
                json_object_object_add(add, "persistent", json_object_new_boolean(1));
                json_object_array_add(acts, action("block-dirty-bitmap-add", add));
        } else {
                json_object_array_add(acts, action("block-dirty-bitmap-clear", bitmap_ref(j->node, j->bitmap)));
        }
        struct json_object *merge = blockjob_str(blockjob_str(json_object_new_object(), "node", j->node), "target", j->bitmap);
        struct json_object *srcs = json_object_new_array();
        json_object_array_add(srcs, json_object_new_string(TMP_BITMAP));
        json_object_object_add(merge, "bitmaps", srcs);
        json_object_array_add(acts, action("block-dirty-bitmap-merge", merge));
        json_object_array_add(acts, action("block-dirty-bitmap-remove", bitmap_ref(j->node, TMP_BITMAP)));
        return transaction(q, acts, err, errlen);
}

/* Live: blockdev-add of a target vrt made, one job (see backup.h). */
static int backup_live(struct job *j, struct backup_result *res, char *err, size_t errlen) {
        const struct backup_request *req = j->req;
        struct qmp *q = NULL;
        char msg[1024], prev[512];
        bool added = false, started = false, full = !req->incremental;
        struct stat st;
        int r;

        r = qmp_connect_unix(j->p.monitor_sock, QMP_CONNECT_MS, &q, msg, sizeof msg);
        if (r == 0)
                r = qmp_handshake(q, BLOCKJOB_QMP_TIMEOUT_MS, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "VM %s runs, but its QMP monitor %s does not answer: %s", req->name,
                         j->p.monitor_sock, msg);
                goto done;
        }
        /* Reaped first: a running backup job puts its copy-before-write
         * filter above the disk's node, where query-block would find it. */
        reap_stale(q, msg, sizeof msg);
        r = blockjob_device_node(q, DEVICE, j->node, sizeof j->node, err, errlen);
        if (r < 0)
                goto done;
        blockjob_call(q, "block-dirty-bitmap-remove", bitmap_ref(j->node, TMP_BITMAP), NULL, msg, sizeof msg);
        if (!full) {
                struct bitmap_info bi;
                snprintf(j->bitmap, sizeof j->bitmap, BITMAP_PREFIX "%s", j->st.chain);
                r = node_bitmaps(q, j->node, j->bitmap, &bi, NULL, NULL, 0, err, errlen);
                if (r < 0)
                        goto done;
                if (!bi.present || bi.inconsistent || !bi.recording) {
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: the disk of %s has %s bitmap %s (%s); the next backup must be full (run without --incremental)",
                                 req->dest, req->name, bi.present ? "an unusable" : "no", j->bitmap,
                                 bi.present ? "inconsistent: QEMU did not close the image cleanly" :
                                 "its active layer changed since the last point (vrt snapshot?), the point before was made offline, or another full backup started a new chain");
                        goto done;
                }
        }
        /* The target: a blank standalone image, or an overlay on the point before. */
        if (full) {
                r = qcow2_image_create(j->partial, j->vsize, msg, sizeof msg);
        } else {
                point_file(j->st.vm, j->st.points[j->st.n - 1].n, ".qcow2", prev, sizeof prev);
                r = qcow2_overlay_create(j->partial, prev, "qcow2", j->vsize, msg, sizeof msg);
        }
        if (r < 0) {
                snprintf(err, errlen, "%s", msg);
                r = r == -EEXIST || r == -ENOMEM ? r : r == -EINVAL ? -EINVAL : r;
                goto done;
        }
        /* QEMU may run as another user: the file belongs to the disk's owner. */
        if (stat(j->disk, &st) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot give %s the owner of %s: %s", j->partial, j->disk, strerror(-r));
                goto done;
        }
        r = safepath_hand_over(j->partial, st.st_uid, st.st_gid, 0600, 0, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "cannot give %s the owner of %s: %s", j->partial, j->disk, msg);
                goto done;
        }
        struct json_object *file = blockjob_str(blockjob_str(json_object_new_object(), "driver", "file"), "filename", j->partial);
        struct json_object *add = blockjob_str(blockjob_str(json_object_new_object(), "driver", "qcow2"), "node-name", TARGET_NODE);
        json_object_object_add(add, "file", file);
        json_object_object_add(add, "backing", NULL);   /* the clusters below are the earlier points' */
        r = blockjob_call(q, "blockdev-add", add, NULL, err, errlen);
        if (r < 0)
                goto done;
        added = true;
        struct json_object *b = blockjob_str(blockjob_str(blockjob_str(json_object_new_object(), "job-id", JOB_ID), "device",
                                                          j->node), "target", TARGET_NODE);
        json_object_object_add(b, "auto-dismiss", json_object_new_boolean(0));
        if (req->speed)
                json_object_object_add(b, "speed", json_object_new_int64((int64_t)req->speed));
        if (full) {
                blockjob_str(b, "sync", "full");
        } else {
                blockjob_str(blockjob_str(blockjob_str(b, "sync", "bitmap"), "bitmap", j->bitmap), "bitmap-mode", "never");
        }
        struct json_object *acts = json_object_new_array();
        json_object_array_add(acts, action("block-dirty-bitmap-add", bitmap_ref(j->node, TMP_BITMAP)));
        json_object_array_add(acts, action("blockdev-backup", b));
        r = transaction(q, acts, err, errlen);
        if (r < 0)
                goto done;
        started = true;
        /* The monitor takes one client at a time: free it while the job runs. */
        q = qmp_free(q);
        r = blockjob_wait_sock(j->p.monitor_sock, JOB_ID, job_progress, j, req->cancel, msg, sizeof msg);
        if (r == 0 || r == -EIO || r == -ECANCELED) {
                int k = qmp_connect_unix(j->p.monitor_sock, QMP_CONNECT_MS, &q, err, errlen);
                if (k == 0)
                        k = qmp_handshake(q, BLOCKJOB_QMP_TIMEOUT_MS, err, errlen);
                if (k < 0 && r == 0)
                        r = k;
        }
        if (r < 0 && !q) {
                snprintf(err, errlen, "the backup job: %s", msg);
                goto done;
        }
        if (r < 0) {
                snprintf(err, errlen, r == -ECANCELED ? "cancelled; no point was added to %s" : "the backup job failed: %s",
                         r == -ECANCELED ? req->dest : msg);
                goto done;
        }
        /* Flushed and closed by QEMU before we fsync and name it. */
        r = blockjob_call(q, "blockdev-del", blockjob_str(json_object_new_object(), "node-name", TARGET_NODE), NULL, err, errlen);
        if (r < 0)
                goto done;
        added = false;
        r = publish(req->dest, j->partial, j->file, err, errlen);
        if (r < 0)
                goto done;
        test_kill_point("published");
        if (stat(j->file, &st) == 0)
                res->file_size = (uint64_t)st.st_size;
        struct backup_point pt = { .n = j->point, .kind = full ? BACKUP_FULL : BACKUP_INCREMENTAL, .time = time(NULL),
                                   .size = res->file_size };
        j->st.points[j->st.n++] = pt;
        j->st.next = j->point + 1;
        r = state_save(req->dest, &j->st, err, errlen);
        if (r < 0) {
                /* Not a point: the file goes, the bitmap stays a superset. */
                unlink(j->file);
                goto done;
        }
        /* From here the point stands; a failed commit only means the next
         * backup must be full (a full) or repeats some clusters (an incremental). */
        res->bitmap = bitmap_commit(q, j, full, msg, sizeof msg) == 0;
        started = false;
        r = 0;
done:
        if (!q) {
                /* Lost the monitor: the next backup reaps what is left. */
                qmp_free(q);
                return r;
        }
        if (started)
                blockjob_call(q, "block-dirty-bitmap-remove", bitmap_ref(j->node, TMP_BITMAP), NULL, msg, sizeof msg);
        if (added)
                blockjob_call(q, "blockdev-del", blockjob_str(json_object_new_object(), "node-name", TARGET_NODE), NULL,
                              msg, sizeof msg);
        qmp_free(q);
        if (r == -EREMOTEIO)
                r = -EIO;
        return r;
}

/* path -> path.orphan (or .orphan.2, ... when taken), never replacing;
 * out: the new name. */
static int rename_orphan(const char *path, char *out, size_t outlen, char *err, size_t errlen) {
        int r = -EEXIST;
        for (unsigned k = 1; k < 100 && r == -EEXIST; k++) {
                if (k == 1)
                        snprintf(out, outlen, "%s" ORPHAN, path);
                else
                        snprintf(out, outlen, "%s" ORPHAN ".%u", path, k);
                r = fileio_rename_noreplace(AT_FDCWD, path, out);
        }
        if (r < 0)
                snprintf(err, errlen, "cannot move aside %s (not listed in %s): %s", path, BACKUP_STATE_FILE, strerror(-r));
        return r;
}

/* The next point's file exists but backup.state does not list it: a
 * `vrt backup` died after naming it and before writing the state. It is
 * never adopted: the bitmap was not rotated for it (an incremental's
 * bitmap still holds its changes, and a full's new chain was not
 * recorded), so as a point it would break the chain or the next
 * incremental. It and its .properties are moved aside as *.orphan. */
static int set_aside_orphan(struct job *j, struct backup_result *res, char *err, size_t errlen) {
        char props[4096 + 16];
        struct stat st;
        int r = rename_orphan(j->file, res->orphan, sizeof res->orphan, err, errlen);
        if (r < 0) {
                res->orphan[0] = '\0';
                return r;
        }
        if (lstat(j->props, &st) == 0)
                rename_orphan(j->props, props, sizeof props, err, errlen);      /* rewritten below anyway */
        err[0] = '\0';
        r = fileio_fsync_dir(j->req->dest);
        if (r < 0)
                snprintf(err, errlen, "cannot sync %s: %s", j->req->dest, strerror(-r));
        actionlog_append(j->req->root, "backup", "%s: %s is not listed in %s (a backup died before recording it): moved aside as %s",
                         j->req->name, j->file, BACKUP_STATE_FILE, res->orphan);
        return r;
}

static void random_chain(char out[BACKUP_CHAIN_LEN + 1]) {
        uint8_t b[BACKUP_CHAIN_LEN / 2];
        if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
                uint64_t t = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
                memcpy(b, &t, sizeof b);
        }
        for (size_t i = 0; i < sizeof b; i++)
                snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* Removes partial files a dead backup left (we hold DEST's lock). */
static void sweep_partials(const char *dest) {
        DIR *d = opendir(dest);
        struct dirent *de;
        if (!d)
                return;
        while ((de = readdir(d))) {
                size_t n = strlen(de->d_name);
                if (n > strlen(PARTIAL) && strcmp(de->d_name + n - strlen(PARTIAL), PARTIAL) == 0)
                        unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
}

/* DEST exists as a directory (made when missing) and is ours or empty. */
static int open_dest(const struct backup_request *req, struct job *j, int *lock_fd, bool *made, char *err, size_t errlen) {
        struct stat st;
        int r;
        if (!req->dest[0]) {
                snprintf(err, errlen, "DEST is empty");
                return -EINVAL;
        }
        if (lstat(req->dest, &st) < 0) {
                if (errno != ENOENT || mkdir(req->dest, 0755) < 0) {
                        r = -errno;
                        snprintf(err, errlen, "%s: %s", req->dest, strerror(-r));
                        return r == -ENOENT || r == -ENOTDIR || r == -EACCES ? -EINVAL : r;
                }
                *made = true;
        } else if (!S_ISDIR(st.st_mode)) {
                snprintf(err, errlen, "%s is not a directory", req->dest);
                return -EINVAL;
        }
        /* Only an empty directory becomes a backup directory: refused
         * before our .lock is made in it. */
        char *state = paths_join(req->dest, BACKUP_STATE_FILE);
        if (!state)
                return -ENOMEM;
        bool has_state = lstat(state, &st) == 0;
        free(state);
        if (!has_state) {
                DIR *d = opendir(req->dest);
                struct dirent *de;
                bool empty = true;
                while (d && (de = readdir(d)))
                        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, DEST_LOCK))
                                empty = false;
                if (d)
                        closedir(d);
                if (!empty) {
                        snprintf(err, errlen, "%s is not empty and has no %s: not a vrt backup directory", req->dest,
                                 BACKUP_STATE_FILE);
                        return -EINVAL;
                }
        }
        char *lock = paths_join(req->dest, DEST_LOCK);
        if (!lock)
                return -ENOMEM;
        *lock_fd = safepath_open(lock, O_RDWR | O_CREAT, 0600, SAFEPATH_ONE_LINK, err, errlen);
        free(lock);
        if (*lock_fd < 0) {
                r = *lock_fd;
                *lock_fd = -1;
                return r == -ELOOP || r == -EMLINK ? -EINVAL : r;
        }
        if (flock(*lock_fd, LOCK_EX | LOCK_NB) < 0) {
                r = errno == EWOULDBLOCK ? -EBUSY : -errno;
                snprintf(err, errlen, "%s: %s", req->dest, r == -EBUSY ? "another vrt backup works here" : strerror(-r));
                return r;
        }
        r = state_load(req->dest, &j->st, err, errlen);
        if (r < 0)
                return r;
        j->have_state = r == 0;
        if (!j->have_state) {
                snprintf(j->st.vm, sizeof j->st.vm, "%s", req->name);
        } else if (strcmp(j->st.vm, req->name) != 0) {
                snprintf(err, errlen, "%s holds backups of %s, not of %s", req->dest, j->st.vm, req->name);
                return -EINVAL;
        }
        if (j->st.n >= BACKUP_POINTS_MAX || j->st.next >= BACKUP_POINTS_MAX) {
                snprintf(err, errlen, "%s holds %d points, the most a chain may; use a new DEST", req->dest, BACKUP_POINTS_MAX);
                return -EINVAL;
        }
        return 0;
}

int backup_vm(const struct backup_request *req, struct backup_result *ret, char *err, size_t errlen) {
        struct job *j = calloc(1, sizeof *j);
        struct backup_result res = { 0 };
        char msg[1024];
        char *text = NULL;
        size_t text_len = 0;
        struct image_chain *chain = NULL;
        int r, dest_lock = -1, run_fd = -1, vm_lock = -1;
        bool running = false, made_dest = false, props_written = false;
        struct stat st;

        err[0] = '\0';
        if (!j)
                return -ENOMEM;
        j->req = req;
        r = vmstate_check_exists(req->root, req->runtime_dir, req->name, err, errlen);
        if (r < 0)
                goto fail;
        if (vm_paths_init(&j->p, req->root, req->runtime_dir, req->name) < 0) {
                r = -ENOMEM;
                goto fail;
        }
        if (lstat(j->p.destroyed, &st) == 0) {
                r = -EINVAL;
                snprintf(err, errlen, "VM %s is destroyed (%s exists): nothing to back up", req->name, j->p.destroyed);
                goto fail;
        }
        r = open_dest(req, j, &dest_lock, &made_dest, err, errlen);
        if (r < 0)
                goto fail;
        if (req->incremental && !j->st.n) {
                r = -EINVAL;
                snprintf(err, errlen, "%s has no full backup of %s yet; run vrt backup without --incremental first", req->dest,
                         req->name);
                goto fail;
        }
        /* Stopped, and kept so while we read its disk; or running. */
        run_fd = runtime_lock(&j->p, msg, sizeof msg);
        if (run_fd < 0) {
                r = run_fd;
                run_fd = -1;
                if (r == -EBUSY && runtime_is_running(&j->p)) {
                        running = true;
                } else {
                        snprintf(err, errlen, "%s: %s", req->name, msg);
                        goto fail;
                }
        }
        if (!running && req->incremental) {
                r = -EINVAL;
                snprintf(err, errlen, "VM %s is not running: an incremental backup needs the running VM's dirty bitmap; start it or make a full backup",
                         req->name);
                goto fail;
        }
        const char *busy;
        if (!running && (busy = vmstate_disk_in_use(&j->p))) {
                r = -EBUSY;
                snprintf(err, errlen, "VM %s: disk %s is in use by a QEMU (on this or another host sharing the root); stop it first",
                         req->name, busy);
                goto fail;
        }
        r = snap_active_path(j->p.vm_dir, &j->disk, err, errlen);
        if (r < 0)
                goto fail;
        if (!j->disk) {
                r = -EINVAL;
                snprintf(err, errlen, "VM %s has no disk to back up", req->name);
                goto fail;
        }
        r = image_chain_inspect(j->disk, &chain, err, errlen);
        if (r == 0) {
                /* QEMU's user owns the disk and could name any backing file. */
                char *images = paths_join(req->root, "images");
                const char *const within[] = { j->p.vm_dir, images, NULL };
                r = images ? image_chain_check_within(chain, within, err, errlen) : -ENOMEM;
                free(images);
        }
        if (r < 0) {
                r = r == -ENOMEM ? r : -EINVAL;
                goto fail;
        }
        j->vsize = chain->layers[0].virtual_size;
        if (req->incremental && j->st.n) {
                char prev[4096], name[512];
                struct image_chain *pc = NULL;
                point_file(j->st.vm, j->st.points[j->st.n - 1].n, ".qcow2", name, sizeof name);
                snprintf(prev, sizeof prev, "%s/%s", req->dest, name);
                r = image_chain_inspect(prev, &pc, msg, sizeof msg);
                if (r == 0 && pc->layers[0].virtual_size != j->vsize) {
                        snprintf(msg, sizeof msg, "%s: virtual size %" PRIu64 ", the disk's is %" PRIu64, prev,
                                 pc->layers[0].virtual_size, j->vsize);
                        r = -EINVAL;
                }
                image_chain_free(pc);
                if (r < 0) {
                        snprintf(err, errlen, "%s; the next backup must be full", msg);
                        r = r == -ENOMEM ? r : -EINVAL;
                        goto fail;
                }
        }
        if (running) {
                char *lock = paths_join(j->p.vm_dir, VM_LOCK);
                if (!lock) {
                        r = -ENOMEM;
                        goto fail;
                }
                vm_lock = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
                free(lock);
                if (vm_lock < 0 || flock(vm_lock, LOCK_EX | LOCK_NB) < 0) {
                        r = errno == EWOULDBLOCK ? -EBUSY : -errno;
                        snprintf(err, errlen, "VM %s: %s", req->name,
                                 r == -EBUSY ? "another backup of this VM is running" : strerror(-r));
                        goto fail;
                }
        }
        sweep_partials(req->dest);
        j->point = j->st.next;
        char base[512];
        point_file(req->name, j->point, ".qcow2", base, sizeof base);
        snprintf(j->file, sizeof j->file, "%s/%s", req->dest, base);
        snprintf(j->partial, sizeof j->partial, "%s%s", j->file, PARTIAL);
        point_file(req->name, j->point, ".properties", base, sizeof base);
        snprintf(j->props, sizeof j->props, "%s/%s", req->dest, base);
        if (lstat(j->file, &st) == 0) {
                r = set_aside_orphan(j, &res, err, errlen);
                if (r < 0)
                        goto fail;
        }
        /* The record travels with the point (restore reads it). */
        r = fileio_read_regular(j->p.instance, PROPS_MAX, &text, &text_len, err, errlen);
        if (r == 0) {
                char tmp[4096 + 8];
                snprintf(tmp, sizeof tmp, "%s.tmp", j->props);
                r = fileio_write_atomic(tmp, j->props, text, text_len, 0644);
                if (r < 0)
                        snprintf(err, errlen, "cannot write %s: %s", j->props, strerror(-r));
                props_written = r == 0;
        }
        if (r < 0)
                goto fail;
        if (!req->incremental)
                random_chain(j->st.chain);
        res.running = running;
        res.incremental = req->incremental;
        res.virtual_size = j->vsize;
        if (running) {
                if (!req->incremental)
                        snprintf(j->bitmap, sizeof j->bitmap, BITMAP_PREFIX "%s", j->st.chain);
                r = backup_live(j, &res, err, errlen);
                if (r < 0)
                        goto fail;
        } else {
                r = backup_offline(j, err, errlen);
                if (r == -ECANCELED)
                        snprintf(err, errlen, "cancelled; no point was added to %s", req->dest);
                if (r == 0)
                        r = publish(req->dest, j->partial, j->file, err, errlen);
                if (r < 0)
                        goto fail;
                test_kill_point("published");
                res.file_size = stat(j->file, &st) == 0 ? (uint64_t)st.st_size : 0;
                j->st.points[j->st.n++] = (struct backup_point){ .n = j->point, .kind = BACKUP_FULL, .time = time(NULL),
                                                                 .size = res.file_size };
                j->st.next = j->point + 1;
                r = state_save(req->dest, &j->st, err, errlen);
                if (r < 0) {
                        unlink(j->file);
                        goto fail;
                }
        }
        res.point = j->point;
        res.copied = j->copied;
        snprintf(res.file, sizeof res.file, "%s", j->file);
        actionlog_append(req->root, "backup", "%s: %s backup %s (point %u%s)", req->name,
                         req->incremental ? "incremental" : "full", j->file, j->point, running ? ", live" : ", offline");
        *ret = res;
        r = 0;
fail:
        if (r < 0) {
                /* What was moved aside stays so: the caller says where. */
                snprintf(ret->orphan, sizeof ret->orphan, "%s", res.orphan);
                if (j->partial[0])
                        unlink(j->partial);
                if (props_written)
                        unlink(j->props);
                if (!err[0])
                        snprintf(err, errlen, "%s: backup failed: %s", req->name, strerror(-r));
        }
        if (run_fd >= 0) {
                runtime_remove(&j->p);
                close(run_fd);
        }
        if (vm_lock >= 0)
                close(vm_lock);
        if (dest_lock >= 0) {
                if (r < 0 && made_dest) {
                        char *lock = paths_join(req->dest, DEST_LOCK);
                        if (lock)
                                unlink(lock);
                        free(lock);
                        rmdir(req->dest);
                }
                close(dest_lock);
        }
        image_chain_free(chain);
        free(text);
        free(j->disk);
        vm_paths_done(&j->p);
        free(j);
        return r;
}

/* --- restore --- */

struct restore_ctx {
        const struct restore_request *req;
        const char *file;
};

static int restore_progress(uint64_t done, uint64_t total, void *userdata) {
        struct restore_ctx *c = ((struct sink *)userdata)->ctx;
        if (c->req->cancel && *c->req->cancel)
                return -ECANCELED;
        return c->req->progress ? c->req->progress(done, total, c->req->userdata) : 0;
}

static int restore_write(const char *path, void *userdata, char *err, size_t errlen) {
        struct restore_ctx *c = userdata;
        struct image_flatten *f = NULL;
        int r = image_flatten_open(c->file, &f, err, errlen);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", path, strerror(-r));
        } else {
                struct sink sk = { .fd = fd, .ctx = c };
                r = image_flatten_write(f, fd_write, restore_progress, &sk, err, errlen);
                if (r < 0 && sk.write_error)
                        snprintf(err, errlen, "cannot write %s: %s", path, strerror(sk.write_error));
                if (r == 0 && fsync(fd) < 0) {
                        r = -errno;
                        snprintf(err, errlen, "cannot write %s: %s", path, strerror(-r));
                }
                close(fd);
                if (r == -EIO && !sk.write_error)
                        r = -EINVAL;    /* a backup file that does not read back is bad input */
        }
        image_flatten_free(f);
        return r;
}

/* Every layer of point p's file is the point before in DEST, down to the
 * newest full one, each naming the next by its plain name and format. */
static int check_chain(const char *dest, const struct backup_state *s, size_t idx, const char *file, uint64_t *vsize,
                       char *err, size_t errlen) {
        struct image_chain *chain = NULL;
        char *real_dest = realpath(dest, NULL);
        int r = image_chain_inspect(file, &chain, err, errlen);
        if (r < 0 || !real_dest) {
                r = r < 0 ? (r == -ENOMEM ? r : -EINVAL) : -errno;
                if (!real_dest && r != -EINVAL)
                        snprintf(err, errlen, "%s: %s", dest, strerror(-r));
                goto done;
        }
        size_t k = 0;
        for (size_t i = idx + 1; i-- > 0; k++) {
                const struct backup_point *pt = &s->points[i];
                char want[512], path[4096];
                point_file(s->vm, pt->n, ".qcow2", want, sizeof want);
                snprintf(path, sizeof path, "%s/%s", real_dest, want);
                if (k >= chain->n_layers) {
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: the chain ends before %s (a backing file is missing)", file, want);
                        goto done;
                }
                const struct image_layer *l = &chain->layers[k];
                char *real = realpath(l->path, NULL);
                bool same = real && strcmp(real, path) == 0;
                free(real);
                if (!same || strcmp(l->format, "qcow2") != 0) {
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: layer %zu is %s, not %s", file, k, l->path, path);
                        goto done;
                }
                if (pt->kind == BACKUP_FULL) {
                        if (l->backing_file) {
                                r = -EINVAL;
                                snprintf(err, errlen, "%s: the full backup %s names a backing file (%s)", file, want, l->backing_file);
                                goto done;
                        }
                        k++;
                        break;
                }
                char next[512];
                if (i == 0) {
                        r = -EINVAL;
                        goto done;
                }
                point_file(s->vm, s->points[i - 1].n, ".qcow2", next, sizeof next);
                if (!l->backing_file || strcmp(l->backing_file, next) != 0 || !l->backing_format ||
                    strcmp(l->backing_format, "qcow2") != 0) {
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: %s must name the backing file %s (format qcow2), it names %s", file, want,
                                 next, l->backing_file ? l->backing_file : "none");
                        goto done;
                }
        }
        if (k != chain->n_layers) {
                r = -EINVAL;
                snprintf(err, errlen, "%s: the chain has %zu layers, the backup state %zu", file, chain->n_layers, k);
                goto done;
        }
        *vsize = chain->layers[0].virtual_size;
        r = 0;
done:
        image_chain_free(chain);
        free(real_dest);
        return r;
}

int restore_vm(const struct restore_request *req, struct import_result *ret, unsigned *ret_point, char *err,
               size_t errlen) {
        struct backup_state *s = calloc(1, sizeof *s);
        char dest[4096], file[4096], props[4096], name[512];
        const char *want_file = NULL;
        struct stat st;
        int r, lock_fd = -1;

        err[0] = '\0';
        if (!s)
                return -ENOMEM;
        if (stat(req->source, &st) < 0) {
                r = -EINVAL;
                snprintf(err, errlen, "%s: %s", req->source, strerror(errno));
                goto done;
        }
        if (S_ISDIR(st.st_mode)) {
                snprintf(dest, sizeof dest, "%s", req->source);
        } else {
                const char *slash = strrchr(req->source, '/');
                snprintf(dest, sizeof dest, "%.*s", slash ? (int)(slash - req->source) : 1, slash ? req->source : ".");
                if (slash && slash == req->source)
                        snprintf(dest, sizeof dest, "/");
                want_file = slash ? slash + 1 : req->source;
        }
        /* Shared with backup: no point appears or goes while we read. */
        char *lock = paths_join(dest, DEST_LOCK);
        lock_fd = lock ? open(lock, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) : -1;
        free(lock);
        if (lock_fd >= 0 && flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
                r = -EBUSY;
                snprintf(err, errlen, "%s: a vrt backup works here right now", dest);
                goto done;
        }
        r = state_load(dest, s, err, errlen);
        if (r == 1) {
                r = -EINVAL;
                snprintf(err, errlen, "%s has no %s: not a vrt backup directory", dest, BACKUP_STATE_FILE);
        }
        if (r < 0)
                goto done;
        if (!s->n) {
                r = -EINVAL;
                snprintf(err, errlen, "%s holds no backup point", dest);
                goto done;
        }
        size_t idx = s->n - 1;
        bool found = req->point < 0 && !want_file;
        for (size_t i = 0; !found && i < s->n; i++) {
                point_file(s->vm, s->points[i].n, ".qcow2", name, sizeof name);
                if ((want_file && strcmp(want_file, name) == 0) || (!want_file && req->point >= 0 && (unsigned)req->point == s->points[i].n)) {
                        if (want_file && req->point >= 0 && (unsigned)req->point != s->points[i].n)
                                break;
                        idx = i;
                        found = true;
                }
        }
        if (!found) {
                r = -EINVAL;
                /* The next point's name: what a backup killed before writing the state leaves. */
                point_file(s->vm, s->next, ".qcow2", name, sizeof name);
                bool unlisted = want_file && (strstr(want_file, ORPHAN) || strcmp(want_file, name) == 0);
                if (want_file)
                        snprintf(err, errlen, "%s is not a point of %s/%s%s%s", req->source, dest, BACKUP_STATE_FILE,
                                 req->point >= 0 ? " (or not the one --point names)" : "",
                                 unlisted ? " (a vrt backup died before recording it; the next vrt backup moves such a file aside as .orphan)" : "");
                else
                        snprintf(err, errlen, "%s has no point %d", dest, req->point);
                goto done;
        }
        point_file(s->vm, s->points[idx].n, ".qcow2", name, sizeof name);
        snprintf(file, sizeof file, "%s/%s", dest, name);
        point_file(s->vm, s->points[idx].n, ".properties", name, sizeof name);
        snprintf(props, sizeof props, "%s/%s", dest, name);
        uint64_t vsize = 0;
        r = check_chain(dest, s, idx, file, &vsize, err, errlen);
        if (r < 0)
                goto done;
        struct restore_ctx c = { .req = req, .file = file };
        struct import_disk_request ir = {
                .root = req->root,
                .runtime_dir = req->runtime_dir,
                .source = file,
                .props = props,
                .default_name = s->vm,
                .new_name = req->new_name,
                .virtual_size = vsize,
                .write_disk = restore_write,
                .userdata = &c,
                .cancel = req->cancel,
        };
        r = import_disk_vm(&ir, ret, err, errlen);
        if (r == 0 && ret_point)
                *ret_point = s->points[idx].n;
done:
        if (lock_fd >= 0)
                close(lock_fd);
        free(s);
        return r;
}
