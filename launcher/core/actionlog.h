/* actionlog: the seed's activity logs ROOT/log/{start,stop,destroy,cleanup}.log.
 * One line per action, "YYYY-MM-DD HH:MM:SS message", written with a single
 * O_APPEND write so concurrent writers (several hosts over NFS, parallel
 * spool runs) never interleave inside a line. */
#pragma once

/* Appends one timestamped line to ROOT/log/LOG_NAME.log, creating ROOT/log
 * and the file when missing. Newlines and other control characters in the
 * message become spaces, so an entry is always exactly one line. log_name
 * must be a plain file name stem ("start", "cleanup"). Returns 0, -EINVAL
 * for a bad log_name, or a negative errno from mkdir/open/write. */
int actionlog_append(const char *root, const char *log_name, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
