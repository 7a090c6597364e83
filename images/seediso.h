/* seediso: the small ISO 9660 image a NoCloud seed drive is (volume label
 * "cidata", files meta-data and user-data in the root directory).
 *
 * Our own encoder rather than libisofs: the image is one directory with two
 * or three small files, which takes a fixed layout of a few sectors; an own
 * pure encoder is testable byte for byte, needs no extra library on every
 * host, and writes with one atomic write, while libisofs is built around a
 * burn_source read by a writer thread. The file names are Rock Ridge NM
 * entries (what Linux isofs, cloud-init and xorriso read); the plain
 * ISO 9660 names are level-1 fallbacks (META_DAT.;1). No Joliet tree:
 * the guests we seed are Linux. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define SEEDISO_SECTOR 2048
#define SEEDISO_MAX_FILES 8
#define SEEDISO_NAME_MAX 64
#define SEEDISO_FILE_MAX (16u << 20)

struct seediso_file {
        const char *name;       /* Rock Ridge name: "meta-data" */
        const void *data;
        size_t len;
};

struct seediso_spec {
        const char *volume_id;  /* "cidata": 1..32 of [A-Za-z0-9_-] */
        const struct seediso_file *files;
        size_t n_files;
        time_t mtime;           /* every timestamp in the image (UTC) */
};

/* Encodes the image into a new buffer (*ret_buf, *ret_len, a multiple of
 * SEEDISO_SECTOR). Pure: no I/O. Returns 0; -EINVAL for a bad volume id,
 * file name (empty, '/', "." or "..", over SEEDISO_NAME_MAX, or two names
 * whose ISO 9660 fallback names clash), too many files, or a file over
 * SEEDISO_FILE_MAX, with one line in err; -ENOMEM. */
int seediso_encode(const struct seediso_spec *spec, uint8_t **ret_buf, size_t *ret_len, char *err, size_t errlen);

/* Encodes and writes the image to path with one write, atomically (it
 * appears complete or not at all; an existing file is an error, -EEXIST).
 * Returns 0 or a negative errno with one line in err. */
int seediso_write(const char *path, const struct seediso_spec *spec, mode_t mode, char *err, size_t errlen);
