/* flatten: a disk image and its backing chain as one standalone qcow2,
 * written natively as a byte stream (for `vrt export`), never by qemu-img.
 *
 * The chain is checked with image_chain_inspect() first. Every layer's
 * L1/L2 tables are then read directly (raw layers: SEEK_DATA/SEEK_HOLE);
 * a guest range comes from the topmost layer that allocates it, a zero
 * cluster (or the end of a shorter backing file) reads as zeros, as in
 * QEMU. Uncompressed clusters are read with pread(); compressed ones
 * through libqcow. Only clusters some layer allocates are written: which
 * ones is decided from the metadata alone, so the exact size of the
 * output is known before its first byte, and the stream can go into an
 * archive member whose header states that size.
 *
 * The output is a version 3 qcow2 image with 64 KiB clusters and 16-bit
 * refcounts, laid out in one pass: header cluster, refcount table,
 * refcount blocks, L1 table, L2 tables, data clusters in guest order. It
 * has no backing file, no snapshots, no extensions. Not supported (refused
 * with a message): extended L2 entries (subclusters) and compression types
 * other than zlib. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "images/copy.h"

struct image_flatten;

/* Receives the output in order, one call at a time, mostly on a thread
 * of image_flatten_write()'s own. A buffer stays unchanged until the next
 * call has returned, so the function may go on reading it after it
 * returned (export hashes it meanwhile); a last call with len 0, made
 * whether or not the stream completed, lets go of the last one. Only a
 * failure before the stream starts (no memory, a cancel from the first
 * progress call) makes no call at all. A non-zero return cancels: a
 * negative errno is returned as is. */
typedef int (*image_flatten_write_fn)(const void *buf, size_t len, void *userdata);

/* Inspects the chain at path and plans the output. Returns 0 and *ret, or a
 * negative errno with one line naming the file in err. */
int image_flatten_open(const char *path, struct image_flatten **ret, char *err, size_t errlen);

/* The exact number of bytes image_flatten_write() produces. */
uint64_t image_flatten_size(const struct image_flatten *f);
/* The virtual size (the top layer's). */
uint64_t image_flatten_virtual_size(const struct image_flatten *f);
/* Data clusters of 64 KiB the output holds. */
uint64_t image_flatten_data_clusters(const struct image_flatten *f);

/* Streams the standalone image through write, reporting the bytes written
 * so far to progress (may be NULL; same contract as image_copy_sparse()).
 * Call once. Returns 0, or a negative errno with one line in err (-EIO: a
 * layer changed under us or could not be read; -ECANCELED). */
int image_flatten_write(struct image_flatten *f, image_flatten_write_fn write, image_copy_progress_fn progress,
                        void *userdata, char *err, size_t errlen);

/* Writes the flattened image to the new file dst (crash-safe like
 * image_copy_sparse(): temporary file, fsync, no replace). */
int image_flatten_to_file(const char *src, const char *dst, char *err, size_t errlen);

/* Accepts NULL, returns NULL. */
struct image_flatten *image_flatten_free(struct image_flatten *f);
