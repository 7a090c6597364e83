/* archive: the tar container of `vrt export` / `vrt import`, through
 * libarchive, with a SHA-256 of every member computed on the way.
 *
 * Writing produces a POSIX (pax) tar archive that any `tar` lists: regular
 * files only, mode 0644, owner 0:0, no directories. The first member can be
 * a fixed-size placeholder rewritten in place once the archive is complete
 * (archive_writer_patch_first()), so that an index of everything written
 * after it can come first in the file.
 *
 * Reading is strict, whatever libarchive would tolerate: only uncompressed
 * tar (ustar, pax, GNU), only regular files, no hard or symbolic links,
 * devices, FIFOs, directories or sparse members, member names of at most
 * ARCHIVE_NAME_MAX bytes of [A-Za-z0-9._-/] that are relative, without
 * empty, "." or ".." components, each at most once; a member cut short
 * and every warning libarchive reports are errors. Which names and sizes
 * are acceptable is the caller's business. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ARCHIVE_NAME_MAX 100
#define ARCHIVE_SHA256_HEX 65   /* 64 hex digits and a NUL */

struct archive_writer;
struct archive_reader;

struct archive_member {
        char name[ARCHIVE_NAME_MAX + 1];
        uint64_t size;          /* as the header declares */
};

/* Starts an archive on fd (a regular file, empty, open for reading and
 * writing). Returns 0 and *ret, or a negative errno with one line. */
int archive_writer_open(int fd, struct archive_writer **ret, char *err, size_t errlen);

/* Starts member name of exactly size bytes. */
int archive_writer_begin(struct archive_writer *w, const char *name, uint64_t size, char *err, size_t errlen);
/* Appends to the current member (hashes it). */
int archive_writer_data(struct archive_writer *w, const void *buf, size_t len, char *err, size_t errlen);
/* The same, but a large buf is still being hashed (on a thread of the
 * writer's) when this returns, while the caller prepares the next one:
 * buf must stay unchanged until the next call on w has returned. */
int archive_writer_data_deferred(struct archive_writer *w, const void *buf, size_t len, char *err, size_t errlen);
/* Ends the member; -EIO unless exactly the declared size was written.
 * sha256 (may be NULL) receives the member's digest in hex. */
int archive_writer_end(struct archive_writer *w, char sha256[ARCHIVE_SHA256_HEX], char *err, size_t errlen);
/* begin + data + end for a member held in memory. */
int archive_writer_add(struct archive_writer *w, const char *name, const void *buf, size_t len,
                       char sha256[ARCHIVE_SHA256_HEX], char *err, size_t errlen);
/* Writes the end-of-archive marker and flushes everything to fd. */
int archive_writer_close(struct archive_writer *w, char *err, size_t errlen);
/* Accepts NULL, returns NULL. Does not close fd. */
struct archive_writer *archive_writer_free(struct archive_writer *w);

/* Overwrites the content of the first member of the closed archive on fd,
 * which must be called name and be exactly len bytes long (checked in its
 * header). Returns 0 or a negative errno with one line. */
int archive_writer_patch_first(int fd, const char *name, const void *data, size_t len, char *err, size_t errlen);

/* Opens the archive at path for strict reading. Returns 0 and *ret, or a
 * negative errno with one line naming the file (-EINVAL: not an
 * uncompressed tar archive or not a regular file). */
int archive_reader_open(const char *path, struct archive_reader **ret, char *err, size_t errlen);

/* Moves to the next member (skipping what is left of the current one).
 * Returns 1 and *ret, 0 at the end of the archive, or a negative errno with
 * one line "FILE: ..." (-EINVAL for anything the rules above refuse,
 * -EIO for a truncated or damaged archive). */
int archive_reader_next(struct archive_reader *r, struct archive_member *ret, char *err, size_t errlen);

/* Reads up to len bytes of the current member. Returns the count, 0 once
 * the member is complete, or a negative errno with one line (-EIO: the
 * archive ends inside the member). */
ssize_t archive_reader_read(struct archive_reader *r, void *buf, size_t len, char *err, size_t errlen);

/* The SHA-256 of the current member's bytes read so far, in hex. */
void archive_reader_sha256(struct archive_reader *r, char sha256[ARCHIVE_SHA256_HEX]);

/* Accepts NULL, returns NULL. */
struct archive_reader *archive_reader_free(struct archive_reader *r);

/* Checks a member name against the rules above. Returns 0 or -EINVAL with
 * the reason (without the name) in err. */
int archive_check_name(const char *name, char *err, size_t errlen);

/* The SHA-256 of the file at path (followed if a symlink), in hex.
 * Returns 0 or a negative errno with one line. */
int archive_file_sha256(const char *path, char sha256[ARCHIVE_SHA256_HEX], char *err, size_t errlen);
