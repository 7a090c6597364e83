/* Small helpers every part of the launcher uses. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Milliseconds on the monotonic clock: deadlines survive clock changes. */
static inline int64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Microseconds on the wall clock, as QMP event timestamps are: times
 * compared between hosts (NTP keeps them close). */
static inline int64_t realtime_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Closes *fd if open and marks it closed; safe to call twice. */
static inline void close_fd(int *fd) {
        if (*fd >= 0)
                close(*fd);
        *fd = -1;
}

/* Strips blanks (and a CR of a DOS line end) from both ends, in place. */
static inline char *str_trim(char *s) {
        while (*s == ' ' || *s == '\t')
                s++;
        size_t n = strlen(s);
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
                s[--n] = '\0';
        return s;
}

/* True when s ends in suffix and has something before it. */
static inline bool has_suffix(const char *s, const char *suffix) {
        size_t a = strlen(s), b = strlen(suffix);
        return a > b && strcmp(s + a - b, suffix) == 0;
}

/* The index of s in table[0..n-1] (NULL entries never match), or -1 for
 * NULL or an unknown string: the from_string half of every enum's table. */
int table_lookup(const char *const *table, int n, const char *s);

enum format_size_style {
        FORMAT_SIZE_EXACT,      /* 10G, 1536M, 1000 bytes: never rounded (messages about limits) */
        FORMAT_SIZE_HUMAN,      /* 1.5K, 20G, 512B: one decimal below 10 (tables) */
};

/* Writes v bytes in binary units (K = 1024) into buf. */
void format_size(uint64_t v, enum format_size_style style, char *buf, size_t len);
