#include "images/qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images/atomic_file.h"
#include "images/io.h"

#define CLUSTER_SIZE (UINT64_C(1) << QCOW2_CLUSTER_BITS)
/* One L1 entry maps one L2 table of CLUSTER_SIZE/8 entries. */
#define L1_ENTRY_SPAN (CLUSTER_SIZE * (CLUSTER_SIZE / 8))
/* QEMU refuses L1 tables above 32 MiB (QCOW_MAX_L1_SIZE). */
#define L1_MAX_ENTRIES (UINT64_C(32) * 1024 * 1024 / 8)
_Static_assert(QCOW2_MAX_VIRTUAL_SIZE == L1_MAX_ENTRIES * L1_ENTRY_SPAN, "QCOW2_MAX_VIRTUAL_SIZE");
#define REFCOUNT_TABLE_OFFSET (1 * CLUSTER_SIZE)
#define REFCOUNT_BLOCK_OFFSET (2 * CLUSTER_SIZE)
#define L1_TABLE_OFFSET (3 * CLUSTER_SIZE)
/* All-zero blocks of this size are left as holes when writing. */
#define WRITE_BLOCK 4096

static void put16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t)(v >> 8);
        p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v) {
        put32(p, (uint32_t)(v >> 32));
        put32(p + 4, (uint32_t)v);
}

static uint32_t get32(const uint8_t *p) {
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p) {
        return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static uint64_t round_up(uint64_t v, uint64_t align) {
        return (v + align - 1) / align * align;
}

bool qcow2_has_magic(const void *buf, size_t len) {
        return len >= 4 && get32(buf) == QCOW2_MAGIC;
}

static int check_spec(const struct qcow2_overlay_spec *spec, char *err, size_t errlen) {
        size_t n;

        if (!spec->backing_file || !*spec->backing_file) {
                snprintf(err, errlen, "empty backing file name");
                return -EINVAL;
        }
        n = strlen(spec->backing_file);
        if (n > QCOW2_BACKING_FILE_MAX) {
                snprintf(err, errlen, "backing file name is %zu bytes long, qcow2 allows at most %d", n,
                         QCOW2_BACKING_FILE_MAX);
                return -EINVAL;
        }
        if (!spec->backing_format ||
            (strcmp(spec->backing_format, "qcow2") != 0 && strcmp(spec->backing_format, "raw") != 0)) {
                snprintf(err, errlen, "unsupported backing format '%s' (use qcow2 or raw)",
                         spec->backing_format ? spec->backing_format : "");
                return -EINVAL;
        }
        return 0;
}

static int check_size(uint64_t size, char *err, size_t errlen) {
        if (size == 0) {
                snprintf(err, errlen, "virtual size is 0");
                return -EINVAL;
        }
        if (size % 512) {
                snprintf(err, errlen, "virtual size %llu is not a multiple of 512", (unsigned long long)size);
                return -EINVAL;
        }
        if (size > L1_MAX_ENTRIES * L1_ENTRY_SPAN) {
                snprintf(err, errlen, "virtual size %llu exceeds the qcow2 limit of %llu bytes",
                         (unsigned long long)size, (unsigned long long)(L1_MAX_ENTRIES * L1_ENTRY_SPAN));
                return -EINVAL;
        }
        return 0;
}

/* Lays out an empty image; backing_file NULL: a standalone image without
 * the backing-format extension. Arguments are checked by the callers. */
static int encode(const char *backing_file, const char *backing_format, uint64_t virtual_size, uint8_t **ret_buf,
                  size_t *ret_len) {
        uint64_t l1_size, l1_bytes, n_clusters, len;
        size_t off;
        uint8_t *b;

        l1_size = (virtual_size + L1_ENTRY_SPAN - 1) / L1_ENTRY_SPAN;
        l1_bytes = l1_size * 8;
        /* Header, refcount table, refcount block, then the L1 clusters. One
         * refcount block covers 32768 clusters, far more than these. */
        n_clusters = 3 + round_up(l1_bytes, CLUSTER_SIZE) / CLUSTER_SIZE;
        /* Like QEMU, the file ends with the last L1 entry. */
        len = L1_TABLE_OFFSET + l1_bytes;

        b = calloc(1, len);
        if (!b)
                return -ENOMEM;

        /* Header extensions start right after the header; the backing file
         * name follows the end-of-extensions marker. Both fit easily in the
         * first cluster (name <= 1023 bytes, format <= 5). */
        off = QCOW2_HEADER_LENGTH;
        if (backing_file) {
                size_t fmt_len = strlen(backing_format);

                put32(b + off, QCOW2_EXT_BACKING_FORMAT);
                put32(b + off + 4, (uint32_t)fmt_len);
                memcpy(b + off + 8, backing_format, fmt_len);
                off += 8 + round_up(fmt_len, 8);
        }
        put32(b + off, QCOW2_EXT_END);
        put32(b + off + 4, 0);
        off += 8;
        if (backing_file) {
                size_t name_len = strlen(backing_file);

                memcpy(b + off, backing_file, name_len);
                put64(b + 8, off);                      /* backing_file_offset */
                put32(b + 16, (uint32_t)name_len);      /* backing_file_size */
        }

        put32(b + 0, QCOW2_MAGIC);
        put32(b + 4, 3);                                /* version */
        put32(b + 20, QCOW2_CLUSTER_BITS);
        put64(b + 24, virtual_size);
        put32(b + 32, 0);                               /* crypt_method: none */
        put32(b + 36, (uint32_t)l1_size);
        put64(b + 40, L1_TABLE_OFFSET);
        put64(b + 48, REFCOUNT_TABLE_OFFSET);
        put32(b + 56, 1);                               /* refcount_table_clusters */
        put32(b + 60, 0);                               /* nb_snapshots */
        put64(b + 64, 0);                               /* snapshots_offset */
        put64(b + 72, 0);                               /* incompatible_features */
        put64(b + 80, 0);                               /* compatible_features */
        put64(b + 88, 0);                               /* autoclear_features */
        put32(b + 96, 4);                               /* refcount_order: 16-bit refcounts */
        put32(b + 100, QCOW2_HEADER_LENGTH);
        /* Byte 104, compression_type, stays 0 (zlib); 105-111 are padding. */

        put64(b + REFCOUNT_TABLE_OFFSET, REFCOUNT_BLOCK_OFFSET);
        for (uint64_t i = 0; i < n_clusters; i++)
                put16(b + REFCOUNT_BLOCK_OFFSET + 2 * i, 1);
        /* The L1 table stays all zero: nothing is allocated yet. */

        *ret_buf = b;
        *ret_len = (size_t)len;
        return 0;
}

int qcow2_overlay_encode(const struct qcow2_overlay_spec *spec, uint8_t **ret_buf, size_t *ret_len,
                         char *err, size_t errlen) {
        int r;

        r = check_spec(spec, err, errlen);
        if (r < 0)
                return r;
        r = check_size(spec->virtual_size, err, errlen);
        if (r < 0)
                return r;
        return encode(spec->backing_file, spec->backing_format, spec->virtual_size, ret_buf, ret_len);
}

int qcow2_image_encode(uint64_t virtual_size, uint8_t **ret_buf, size_t *ret_len, char *err, size_t errlen) {
        int r = check_size(virtual_size, err, errlen);
        if (r < 0)
                return r;
        return encode(NULL, NULL, virtual_size, ret_buf, ret_len);
}

int qcow2_header_decode(const void *buf, size_t len, struct qcow2_header *ret, char *err, size_t errlen) {
        const uint8_t *b = buf;
        struct qcow2_header h = { 0 };
        uint64_t cluster_size, off, end;

        if (len < 8) {
                snprintf(err, errlen, "file too short for a qcow2 header (%zu bytes)", len);
                return -ENODATA;
        }
        if (!qcow2_has_magic(b, len)) {
                snprintf(err, errlen, "not a qcow2 image (no QFI\\xfb magic)");
                return -EINVAL;
        }
        h.version = get32(b + 4);
        if (h.version != 2 && h.version != 3) {
                snprintf(err, errlen, "qcow version %u is not supported (only qcow2: versions 2 and 3)", h.version);
                return -EINVAL;
        }
        if (len < (h.version == 2 ? 72U : 104U)) {
                snprintf(err, errlen, "qcow2 header truncated (%zu bytes)", len);
                return -ENODATA;
        }

        h.backing_file_offset = get64(b + 8);
        h.backing_file_size = get32(b + 16);
        h.cluster_bits = get32(b + 20);
        h.size = get64(b + 24);
        h.crypt_method = get32(b + 32);
        h.l1_size = get32(b + 36);
        h.l1_table_offset = get64(b + 40);
        h.refcount_table_offset = get64(b + 48);
        h.refcount_table_clusters = get32(b + 56);
        h.nb_snapshots = get32(b + 60);
        h.snapshots_offset = get64(b + 64);
        if (h.version == 2) {
                h.refcount_order = 4;
                h.header_length = 72;
        } else {
                h.incompatible_features = get64(b + 72);
                h.compatible_features = get64(b + 80);
                h.autoclear_features = get64(b + 88);
                h.refcount_order = get32(b + 96);
                h.header_length = get32(b + 100);
                if (h.header_length < 104 || h.header_length % 8) {
                        snprintf(err, errlen, "invalid qcow2 header length %u", h.header_length);
                        return -EINVAL;
                }
        }

        if (h.cluster_bits < 9 || h.cluster_bits > 21) {
                snprintf(err, errlen, "invalid qcow2 cluster_bits %u", h.cluster_bits);
                return -EINVAL;
        }
        cluster_size = UINT64_C(1) << h.cluster_bits;
        if (h.header_length > cluster_size) {
                snprintf(err, errlen, "qcow2 header length %u exceeds the cluster size", h.header_length);
                return -EINVAL;
        }
        if (h.refcount_order > 6) {
                snprintf(err, errlen, "invalid qcow2 refcount_order %u", h.refcount_order);
                return -EINVAL;
        }
        if (h.l1_table_offset % cluster_size || h.refcount_table_offset % cluster_size) {
                snprintf(err, errlen, "qcow2 L1 or refcount table not aligned to a cluster");
                return -EINVAL;
        }
        if (h.l1_size > L1_MAX_ENTRIES) {
                snprintf(err, errlen, "qcow2 L1 table too large (%u entries)", h.l1_size);
                return -EINVAL;
        }
        if (h.header_length > len) {
                snprintf(err, errlen, "qcow2 header truncated (%zu of %u bytes)", len, h.header_length);
                return -ENODATA;
        }

        if (h.backing_file_offset) {
                h.has_backing_file = true;
                if (h.backing_file_size == 0 || h.backing_file_size > QCOW2_BACKING_FILE_MAX) {
                        snprintf(err, errlen, "invalid backing file name length %u", h.backing_file_size);
                        return -EINVAL;
                }
                if (h.backing_file_offset < h.header_length || h.backing_file_offset > cluster_size ||
                    h.backing_file_offset + h.backing_file_size > cluster_size) {
                        snprintf(err, errlen, "backing file name outside the header cluster");
                        return -EINVAL;
                }
                if (h.backing_file_offset + h.backing_file_size > len) {
                        snprintf(err, errlen, "qcow2 header truncated before the backing file name");
                        return -ENODATA;
                }
                memcpy(h.backing_file, b + h.backing_file_offset, h.backing_file_size);
                if (strlen(h.backing_file) != h.backing_file_size) {
                        snprintf(err, errlen, "backing file name contains a NUL byte");
                        return -EINVAL;
                }
        }

        /* Extensions fill the space up to the backing file name (or the end
         * of the first cluster); QEMU accepts a missing end marker there. */
        end = h.has_backing_file ? h.backing_file_offset : cluster_size;
        off = h.header_length;
        while (off < end) {
                uint32_t type, elen;

                if (end - off < 8) {
                        snprintf(err, errlen, "qcow2 header extension at offset %llu is cut off",
                                 (unsigned long long)off);
                        return -EINVAL;
                }
                if (off + 8 > len) {
                        snprintf(err, errlen, "qcow2 header truncated in the header extensions");
                        return -ENODATA;
                }
                type = get32(b + off);
                elen = get32(b + off + 4);
                if (type == QCOW2_EXT_END)
                        break;
                off += 8;
                if (elen > end - off) {
                        snprintf(err, errlen, "qcow2 header extension 0x%08x is too long (%u bytes)", type, elen);
                        return -EINVAL;
                }
                if (off + elen > len) {
                        snprintf(err, errlen, "qcow2 header truncated in the header extensions");
                        return -ENODATA;
                }
                if (type == QCOW2_EXT_BACKING_FORMAT) {
                        if (h.has_backing_format) {
                                snprintf(err, errlen, "duplicate backing format header extension");
                                return -EINVAL;
                        }
                        if (elen == 0 || elen > QCOW2_FORMAT_NAME_MAX || memchr(b + off, 0, elen)) {
                                snprintf(err, errlen, "invalid backing format header extension");
                                return -EINVAL;
                        }
                        memcpy(h.backing_format, b + off, elen);
                        h.has_backing_format = true;
                }
                off += round_up(elen, 8);
        }

        *ret = h;
        return 0;
}

int qcow2_header_read(int fd, struct qcow2_header *ret, char *err, size_t errlen) {
        uint8_t head[24];
        uint8_t *buf = NULL;
        size_t want = 4096;
        ssize_t n;
        int r;

        n = pread_full(fd, head, sizeof head, 0);
        if (n < 0) {
                snprintf(err, errlen, "read: %s", strerror((int)-n));
                return (int)n;
        }
        if ((size_t)n == sizeof head && get32(head + 20) >= 9 && get32(head + 20) <= 21)
                want = (size_t)1 << get32(head + 20);

        buf = malloc(want);
        if (!buf)
                return -ENOMEM;
        n = pread_full(fd, buf, want, 0);
        if (n < 0) {
                r = (int)n;
                snprintf(err, errlen, "read: %s", strerror(-r));
                goto fail;
        }
        r = qcow2_header_decode(buf, (size_t)n, ret, err, errlen);
fail:
        free(buf);
        return r;
}

/* Writes buf to fd, leaving all-zero blocks as holes, and sets the size:
 * a fresh overlay then occupies three blocks instead of four clusters. */
static int write_sparse(int fd, const uint8_t *buf, size_t len) {
        static const uint8_t zero[WRITE_BLOCK];
        size_t off = 0;
        int r;

        while (off < len) {
                size_t start, n;

                while (off < len) {
                        n = len - off < WRITE_BLOCK ? len - off : WRITE_BLOCK;
                        if (memcmp(buf + off, zero, n) != 0)
                                break;
                        off += n;
                }
                start = off;
                while (off < len) {
                        n = len - off < WRITE_BLOCK ? len - off : WRITE_BLOCK;
                        if (memcmp(buf + off, zero, n) == 0)
                                break;
                        off += n;
                }
                if (off > start) {
                        r = pwrite_full(fd, buf + start, off - start, (off_t)start);
                        if (r < 0)
                                return r;
                }
        }
        if (ftruncate(fd, (off_t)len) < 0)
                return -errno;
        return 0;
}

static char *backing_path_for_reading(const char *overlay, const char *backing) {
        const char *slash;
        char *p = NULL;

        if (backing[0] == '/')
                return strdup(backing);
        slash = strrchr(overlay, '/');
        if (!slash)
                return strdup(backing);
        if (asprintf(&p, "%.*s/%s", (int)(slash - overlay), overlay, backing) < 0)
                return NULL;
        return p;
}

/* Reads the virtual size of the backing image and checks that its content
 * matches the format the overlay will declare. */
static int backing_size(const char *path, const char *format, uint64_t *ret_size, char *err, size_t errlen) {
        struct qcow2_header h;
        uint8_t head[8];
        struct stat st;
        uint64_t size;
        char why[256];
        ssize_t n;
        int fd = -1, r;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                snprintf(err, errlen, "backing file %s: %s", path, strerror(errno));
                goto fail;
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                snprintf(err, errlen, "backing file %s: %s", path, strerror(errno));
                goto fail;
        }
        if (S_ISREG(st.st_mode)) {
                size = (uint64_t)st.st_size;
        } else if (S_ISBLK(st.st_mode)) {
                if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
                        r = -errno;
                        snprintf(err, errlen, "backing file %s: BLKGETSIZE64: %s", path, strerror(errno));
                        goto fail;
                }
        } else {
                r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
                snprintf(err, errlen, "backing file %s: not a regular file or block device", path);
                goto fail;
        }

        n = pread_full(fd, head, sizeof head, 0);
        if (n < 0) {
                r = (int)n;
                snprintf(err, errlen, "backing file %s: read: %s", path, strerror(-r));
                goto fail;
        }
        if (strcmp(format, "raw") == 0) {
                if (qcow2_has_magic(head, (size_t)n)) {
                        /* A guest that writes a qcow2 header into its raw disk
                         * must not get it interpreted as an image. */
                        r = -EINVAL;
                        snprintf(err, errlen, "backing file %s: has a qcow2 header but was given as raw; refusing",
                                 path);
                        goto fail;
                }
        } else {
                if (!qcow2_has_magic(head, (size_t)n)) {
                        r = -EINVAL;
                        snprintf(err, errlen, "backing file %s: not a qcow2 image", path);
                        goto fail;
                }
                r = qcow2_header_read(fd, &h, why, sizeof why);
                if (r < 0) {
                        if (r == -ENODATA)
                                r = -EINVAL;
                        snprintf(err, errlen, "backing file %s: %s", path, why);
                        goto fail;
                }
                size = h.size;
        }
        if (size == 0) {
                r = -EINVAL;
                snprintf(err, errlen, "backing file %s: virtual size is 0", path);
                goto fail;
        }
        *ret_size = size;
        r = 0;
fail:
        if (fd >= 0)
                close(fd);
        return r;
}

/* The one crash-safe write of an encoded image: all of it or nothing. */
static int write_image(const char *path, const uint8_t *buf, size_t len, bool sync_dir, char *err, size_t errlen) {
        struct atomic_file *af = NULL;
        int r = atomic_file_open(path, 0644, &af, err, errlen);
        if (r < 0)
                return r;
        af->skip_dir_sync = !sync_dir;
        r = write_sparse(af->fd, buf, len);
        if (r < 0)
                snprintf(err, errlen, "%s: write: %s", path, strerror(-r));
        else
                r = atomic_file_commit(af, err, errlen);
        atomic_file_free(af);
        return r;
}

static int overlay_create(const char *path, const char *backing_file, const char *backing_format,
                          uint64_t min_size, bool sync_dir, char *err, size_t errlen) {
        struct qcow2_overlay_spec spec = {
                .backing_file = backing_file,
                .backing_format = backing_format,
        };
        char *backing_path = NULL;
        uint8_t *buf = NULL;
        uint64_t base_size = 0;
        char why[512];
        size_t len;
        int r;

        if (!path || !*path) {
                r = -EINVAL;
                snprintf(err, errlen, "empty file name");
                goto fail;
        }
        r = check_spec(&spec, why, sizeof why);
        if (r < 0) {
                snprintf(err, errlen, "%s: %s", path, why);
                goto fail;
        }
        backing_path = backing_path_for_reading(path, backing_file);
        if (!backing_path) {
                r = -ENOMEM;
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
        }
        r = backing_size(backing_path, backing_format, &base_size, why, sizeof why);
        if (r < 0) {
                snprintf(err, errlen, "%s: %s", path, why);
                goto fail;
        }

        /* Rounding must not wrap: a size that would is over the limit anyway,
         * and a wrapped one would let an overlay be smaller than its base. */
        if (base_size > UINT64_MAX - 511) {
                r = -EINVAL;
                snprintf(err, errlen, "%s: backing file %s: virtual size %llu exceeds the qcow2 limit", path,
                         backing_path, (unsigned long long)base_size);
                goto fail;
        }
        spec.virtual_size = round_up(base_size, 512);
        if (min_size) {
                uint64_t want = min_size > UINT64_MAX - 511 ? UINT64_MAX & ~UINT64_C(511) : round_up(min_size, 512);
                if (want < spec.virtual_size) {
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: size %llu is smaller than backing file %s (%llu bytes)", path,
                                 (unsigned long long)min_size, backing_path, (unsigned long long)base_size);
                        goto fail;
                }
                spec.virtual_size = want;
        }

        r = qcow2_overlay_encode(&spec, &buf, &len, why, sizeof why);
        if (r < 0) {
                snprintf(err, errlen, "%s: %s", path, r == -ENOMEM ? "out of memory" : why);
                goto fail;
        }

        r = write_image(path, buf, len, sync_dir, err, errlen);
fail:
        free(buf);
        free(backing_path);
        return r;
}

int qcow2_overlay_create(const char *path, const char *backing_file, const char *backing_format,
                         uint64_t min_size, char *err, size_t errlen) {
        return overlay_create(path, backing_file, backing_format, min_size, true, err, errlen);
}

int qcow2_overlay_create_dir_unsynced(const char *path, const char *backing_file, const char *backing_format,
                                      uint64_t min_size, char *err, size_t errlen) {
        return overlay_create(path, backing_file, backing_format, min_size, false, err, errlen);
}

int qcow2_image_create(const char *path, uint64_t virtual_size, char *err, size_t errlen) {
        uint8_t *buf = NULL;
        char why[512];
        size_t len;
        int r;

        if (!path || !*path) {
                r = -EINVAL;
                snprintf(err, errlen, "empty file name");
                goto fail;
        }
        /* Rounding must not wrap: a size that would is over the limit anyway. */
        r = qcow2_image_encode(virtual_size > UINT64_MAX - 511 ? UINT64_MAX & ~UINT64_C(511) : round_up(virtual_size, 512),
                               &buf, &len, why, sizeof why);
        if (r < 0) {
                snprintf(err, errlen, "%s: %s", path, r == -ENOMEM ? "out of memory" : why);
                goto fail;
        }
        r = write_image(path, buf, len, true, err, errlen);
fail:
        free(buf);
        return r;
}
