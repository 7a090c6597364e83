#include "images/flatten.h"

#include <errno.h>
#include <fcntl.h>
#include <libqcow.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "images/atomic_file.h"
#include "images/chain.h"
#include "images/io.h"
#include "images/qcow2.h"
#include "images/worker.h"

#define OC_BITS 16
#define OC (UINT64_C(1) << OC_BITS)             /* output cluster size */
#define OC_L2_ENTRIES (OC / 8)                  /* entries per output L2 table */
#define OC_RB_ENTRIES (OC / 2)                  /* 16-bit refcounts per block */
#define OFFSET_MASK UINT64_C(0x00fffffffffffe00)
#define L2_COMPRESSED (UINT64_C(1) << 62)
#define L2_ZERO UINT64_C(1)
#define OFLAG_COPIED (UINT64_C(1) << 63)        /* refcount is exactly 1 */
/* Output is handed on in chunks of this size; reads are merged up to it. */
#define OUT_BUFFER (UINT64_C(4) * 1024 * 1024)

enum src_kind { SRC_UNALLOC, SRC_ZERO, SRC_DATA, SRC_COMPRESSED };

struct src {
        enum src_kind kind;
        size_t layer;
        uint64_t host;          /* SRC_DATA: offset in the layer's file */
};

struct flayer {
        char *path;
        int fd;
        bool qcow2;
        uint32_t version;
        uint64_t vsize;         /* virtual size; raw: file size */
        uint32_t cb;            /* cluster bits */
        uint64_t *l1;
        uint32_t l1_size;
        uint64_t l2_index;      /* L1 index of the cached L2 table, UINT64_MAX: none */
        uint64_t *l2;
        uint8_t *l2_raw;
        libqcow_file_t *lq;     /* opened for the first compressed cluster */
        bool raw_cached;        /* raw: SEEK_DATA from raw_from found [raw_data, raw_hole) */
        uint64_t raw_from, raw_data, raw_hole;
};

struct image_flatten {
        char *path;
        struct flayer *layers;
        size_t n_layers;
        uint64_t vsize;
        uint64_t unit;          /* resolution: the smallest cluster, at most OC */
        uint64_t *alloc;        /* output cluster indices with data, ascending */
        uint64_t n_alloc;
        uint64_t *l2_l1;        /* L1 indices that get an L2 table, ascending */
        uint64_t n_l2;
        uint64_t n_l1, l1c, rt, rb, total;
        uint64_t rt_off, rb_off, l1_off, l2_off, data_off;
        bool written;
};

static void put16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t)(v >> 8);
        p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v) {
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void put64(uint8_t *p, uint64_t v) {
        put32(p, (uint32_t)(v >> 32));
        put32(p + 4, (uint32_t)v);
}

static uint64_t get64(const uint8_t *p) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return v;
}

static uint64_t div_up(uint64_t a, uint64_t b) {
        return a / b + (a % b != 0);
}

static int open_layer(struct flayer *l, const struct image_layer *il, char *err, size_t errlen) {
        struct qcow2_header h;
        char why[256];
        int r;

        l->fd = open(il->path, O_RDONLY | O_CLOEXEC);
        if (l->fd < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: %s", il->path, strerror(errno));
                return r;
        }
        l->qcow2 = strcmp(il->format, "qcow2") == 0;
        l->vsize = il->virtual_size;
        l->l2_index = UINT64_MAX;
        if (!l->qcow2)
                return 0;
        r = qcow2_header_read(l->fd, &h, why, sizeof why);
        if (r < 0) {
                snprintf(err, errlen, "%s: %s", il->path, why);
                return r == -ENODATA ? -EIO : r;
        }
        if (h.incompatible_features & QCOW2_INCOMPAT_EXTL2) {
                snprintf(err, errlen, "%s: qcow2 images with subclusters (extended L2) cannot be flattened", il->path);
                return -EOPNOTSUPP;
        }
        if (h.incompatible_features & QCOW2_INCOMPAT_COMPRESSION) {
                uint8_t ct = 0;
                if (pread_full(l->fd, &ct, 1, 104) != 1 || ct != 0) {
                        snprintf(err, errlen, "%s: only zlib-compressed qcow2 images can be flattened", il->path);
                        return -EOPNOTSUPP;
                }
        }
        l->version = h.version;
        l->cb = h.cluster_bits;
        l->l1_size = h.l1_size;
        l->l1 = calloc(h.l1_size ? h.l1_size : 1, sizeof *l->l1);
        l->l2 = calloc((size_t)1 << (l->cb - 3), sizeof *l->l2);
        l->l2_raw = malloc((size_t)1 << l->cb);
        if (!l->l1 || !l->l2 || !l->l2_raw) {
                snprintf(err, errlen, "%s: out of memory", il->path);
                return -ENOMEM;
        }
        if (h.l1_size) {
                size_t n = (size_t)h.l1_size * 8;
                uint8_t *raw = malloc(n);
                if (!raw) {
                        snprintf(err, errlen, "%s: out of memory", il->path);
                        return -ENOMEM;
                }
                ssize_t got = pread_full(l->fd, raw, n, (off_t)h.l1_table_offset);
                if (got != (ssize_t)n) {
                        free(raw);
                        snprintf(err, errlen, "%s: cannot read the L1 table", il->path);
                        return -EIO;
                }
                for (uint32_t i = 0; i < h.l1_size; i++)
                        l->l1[i] = get64(raw + 8 * (size_t)i);
                free(raw);
        }
        return 0;
}

static int load_l2(struct flayer *l, uint64_t l1i, uint64_t l2_off) {
        size_t cs = (size_t)1 << l->cb;
        if (l->l2_index == l1i)
                return 0;
        l->l2_index = UINT64_MAX;
        if (pread_full(l->fd, l->l2_raw, cs, (off_t)l2_off) != (ssize_t)cs)
                return -EIO;
        for (size_t i = 0; i < cs / 8; i++)
                l->l2[i] = get64(l->l2_raw + 8 * i);
        l->l2_index = l1i;
        return 0;
}

/* Where the layer has the bytes [off, off+unit). */
static int lookup(struct image_flatten *f, size_t li, uint64_t off, struct src *ret) {
        struct flayer *l = &f->layers[li];

        *ret = (struct src){ .kind = SRC_UNALLOC, .layer = li };
        if (off >= l->vsize) {
                /* Past the end of a shorter backing file: zeros, as in QEMU. */
                ret->kind = SRC_ZERO;
                return 0;
        }
        if (!l->qcow2) {
                if (!l->raw_cached || off < l->raw_from || off >= l->raw_hole) {
                        off_t d = lseek(l->fd, (off_t)off, SEEK_DATA), h;
                        if (d < 0 && errno == ENXIO)
                                d = (off_t)l->vsize;
                        if (d < 0) {
                                /* No hole support: everything is data. */
                                d = (off_t)off;
                                h = (off_t)l->vsize;
                        } else {
                                h = (uint64_t)d < l->vsize ? lseek(l->fd, d, SEEK_HOLE) : (off_t)l->vsize;
                                if (h < 0)
                                        h = (off_t)l->vsize;
                        }
                        l->raw_cached = true;
                        l->raw_from = off;
                        l->raw_data = (uint64_t)d;
                        l->raw_hole = (uint64_t)h > l->vsize ? l->vsize : (uint64_t)h;
                        if (l->raw_hole <= off)
                                l->raw_hole = off + 1;
                }
                if (off + f->unit <= l->raw_data) {
                        ret->kind = SRC_ZERO;
                } else {
                        ret->kind = SRC_DATA;
                        ret->host = off;
                }
                return 0;
        }
        uint32_t l2_bits = l->cb - 3;
        uint64_t l1i = off >> (l->cb + l2_bits);
        if (l1i >= l->l1_size)
                return 0;
        uint64_t l2_off = l->l1[l1i] & OFFSET_MASK;
        if (!l2_off)
                return 0;
        int r = load_l2(l, l1i, l2_off);
        if (r < 0)
                return r;
        uint64_t e = l->l2[(off >> l->cb) & ((UINT64_C(1) << l2_bits) - 1)];
        if (e & L2_COMPRESSED) {
                ret->kind = SRC_COMPRESSED;
                return 0;
        }
        if (l->version >= 3 && (e & L2_ZERO)) {
                ret->kind = SRC_ZERO;
                return 0;
        }
        if (e & OFFSET_MASK) {
                ret->kind = SRC_DATA;
                ret->host = (e & OFFSET_MASK) + (off & ((UINT64_C(1) << l->cb) - 1));
        }
        return 0;
}

/* The topmost layer's say on [off, off+unit). */
static int resolve(struct image_flatten *f, uint64_t off, struct src *ret) {
        if (off >= f->vsize) {
                *ret = (struct src){ .kind = SRC_ZERO };
                return 0;
        }
        for (size_t i = 0; i < f->n_layers; i++) {
                int r = lookup(f, i, off, ret);
                if (r < 0)
                        return r;
                if (ret->kind != SRC_UNALLOC)
                        return 0;
        }
        ret->kind = SRC_ZERO;
        return 0;
}

/* The end of the range from off on in which no layer can have data, from
 * the L1 tables and raw holes: off itself when it cannot tell. Lets a
 * large, mostly empty disk be planned without visiting every cluster. */
static uint64_t empty_until(struct image_flatten *f, uint64_t off) {
        uint64_t end = UINT64_MAX;
        for (size_t i = 0; i < f->n_layers; i++) {
                struct flayer *l = &f->layers[i];
                if (off >= l->vsize)
                        return end;     /* zeros from here down */
                if (l->qcow2) {
                        uint64_t span = UINT64_C(1) << (2 * l->cb - 3);
                        uint64_t l1i = off / span;
                        if (l1i < l->l1_size && (l->l1[l1i] & OFFSET_MASK))
                                return off;
                        if ((l1i + 1) * span < end)
                                end = (l1i + 1) * span;
                } else {
                        struct src s;
                        if (lookup(f, i, off, &s) < 0 || s.kind != SRC_ZERO)
                                return off;
                        return l->raw_data < end ? l->raw_data : end;
                }
        }
        return end;
}

static int plan(struct image_flatten *f, char *err, size_t errlen) {
        uint64_t n_out = div_up(f->vsize, OC), cap = 0;

        for (uint64_t g = 0; g < n_out;) {
                uint64_t off = g * OC, e = empty_until(f, off);
                if (e > off && e / OC > g) {
                        g = e / OC;
                        continue;
                }
                bool has = false;
                for (uint64_t p = 0; p < OC && !has; p += f->unit) {
                        struct src s;
                        int r = resolve(f, off + p, &s);
                        if (r < 0) {
                                snprintf(err, errlen, "%s: cannot read an L2 table of %s", f->path,
                                         f->layers[s.layer].path);
                                return r;
                        }
                        has = s.kind == SRC_DATA || s.kind == SRC_COMPRESSED;
                }
                if (has) {
                        if (f->n_alloc == cap) {
                                cap = cap ? 2 * cap : 1024;
                                uint64_t *n = realloc(f->alloc, cap * sizeof *n);
                                if (!n)
                                        goto oom;
                                f->alloc = n;
                        }
                        f->alloc[f->n_alloc++] = g;
                }
                g++;
        }

        f->n_l1 = div_up(f->vsize, OC * OC_L2_ENTRIES);
        f->l1c = div_up(f->n_l1 * 8, OC);
        f->l2_l1 = calloc(f->n_alloc ? f->n_alloc : 1, sizeof *f->l2_l1);
        if (!f->l2_l1)
                goto oom;
        for (uint64_t a = 0; a < f->n_alloc; a++) {
                uint64_t li = f->alloc[a] / OC_L2_ENTRIES;
                if (f->n_l2 == 0 || f->l2_l1[f->n_l2 - 1] != li)
                        f->l2_l1[f->n_l2++] = li;
        }
        /* Refcount blocks cover every cluster, themselves included. */
        f->rt = f->rb = 1;
        for (;;) {
                f->total = 1 + f->rt + f->rb + f->l1c + f->n_l2 + f->n_alloc;
                uint64_t rb = div_up(f->total, OC_RB_ENTRIES), rt = div_up(rb * 8, OC);
                if (rb == f->rb && rt == f->rt)
                        break;
                f->rb = rb;
                f->rt = rt;
        }
        f->rt_off = OC;
        f->rb_off = f->rt_off + f->rt * OC;
        f->l1_off = f->rb_off + f->rb * OC;
        f->l2_off = f->l1_off + f->l1c * OC;
        f->data_off = f->l2_off + f->n_l2 * OC;
        return 0;
oom:
        snprintf(err, errlen, "%s: out of memory", f->path);
        return -ENOMEM;
}

int image_flatten_open(const char *path, struct image_flatten **ret, char *err, size_t errlen) {
        struct image_chain *chain = NULL;
        struct image_flatten *f = NULL;
        int r;

        r = image_chain_inspect(path, &chain, err, errlen);
        if (r < 0)
                return r;
        f = calloc(1, sizeof *f);
        if (!f || !(f->path = strdup(path)) || !(f->layers = calloc(chain->n_layers, sizeof *f->layers))) {
                r = -ENOMEM;
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
        }
        f->vsize = chain->layers[0].virtual_size;
        if (f->vsize == 0 || f->vsize > QCOW2_MAX_VIRTUAL_SIZE) {
                r = -EINVAL;
                snprintf(err, errlen, "%s: virtual size %llu cannot be flattened into a qcow2 image", path,
                         (unsigned long long)f->vsize);
                goto fail;
        }
        f->unit = OC;
        for (size_t i = 0; i < chain->n_layers; i++) {
                f->layers[i].fd = -1;
                f->layers[i].path = strdup(chain->layers[i].path);
                f->n_layers++;
                if (!f->layers[i].path) {
                        r = -ENOMEM;
                        snprintf(err, errlen, "%s: out of memory", path);
                        goto fail;
                }
                r = open_layer(&f->layers[i], &chain->layers[i], err, errlen);
                if (r < 0)
                        goto fail;
                if (f->layers[i].qcow2 && (UINT64_C(1) << f->layers[i].cb) < f->unit)
                        f->unit = UINT64_C(1) << f->layers[i].cb;
        }
        r = plan(f, err, errlen);
        if (r < 0)
                goto fail;
        image_chain_free(chain);
        *ret = f;
        return 0;
fail:
        image_chain_free(chain);
        image_flatten_free(f);
        return r;
}

uint64_t image_flatten_size(const struct image_flatten *f) {
        return f->total * OC;
}

uint64_t image_flatten_virtual_size(const struct image_flatten *f) {
        return f->vsize;
}

uint64_t image_flatten_data_clusters(const struct image_flatten *f) {
        return f->n_alloc;
}

/* --- writing ---
 *
 * Two stages: this thread resolves clusters and reads them from the
 * layers into one buffer while a writer thread hands the last full one to
 * the caller's write function (and reports progress). Reading and writing
 * are page-cache copies of about the same cost, so they overlap on two
 * cores. The callbacks never run two at once: before the writer starts
 * (progress 0) and after it has ended (the last write, len 0) they run on
 * this thread, in between only on the writer. */

struct out {
        struct image_flatten *f;
        uint8_t *bufs[3];
        unsigned cur;           /* bufs[cur] is being filled */
        uint8_t *buf;
        size_t fill;
        struct worker writer;
        /* A pread not issued yet, merged from adjacent clusters. */
        int pend_fd;
        uint64_t pend_host;
        size_t pend_at, pend_len;
};

/* The caller's side of the stream, on the writer thread. */
struct sink {
        image_flatten_write_fn write;
        image_copy_progress_fn progress;
        void *userdata;
        uint64_t done, total;
};

static int sink_write(const void *buf, size_t len, void *userdata) {
        struct sink *k = userdata;
        int r = k->write(buf, len, k->userdata);
        if (r)
                return r;
        k->done += len;
        return k->progress ? k->progress(k->done, k->total, k->userdata) : 0;
}

static int flush_pending(struct out *o) {
        if (o->pend_len == 0)
                return 0;
        ssize_t n = pread_full(o->pend_fd, o->buf + o->pend_at, o->pend_len, (off_t)o->pend_host);
        if (n != (ssize_t)o->pend_len)
                return n < 0 ? (int)n : -EIO;
        o->pend_len = 0;
        return 0;
}

/* The filled buffer goes to the writer; filling goes on in the next one.
 * Three in turn: when a buffer is filled again, the writer has returned
 * from the write of the buffer after it, so the sink, which may read a
 * buffer until its next write returns, is done with it. */
static int flush(struct out *o) {
        int r = flush_pending(o);
        if (r < 0)
                return r;
        if (o->fill == 0)
                return 0;
        r = worker_hand(&o->writer, o->buf, o->fill);
        if (r < 0)
                return r;
        o->cur = (o->cur + 1) % 3;
        o->buf = o->bufs[o->cur];
        o->fill = 0;
        return 0;
}

/* A cluster-sized slot in the buffer; flushes first when full. */
static int slot(struct out *o, uint8_t **ret) {
        if (o->fill + OC > OUT_BUFFER) {
                int r = flush(o);
                if (r < 0)
                        return r;
        }
        *ret = o->buf + o->fill;
        o->fill += OC;
        return 0;
}

static int read_compressed(struct image_flatten *f, size_t li, uint64_t off, uint8_t *dst, size_t n) {
        struct flayer *l = &f->layers[li];
        libqcow_error_t *e = NULL;
        char fdpath[64];

        if (!l->lq) {
                snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", l->fd);
                if (libqcow_file_initialize(&l->lq, &e) != 1)
                        goto fail;
                if (libqcow_file_open(l->lq, fdpath, LIBQCOW_OPEN_READ, &e) != 1) {
                        libqcow_file_free(&l->lq, NULL);
                        goto fail;
                }
        }
        if (libqcow_file_read_buffer_at_offset(l->lq, dst, n, (off64_t)off, &e) != (ssize_t)n)
                goto fail;
        return 0;
fail:
        libqcow_error_free(&e);
        return -EIO;
}

static int fill_cluster(struct out *o, uint64_t g, uint8_t *dst, char *err, size_t errlen) {
        struct image_flatten *f = o->f;
        for (uint64_t p = 0; p < OC; p += f->unit) {
                uint64_t off = g * OC + p;
                uint8_t *d = dst + p;
                struct src s;
                int r = resolve(f, off, &s);
                if (r < 0) {
                        snprintf(err, errlen, "%s: cannot read an L2 table of %s", f->path, f->layers[s.layer].path);
                        return r;
                }
                if (s.kind != SRC_DATA && s.kind != SRC_COMPRESSED) {
                        memset(d, 0, f->unit);
                        continue;
                }
                struct flayer *l = &f->layers[s.layer];
                uint64_t n = f->unit;
                if (off + n > l->vsize)
                        n = l->vsize - off;
                if (off + n > f->vsize)
                        n = f->vsize - off;
                if (n < f->unit)
                        memset(d + n, 0, f->unit - n);
                if (s.kind == SRC_COMPRESSED) {
                        r = read_compressed(f, s.layer, off, d, (size_t)n);
                        if (r < 0) {
                                snprintf(err, errlen, "%s: cannot read a compressed cluster of %s at %llu", f->path,
                                         l->path, (unsigned long long)off);
                                return r;
                        }
                        continue;
                }
                if (!l->qcow2 && s.host + n > l->vsize)
                        n = l->vsize - s.host;
                if (o->pend_len && o->pend_fd == l->fd && o->pend_host + o->pend_len == s.host &&
                    o->pend_at + o->pend_len == (size_t)(d - o->buf)) {
                        o->pend_len += (size_t)n;
                } else {
                        r = flush_pending(o);
                        if (r < 0)
                                goto read_fail;
                        o->pend_fd = l->fd;
                        o->pend_host = s.host;
                        o->pend_at = (size_t)(d - o->buf);
                        o->pend_len = (size_t)n;
                }
                if (n < f->unit) {
                        /* The zeroed tail must not be overwritten by a merge. */
                        r = flush_pending(o);
                        if (r < 0)
                                goto read_fail;
                }
                continue;
read_fail:
                snprintf(err, errlen, "%s: reading %s: %s", f->path, l->path,
                         r == -EIO ? "short read (did the file change?)" : strerror(-r));
                return r;
        }
        return 0;
}

static void encode_header(const struct image_flatten *f, uint8_t *b) {
        memset(b, 0, OC);
        put32(b + 0, QCOW2_MAGIC);
        put32(b + 4, 3);
        put32(b + 20, OC_BITS);
        put64(b + 24, f->vsize);
        put32(b + 36, (uint32_t)f->n_l1);
        put64(b + 40, f->l1_off);
        put64(b + 48, f->rt_off);
        put32(b + 56, (uint32_t)f->rt);
        put32(b + 96, 4);
        put32(b + 100, QCOW2_HEADER_LENGTH);
        /* The end-of-extensions marker at 112 is all zero. */
}

int image_flatten_write(struct image_flatten *f, image_flatten_write_fn write, image_copy_progress_fn progress,
                        void *userdata, char *err, size_t errlen) {
        struct sink out_sink = { .write = write, .progress = progress, .userdata = userdata };
        struct out o = { .f = f, .pend_fd = -1 };
        bool started = false;
        uint8_t *b;
        uint64_t a = 0;
        int r;

        if (f->written) {
                snprintf(err, errlen, "%s: already written", f->path);
                return -EINVAL;
        }
        f->written = true;
        out_sink.total = image_flatten_size(f);
        for (size_t i = 0; i < 3; i++)
                if (!(o.bufs[i] = malloc(OUT_BUFFER))) {
                        r = -ENOMEM;
                        goto fail;
                }
        o.buf = o.bufs[0];
        if (progress && (r = progress(0, out_sink.total, userdata)) != 0) {
                r = r < 0 ? r : -ECANCELED;
                goto fail;
        }
        if ((r = worker_start(&o.writer, sink_write, &out_sink)) < 0)
                goto fail;
        started = true;

        if ((r = slot(&o, &b)) < 0)
                goto fail;
        encode_header(f, b);
        for (uint64_t i = 0; i < f->rt; i++) {
                if ((r = slot(&o, &b)) < 0)
                        goto fail;
                memset(b, 0, OC);
                for (uint64_t j = 0; j < OC / 8 && i * (OC / 8) + j < f->rb; j++)
                        put64(b + 8 * j, f->rb_off + (i * (OC / 8) + j) * OC);
        }
        for (uint64_t i = 0; i < f->rb; i++) {
                if ((r = slot(&o, &b)) < 0)
                        goto fail;
                memset(b, 0, OC);
                for (uint64_t j = 0; j < OC_RB_ENTRIES && i * OC_RB_ENTRIES + j < f->total; j++)
                        put16(b + 2 * j, 1);
        }
        for (uint64_t i = 0, k = 0; i < f->l1c; i++) {
                if ((r = slot(&o, &b)) < 0)
                        goto fail;
                memset(b, 0, OC);
                for (; k < f->n_l2 && f->l2_l1[k] < (i + 1) * (OC / 8); k++)
                        put64(b + 8 * (f->l2_l1[k] - i * (OC / 8)), (f->l2_off + k * OC) | OFLAG_COPIED);
        }
        for (uint64_t k = 0; k < f->n_l2; k++) {
                if ((r = slot(&o, &b)) < 0)
                        goto fail;
                memset(b, 0, OC);
                for (; a < f->n_alloc && f->alloc[a] / OC_L2_ENTRIES == f->l2_l1[k]; a++)
                        put64(b + 8 * (f->alloc[a] % OC_L2_ENTRIES), (f->data_off + a * OC) | OFLAG_COPIED);
        }
        for (a = 0; a < f->n_alloc; a++) {
                if ((r = slot(&o, &b)) < 0)
                        goto fail;
                r = fill_cluster(&o, f->alloc[a], b, err, errlen);
                if (r < 0)
                        goto fail_msg;
        }
        r = flush(&o);
        if (r < 0)
                goto fail;
        started = false;
        r = worker_stop(&o.writer);
        /* The sink lets go of the buffers (the writer thread has ended). */
        int last = write(o.buf, 0, userdata);
        if (r == 0 && last)
                r = last < 0 ? last : -ECANCELED;
        if (r < 0)
                goto fail;
        for (size_t i = 0; i < 3; i++)
                free(o.bufs[i]);
        return 0;
fail:
        if (r == -ECANCELED)
                snprintf(err, errlen, "%s: cancelled", f->path);
        else if (r == -EIO)
                snprintf(err, errlen, "%s: short read from a layer (did a file change?)", f->path);
        else if (r == -ENOMEM)
                snprintf(err, errlen, "%s: out of memory", f->path);
        else
                snprintf(err, errlen, "%s: %s", f->path, strerror(-r));
fail_msg:
        if (started) {
                /* Stopped early: the message is this failure's, the
                 * writer's own error (if any) came after it in the stream. */
                worker_stop(&o.writer);
                write(o.buf, 0, userdata);
        }
        for (size_t i = 0; i < 3; i++)
                free(o.bufs[i]);
        return r;
}

static int write_fd(const void *buf, size_t len, void *userdata) {
        int fd = *(int *)userdata;
        size_t done = 0;
        while (done < len) {
                ssize_t n = write(fd, (const uint8_t *)buf + done, len - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                done += (size_t)n;
        }
        return 0;
}

int image_flatten_to_file(const char *src, const char *dst, char *err, size_t errlen) {
        struct image_flatten *f = NULL;
        struct atomic_file *af = NULL;
        int r;

        r = image_flatten_open(src, &f, err, errlen);
        if (r < 0)
                return r;
        r = atomic_file_open(dst, 0644, &af, err, errlen);
        if (r == 0)
                r = image_flatten_write(f, write_fd, NULL, &af->fd, err, errlen);
        if (r == 0)
                r = atomic_file_commit(af, err, errlen);
        atomic_file_free(af);
        image_flatten_free(f);
        return r;
}

struct image_flatten *image_flatten_free(struct image_flatten *f) {
        if (!f)
                return NULL;
        for (size_t i = 0; i < f->n_layers; i++) {
                struct flayer *l = &f->layers[i];
                if (l->lq) {
                        libqcow_file_close(l->lq, NULL);
                        libqcow_file_free(&l->lq, NULL);
                }
                if (l->fd >= 0)
                        close(l->fd);
                free(l->path);
                free(l->l1);
                free(l->l2);
                free(l->l2_raw);
        }
        free(f->layers);
        free(f->alloc);
        free(f->l2_l1);
        free(f->path);
        free(f);
        return NULL;
}
