#include "net/mac.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int mac_parse(const char *s, uint8_t ret[MAC_LEN]) {
        uint8_t mac[MAC_LEN];

        /* strnlen first, so nothing below reads past the string's end. */
        if (!s || strnlen(s, MAC_STRLEN) != MAC_STRLEN - 1)
                return -EINVAL;
        for (int i = 0; i < MAC_LEN; i++) {
                const char *p = s + 3 * i;
                int hi = hexval(p[0]), lo = hexval(p[1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                if (i < MAC_LEN - 1 && p[2] != ':')
                        return -EINVAL;
                mac[i] = (uint8_t)(hi << 4 | lo);
        }
        memcpy(ret, mac, MAC_LEN);
        return 0;
}

void mac_format(const uint8_t mac[MAC_LEN], char ret[MAC_STRLEN]) {
        snprintf(ret, MAC_STRLEN, "%02x:%02x:%02x:%02x:%02x:%02x",
                 mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
}

int mac_validate(const uint8_t mac[MAC_LEN], char *err, size_t errlen) {
        static const uint8_t zero[MAC_LEN];
        char s[MAC_STRLEN];

        mac_format(mac, s);
        if (memcmp(mac, zero, MAC_LEN) == 0) {
                if (err)
                        snprintf(err, errlen, "MAC address %s is all zero", s);
                return -EINVAL;
        }
        if (mac[0] & 0x01) {
                if (err)
                        snprintf(err, errlen, "MAC address %s is a multicast address (first octet odd)", s);
                return -EINVAL;
        }
        return 0;
}

int mac_generate(uint8_t ret[MAC_LEN]) {
        uint8_t mac[MAC_LEN] = { 0x52, 0x54, 0x00 };
        size_t got = 0;

        while (got < MAC_LEN - 3) {
                ssize_t n = getrandom(mac + 3 + got, MAC_LEN - 3 - got, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                got += (size_t)n;
        }
        memcpy(ret, mac, MAC_LEN);
        return 0;
}
