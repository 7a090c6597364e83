/* fileio: reading small text files (configuration, registry lists, init
 * scripts) whole, safely: regular files only, bounded in size, and a FIFO
 * dropped in place of one never blocks the reader. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Reads PATH into a new NUL-terminated buffer. Returns 0, or a negative
 * errno with "PATH: why" in err: -ENOENT when missing, -EINVAL when not a
 * regular file or larger than max bytes. */
int fileio_read_regular(const char *path, size_t max, char **ret_buf, size_t *ret_len, char *err, size_t errlen);

/* The same for a file others can write or plant (spool requests): a
 * symbolic link is not followed and a hard link is not read (-EINVAL). */
int fileio_read_untrusted(const char *path, size_t max, char **ret_buf, size_t *ret_len, char *err, size_t errlen);

/* The same for a file in a directory others may share (init scripts): as
 * safepath_open_shared() opens it, a symbolic link only when root owns it,
 * a hard link only to a file everybody may read (-EINVAL otherwise). */
int fileio_read_shared(const char *path, size_t max, char **ret_buf, size_t *ret_len, char *err, size_t errlen);

/* fsync()s the directory at path, so that entries created, renamed or
 * removed in it are durable. Returns 0 or a negative errno. */
int fileio_fsync_dir(const char *path);

/* Renames dfd/from to dfd/to (dfd may be AT_FDCWD) without ever replacing
 * an existing to: -EEXIST then. File systems without RENAME_NOREPLACE
 * (NFS) get link()+unlink() for a file, which is just as safe, and a
 * check-then-rename for a directory, which is safe only while the caller
 * holds a lock that keeps others from creating to. Returns 0 or a
 * negative errno. */
int fileio_rename_noreplace(int dfd, const char *from, const char *to);

/* Writes len bytes of buf to path in one step: to tmp first (created anew,
 * never through a link), fsync()ed, then renamed over path, so a reader
 * (another host's spool) sees all of it or nothing. Returns 0 or a
 * negative errno; tmp is gone either way. */
int fileio_write_atomic(const char *tmp, const char *path, const void *buf, size_t len, mode_t mode);

/* The same without the fsync(), for the runtime directory (/run, tmpfs on
 * a real host): its files must appear whole, but need not survive a crash,
 * and a journal commit there would sit on every start's critical path. */
int fileio_write_runtime(const char *tmp, const char *path, const void *buf, size_t len, mode_t mode);
