#include "images/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "images/io.h"
#include "images/worker.h"

/* libarchive buffers this much before each write(2). */
#define WRITE_BLOCK (1024 * 1024)
#define READ_BLOCK (1024 * 1024)
/* Data from this size on is hashed on the hasher thread while it is
 * written (SHA-256 alone runs at about the speed of a page-cache copy). */
#define HASH_ASIDE (256 * 1024)
/* Names remembered for the duplicate check. */
#define READER_MAX_MEMBERS 64

struct archive_writer {
        struct archive *a;
        int fd;
        EVP_MD_CTX *md;
        bool in_member;
        uint64_t declared, written;
        uint64_t unflushed;     /* bytes since the last writeback start */
        time_t now;
        struct worker hasher;
        bool hasher_started;
        bool hash_pending;      /* the hasher may still read a deferred buffer */
        bool aborting;          /* freed with a member open: write nothing more */
};

struct archive_reader {
        struct archive *a;
        char *path;
        int fd;
        EVP_MD_CTX *md;
        bool in_member, member_done;
        uint64_t declared, read;
        char *seen[READER_MAX_MEMBERS];
        size_t n_seen;
        char current[ARCHIVE_NAME_MAX + 1];
};

static void hex_digest(EVP_MD_CTX *md, char out[ARCHIVE_SHA256_HEX]) {
        unsigned char d[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        EVP_MD_CTX *copy = EVP_MD_CTX_new();

        out[0] = '\0';
        /* Finalise a copy: the reader may be asked again. */
        if (!copy || EVP_MD_CTX_copy_ex(copy, md) != 1 || EVP_DigestFinal_ex(copy, d, &n) != 1 || n != 32) {
                EVP_MD_CTX_free(copy);
                return;
        }
        EVP_MD_CTX_free(copy);
        for (unsigned i = 0; i < n; i++)
                snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* One line: libarchive's messages may quote names from the archive. */
static const char *la_error(struct archive *a, char *buf, size_t len) {
        const char *s = archive_error_string(a);
        snprintf(buf, len, "%s", s ? s : "unknown libarchive error");
        for (char *p = buf; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                        *p = '?';
        return buf;
}

int archive_check_name(const char *name, char *err, size_t errlen) {
        size_t n = strlen(name);
        if (n == 0) {
                snprintf(err, errlen, "empty member name");
                return -EINVAL;
        }
        if (n > ARCHIVE_NAME_MAX) {
                snprintf(err, errlen, "member name longer than %d bytes", ARCHIVE_NAME_MAX);
                return -EINVAL;
        }
        if (name[0] == '/') {
                snprintf(err, errlen, "absolute member name");
                return -EINVAL;
        }
        if (strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-/") != n) {
                snprintf(err, errlen, "member name with a character outside [A-Za-z0-9._-/]");
                return -EINVAL;
        }
        for (const char *p = name; *p;) {
                size_t c = strcspn(p, "/");
                if (c == 0 || (c == 1 && p[0] == '.') || (c == 2 && p[0] == '.' && p[1] == '.')) {
                        snprintf(err, errlen, "member name with an empty, \".\" or \"..\" component");
                        return -EINVAL;
                }
                p += c;
                if (*p == '/') {
                        p++;
                        if (!*p) {
                                snprintf(err, errlen, "member name ending in /");
                                return -EINVAL;
                        }
                }
        }
        return 0;
}

/* --- writing --- */

/* libarchive's output. Not archive_write_open_fd(): freeing the archive
 * with a member open (a cancel, a failed read) would make libarchive pad
 * the member with zeros up to its declared size, i.e. write the rest of a
 * disk that nobody will keep. */
static la_ssize_t client_write(struct archive *a, void *userdata, const void *buf, size_t len) {
        struct archive_writer *w = userdata;
        if (w->aborting) {
                archive_set_error(a, ECANCELED, "the archive is being abandoned");
                return -1;
        }
        for (;;) {
                ssize_t n = write(w->fd, buf, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        int e = n < 0 ? errno : EIO;
                        archive_set_error(a, e, "%s", strerror(e));
                        return -1;
                }
                return n;       /* libarchive writes the rest of a short write */
        }
}

int archive_writer_open(int fd, struct archive_writer **ret, char *err, size_t errlen) {
        struct archive_writer *w = calloc(1, sizeof *w);
        char why[256];

        if (!w || !(w->md = EVP_MD_CTX_new()) || !(w->a = archive_write_new())) {
                archive_writer_free(w);
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        w->fd = fd;
        w->now = time(NULL);
        if (archive_write_set_format_pax_restricted(w->a) != ARCHIVE_OK ||
            archive_write_set_bytes_per_block(w->a, WRITE_BLOCK) != ARCHIVE_OK ||
            archive_write_set_bytes_in_last_block(w->a, 1) != ARCHIVE_OK ||
            archive_write_open2(w->a, w, NULL, client_write, NULL, NULL) != ARCHIVE_OK) {
                snprintf(err, errlen, "cannot start the archive: %s", la_error(w->a, why, sizeof why));
                archive_writer_free(w);
                return -EIO;
        }
        *ret = w;
        return 0;
}

int archive_writer_begin(struct archive_writer *w, const char *name, uint64_t size, char *err, size_t errlen) {
        struct archive_entry *e;
        char why[256];
        int r;

        if (w->in_member || archive_check_name(name, why, sizeof why) < 0 || size > INT64_MAX) {
                snprintf(err, errlen, "%s: cannot be written as an archive member", name);
                return -EINVAL;
        }
        e = archive_entry_new();
        if (!e) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        archive_entry_set_pathname(e, name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t)size);
        archive_entry_set_mtime(e, w->now, 0);
        archive_entry_set_uid(e, 0);
        archive_entry_set_gid(e, 0);
        r = archive_write_header(w->a, e);
        archive_entry_free(e);
        if (r != ARCHIVE_OK) {
                snprintf(err, errlen, "%s: cannot write the member header: %s", name, la_error(w->a, why, sizeof why));
                return -EIO;
        }
        if (EVP_DigestInit_ex(w->md, EVP_sha256(), NULL) != 1) {
                snprintf(err, errlen, "SHA-256 unavailable");
                return -EIO;
        }
        w->in_member = true;
        w->declared = size;
        w->written = 0;
        return 0;
}

static int hash_update(const void *buf, size_t len, void *md) {
        return EVP_DigestUpdate(md, buf, len) == 1 ? 0 : -EIO;
}

/* Waits for the hash of a deferred buffer. */
static int hash_settle(struct archive_writer *w, char *err, size_t errlen) {
        if (!w->hash_pending)
                return 0;
        w->hash_pending = false;
        if (worker_wait(&w->hasher) < 0) {
                snprintf(err, errlen, "SHA-256 failed");
                return -EIO;
        }
        return 0;
}

static int writer_data(struct archive_writer *w, const void *buf, size_t len, bool deferred, char *err,
                       size_t errlen) {
        char why[256];
        int r = hash_settle(w, err, errlen);

        if (r < 0)
                return r;
        if (!w->in_member || len > w->declared - w->written) {
                snprintf(err, errlen, "archive member longer than declared");
                return -EIO;
        }
        bool aside = len >= HASH_ASIDE;
        if (aside && !w->hasher_started) {
                if (worker_start(&w->hasher, hash_update, w->md) < 0)
                        aside = false;  /* no thread: hash here */
                else
                        w->hasher_started = true;
        }
        if (aside ? worker_hand(&w->hasher, buf, len) < 0 : hash_update(buf, len, w->md) < 0) {
                snprintf(err, errlen, "SHA-256 failed");
                return -EIO;
        }
        w->hash_pending = aside;
        for (size_t done = 0; done < len;) {
                la_ssize_t n = archive_write_data(w->a, (const char *)buf + done, len - done);
                if (n <= 0) {
                        int e = archive_errno(w->a);
                        snprintf(err, errlen, "cannot write the archive: %s", la_error(w->a, why, sizeof why));
                        r = e > 0 ? -e : -EIO;
                        break;
                }
                done += (size_t)n;
        }
        /* buf is the caller's again only when the hasher is done with it;
         * a write error already in err is the one reported. */
        if (!deferred || r < 0) {
                int h = r < 0 ? hash_settle(w, why, sizeof why) : hash_settle(w, err, errlen);
                if (r == 0)
                        r = h;
        }
        if (r < 0)
                return r;
        w->written += len;
        w->unflushed += len;
        /* The archive is fsynced before it is renamed into place. */
        if (w->unflushed >= WRITEBACK_STEP) {
                start_writeback(w->fd);
                w->unflushed = 0;
        }
        return 0;
}

int archive_writer_data(struct archive_writer *w, const void *buf, size_t len, char *err, size_t errlen) {
        return writer_data(w, buf, len, false, err, errlen);
}

int archive_writer_data_deferred(struct archive_writer *w, const void *buf, size_t len, char *err, size_t errlen) {
        return writer_data(w, buf, len, true, err, errlen);
}

int archive_writer_end(struct archive_writer *w, char sha256[ARCHIVE_SHA256_HEX], char *err, size_t errlen) {
        char why[256];
        int r = hash_settle(w, err, errlen);

        if (r < 0)
                return r;
        if (!w->in_member || w->written != w->declared) {
                snprintf(err, errlen, "archive member shorter than declared (%llu of %llu bytes)",
                         (unsigned long long)w->written, (unsigned long long)w->declared);
                return -EIO;
        }
        if (archive_write_finish_entry(w->a) != ARCHIVE_OK) {
                snprintf(err, errlen, "cannot write the archive: %s", la_error(w->a, why, sizeof why));
                return -EIO;
        }
        if (sha256)
                hex_digest(w->md, sha256);
        w->in_member = false;
        return 0;
}

int archive_writer_add(struct archive_writer *w, const char *name, const void *buf, size_t len,
                       char sha256[ARCHIVE_SHA256_HEX], char *err, size_t errlen) {
        int r = archive_writer_begin(w, name, len, err, errlen);
        if (r == 0 && len)
                r = archive_writer_data(w, buf, len, err, errlen);
        if (r == 0)
                r = archive_writer_end(w, sha256, err, errlen);
        return r;
}

int archive_writer_close(struct archive_writer *w, char *err, size_t errlen) {
        char why[256];
        if (w->in_member || archive_write_close(w->a) != ARCHIVE_OK) {
                int e = archive_errno(w->a);
                snprintf(err, errlen, "cannot finish the archive: %s",
                         w->in_member ? "a member is incomplete" : la_error(w->a, why, sizeof why));
                return e > 0 ? -e : -EIO;
        }
        return 0;
}

struct archive_writer *archive_writer_free(struct archive_writer *w) {
        if (!w)
                return NULL;
        if (w->hasher_started)
                worker_stop(&w->hasher);
        if (w->a) {
                w->aborting = w->in_member;
                archive_write_free(w->a);
        }
        EVP_MD_CTX_free(w->md);
        free(w);
        return NULL;
}

static uint64_t parse_octal(const char *p, size_t n, bool *ok) {
        uint64_t v = 0;
        size_t i = 0;
        *ok = false;
        while (i < n && p[i] == ' ')
                i++;
        if (i == n || p[i] < '0' || p[i] > '7')
                return 0;
        for (; i < n && p[i] >= '0' && p[i] <= '7'; i++)
                v = v * 8 + (uint64_t)(p[i] - '0');
        *ok = i == n || p[i] == ' ' || p[i] == '\0';
        return v;
}

int archive_writer_patch_first(int fd, const char *name, const void *data, size_t len, char *err, size_t errlen) {
        char h[512];
        bool ok;
        int r;

        /* pax_restricted writes a plain ustar header for a short ASCII
         * name and a small size, so the content starts at 512; the header
         * is checked rather than trusted. */
        if (pread_full(fd, h, sizeof h, 0) != (ssize_t)sizeof h || strncmp(h, name, 100) != 0 ||
            (h[156] != '0' && h[156] != '\0') || parse_octal(h + 124, 12, &ok) != len || !ok) {
                snprintf(err, errlen, "the archive does not start with the %zu-byte member %s", len, name);
                return -EIO;
        }
        r = pwrite_full(fd, data, len, 512);
        if (r < 0)
                snprintf(err, errlen, "cannot write the archive: %s", strerror(-r));
        return r;
}

/* --- reading --- */

int archive_reader_open(const char *path, struct archive_reader **ret, char *err, size_t errlen) {
        struct archive_reader *r = calloc(1, sizeof *r);
        char why[256];
        struct stat st;
        int q;

        if (r)
                r->fd = -1;
        if (!r || !(r->path = strdup(path)) || !(r->md = EVP_MD_CTX_new()) || !(r->a = archive_read_new())) {
                snprintf(err, errlen, "%s: out of memory", path);
                q = -ENOMEM;
                goto fail;
        }
        r->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (r->fd < 0) {
                q = -errno;
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
                goto fail;
        }
        if (fstat(r->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                q = -EINVAL;
                snprintf(err, errlen, "%s: not a regular file", path);
                goto fail;
        }
        /* A small archive gets a block of its own size (in 64 KiB steps)
         * rather than a 1 MiB buffer; the reads are the same either way. */
        size_t block = READ_BLOCK;
        if (st.st_size < READ_BLOCK)
                block = ((size_t)st.st_size / 65536 + 1) * 65536;
        /* Only tar, and no decompression filter: a compressed archive is
         * "not a tar archive" rather than something to unpack. */
        if (archive_read_support_format_tar(r->a) != ARCHIVE_OK ||
            archive_read_support_filter_none(r->a) != ARCHIVE_OK ||
            archive_read_open_fd(r->a, r->fd, block) != ARCHIVE_OK) {
                q = -EINVAL;
                snprintf(err, errlen, "%s: not an uncompressed tar archive: %s", path, la_error(r->a, why, sizeof why));
                goto fail;
        }
        *ret = r;
        return 0;
fail:
        archive_reader_free(r);
        return q;
}

int archive_reader_next(struct archive_reader *r, struct archive_member *ret, char *err, size_t errlen) {
        struct archive_entry *e = NULL;
        const char *name;
        char why[256];
        int q;

        if (r->in_member && archive_read_data_skip(r->a) != ARCHIVE_OK) {
                snprintf(err, errlen, "%s: member %s: %s", r->path, r->current, la_error(r->a, why, sizeof why));
                return -EIO;
        }
        r->in_member = false;
        q = archive_read_next_header(r->a, &e);
        if (q == ARCHIVE_EOF)
                return 0;
        if (q != ARCHIVE_OK) {
                /* A warning too: strictness is the point of this reader. */
                la_error(r->a, why, sizeof why);
                if (r->n_seen == 0)
                        snprintf(err, errlen, "%s: not a valid tar archive: %s", r->path, why);
                else
                        snprintf(err, errlen, "%s: damaged or truncated after member %s: %s", r->path,
                                 r->seen[r->n_seen - 1], why);
                return r->n_seen == 0 ? -EINVAL : -EIO;
        }
        name = archive_entry_pathname(e);
        if (!name) {
                snprintf(err, errlen, "%s: a member without a readable name", r->path);
                return -EINVAL;
        }
        char shown[ARCHIVE_NAME_MAX + 4];
        snprintf(shown, sizeof shown, "%.*s%s", ARCHIVE_NAME_MAX, name, strlen(name) > ARCHIVE_NAME_MAX ? "..." : "");
        for (char *p = shown; *p; p++)
                if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                        *p = '?';
        if (archive_check_name(name, why, sizeof why) < 0) {
                snprintf(err, errlen, "%s: member %s: %s", r->path, shown, why);
                return -EINVAL;
        }
        if (archive_entry_hardlink(e)) {
                snprintf(err, errlen, "%s: member %s is a hard link; only regular files are allowed", r->path, shown);
                return -EINVAL;
        }
        mode_t type = archive_entry_filetype(e);
        if (type != AE_IFREG || archive_entry_symlink(e)) {
                const char *what = type == AE_IFLNK    ? "a symbolic link"
                                   : type == AE_IFDIR  ? "a directory"
                                   : type == AE_IFCHR  ? "a character device"
                                   : type == AE_IFBLK  ? "a block device"
                                   : type == AE_IFIFO  ? "a FIFO"
                                   : type == AE_IFSOCK ? "a socket"
                                                       : "not a regular file";
                snprintf(err, errlen, "%s: member %s is %s; only regular files are allowed", r->path, shown, what);
                return -EINVAL;
        }
        if (archive_entry_sparse_count(e) > 0) {
                snprintf(err, errlen, "%s: member %s is a sparse file entry; not allowed", r->path, shown);
                return -EINVAL;
        }
        if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0) {
                snprintf(err, errlen, "%s: member %s has no valid size", r->path, shown);
                return -EINVAL;
        }
        for (size_t i = 0; i < r->n_seen; i++)
                if (strcmp(r->seen[i], name) == 0) {
                        snprintf(err, errlen, "%s: member %s appears twice", r->path, shown);
                        return -EINVAL;
                }
        if (r->n_seen == READER_MAX_MEMBERS) {
                snprintf(err, errlen, "%s: more than %d members", r->path, READER_MAX_MEMBERS);
                return -EINVAL;
        }
        if (!(r->seen[r->n_seen] = strdup(name))) {
                snprintf(err, errlen, "%s: out of memory", r->path);
                return -ENOMEM;
        }
        r->n_seen++;
        if (EVP_DigestInit_ex(r->md, EVP_sha256(), NULL) != 1) {
                snprintf(err, errlen, "SHA-256 unavailable");
                return -EIO;
        }
        snprintf(r->current, sizeof r->current, "%s", name);
        r->in_member = true;
        r->member_done = false;
        r->declared = (uint64_t)archive_entry_size(e);
        r->read = 0;
        snprintf(ret->name, sizeof ret->name, "%s", name);
        ret->size = r->declared;
        return 1;
}

ssize_t archive_reader_read(struct archive_reader *r, void *buf, size_t len, char *err, size_t errlen) {
        char why[256];

        if (!r->in_member || r->member_done)
                return 0;
        la_ssize_t n = archive_read_data(r->a, buf, len);
        if (n < 0) {
                snprintf(err, errlen, "%s: member %s: %s", r->path, r->current, la_error(r->a, why, sizeof why));
                return -EIO;
        }
        if (n == 0) {
                if (r->read != r->declared) {
                        snprintf(err, errlen, "%s: member %s: archive ends after %llu of %llu bytes", r->path,
                                 r->current, (unsigned long long)r->read, (unsigned long long)r->declared);
                        return -EIO;
                }
                r->member_done = true;
                return 0;
        }
        if ((uint64_t)n > r->declared - r->read) {
                snprintf(err, errlen, "%s: member %s: longer than its header says", r->path, r->current);
                return -EIO;
        }
        r->read += (uint64_t)n;
        if (EVP_DigestUpdate(r->md, buf, (size_t)n) != 1) {
                snprintf(err, errlen, "SHA-256 failed");
                return -EIO;
        }
        return n;
}

void archive_reader_sha256(struct archive_reader *r, char sha256[ARCHIVE_SHA256_HEX]) {
        hex_digest(r->md, sha256);
}

struct archive_reader *archive_reader_free(struct archive_reader *r) {
        if (!r)
                return NULL;
        if (r->a)
                archive_read_free(r->a);
        if (r->fd >= 0)
                close(r->fd);
        EVP_MD_CTX_free(r->md);
        for (size_t i = 0; i < r->n_seen; i++)
                free(r->seen[i]);
        free(r->path);
        free(r);
        return NULL;
}

int archive_file_sha256(const char *path, char sha256[ARCHIVE_SHA256_HEX], char *err, size_t errlen) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        char *buf = malloc(READ_BLOCK);
        int fd = -1, r = 0;

        if (!md || !buf || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
                r = -ENOMEM;
                snprintf(err, errlen, "%s: out of memory", path);
                goto done;
        }
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
                goto done;
        }
        for (;;) {
                ssize_t n = read(fd, buf, READ_BLOCK);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = -errno;
                        snprintf(err, errlen, "%s: %s", path, strerror(errno));
                        goto done;
                }
                if (n == 0)
                        break;
                EVP_DigestUpdate(md, buf, (size_t)n);
        }
        hex_digest(md, sha256);
done:
        if (fd >= 0)
                close(fd);
        free(buf);
        EVP_MD_CTX_free(md);
        return r;
}
