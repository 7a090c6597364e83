/* atomic_file: create a file so that it either appears complete and durable
 * under its final name or not at all. The data goes to a temporary file in
 * the target's directory, is fsync'd, linked or renamed into place without
 * replacing anything that exists, and the directory is fsync'd. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

struct atomic_file {
        int dir_fd;             /* the target's directory */
        int fd;                 /* the temporary file, open for writing */
        char *path;             /* target path as given, for messages */
        char *name;             /* target basename inside dir_fd */
        char *tmp_name;         /* temporary basename inside dir_fd; NULL: unnamed (O_TMPFILE) */
        bool committed;
        /* Set by a caller that makes a second change in the same directory
         * and fsyncs it once for both: commit then leaves that out. */
        bool skip_dir_sync;
};

/* Opens the target's directory, refuses an existing target (-EEXIST) and
 * creates the file without a name (O_TMPFILE, so that even a killed process
 * leaves nothing), or, where the file system lacks O_TMPFILE (NFS), as a
 * hidden temporary file (O_CREAT|O_EXCL). Permissions: mode & ~umask. All
 * fds O_CLOEXEC. Returns 0 and *ret, or a negative errno with a message. */
int atomic_file_open(const char *path, mode_t mode, struct atomic_file **ret, char *err, size_t errlen);

/* The same, always with a named temporary file (the fallback above). */
int atomic_file_open_named(const char *path, mode_t mode, struct atomic_file **ret, char *err, size_t errlen);

/* fsyncs the file, gives it its final name (never replacing an
 * existing file: -EEXIST) and fsyncs the directory (unless
 * skip_dir_sync). On failure no file
 * is left under the final name, and atomic_file_free() removes the
 * temporary one.
 * Returns 0 or a negative errno with a message in err. */
int atomic_file_commit(struct atomic_file *af, char *err, size_t errlen);

/* Closes everything; removes the temporary file unless committed.
 * Accepts NULL, returns NULL. */
struct atomic_file *atomic_file_free(struct atomic_file *af);
