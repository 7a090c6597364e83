#include "images/copy.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images/atomic_file.h"

/* Progress is reported after each chunk of this many bytes. */
#define CHUNK (UINT64_C(64) * 1024 * 1024)
/* Read/write fallback: buffer size, and the granularity at which all-zero
 * data is skipped (left as a hole) instead of written. */
#define RW_BUFFER (1024 * 1024)
#define RW_BLOCK 4096

struct copy_state {
        int src;
        int dst;
        uint64_t total;
        bool use_rw;            /* copy_file_range is unsupported here */
        uint8_t *buf;           /* for the read/write fallback */
        image_copy_progress_fn progress;
        void *userdata;
};

static int report(struct copy_state *s, uint64_t done) {
        int r;

        if (!s->progress)
                return 0;
        r = s->progress(done, s->total, s->userdata);
        if (r == 0)
                return 0;
        return r < 0 ? r : -ECANCELED;
}

static bool all_zero(const uint8_t *p, size_t n) {
        return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static int rw_copy(struct copy_state *s, uint64_t off, uint64_t len) {
        if (!s->buf) {
                s->buf = malloc(RW_BUFFER);
                if (!s->buf)
                        return -ENOMEM;
        }
        while (len > 0) {
                size_t want = len < RW_BUFFER ? (size_t)len : RW_BUFFER;
                ssize_t n = pread(s->src, s->buf, want, (off_t)off);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -ENODATA;
                for (size_t b = 0; b < (size_t)n; b += RW_BLOCK) {
                        size_t bl = (size_t)n - b < RW_BLOCK ? (size_t)n - b : RW_BLOCK;
                        size_t done = 0;

                        if (all_zero(s->buf + b, bl))
                                continue;
                        while (done < bl) {
                                ssize_t w = pwrite(s->dst, s->buf + b + done, bl - done, (off_t)(off + b + done));
                                if (w < 0) {
                                        if (errno == EINTR)
                                                continue;
                                        return -errno;
                                }
                                done += (size_t)w;
                        }
                }
                off += (uint64_t)n;
                len -= (uint64_t)n;
        }
        return 0;
}

/* Copies [off, off+len) of the source to the same offset of the target. */
static int copy_range(struct copy_state *s, uint64_t off, uint64_t len) {
        while (len > 0 && !s->use_rw) {
                loff_t in = (loff_t)off, out = (loff_t)off;
                ssize_t n = copy_file_range(s->src, &in, s->dst, &out, (size_t)len, 0);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
                                s->use_rw = true;
                                break;
                        }
                        return -errno;
                }
                if (n == 0)
                        return -ENODATA;
                off += (uint64_t)n;
                len -= (uint64_t)n;
        }
        return len > 0 ? rw_copy(s, off, len) : 0;
}

/* Copies the data extents of the source to the same offsets of the
 * target; everything not copied stays a hole. */
static int copy_extents(struct copy_state *s) {
        uint64_t off = 0;
        int r;

        while (off < s->total) {
                off_t data = lseek(s->src, (off_t)off, SEEK_DATA), hole;

                if (data < 0) {
                        if (errno == ENXIO)
                                break;          /* only a hole is left */
                        return -errno;
                }
                hole = lseek(s->src, data, SEEK_HOLE);
                if (hole < 0)
                        return -errno;
                if ((uint64_t)hole > s->total)
                        hole = (off_t)s->total;
                for (uint64_t p = (uint64_t)data; p < (uint64_t)hole;) {
                        uint64_t n = (uint64_t)hole - p < CHUNK ? (uint64_t)hole - p : CHUNK;

                        r = copy_range(s, p, n);
                        if (r < 0)
                                return r;
                        p += n;
                        r = report(s, p);
                        if (r < 0)
                                return r;
                }
                off = (uint64_t)hole;
        }
        return 0;
}

int image_copy_sparse(const char *src, const char *dst, image_copy_progress_fn progress, void *userdata,
                      char *err, size_t errlen) {
        struct copy_state s = { .src = -1, .dst = -1, .progress = progress, .userdata = userdata };
        struct atomic_file *af = NULL;
        struct stat st;
        int r;

        s.src = open(src, O_RDONLY | O_CLOEXEC);
        if (s.src < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: %s", src, strerror(errno));
                goto fail;
        }
        if (fstat(s.src, &st) < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: %s", src, strerror(errno));
                goto fail;
        }
        if (!S_ISREG(st.st_mode)) {
                r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
                snprintf(err, errlen, "%s: not a regular file", src);
                goto fail;
        }
        s.total = (uint64_t)st.st_size;

        r = atomic_file_open(dst, 0644, &af, err, errlen);
        if (r < 0)
                goto fail;
        s.dst = af->fd;

        r = report(&s, 0);
        if (r < 0) {
                snprintf(err, errlen, "%s: copy cancelled", dst);
                goto fail;
        }
        if (ioctl(s.dst, FICLONE, s.src) < 0) {
                if (errno != EOPNOTSUPP && errno != EXDEV && errno != EINVAL && errno != ENOTTY &&
                    errno != ENOSYS && errno != EPERM) {
                        r = -errno;
                        snprintf(err, errlen, "%s: reflink from %s: %s", dst, src, strerror(errno));
                        goto fail;
                }
                r = copy_extents(&s);
                if (r < 0) {
                        if (r == -ECANCELED)
                                snprintf(err, errlen, "%s: copy cancelled", dst);
                        else if (r == -ENODATA)
                                snprintf(err, errlen, "%s: source %s shrank during the copy", dst, src);
                        else
                                snprintf(err, errlen, "%s: copying from %s: %s", dst, src, strerror(-r));
                        goto fail;
                }
                /* A trailing hole is not copied; the size makes it. */
                if (ftruncate(s.dst, (off_t)s.total) < 0) {
                        r = -errno;
                        snprintf(err, errlen, "%s: %s", dst, strerror(errno));
                        goto fail;
                }
        }
        r = report(&s, s.total);
        if (r < 0) {
                snprintf(err, errlen, "%s: copy cancelled", dst);
                goto fail;
        }
        r = atomic_file_commit(af, err, errlen);
fail:
        atomic_file_free(af);
        free(s.buf);
        if (s.src >= 0)
                close(s.src);
        return r;
}
