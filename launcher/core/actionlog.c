#include "launcher/core/actionlog.h"
#include "launcher/core/safepath.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int valid_log_name(const char *s) {
        if (!s || !*s || strlen(s) > 64 || s[0] == '.')
                return 0;
        return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") == strlen(s);
}

int actionlog_append(const char *root, const char *log_name, const char *fmt, ...) {
        char dir[4096], path[4096], line[4096];
        struct timespec ts;
        struct tm tm;
        va_list ap;
        size_t n, len;
        int fd = -1, r;

        if (!root || !valid_log_name(log_name))
                return -EINVAL;
        if ((size_t)snprintf(dir, sizeof dir, "%s/log", root) >= sizeof dir ||
            (size_t)snprintf(path, sizeof path, "%s/%s.log", dir, log_name) >= sizeof path)
                return -ENAMETOOLONG;

        clock_gettime(CLOCK_REALTIME, &ts);
        localtime_r(&ts.tv_sec, &tm);
        n = strftime(line, sizeof line, "%Y-%m-%d %H:%M:%S ", &tm);
        va_start(ap, fmt);
        r = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -EINVAL;
        /* Overlong messages are cut rather than lost: a log line is best effort. */
        len = n + ((size_t)r < sizeof line - n - 1 ? (size_t)r : sizeof line - n - 2);
        for (size_t i = n; i < len; i++)
                if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
                        line[i] = ' ';
        line[len++] = '\n';

        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return -errno;
        char why[256];
        fd = safepath_open_beneath(root, path, O_WRONLY | O_APPEND | O_CREAT, 0644, SAFEPATH_ONE_LINK, why, sizeof why);
        if (fd < 0)
                return fd;
        /* One write: O_APPEND makes the seek and write atomic locally; on NFS
         * a single write of a short line is as close as the protocol gets. */
        ssize_t w = write(fd, line, len);
        r = w < 0 ? -errno : (size_t)w != len ? -EIO : 0;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        return r;
}
