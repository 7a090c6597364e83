#include "net/tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "net/rtnl.h"

#define TAP_PREFIX "vrt"
#define TAP_VM_CHARS 4
#define TAP_HASH_CHARS 7

static const char base32[] = "0123456789abcdefghijklmnopqrstuv";

/* FNV-1a spreads short strings poorly over its high bits; the murmur3
 * finaliser mixes every input bit into the bits we keep. */
static uint64_t name_hash(const char *s, size_t n) {
        uint64_t h = UINT64_C(0xcbf29ce484222325);
        for (size_t i = 0; i < n; i++) {
                h ^= (unsigned char)s[i];
                h *= UINT64_C(0x100000001b3);
        }
        h ^= h >> 33;
        h *= UINT64_C(0xff51afd7ed558ccd);
        h ^= h >> 33;
        h *= UINT64_C(0xc4ceb9fe1a85ec53);
        h ^= h >> 33;
        return h;
}

static bool ifname_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_';
}

int tap_name_for_vm(const char *vm_name, unsigned nic_index, char ret[IFNAMSIZ]) {
        char name[IFNAMSIZ];
        size_t k = 0;

        if (!vm_name || nic_index >= TAP_NIC_MAX)
                return -EINVAL;
        size_t n = strnlen(vm_name, TAP_VM_NAME_MAX + 1);
        if (n == 0 || n > TAP_VM_NAME_MAX)
                return -EINVAL;

        memcpy(name, TAP_PREFIX, strlen(TAP_PREFIX));
        k = strlen(TAP_PREFIX);
        for (size_t i = 0; i < n && i < TAP_VM_CHARS; i++)
                name[k++] = ifname_char(vm_name[i]) ? vm_name[i] : '-';
        uint64_t h = name_hash(vm_name, n);
        for (int i = 0; i < TAP_HASH_CHARS; i++)
                name[k++] = base32[(h >> (64 - 5 * (i + 1))) & 31];
        name[k++] = base32[nic_index];
        name[k] = '\0';

        _Static_assert(sizeof TAP_PREFIX - 1 + TAP_VM_CHARS + TAP_HASH_CHARS + 1 < IFNAMSIZ,
                       "tap names must fit IFNAMSIZ");
        memcpy(ret, name, k + 1);
        return 0;
}

int tap_open(const char *ifname, bool vnet_hdr, int *ret_fd, char *err, size_t errlen) {
        struct ifreq ifr = { 0 };
        int fd = -1, r;

        if (!rtnl_ifname_valid(ifname)) {
                snprintf(err, errlen, "tap \"%.32s\": invalid interface name", ifname ? ifname : "");
                return -EINVAL;
        }

        fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                snprintf(err, errlen, "tap %s: cannot open /dev/net/tun: %s", ifname, strerror(-r));
                goto fail;
        }

        /* IFF_TUN_EXCL: an existing interface of this name (a running
         * instance's tap, a persistent leftover, anything else) is an error
         * rather than something to attach to. */
        snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL | (vnet_hdr ? IFF_VNET_HDR : 0);
        if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
                r = -errno;
                if (r == -EBUSY)
                        snprintf(err, errlen, "tap %s: interface already exists (is another instance of this VM running?)", ifname);
                else
                        snprintf(err, errlen, "tap %s: TUNSETIFF: %s", ifname, strerror(-r));
                goto fail;
        }

        /* Trust but verify: the kernel must have made exactly what we asked for. */
        struct ifreq got = { 0 };
        if (ioctl(fd, TUNGETIFF, &got) < 0) {
                r = -errno;
                snprintf(err, errlen, "tap %s: TUNGETIFF: %s", ifname, strerror(-r));
                goto fail;
        }
        short want = IFF_TAP | IFF_NO_PI | (vnet_hdr ? IFF_VNET_HDR : 0);
        short mask = IFF_TAP | IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | IFF_PERSIST;
        if (strncmp(got.ifr_name, ifname, IFNAMSIZ) != 0 || (got.ifr_flags & mask) != want) {
                r = -EPROTO;
                snprintf(err, errlen, "tap %s: kernel created \"%.16s\" with flags 0x%x, expected 0x%x",
                         ifname, got.ifr_name, (unsigned)(got.ifr_flags & mask), (unsigned)want);
                goto fail;
        }

        *ret_fd = fd;
        return 0;

fail:
        if (fd >= 0)
                close(fd);
        return r;
}

static int change_link(const char *ifname, const char *what, const struct rtnl_change *c,
                       char *err, size_t errlen) {
        struct rtnl_link link;
        char why[256] = "";
        int r;

        if (!rtnl_ifname_valid(ifname)) {
                snprintf(err, errlen, "interface \"%.32s\": invalid interface name", ifname ? ifname : "");
                return -EINVAL;
        }
        r = rtnl_link_get(ifname, &link);
        if (r == -ENODEV) {
                snprintf(err, errlen, "interface %s: no such interface", ifname);
                return r;
        }
        if (r < 0) {
                snprintf(err, errlen, "interface %s: cannot look it up: %s", ifname, strerror(-r));
                return r;
        }
        r = rtnl_link_change(link.ifindex, c, why, sizeof why);
        if (r < 0) {
                snprintf(err, errlen, "interface %s: cannot %s: %s", ifname, what, why);
                return r;
        }
        return 0;
}

int tap_set_alias(const char *ifname, const char *alias, char *err, size_t errlen) {
        if (!alias || strnlen(alias, TAP_ALIAS_MAX + 1) > TAP_ALIAS_MAX) {
                snprintf(err, errlen, "interface %.32s: alias missing or longer than %d bytes",
                         ifname ? ifname : "?", TAP_ALIAS_MAX);
                return -EINVAL;
        }
        struct rtnl_change c = { .alias = alias };
        return change_link(ifname, "set alias", &c, err, errlen);
}

int tap_set_up(const char *ifname, char *err, size_t errlen) {
        struct rtnl_change c = { .up = true };
        return change_link(ifname, "bring it up", &c, err, errlen);
}

int tap_vhost_open(int *ret_fd) {
        int fd = open("/dev/vhost-net", O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        *ret_fd = fd;
        return 0;
}
