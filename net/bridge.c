#include "net/bridge.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "net/rtnl.h"

/* bridge_check() with the bridge's link returned for bridge_attach(). */
static int check_bridge(const char *bridge, struct rtnl_link *ret, char *err, size_t errlen) {
        struct rtnl_link link;
        int r;

        if (!rtnl_ifname_valid(bridge)) {
                snprintf(err, errlen, "bridge \"%.32s\": invalid interface name", bridge ? bridge : "");
                return -EINVAL;
        }
        r = rtnl_link_get(bridge, &link);
        if (r == -ENODEV) {
                snprintf(err, errlen, "bridge %s: no such interface", bridge);
                return r;
        }
        if (r < 0) {
                snprintf(err, errlen, "bridge %s: cannot look it up: %s", bridge, strerror(-r));
                return r;
        }
        if (strcmp(link.kind, "bridge") != 0) {
                if (link.kind[0])
                        snprintf(err, errlen, "bridge %s: interface is not a bridge (it is a %s)", bridge, link.kind);
                else
                        snprintf(err, errlen, "bridge %s: interface is not a bridge", bridge);
                return -ENOTTY;
        }
        if (!(link.flags & IFF_UP)) {
                snprintf(err, errlen, "bridge %s: bridge is down (ip link set %s up)", bridge, bridge);
                return -ENETDOWN;
        }
        *ret = link;
        return 0;
}

int bridge_check(const char *bridge, char *err, size_t errlen) {
        struct rtnl_link link;
        return check_bridge(bridge, &link, err, errlen);
}

int bridge_attach(const char *bridge, const char *ifname, char *err, size_t errlen) {
        struct rtnl_link br, port;
        char why[256] = "";
        int r;

        r = check_bridge(bridge, &br, err, errlen);
        if (r < 0)
                return r;

        if (!rtnl_ifname_valid(ifname)) {
                snprintf(err, errlen, "bridge %s: port \"%.32s\": invalid interface name", bridge, ifname ? ifname : "");
                return -EINVAL;
        }
        r = rtnl_link_get(ifname, &port);
        if (r == -ENODEV) {
                snprintf(err, errlen, "bridge %s: port %s: no such interface", bridge, ifname);
                return r;
        }
        if (r < 0) {
                snprintf(err, errlen, "bridge %s: port %s: cannot look it up: %s", bridge, ifname, strerror(-r));
                return r;
        }
        if (port.ifindex == br.ifindex) {
                snprintf(err, errlen, "bridge %s: cannot be a port of itself", bridge);
                return -EINVAL;
        }

        if (port.mtu != br.mtu) {
                r = rtnl_link_change(port.ifindex, &(struct rtnl_change){ .mtu = br.mtu }, why, sizeof why);
                if (r < 0) {
                        snprintf(err, errlen, "bridge %s: port %s: cannot set MTU %u: %s", bridge, ifname, br.mtu, why);
                        return r;
                }
        }
        r = rtnl_link_change(port.ifindex, &(struct rtnl_change){ .master = br.ifindex }, why, sizeof why);
        if (r < 0) {
                snprintf(err, errlen, "bridge %s: cannot add port %s: %s", bridge, ifname, why);
                return r;
        }
        r = rtnl_link_change(port.ifindex, &(struct rtnl_change){ .up = true }, why, sizeof why);
        if (r < 0) {
                snprintf(err, errlen, "bridge %s: port %s: cannot bring it up: %s", bridge, ifname, why);
                return r;
        }
        return 0;
}
