#include "tools/fuzz/fuzz.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        remove(path);
        return 0;
}

static void remove_dir(void) {
        if (dir[0])
                nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_dir(void) {
        if (!dir[0]) {
                struct stat st;
                const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
                snprintf(dir, sizeof dir, "%s/vrt-fuzz.XXXXXX", base);
                if (!mkdtemp(dir))
                        abort();
                atexit(remove_dir);
        }
        return dir;
}

const char *fuzz_write(const char *name, const void *data, size_t len) {
        static char path[4096];
        snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                abort();
        const uint8_t *p = data;
        while (len > 0) {
                ssize_t k = write(fd, p, len);
                if (k <= 0)
                        abort();
                p += k;
                len -= (size_t)k;
        }
        close(fd);
        return path;
}

void fuzz_remove(const char *name) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
        nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void fuzz_split(const uint8_t *data, size_t len, const char *sep,
                const uint8_t **a, size_t *alen, const uint8_t **b, size_t *blen) {
        size_t n = strlen(sep);
        const uint8_t *m = n && len >= n ? memmem(data, len, sep, n) : NULL;
        *a = data;
        if (!m) {
                *alen = len;
                *b = data + len;
                *blen = 0;
                return;
        }
        *alen = (size_t)(m - data);
        *b = m + n;
        *blen = len - *alen - n;
}
