/* bridge: checks the host bridge a VM is to join and attaches its tap.
 *
 * Everything goes through rtnetlink in the caller's network namespace
 * (not /sys/class/net, which shows the namespace sysfs was mounted in).
 * The bridge itself is the operator's: vrt never creates, changes or
 * brings up a bridge. */
#pragma once

#include <stddef.h>

/* Checks that BRIDGE exists, is a Linux bridge (link kind "bridge") and is
 * administratively up (IFF_UP). Returns 0, or a negative errno with a
 * one-line message naming the bridge in ERR:
 *   -EINVAL    BRIDGE is not a valid interface name;
 *   -ENODEV    no such interface;
 *   -ENOTTY    the interface is not a bridge;
 *   -ENETDOWN  the bridge is down;
 *   others     netlink failures. */
int bridge_check(const char *bridge, char *err, size_t errlen);

/* Makes IFNAME (normally a fresh tap) a port of BRIDGE: checks BRIDGE as
 * bridge_check() does, sets IFNAME's MTU to the bridge's, sets the bridge
 * as its master, and brings IFNAME up — in that order, so the bridge never
 * sees a port with a different MTU (which would lower the bridge's MTU).
 * Returns 0, or a negative errno with a one-line message in ERR: the
 * bridge_check() errors, -ENODEV if IFNAME does not exist, or the kernel's
 * error for the step that failed. */
int bridge_attach(const char *bridge, const char *ifname, char *err, size_t errlen);
