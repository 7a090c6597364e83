#include "launcher/core/util.h"

#include <inttypes.h>
#include <stdio.h>

int table_lookup(const char *const *table, int n, const char *s) {
        if (!s)
                return -1;
        for (int i = 0; i < n; i++)
                if (table[i] && strcmp(table[i], s) == 0)
                        return i;
        return -1;
}

void format_size(uint64_t v, enum format_size_style style, char *buf, size_t len) {
        static const char units[] = "KMGTPE";
        int u = -1;

        if (style == FORMAT_SIZE_EXACT) {
                while (u < 3 && v >= 1024 && v % 1024 == 0) {
                        v /= 1024;
                        u++;
                }
                if (u < 0)
                        snprintf(buf, len, "%" PRIu64 " bytes", v);
                else
                        snprintf(buf, len, "%" PRIu64 "%c", v, units[u]);
                return;
        }
        if (v < 1024) {
                snprintf(buf, len, "%" PRIu64 "B", v);
                return;
        }
        double d = (double)v;
        while (d >= 1024 && u < 5) {
                d /= 1024;
                u++;
        }
        if (d < 10 && d != (double)(uint64_t)d)
                snprintf(buf, len, "%.1f%c", d, units[u]);
        else
                snprintf(buf, len, "%.0f%c", d, units[u]);
}
