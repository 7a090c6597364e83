#include "images/seediso.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images/atomic_file.h"

/* The layout (ECMA-119 with SUSP/RRIP 1.09 "RRIP_1991A"), in sectors:
 *   0-15  system area (zero)
 *   16    primary volume descriptor
 *   17    volume descriptor set terminator
 *   18    type L path table (little endian)
 *   19    type M path table (big endian)
 *   20    the root directory
 *   21    SUSP continuation area: the ER entry that names Rock Ridge
 *   22-   file contents, each starting on a sector of its own */
#define SECTOR SEEDISO_SECTOR
#define LBA_PVD 16
#define LBA_TERM 17
#define LBA_PATH_L 18
#define LBA_PATH_M 19
#define LBA_ROOT 20
#define LBA_CE 21
#define LBA_DATA 22
#define PATH_TABLE_SIZE 10
#define DR_BASE 33              /* directory record up to the file identifier */

#define RR_FLAG_PX 0x01
#define RR_FLAG_NM 0x08

static const char er_id[] = "RRIP_1991A";
static const char er_des[] = "THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
static const char er_src[] = "PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN "
                             "PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

/* --- stores at spec offsets --- */

static void le16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
}

static void be16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t)(v >> 8);
        p[1] = (uint8_t)v;
}

static void le32(uint8_t *p, uint32_t v) {
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

static void be32(uint8_t *p, uint32_t v) {
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (24 - 8 * i));
}

/* ECMA-119 7.2.3 / 7.3.3: both byte orders, little endian first. */
static void both16(uint8_t *p, uint16_t v) {
        le16(p, v);
        be16(p + 2, v);
}

static void both32(uint8_t *p, uint32_t v) {
        le32(p, v);
        be32(p + 4, v);
}

/* A fixed-width text field, padded with spaces. */
static void text_field(uint8_t *p, size_t width, const char *s) {
        size_t n = strlen(s);
        memset(p, ' ', width);
        memcpy(p, s, n < width ? n : width);
}

/* --- timestamps (UTC) --- */

static void date7(uint8_t *p, const struct tm *tm) {
        p[0] = (uint8_t)tm->tm_year;    /* years since 1900 */
        p[1] = (uint8_t)(tm->tm_mon + 1);
        p[2] = (uint8_t)tm->tm_mday;
        p[3] = (uint8_t)tm->tm_hour;
        p[4] = (uint8_t)tm->tm_min;
        p[5] = (uint8_t)tm->tm_sec;
        p[6] = 0;                       /* offset from GMT in 15 minute steps */
}

static void date17(uint8_t *p, const struct tm *tm) {
        char s[32];
        snprintf(s, sizeof s, "%04d%02d%02d%02d%02d%02d00", (tm->tm_year + 1900) % 10000, tm->tm_mon + 1,
                 tm->tm_mday, tm->tm_hour, tm->tm_min, tm->tm_sec);
        memcpy(p, s, 16);
        p[16] = 0;
}

/* "Not specified" (ECMA-119 8.4.26.1). */
static void date17_unset(uint8_t *p) {
        memset(p, '0', 16);
        p[16] = 0;
}

/* --- names --- */

struct entry {
        const struct seediso_file *file;
        char iso_name[16];              /* "META_DAT.;1" */
        uint32_t lba, sectors;
};

static char d_char(char c) {
        if (c >= 'a' && c <= 'z')
                return (char)(c - 'a' + 'A');
        if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
                return c;
        return '_';
}

/* The level-1 name for readers without Rock Ridge: 8.3 d-characters. */
static void iso_name(const char *name, char out[16]) {
        const char *dot = strrchr(name, '.');
        size_t base_len = dot && dot != name ? (size_t)(dot - name) : strlen(name), n = 0;
        for (size_t i = 0; i < base_len && n < 8; i++)
                out[n++] = d_char(name[i]);
        out[n++] = '.';
        if (dot && dot != name)
                for (size_t i = 1; dot[i] && i <= 3; i++)
                        out[n++] = d_char(dot[i]);
        out[n++] = ';';
        out[n++] = '1';
        out[n] = '\0';
}

/* ECMA-119 9.3: by name, then extension, the shorter padded with spaces. */
static int part_cmp(const char *a, size_t an, const char *b, size_t bn) {
        size_t n = an > bn ? an : bn;
        for (size_t i = 0; i < n; i++) {
                unsigned char ca = i < an ? (unsigned char)a[i] : ' ', cb = i < bn ? (unsigned char)b[i] : ' ';
                if (ca != cb)
                        return ca < cb ? -1 : 1;
        }
        return 0;
}

static int entry_cmp(const void *pa, const void *pb) {
        const char *a = ((const struct entry *)pa)->iso_name, *b = ((const struct entry *)pb)->iso_name;
        const char *adot = strchr(a, '.'), *bdot = strchr(b, '.');
        int r = part_cmp(a, (size_t)(adot - a), b, (size_t)(bdot - b));
        if (r)
                return r;
        return part_cmp(adot + 1, strcspn(adot + 1, ";"), bdot + 1, strcspn(bdot + 1, ";"));
}

static int check_spec(const struct seediso_spec *spec, char *err, size_t errlen) {
        const char *v = spec->volume_id;
        size_t vlen = v ? strlen(v) : 0;
        if (vlen == 0 || vlen > 32 || strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != vlen) {
                snprintf(err, errlen, "invalid volume id \"%s\" (1 to 32 of A-Z a-z 0-9 _ -)", v ? v : "");
                return -EINVAL;
        }
        if (spec->n_files > SEEDISO_MAX_FILES) {
                snprintf(err, errlen, "%zu files, at most %d fit a seed image", spec->n_files, SEEDISO_MAX_FILES);
                return -EINVAL;
        }
        for (size_t i = 0; i < spec->n_files; i++) {
                const struct seediso_file *f = &spec->files[i];
                size_t n = f->name ? strlen(f->name) : 0;
                if (n == 0 || n > SEEDISO_NAME_MAX || strchr(f->name, '/') || strcmp(f->name, ".") == 0 ||
                    strcmp(f->name, "..") == 0) {
                        snprintf(err, errlen, "invalid file name \"%s\"", f->name ? f->name : "");
                        return -EINVAL;
                }
                if (f->len > SEEDISO_FILE_MAX || (f->len && !f->data)) {
                        snprintf(err, errlen, "%s: %zu bytes, at most %u", f->name, f->len, SEEDISO_FILE_MAX);
                        return -EINVAL;
                }
        }
        return 0;
}

/* --- SUSP / Rock Ridge entries --- */

static size_t susp_rr(uint8_t *p, uint8_t flags) {
        p[0] = 'R';
        p[1] = 'R';
        p[2] = 5;
        p[3] = 1;
        p[4] = flags;
        return 5;
}

/* RRIP 1.09 PX: mode, links, uid, gid (36 bytes; 1.12 adds an inode). */
static size_t susp_px(uint8_t *p, uint32_t mode, uint32_t links) {
        p[0] = 'P';
        p[1] = 'X';
        p[2] = 36;
        p[3] = 1;
        both32(p + 4, mode);
        both32(p + 12, links);
        both32(p + 20, 0);
        both32(p + 28, 0);
        return 36;
}

static size_t susp_nm(uint8_t *p, const char *name) {
        size_t n = strlen(name);
        p[0] = 'N';
        p[1] = 'M';
        p[2] = (uint8_t)(5 + n);
        p[3] = 1;
        p[4] = 0;
        memcpy(p + 5, name, n);
        return 5 + n;
}

static size_t susp_sp(uint8_t *p) {
        p[0] = 'S';
        p[1] = 'P';
        p[2] = 7;
        p[3] = 1;
        p[4] = 0xbe;
        p[5] = 0xef;
        p[6] = 0;               /* LEN_SKP */
        return 7;
}

static size_t susp_ce(uint8_t *p, uint32_t lba, uint32_t offset, uint32_t len) {
        p[0] = 'C';
        p[1] = 'E';
        p[2] = 28;
        p[3] = 1;
        both32(p + 4, lba);
        both32(p + 12, offset);
        both32(p + 20, len);
        return 28;
}

static size_t susp_er(uint8_t *p) {
        size_t li = strlen(er_id), ld = strlen(er_des), ls = strlen(er_src);
        p[0] = 'E';
        p[1] = 'R';
        p[2] = (uint8_t)(8 + li + ld + ls);
        p[3] = 1;
        p[4] = (uint8_t)li;
        p[5] = (uint8_t)ld;
        p[6] = (uint8_t)ls;
        p[7] = 1;               /* extension version */
        memcpy(p + 8, er_id, li);
        memcpy(p + 8 + li, er_des, ld);
        memcpy(p + 8 + li + ld, er_src, ls);
        return 8 + li + ld + ls;
}

/* --- directory records (ECMA-119 9.1) --- */

/* Writes the fixed part and the identifier; returns the offset of the
 * system use area. */
static size_t dr_head(uint8_t *p, uint32_t lba, uint32_t size, bool dir, const uint8_t *id, size_t id_len,
                      const struct tm *tm) {
        p[1] = 0;                       /* extended attribute record length */
        both32(p + 2, lba);
        both32(p + 10, size);
        date7(p + 18, tm);
        p[25] = dir ? 0x02 : 0x00;
        p[26] = 0;
        p[27] = 0;
        both16(p + 28, 1);              /* volume sequence number */
        p[32] = (uint8_t)id_len;
        memcpy(p + DR_BASE, id, id_len);
        return DR_BASE + id_len + (id_len % 2 == 0 ? 1 : 0);
}

/* Closes a record: the length must be even (a zero pads the system use area). */
static size_t dr_close(uint8_t *p, size_t len) {
        if (len % 2)
                p[len++] = 0;
        p[0] = (uint8_t)len;
        return len;
}

static size_t dr_root_in_pvd(uint8_t *p, const struct tm *tm) {
        static const uint8_t dot = 0;
        return dr_close(p, dr_head(p, LBA_ROOT, SECTOR, true, &dot, 1, tm));
}

int seediso_encode(const struct seediso_spec *spec, uint8_t **ret_buf, size_t *ret_len, char *err, size_t errlen) {
        struct entry entries[SEEDISO_MAX_FILES];
        uint8_t *buf = NULL, *p;
        struct tm tm;
        size_t off, len, er_len;
        uint32_t lba = LBA_DATA;
        int r;

        r = check_spec(spec, err, errlen);
        if (r < 0)
                return r;
        for (size_t i = 0; i < spec->n_files; i++) {
                entries[i].file = &spec->files[i];
                iso_name(spec->files[i].name, entries[i].iso_name);
        }
        qsort(entries, spec->n_files, sizeof entries[0], entry_cmp);
        for (size_t i = 0; i < spec->n_files; i++) {
                if (i > 0 && strcmp(entries[i - 1].iso_name, entries[i].iso_name) == 0) {
                        snprintf(err, errlen, "file names \"%s\" and \"%s\" both map to ISO 9660 name %s",
                                 entries[i - 1].file->name, entries[i].file->name, entries[i].iso_name);
                        return -EINVAL;
                }
                /* An empty file still gets a sector: some readers dislike
                 * extents that point past the volume. */
                entries[i].lba = lba;
                entries[i].sectors = entries[i].file->len ? (uint32_t)((entries[i].file->len + SECTOR - 1) / SECTOR) : 1;
                lba += entries[i].sectors;
        }
        len = (size_t)lba * SECTOR;
        if (!gmtime_r(&spec->mtime, &tm)) {
                snprintf(err, errlen, "timestamp out of range");
                return -EINVAL;
        }
        buf = calloc(1, len);
        if (!buf) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }

        /* Primary volume descriptor (ECMA-119 8.4). */
        p = buf + LBA_PVD * SECTOR;
        p[0] = 1;
        memcpy(p + 1, "CD001", 5);
        p[6] = 1;
        text_field(p + 8, 32, "LINUX");
        text_field(p + 40, 32, spec->volume_id);
        both32(p + 80, lba);                    /* volume space size */
        both16(p + 120, 1);                     /* volume set size */
        both16(p + 124, 1);                     /* volume sequence number */
        both16(p + 128, SECTOR);                /* logical block size */
        both32(p + 132, PATH_TABLE_SIZE);
        le32(p + 140, LBA_PATH_L);
        be32(p + 148, LBA_PATH_M);
        dr_root_in_pvd(p + 156, &tm);
        text_field(p + 190, 128, "");           /* volume set */
        text_field(p + 318, 128, "");           /* publisher */
        text_field(p + 446, 128, "");           /* data preparer */
        text_field(p + 574, 128, "VRT");        /* application */
        text_field(p + 702, 37, "");            /* copyright file */
        text_field(p + 739, 37, "");            /* abstract file */
        text_field(p + 776, 37, "");            /* bibliographic file */
        date17(p + 813, &tm);                   /* creation */
        date17(p + 830, &tm);                   /* modification */
        date17_unset(p + 847);                  /* expiration */
        date17_unset(p + 864);                  /* effective */
        p[881] = 1;                             /* file structure version */

        /* Volume descriptor set terminator. */
        p = buf + LBA_TERM * SECTOR;
        p[0] = 255;
        memcpy(p + 1, "CD001", 5);
        p[6] = 1;

        /* Path tables: the root alone, its own parent (directory number 1). */
        p = buf + LBA_PATH_L * SECTOR;
        p[0] = 1;
        le32(p + 2, LBA_ROOT);
        le16(p + 6, 1);
        p = buf + LBA_PATH_M * SECTOR;
        p[0] = 1;
        be32(p + 2, LBA_ROOT);
        be16(p + 6, 1);

        /* The continuation area holds the ER entry, too long for ".". */
        er_len = susp_er(buf + LBA_CE * SECTOR);

        /* The root directory: ".", "..", then the files in identifier order.
         * SP must open the system use area of the root's "." record. */
        p = buf + LBA_ROOT * SECTOR;
        {
                static const uint8_t dot = 0, dotdot = 1;
                size_t n = dr_head(p, LBA_ROOT, SECTOR, true, &dot, 1, &tm);
                n += susp_sp(p + n);
                n += susp_rr(p + n, RR_FLAG_PX);
                n += susp_px(p + n, S_IFDIR | 0555, 2);
                n += susp_ce(p + n, LBA_CE, 0, (uint32_t)er_len);
                off = dr_close(p, n);
                n = dr_head(p + off, LBA_ROOT, SECTOR, true, &dotdot, 1, &tm);
                n += susp_rr(p + off + n, RR_FLAG_PX);
                n += susp_px(p + off + n, S_IFDIR | 0555, 2);
                off += dr_close(p + off, n);
        }
        for (size_t i = 0; i < spec->n_files; i++) {
                const struct entry *e = &entries[i];
                uint8_t *rec = p + off;
                /* Record size is bounded: 34 + 12 + 5 + 36 + 5 + 64 < 255. */
                size_t n = dr_head(rec, e->lba, (uint32_t)e->file->len, false, (const uint8_t *)e->iso_name,
                                   strlen(e->iso_name), &tm);
                n += susp_rr(rec + n, RR_FLAG_PX | RR_FLAG_NM);
                n += susp_px(rec + n, S_IFREG | 0444, 1);
                n += susp_nm(rec + n, e->file->name);
                off += dr_close(rec, n);
                if (e->file->len)
                        memcpy(buf + (size_t)e->lba * SECTOR, e->file->data, e->file->len);
        }
        /* At most 8 records of at most 160 bytes after "." and "..": the
         * directory always fits its one sector. */

        *ret_buf = buf;
        *ret_len = len;
        return 0;
}

int seediso_write(const char *path, const struct seediso_spec *spec, mode_t mode, char *err, size_t errlen) {
        struct atomic_file *af = NULL;
        uint8_t *buf = NULL;
        size_t len = 0, done = 0;
        char why[512];
        int r;

        r = seediso_encode(spec, &buf, &len, why, sizeof why);
        if (r < 0) {
                snprintf(err, errlen, "%s: %s", path, why);
                return r;
        }
        r = atomic_file_open(path, mode, &af, err, errlen);
        if (r < 0)
                goto fail;
        while (done < len) {
                ssize_t n = write(af->fd, buf + done, len - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        r = n < 0 ? -errno : -EIO;
                        snprintf(err, errlen, "%s: write: %s", path, strerror(-r));
                        goto fail;
                }
                done += (size_t)n;
        }
        r = atomic_file_commit(af, err, errlen);
fail:
        atomic_file_free(af);
        free(buf);
        return r;
}
