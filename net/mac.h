/* mac: Ethernet MAC addresses as vrt writes them ("52:54:00:ab:cd:ef").
 *
 * Pure helpers only: which addresses were ever handed out is kept in the
 * registry (install/mac-addresses.txt) by the launcher. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define MAC_LEN 6
#define MAC_STRLEN 18           /* "xx:xx:xx:xx:xx:xx" and its NUL */

/* Parses exactly "xx:xx:xx:xx:xx:xx": six pairs of hex digits (either
 * case) separated by ':', nothing before or after.
 * Returns 0 and the address in RET, or -EINVAL. Syntax only: see
 * mac_validate() for what a VM may use. */
int mac_parse(const char *s, uint8_t ret[MAC_LEN]);

/* Writes MAC as "xx:xx:xx:xx:xx:xx" in lowercase to RET. */
void mac_format(const uint8_t mac[MAC_LEN], char ret[MAC_STRLEN]);

/* Checks that a VM may use MAC: not all-zero and unicast (the multicast
 * bit, bit 0 of the first octet, clear; this also excludes broadcast).
 * Locally administered addresses (like QEMU's 52:54:00) are fine.
 * Returns 0, or -EINVAL with a one-line reason in ERR (ERR may be NULL). */
int mac_validate(const uint8_t mac[MAC_LEN], char *err, size_t errlen);

/* Writes a random address 52:54:00:xx:xx:xx (QEMU's range) to RET, the
 * last three octets from getrandom(). The caller checks it against the
 * registry of addresses already handed out.
 * Returns 0, or a negative errno from getrandom(). */
int mac_generate(uint8_t ret[MAC_LEN]);
