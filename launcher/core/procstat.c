#include "launcher/core/procstat.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Parses a decimal unsigned at *p, moving *p past it. */
static int parse_u64(const char **p, uint64_t *ret) {
        const char *s = *p;
        char *end;
        while (*s == ' ' || *s == '\t')
                s++;
        if (!isdigit((unsigned char)*s))
                return -EINVAL;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno)
                return -EINVAL;
        *p = end;
        *ret = v;
        return 0;
}

int procstat_parse_stat(const char *text, uint64_t *ret_ticks) {
        const char *p = strrchr(text, ')');
        uint64_t utime = 0, stime = 0;
        if (!p || p[1] != ' ')
                return -EINVAL;
        p += 2;
        /* Field 3 (state) is a letter; fields 4..13 are numbers we skip
         * (field 6 may be negative on no system we know, but skip any token). */
        for (int field = 3; field < 14; field++) {
                size_t n = strcspn(p, " \n");
                if (n == 0)
                        return -EINVAL;
                p += n;
                if (*p != ' ')
                        return -EINVAL;
                p++;
        }
        if (parse_u64(&p, &utime) < 0 || *p != ' ' || parse_u64(&p, &stime) < 0)
                return -EINVAL;
        if (*p != ' ' && *p != '\n' && *p != '\0')
                return -EINVAL;
        *ret_ticks = utime + stime;
        return 0;
}

int procstat_parse_status(const char *text, const char *key, uint64_t *ret) {
        size_t klen = strlen(key);
        for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
                if (strncmp(line, key, klen) != 0 || line[klen] != ':')
                        continue;
                const char *p = line + klen + 1;
                uint64_t v;
                if (parse_u64(&p, &v) < 0)
                        return -EINVAL;
                *ret = v;
                return 0;
        }
        return -ENOENT;
}

int procstat_parse_net_dev(const char *text, const char *ifname, struct procstat_netdev *ret) {
        size_t nlen = strlen(ifname);
        if (nlen == 0)
                return -EINVAL;
        for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
                const char *p = line;
                while (*p == ' ')
                        p++;
                if (strncmp(p, ifname, nlen) != 0 || p[nlen] != ':')
                        continue;
                p += nlen + 1;
                uint64_t v[10];
                for (int k = 0; k < 10; k++)
                        if (parse_u64(&p, &v[k]) < 0)
                                return -EINVAL;
                *ret = (struct procstat_netdev){
                        .rx_bytes = v[0], .rx_packets = v[1], .tx_bytes = v[8], .tx_packets = v[9],
                };
                return 0;
        }
        return -ENOENT;
}
