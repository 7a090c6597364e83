/* safepath: the file operations root does under directories that others
 * (QEMU's user, an operator group, another host of a shared root) may
 * write. Root never follows a symbolic link it does not own and never
 * writes, chowns or chmods through a second name (a hard link) of some
 * other file: a link planted in place of a VM's file, log or request ends
 * in a one-line refusal naming the path, and the file it points to is not
 * touched. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* checks for safepath_open() and safepath_openat() */
#define SAFEPATH_DIR      (1u << 0)     /* a directory, not a regular file */
#define SAFEPATH_ONE_LINK (1u << 1)     /* st_nlink == 1: not a hard link to another file */

/* Opens rel beneath dfd (AT_FDCWD: the current directory) with flags and
 * mode as openat(2), never through a symbolic link in any of rel's
 * components (openat2 RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH where the
 * kernel has it, else a walk with O_NOFOLLOW), nor out of dfd ("..",
 * absolute paths). The result is checked: a regular file (or with
 * SAFEPATH_DIR a directory) and with SAFEPATH_ONE_LINK no hard link; a
 * FIFO never blocks. O_TRUNC is applied only after the checks passed.
 * Returns the fd, or a negative errno with "shown: why" in err (shown
 * names the path for the message): -ELOOP for a symbolic link, -EMLINK
 * for a hard link, -EINVAL for another file type. */
int safepath_openat(int dfd, const char *rel, const char *shown, int flags, mode_t mode, unsigned checks,
                    char *err, size_t errlen);

/* Opens path, which lies beneath base (a directory root chose: the root,
 * a VM's directory): base as given, the rest of path as in
 * safepath_openat(), so a directory planted as a symbolic link below base
 * (vm/NAME/log -> /etc) is refused too. A path not beneath base is opened
 * as by safepath_open(). */
int safepath_open_beneath(const char *base, const char *path, int flags, mode_t mode, unsigned checks, char *err,
                          size_t errlen);

/* The same for a path whose directory is root's own choice (the root, a
 * VM's directory): the directory is opened as given, the last component
 * as in safepath_openat(). */
int safepath_open(const char *path, int flags, mode_t mode, unsigned checks, char *err, size_t errlen);

/* Gives path (a regular file, with SAFEPATH_DIR a directory) to uid:gid
 * with mode through an fd of the file itself: a symbolic link or a hard
 * link there is refused (-ELOOP, -EMLINK) and left as it is. Returns 0 or
 * a negative errno with a message in err. */
int safepath_hand_over(const char *path, uid_t uid, gid_t gid, mode_t mode, unsigned checks, char *err,
                       size_t errlen);

/* Opens path read-only for root to read a file others may have placed
 * (templates in images/, init scripts, ISOs): a symbolic link is followed
 * only when root (the caller's euid) owns it and it still is the same
 * link after the open; the file must be regular, and a file with more
 * than one name must be readable by everybody (so a hard link to a
 * root-only file reveals nothing). Returns the fd or a negative errno
 * with "path: why" in err. */
int safepath_open_shared(const char *path, char *err, size_t errlen);

/* A look before acting, for a clear refusal up front (vrt start): 0 when
 * path is missing or a regular file with one name (with SAFEPATH_DIR: a
 * directory), else -ELOOP (symbolic link), -EMLINK (hard link) or -EINVAL
 * (another type) with "path: why" in err. The operations themselves still
 * go through the fds above. */
int safepath_check_planted(const char *path, unsigned checks, char *err, size_t errlen);

/* For tests: the walk with O_NOFOLLOW from now on, as on a kernel without
 * openat2. */
void safepath_without_openat2(void);
