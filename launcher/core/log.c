#include "launcher/core/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *log_ident = "vrt";
static bool log_to_journal;

void log_setup(const char *ident) {
        log_ident = ident;
        /* JOURNAL_STREAM is "dev:ino" of the stream systemd connected us to. */
        const char *js = getenv("JOURNAL_STREAM");
        struct stat st;
        unsigned long long dev, ino;
        log_to_journal = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
                         fstat(STDERR_FILENO, &st) == 0 &&
                         (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_msg(int priority, const char *fmt, ...) {
        char buf[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        if (log_to_journal) {
                fprintf(stderr, "<%d>%s\n", priority, buf);
        } else {
                struct timespec ts;
                struct tm tm;
                char stamp[32];
                clock_gettime(CLOCK_REALTIME, &ts);
                localtime_r(&ts.tv_sec, &tm);
                strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
                fprintf(stderr, "%s.%03ld %s[%d]: %s\n", stamp, ts.tv_nsec / 1000000, log_ident, (int)getpid(), buf);
        }
        fflush(stderr);
}
