/* strv: a growable NULL-terminated vector of strings (argv, directory listings). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct strv {
        char **items;           /* NULL-terminated once anything was added */
        size_t n;
        size_t cap;
        int error;              /* first allocation failure, sticky */
};

/* Appends a copy of s. Errors are sticky in v->error (checked once at the end). */
void strv_add(struct strv *v, const char *s);
void strv_addf(struct strv *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s, taking ownership (NULL counts as allocation failure). */
void strv_take(struct strv *v, char *s);
/* Adds the names in dir, sorted, leaving out hidden ones (".", "..",
 * ".staging"); with suffix only the names that end in it, suffix removed;
 * with dirs_only only directories. A missing dir adds nothing. Returns 0 or
 * a negative errno. */
int strv_add_dir(struct strv *v, const char *dir, const char *suffix, bool dirs_only);
void strv_done(struct strv *v);
/* Frees a NULL-terminated vector; returns NULL. */
char **strv_free(char **items);
