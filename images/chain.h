/* chain: inspection of a disk image and its backing files.
 *
 * A chain is walked from the given image through its backing files. Every
 * backing file must have an explicit format in its referrer's header (the
 * qcow2 backing-format extension), and the file must really be in that
 * format: a raw file that starts with the qcow2 magic is refused, because a
 * guest writing such a header into its raw disk could otherwise make the host
 * follow a backing file of the guest's choosing. qcow2 images are opened and
 * read with libqcow; the header cluster is also decoded by qcow2.c for what
 * libqcow does not expose. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMAGE_CHAIN_MAX_DEPTH 16

struct json_object;

struct image_layer {
        char *path;             /* top: as given; backing files: resolved against the referrer's directory */
        char *format;           /* "qcow2" or "raw" */
        char *backing_file;     /* as written in the header; NULL if none */
        char *backing_format;   /* from the header extension; NULL if none */
        uint64_t virtual_size;
        uint64_t allocated_size; /* st_blocks * 512 */
        bool writable;          /* some write permission bit is set (templates should be 0444) */
};

struct image_chain {
        struct image_layer *layers; /* top first */
        size_t n_layers;
};

/* Walks path -> backing -> ... and describes every layer. The top image's
 * format is probed (qcow2 or raw; other image formats are refused); every
 * backing file's format comes from its referrer and must match the content.
 * Refused with one line naming the file: a missing file, a loop, more than
 * IMAGE_CHAIN_MAX_DEPTH layers, a format mismatch, a qcow2 image with a
 * backing file but without the backing-format extension, a file that is not
 * a qcow2 or raw image, a truncated or corrupt qcow2 image, encryption or
 * external data files. Returns 0 and *ret, or a negative errno (-ENOENT,
 * -ELOOP, -EINVAL, -EIO, -ENOMEM, ...) with the message in err. */
int image_chain_inspect(const char *path, struct image_chain **ret, char *err, size_t errlen);

/* Checks that every layer of chain lies, its links resolved, below one of
 * dirs (NULL-terminated; the VM's directory and the root's images/): a
 * backing file name that QEMU's user wrote into a layer it owns must not
 * make root read some other file into a backup or an export. Returns 0,
 * or -EPERM with "LAYER: backing file FILE is outside ..." in err. */
int image_chain_check_within(const struct image_chain *chain, const char *const *dirs, char *err, size_t errlen);

/* Accepts NULL, returns NULL. */
struct image_chain *image_chain_free(struct image_chain *chain);

/* Renders the chain for `vrt image info --json`: an array, top first, of
 * {"path","format","virtual-size","allocated-size","writable"} plus
 * "backing-file" and "backing-format" where the layer has a backing file.
 * Returns 0 and a new object in *ret (json_object_put() it), or -ENOMEM. */
int image_chain_to_json(const struct image_chain *chain, struct json_object **ret);
