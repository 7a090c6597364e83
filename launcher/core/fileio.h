/* fileio: reading small text files (configuration, registry lists, init
 * scripts) whole, safely: regular files only, bounded in size, and a FIFO
 * dropped in place of one never blocks the reader. */
#pragma once

#include <stddef.h>

/* Reads PATH into a new NUL-terminated buffer. Returns 0, or a negative
 * errno with "PATH: why" in err: -ENOENT when missing, -EINVAL when not a
 * regular file or larger than max bytes. */
int fileio_read_regular(const char *path, size_t max, char **ret_buf, size_t *ret_len, char *err, size_t errlen);
