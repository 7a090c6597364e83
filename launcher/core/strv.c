#include "launcher/core/strv.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void strv_take(struct strv *v, char *s) {
        if (!s || v->error) {
                if (!v->error)
                        v->error = -ENOMEM;
                free(s);
                return;
        }
        if (v->n + 2 > v->cap) {
                size_t cap = v->cap ? v->cap * 2 : 16;
                char **items = realloc(v->items, cap * sizeof *items);
                if (!items) {
                        v->error = -ENOMEM;
                        free(s);
                        return;
                }
                v->items = items;
                v->cap = cap;
        }
        v->items[v->n++] = s;
        v->items[v->n] = NULL;
}

void strv_add(struct strv *v, const char *s) {
        strv_take(v, s ? strdup(s) : NULL);
}

void strv_addf(struct strv *v, const char *fmt, ...) {
        va_list ap;
        char *s = NULL;
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        strv_take(v, s);
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *)a, *(char *const *)b);
}

int strv_add_dir(struct strv *v, const char *dir, const char *suffix, bool dirs_only) {
        size_t first = v->n, slen = suffix ? strlen(suffix) : 0;
        DIR *d = opendir(dir);
        struct dirent *de;

        if (!d)
                return errno == ENOENT ? 0 : -errno;
        while (!v->error && (de = readdir(d))) {
                size_t len = strlen(de->d_name);
                if (de->d_name[0] == '.' || (dirs_only && de->d_type != DT_DIR && de->d_type != DT_UNKNOWN))
                        continue;
                if (suffix && (len <= slen || strcmp(de->d_name + len - slen, suffix) != 0))
                        continue;
                strv_take(v, strndup(de->d_name, len - slen));
        }
        closedir(d);
        if (v->error)
                return v->error;
        if (v->n > first)       /* an empty directory added nothing; items may be NULL */
                qsort(v->items + first, v->n - first, sizeof *v->items, cmp_str);
        return 0;
}

void strv_done(struct strv *v) {
        if (!v)
                return;
        for (size_t i = 0; i < v->n; i++)
                free(v->items[i]);
        free(v->items);
        *v = (struct strv){ 0 };
}

char **strv_free(char **items) {
        if (!items)
                return NULL;
        for (char **p = items; *p; p++)
                free(*p);
        free(items);
        return NULL;
}
