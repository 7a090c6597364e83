/* qcow2: the native qcow2 overlay and blank image writer and header decoder.
 *
 * The layout follows QEMU's docs/interop/qcow2.txt. An overlay is a version 3
 * image with 64 KiB clusters and 16-bit refcounts: the header cluster (header,
 * backing-format extension, end marker, backing file name), one refcount
 * table cluster, one refcount block and the all-zero L1 table. A blank image
 * (the disk an OS is installed on) has the same layout without the backing
 * file name and its extension. The encoders are pure; qcow2_overlay_create()
 * and qcow2_image_create() do the I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QCOW2_MAGIC 0x514649fbU                 /* "QFI\xfb" */
#define QCOW2_CLUSTER_BITS 16
#define QCOW2_HEADER_LENGTH 112                 /* v3 fields up to compression_type, padded */
#define QCOW2_EXT_END 0x00000000U
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acaU
#define QCOW2_BACKING_FILE_MAX 1023             /* spec limit on backing_file_size */
#define QCOW2_FORMAT_NAME_MAX 31                /* longest backing format name we keep */
/* The largest virtual size we encode: a 32 MiB L1 table (QEMU's limit) of
 * 64 KiB clusters maps 2 PiB. */
#define QCOW2_MAX_VIRTUAL_SIZE (UINT64_C(1) << 51)

#define QCOW2_INCOMPAT_DIRTY (UINT64_C(1) << 0)
#define QCOW2_INCOMPAT_CORRUPT (UINT64_C(1) << 1)
#define QCOW2_INCOMPAT_DATA_FILE (UINT64_C(1) << 2)
#define QCOW2_INCOMPAT_COMPRESSION (UINT64_C(1) << 3)
#define QCOW2_INCOMPAT_EXTL2 (UINT64_C(1) << 4)

/* The header fields of a version 2 or 3 image, plus what the header
 * cluster says about the backing file. Strings are NUL-terminated. */
struct qcow2_header {
        uint32_t version;
        uint64_t backing_file_offset;
        uint32_t backing_file_size;
        uint32_t cluster_bits;
        uint64_t size;
        uint32_t crypt_method;
        uint32_t l1_size;
        uint64_t l1_table_offset;
        uint64_t refcount_table_offset;
        uint32_t refcount_table_clusters;
        uint32_t nb_snapshots;
        uint64_t snapshots_offset;
        uint64_t incompatible_features;
        uint64_t compatible_features;
        uint64_t autoclear_features;
        uint32_t refcount_order;
        uint32_t header_length;
        bool has_backing_file;
        char backing_file[QCOW2_BACKING_FILE_MAX + 1];
        bool has_backing_format;        /* the 0xe2792aca extension is present */
        char backing_format[QCOW2_FORMAT_NAME_MAX + 1];
};

/* What an overlay records. backing_format is "qcow2" or "raw";
 * virtual_size is a non-zero multiple of 512. */
struct qcow2_overlay_spec {
        const char *backing_file;       /* stored verbatim in the header */
        const char *backing_format;
        uint64_t virtual_size;
};

/* True if buf starts with the qcow magic (any version). */
bool qcow2_has_magic(const void *buf, size_t len);

/* Lays out an empty overlay into a new zero-initialised buffer. Pure: no
 * I/O. Returns 0 with *ret_buf (free()) and *ret_len, -EINVAL with a
 * message in err for a spec it cannot encode, or -ENOMEM. */
int qcow2_overlay_encode(const struct qcow2_overlay_spec *spec, uint8_t **ret_buf, size_t *ret_len,
                         char *err, size_t errlen);

/* Lays out an empty standalone image (no backing file) of virtual_size
 * bytes, a non-zero multiple of 512, into a new zero-initialised buffer.
 * Pure: no I/O. Returns 0 with *ret_buf (free()) and *ret_len, -EINVAL with
 * a message in err for a size it cannot encode, or -ENOMEM. */
int qcow2_image_encode(uint64_t virtual_size, uint8_t **ret_buf, size_t *ret_len, char *err, size_t errlen);

/* Decodes the header and header extensions from the first bytes of an
 * image (at least the header, extensions and backing file name; the first
 * cluster suffices). Pure. Returns 0 with *ret, -EINVAL with a message for
 * a malformed header, or -ENODATA when len is too short for what the
 * header declares (a truncated file when len is the whole file). */
int qcow2_header_decode(const void *buf, size_t len, struct qcow2_header *ret, char *err, size_t errlen);

/* Reads and decodes the header of the qcow2 image open as fd: its first
 * cluster, or the whole file if shorter. Returns as qcow2_header_decode(),
 * or another negative errno from reading. Messages do not name the file. */
int qcow2_header_read(int fd, struct qcow2_header *ret, char *err, size_t errlen);

/* Creates the overlay `path` over `backing_file` (stored verbatim; when
 * relative, resolved against the directory of `path`, as QEMU does, to read
 * the backing image's size) with the explicit `backing_format` ("qcow2" or
 * "raw"). The virtual size is the backing image's, or min_size when that is
 * larger (0: no minimum); a min_size below the backing size is an error.
 * Sizes are rounded up to 512 bytes. One crash-safe write: a temporary file
 * in the target directory, fsync, rename without replacing, fsync of the
 * directory; on failure nothing is left behind. Never runs qemu-img.
 * Returns 0, or a negative errno with one line in err (-EEXIST: target
 * exists, -ENOENT: backing or directory missing, -EINVAL: bad backing image
 * or size). */
int qcow2_overlay_create(const char *path, const char *backing_file, const char *backing_format,
                         uint64_t min_size, char *err, size_t errlen);

/* As qcow2_overlay_create(), without the fsync of the directory: for a
 * caller that changes the same directory next and fsyncs it once for both
 * (vrt snapshot: the new layer, then the state that names it). */
int qcow2_overlay_create_dir_unsynced(const char *path, const char *backing_file, const char *backing_format,
                                      uint64_t min_size, char *err, size_t errlen);

/* Creates the blank image `path` (no backing file) of virtual_size bytes,
 * rounded up to 512, mode 0644 & ~umask. Crash-safe like
 * qcow2_overlay_create(): nothing is left behind on failure, and an
 * existing file is never replaced. Never runs qemu-img.
 * Returns 0, or a negative errno with one line in err (-EEXIST: target
 * exists, -ENOENT: directory missing, -EINVAL: bad size). */
int qcow2_image_create(const char *path, uint64_t virtual_size, char *err, size_t errlen);
