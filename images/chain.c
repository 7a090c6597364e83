#include "images/chain.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <libqcow.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images/qcow2.h"
#include "images/io.h"

/* Bits 9-55 of L1 and standard L2 entries hold the host offset. */
#define OFFSET_MASK UINT64_C(0x00fffffffffffe00)
#define L2_COMPRESSED (UINT64_C(1) << 62)
#define INCOMPAT_KNOWN                                                                                   \
        (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_DATA_FILE |                       \
         QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2)

struct layer_id {
        dev_t dev;
        ino_t ino;
};

/* One line only: names read from image headers may hold anything. */
static void one_line(char *s) {
        for (; s && *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        *s = '?';
}

static uint64_t get64(const uint8_t *p) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return v;
}

/* Other image formats that must not be taken for raw when probing the top
 * image. A declared-raw backing file is raw whatever it contains, except
 * for the qcow2 magic (see chain.h). */
static const char *other_format(const uint8_t *b, size_t n) {
        static const struct {
                size_t off;
                const char *magic;
                size_t len;
                const char *name;
        } magics[] = {
                { 0, "KDMV", 4, "vmdk" },
                { 0, "# Disk DescriptorFile", 21, "vmdk" },
                { 0, "vhdxfile", 8, "vhdx" },
                { 0, "conectix", 8, "vpc" },
                { 0, "QED\0", 4, "qed" },
                { 0, "LUKS\xba\xbe", 6, "luks" },
                { 0, "WithoutFreeSpace", 16, "parallels" },
                { 0, "WithouFreSpacExt", 16, "parallels" },
                { 0, "Bochs Virtual HD Image", 22, "bochs" },
                { 0x40, "\x7f\x10\xda\xbe", 4, "vdi" },
        };

        for (size_t i = 0; i < sizeof magics / sizeof magics[0]; i++)
                if (n >= magics[i].off + magics[i].len &&
                    memcmp(b + magics[i].off, magics[i].magic, magics[i].len) == 0)
                        return magics[i].name;
        return NULL;
}

static char *resolve_backing(const char *referrer, const char *backing) {
        const char *slash;
        char *p = NULL;

        if (backing[0] == '/')
                return strdup(backing);
        slash = strrchr(referrer, '/');
        if (!slash)
                return strdup(backing);
        if (asprintf(&p, "%.*s/%s", (int)(slash - referrer), referrer, backing) < 0)
                return NULL;
        return p;
}

/* True if [off, off+len) lies within a file of size bytes, without
 * overflowing on offsets read from the file. */
static bool within(uint64_t off, uint64_t len, uint64_t size) {
        return off <= size && len <= size - off;
}

/* A truncated image loses its tail: the L1 table, L2 tables or data
 * clusters then point past the end of the file. libqcow only notices when a
 * read gets there, so every table is checked here. */
static int check_extents(int fd, const char *path, const struct qcow2_header *h, uint64_t file_size, char *err,
                         size_t errlen) {
        uint64_t cs = UINT64_C(1) << h->cluster_bits;
        size_t l2_entry = (h->incompatible_features & QCOW2_INCOMPAT_EXTL2) ? 16 : 8;
        uint64_t cmask = (UINT64_C(1) << (62 - (h->cluster_bits - 8))) - 1;
        uint8_t *l1 = NULL, *l2 = NULL;
        ssize_t n;
        int r;

        if (!within(h->refcount_table_offset, (uint64_t)h->refcount_table_clusters * cs, file_size)) {
                r = -EIO;
                snprintf(err, errlen, "%s: truncated qcow2 image: refcount table ends past the end of the file (%llu bytes)",
                         path, (unsigned long long)file_size);
                goto fail;
        }
        if (!within(h->l1_table_offset, (uint64_t)h->l1_size * 8, file_size)) {
                r = -EIO;
                snprintf(err, errlen, "%s: truncated qcow2 image: L1 table ends past the end of the file (%llu bytes)",
                         path, (unsigned long long)file_size);
                goto fail;
        }
        if (h->l1_size == 0)
                return 0;

        l1 = malloc((size_t)h->l1_size * 8);
        l2 = malloc(cs);
        if (!l1 || !l2) {
                r = -ENOMEM;
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
        }
        n = pread_full(fd, l1, (size_t)h->l1_size * 8, (off_t)h->l1_table_offset);
        if (n != (ssize_t)h->l1_size * 8) {
                r = n < 0 ? (int)n : -EIO;
                snprintf(err, errlen, "%s: cannot read the L1 table: %s", path, n < 0 ? strerror(-r) : "short read");
                goto fail;
        }
        /* Every L2 table is a cluster of its own. More of them than the
         * file has clusters is corruption, and would have the loop below
         * scan the same tables over and over: a 32 MiB L1 table over one
         * 2 MiB L2 table is 2^40 entries, hours of CPU for a 34 MiB file. */
        uint64_t n_l2 = 0;
        for (uint32_t i = 0; i < h->l1_size; i++)
                n_l2 += (get64(l1 + 8 * (size_t)i) & OFFSET_MASK) != 0;
        if (n_l2 > file_size / cs) {
                r = -EIO;
                snprintf(err, errlen, "%s: corrupt qcow2 image: %llu L2 tables do not fit in a file of %llu bytes",
                         path, (unsigned long long)n_l2, (unsigned long long)file_size);
                goto fail;
        }
        for (uint32_t i = 0; i < h->l1_size; i++) {
                uint64_t l2_off = get64(l1 + 8 * (size_t)i) & OFFSET_MASK;

                if (!l2_off)
                        continue;
                if (l2_off % cs) {
                        r = -EIO;
                        snprintf(err, errlen, "%s: corrupt qcow2 image: unaligned L2 table offset %llu", path,
                                 (unsigned long long)l2_off);
                        goto fail;
                }
                if (!within(l2_off, cs, file_size)) {
                        r = -EIO;
                        snprintf(err, errlen, "%s: truncated qcow2 image: L2 table at %llu is past the end of the file (%llu bytes)",
                                 path, (unsigned long long)l2_off, (unsigned long long)file_size);
                        goto fail;
                }
                n = pread_full(fd, l2, cs, (off_t)l2_off);
                if (n != (ssize_t)cs) {
                        r = n < 0 ? (int)n : -EIO;
                        snprintf(err, errlen, "%s: cannot read an L2 table: %s", path,
                                 n < 0 ? strerror(-r) : "short read");
                        goto fail;
                }
                for (size_t j = 0; j < cs; j += l2_entry) {
                        uint64_t e = get64(l2 + j);
                        uint64_t host = (e & L2_COMPRESSED) ? (e & cmask) : (e & OFFSET_MASK);

                        if (host && host >= file_size) {
                                r = -EIO;
                                snprintf(err, errlen, "%s: truncated qcow2 image: data cluster at %llu is past the end of the file (%llu bytes)",
                                         path, (unsigned long long)host, (unsigned long long)file_size);
                                goto fail;
                        }
                }
        }
        r = 0;
fail:
        free(l1);
        free(l2);
        return r;
}

/* libqcow's backtrace starts with the root cause; its first line is the
 * most useful one-line summary. */
static void libqcow_reason(libqcow_error_t *e, char *buf, size_t len) {
        char *nl;

        buf[0] = '\0';
        if (!e || libqcow_error_backtrace_sprint(e, buf, len) < 0)
                snprintf(buf, len, "unknown libqcow error");
        nl = strchr(buf, '\n');
        if (nl)
                *nl = '\0';
}

/* Opens the qcow2 image through libqcow (via the fd we already hold, so the
 * file checked is the file read) for its virtual size and backing name. */
static int libqcow_info(int fd, const char *path, uint64_t *ret_size, char **ret_backing, char *err,
                        size_t errlen) {
        libqcow_file_t *f = NULL;
        libqcow_error_t *e = NULL;
        char fdpath[64], reason[512];
        const char *open_path = path;
        uint8_t *name = NULL;
        size_t name_size = 0;
        size64_t size = 0;
        bool opened = false;
        int r, has;

        snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", fd);
        if (access(fdpath, F_OK) == 0)
                open_path = fdpath;

        if (libqcow_file_initialize(&f, &e) != 1) {
                r = -ENOMEM;
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
        }
        if (libqcow_file_open(f, open_path, LIBQCOW_OPEN_READ, &e) != 1) {
                r = -EINVAL;
                libqcow_reason(e, reason, sizeof reason);
                snprintf(err, errlen, "%s: invalid qcow2 image: %s", path, reason);
                goto fail;
        }
        opened = true;
        if (libqcow_file_get_media_size(f, &size, &e) != 1) {
                r = -EINVAL;
                libqcow_reason(e, reason, sizeof reason);
                snprintf(err, errlen, "%s: invalid qcow2 image: %s", path, reason);
                goto fail;
        }
        has = libqcow_file_get_utf8_backing_filename_size(f, &name_size, &e);
        if (has < 0) {
                r = -EINVAL;
                libqcow_reason(e, reason, sizeof reason);
                snprintf(err, errlen, "%s: invalid backing file name: %s", path, reason);
                goto fail;
        }
        if (has == 1 && name_size > 1) {
                name = calloc(1, name_size);
                if (!name) {
                        r = -ENOMEM;
                        snprintf(err, errlen, "%s: out of memory", path);
                        goto fail;
                }
                if (libqcow_file_get_utf8_backing_filename(f, name, name_size, &e) != 1) {
                        r = -EINVAL;
                        libqcow_reason(e, reason, sizeof reason);
                        snprintf(err, errlen, "%s: invalid backing file name: %s", path, reason);
                        goto fail;
                }
        }
        *ret_size = size;
        *ret_backing = (char *)name;
        name = NULL;
        r = 0;
fail:
        free(name);
        if (opened)
                libqcow_file_close(f, NULL);
        if (f)
                libqcow_file_free(&f, NULL);
        libqcow_error_free(&e);
        return r;
}

/* Checks the header policy and extents of a qcow2 layer and fills in its
 * size, backing file and the backing file's declared format. */
static int inspect_qcow2(int fd, struct image_layer *l, uint64_t file_size, char *err, size_t errlen) {
        struct qcow2_header h;
        char why[256];
        char *backing = NULL;
        uint64_t size = 0;
        int r;

        r = qcow2_header_read(fd, &h, why, sizeof why);
        if (r == -ENODATA) {
                r = -EIO;
                snprintf(err, errlen, "%s: truncated qcow2 image: %s", l->path, why);
                goto fail;
        }
        if (r < 0) {
                snprintf(err, errlen, "%s: %s", l->path, why);
                goto fail;
        }
        if (h.crypt_method) {
                r = -EOPNOTSUPP;
                snprintf(err, errlen, "%s: encrypted qcow2 images are not supported", l->path);
                goto fail;
        }
        if (h.incompatible_features & QCOW2_INCOMPAT_CORRUPT) {
                r = -EIO;
                snprintf(err, errlen, "%s: image is marked corrupt (see qemu-img check -r)", l->path);
                goto fail;
        }
        if (h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) {
                r = -EOPNOTSUPP;
                snprintf(err, errlen, "%s: qcow2 images with an external data file are not supported", l->path);
                goto fail;
        }
        if (h.incompatible_features & ~INCOMPAT_KNOWN) {
                r = -EOPNOTSUPP;
                snprintf(err, errlen, "%s: unknown incompatible qcow2 features 0x%llx", l->path,
                         (unsigned long long)(h.incompatible_features & ~INCOMPAT_KNOWN));
                goto fail;
        }
        r = check_extents(fd, l->path, &h, file_size, err, errlen);
        if (r < 0)
                goto fail;
        r = libqcow_info(fd, l->path, &size, &backing, err, errlen);
        if (r < 0)
                goto fail;

        if (backing) {
                if (!h.has_backing_format) {
                        r = -EINVAL;
                        snprintf(err, errlen,
                                 "%s: backing file '%s' has no explicit format (backing format header extension missing); refusing to probe it",
                                 l->path, backing);
                        goto fail;
                }
                l->backing_format = strdup(h.backing_format);
                if (!l->backing_format) {
                        r = -ENOMEM;
                        snprintf(err, errlen, "%s: out of memory", l->path);
                        goto fail;
                }
                l->backing_file = backing;
                backing = NULL;
        }
        l->virtual_size = size;
        r = 0;
fail:
        free(backing);
        return r;
}

static int append_layer(struct image_chain *c, char *path) {
        struct image_layer *n = realloc(c->layers, (c->n_layers + 1) * sizeof *n);

        if (!n)
                return -ENOMEM;
        c->layers = n;
        c->layers[c->n_layers] = (struct image_layer){ .path = path };
        c->n_layers++;
        return 0;
}

/* Inspects one layer: opens c->layers[last].path, checks it against the
 * expected format (NULL for the top image) and fills the layer in. */
static int inspect_layer(struct image_chain *c, struct layer_id *ids, const char *expected, char *err,
                         size_t errlen) {
        struct image_layer *l = &c->layers[c->n_layers - 1];
        const char *referrer = c->n_layers > 1 ? c->layers[c->n_layers - 2].path : NULL;
        const char *other;
        uint8_t head[512];
        struct stat st;
        uint64_t file_size;
        bool is_qcow;
        ssize_t n;
        int fd = -1, r;

        /* O_NONBLOCK: a FIFO named as a backing file must be refused below,
         * not block the open forever (no effect on regular files). */
        fd = open(l->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) {
                r = -errno;
                if (referrer && errno == ENOENT)
                        snprintf(err, errlen, "%s: backing file %s does not exist", referrer, l->path);
                else if (referrer)
                        snprintf(err, errlen, "%s: backing file %s: %s", referrer, l->path, strerror(errno));
                else
                        snprintf(err, errlen, "%s: %s", l->path, strerror(errno));
                goto fail;
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: %s", l->path, strerror(errno));
                goto fail;
        }
        if (S_ISREG(st.st_mode)) {
                file_size = (uint64_t)st.st_size;
        } else if (S_ISBLK(st.st_mode)) {
                if (ioctl(fd, BLKGETSIZE64, &file_size) < 0) {
                        r = -errno;
                        snprintf(err, errlen, "%s: BLKGETSIZE64: %s", l->path, strerror(errno));
                        goto fail;
                }
        } else {
                r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
                snprintf(err, errlen, "%s: not a disk image (not a regular file or block device)", l->path);
                goto fail;
        }
        for (size_t i = 0; i + 1 < c->n_layers; i++) {
                if (ids[i].dev == st.st_dev && ids[i].ino == st.st_ino) {
                        r = -ELOOP;
                        snprintf(err, errlen, "%s: backing chain loop: %s is already in the chain as %s", referrer,
                                 l->path, c->layers[i].path);
                        goto fail;
                }
        }
        ids[c->n_layers - 1] = (struct layer_id){ st.st_dev, st.st_ino };

        n = pread_full(fd, head, sizeof head, 0);
        if (n < 0) {
                r = (int)n;
                snprintf(err, errlen, "%s: read: %s", l->path, strerror(-r));
                goto fail;
        }
        is_qcow = qcow2_has_magic(head, (size_t)n);
        other = is_qcow ? NULL : other_format(head, (size_t)n);

        if (!expected) {
                if (other) {
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: is a %s image; only qcow2 and raw are supported", l->path, other);
                        goto fail;
                }
        } else if (strcmp(expected, "raw") == 0) {
                if (is_qcow) {
                        r = -EINVAL;
                        snprintf(err, errlen,
                                 "%s: backing file %s is declared raw but has a qcow2 header; refusing",
                                 referrer, l->path);
                        goto fail;
                }
        } else if (strcmp(expected, "qcow2") == 0) {
                if (!is_qcow) {
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: backing file %s is declared qcow2 but is %s", referrer, l->path,
                                 other ? other : "not a qcow2 image");
                        goto fail;
                }
        } else {
                r = -EINVAL;
                snprintf(err, errlen, "%s: backing file %s has unsupported format '%s' (only qcow2 and raw)",
                         referrer, l->path, expected);
                goto fail;
        }

        l->format = strdup(is_qcow ? "qcow2" : "raw");
        if (!l->format) {
                r = -ENOMEM;
                snprintf(err, errlen, "%s: out of memory", l->path);
                goto fail;
        }
        l->allocated_size = (uint64_t)st.st_blocks * 512;
        l->writable = (st.st_mode & 0222) != 0;
        if (is_qcow) {
                r = inspect_qcow2(fd, l, file_size, err, errlen);
                if (r < 0)
                        goto fail;
        } else {
                l->virtual_size = file_size;
        }
        r = 0;
fail:
        if (fd >= 0)
                close(fd);
        return r;
}

int image_chain_inspect(const char *path, struct image_chain **ret, char *err, size_t errlen) {
        struct layer_id ids[IMAGE_CHAIN_MAX_DEPTH];
        struct image_chain *c = NULL;
        const char *expected = NULL;
        char *p = NULL;
        int r;

        c = calloc(1, sizeof *c);
        p = strdup(path);
        if (!c || !p) {
                r = -ENOMEM;
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
        }
        for (;;) {
                struct image_layer *l;

                if (c->n_layers == IMAGE_CHAIN_MAX_DEPTH) {
                        r = -ELOOP;
                        snprintf(err, errlen, "%s: backing chain is deeper than %d images (at %s)", path,
                                 IMAGE_CHAIN_MAX_DEPTH, p);
                        goto fail;
                }
                r = append_layer(c, p);
                if (r < 0) {
                        snprintf(err, errlen, "%s: out of memory", path);
                        goto fail;
                }
                p = NULL;
                r = inspect_layer(c, ids, expected, err, errlen);
                if (r < 0)
                        goto fail;
                l = &c->layers[c->n_layers - 1];
                if (!l->backing_file)
                        break;
                if (strncmp(l->backing_file, "json:", 5) == 0) {
                        r = -EINVAL;
                        snprintf(err, errlen, "%s: json: backing file names are not supported", l->path);
                        goto fail;
                }
                p = resolve_backing(l->path, l->backing_file);
                if (!p) {
                        r = -ENOMEM;
                        snprintf(err, errlen, "%s: out of memory", path);
                        goto fail;
                }
                expected = l->backing_format;
        }
        *ret = c;
        return 0;

fail:
        one_line(err);
        free(p);
        image_chain_free(c);
        return r;
}

struct image_chain *image_chain_free(struct image_chain *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_layers; i++) {
                free(c->layers[i].path);
                free(c->layers[i].format);
                free(c->layers[i].backing_file);
                free(c->layers[i].backing_format);
        }
        free(c->layers);
        free(c);
        return NULL;
}

/* Adds v under key; takes v even on failure. A NULL v is a failed
 * allocation. */
static int add(struct json_object *o, const char *key, struct json_object *v) {
        if (!v || json_object_object_add(o, key, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

int image_chain_to_json(const struct image_chain *c, struct json_object **ret) {
        struct json_object *arr = NULL, *o = NULL;

        arr = json_object_new_array();
        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_layers; i++) {
                const struct image_layer *l = &c->layers[i];

                o = json_object_new_object();
                if (!o)
                        goto fail;
                if (add(o, "path", json_object_new_string(l->path)) < 0 ||
                    add(o, "format", json_object_new_string(l->format)) < 0 ||
                    add(o, "virtual-size", json_object_new_int64((int64_t)l->virtual_size)) < 0 ||
                    add(o, "allocated-size", json_object_new_int64((int64_t)l->allocated_size)) < 0 ||
                    add(o, "writable", json_object_new_boolean(l->writable)) < 0 ||
                    (l->backing_file &&
                     (add(o, "backing-file", json_object_new_string(l->backing_file)) < 0 ||
                      add(o, "backing-format", json_object_new_string(l->backing_format)) < 0)) ||
                    json_object_array_add(arr, o) < 0)
                        goto fail;
                o = NULL;
        }
        *ret = arr;
        return 0;
fail:
        json_object_put(o);
        json_object_put(arr);
        return -ENOMEM;
}

static bool below(const char *path, const char *dir) {
        size_t n = strlen(dir);
        while (n > 1 && dir[n - 1] == '/')
                n--;
        return strncmp(path, dir, n) == 0 && path[n] == '/';
}

int image_chain_check_within(const struct image_chain *chain, const char *const *dirs, char *err, size_t errlen) {
        int r = 0;
        for (size_t i = 0; r == 0 && i < chain->n_layers; i++) {
                char *real = realpath(chain->layers[i].path, NULL);
                bool ok = false;
                if (!real) {
                        r = -errno;
                        snprintf(err, errlen, "%s: %s", chain->layers[i].path, strerror(-r));
                        break;
                }
                for (size_t d = 0; !ok && dirs[d]; d++) {
                        char *rd = realpath(dirs[d], NULL);
                        ok = rd && below(real, rd);
                        free(rd);
                }
                if (!ok) {
                        r = -EPERM;
                        if (i == 0)
                                snprintf(err, errlen, "%s: outside the VM's directory and images/: not read", real);
                        else
                                snprintf(err, errlen, "%s: backing file %s is outside the VM's directory and images/: not read",
                                         chain->layers[i - 1].path, real);
                }
                free(real);
        }
        return r;
}
