/* Minimal synchronous rtnetlink client, internal to net/ (tap.c, bridge.c).
 *
 * Netlink rather than ioctls or /sys: it is the only interface that sets an
 * interface alias, it names the link kind (IFLA_INFO_KIND) directly, and,
 * unlike /sys/class/net, it always answers for the caller's own network
 * namespace. Every request is acknowledged and its error checked. */
#pragma once

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>

/* What net/ needs to know about one link. */
struct rtnl_link {
        int ifindex;
        unsigned flags;         /* IFF_* as in ifinfomsg.ifi_flags */
        unsigned mtu;
        int master;             /* ifindex of the master, 0 if none */
        char kind[32];          /* IFLA_INFO_KIND ("bridge", "tun", ...), "" if none */
        char alias[256];        /* IFLA_IFALIAS, "" if none */
};

/* One change request; fields left at their zero value are not touched. */
struct rtnl_change {
        const char *alias;      /* NULL: leave */
        unsigned mtu;           /* 0: leave */
        int master;             /* 0: leave; otherwise the master's ifindex */
        bool up;                /* set IFF_UP */
};

/* Returns true if the kernel would accept NAME as an interface name
 * (non-empty, shorter than IFNAMSIZ, not "." or "..", no '/', ':' or
 * whitespace). We also refuse '%', which TUNSETIFF would expand. */
bool rtnl_ifname_valid(const char *name);

/* Looks up NAME in the caller's network namespace.
 * Returns 0 and fills *ret, -ENODEV if there is no such interface, or
 * another negative errno. */
int rtnl_link_get(const char *name, struct rtnl_link *ret);

/* Applies CHANGE to the link IFINDEX in one acknowledged RTM_NEWLINK.
 * Returns 0 or a negative errno; on failure WHY (if not NULL) receives the
 * kernel's extended-ack text, or strerror() when the kernel sent none. */
int rtnl_link_change(int ifindex, const struct rtnl_change *change, char *why, size_t whylen);
