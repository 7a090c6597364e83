/* tap: the VM's host-side network interface.
 *
 * The supervisor (root) creates the tap through /dev/net/tun, names it,
 * labels it with the VM's name and hands the open fd to QEMU
 * (`-netdev tap,fd=N`). The tap is not persistent: it disappears when the
 * last fd on it is closed, so no exit path of the VM can leak it.
 *
 * Tap names (tap_name_for_vm)
 * ---------------------------
 * Interface names hold at most 15 bytes, VM names up to 63, so the name is
 * derived, always the same way, from the VM name and the NIC's index:
 *
 *     "vrt" + P + H + N
 *     e.g. VM "web01", NIC 0:  "vrt" "web0" "32p0r0j" "0"  =  "vrtweb032p0r0j0"
 *
 *   P  the first 4 bytes of the VM name (fewer if the name is shorter);
 *      bytes outside [A-Za-z0-9_-] become '-' (a valid VM name has none);
 *   H  7 characters, base32 "0123456789abcdefghijklmnopqrstuv", of a 64-bit
 *      hash (FNV-1a, then the murmur3 finaliser) of the whole VM name: its
 *      top 35 bits, most significant first;
 *   N  the NIC index, one base32 character (0..31).
 *
 * The name is at most 3 + 4 + 7 + 1 = 15 bytes, and H and N always take the
 * last 8, so names parse unambiguously from the right. Two VMs can only
 * share a tap name if their names start with the same 4 bytes *and* their
 * 35-bit hashes agree: about n^2 / 2^36 for n such VMs on one host (1.5e-5
 * for a thousand). Even then nothing is silently shared: tap_open() refuses a
 * name that exists. The owning VM's full name is set as the interface alias
 * (tap_set_alias), which `ip link` prints.
 */
#pragma once

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>

#define TAP_VM_NAME_MAX 63      /* longest VM name (an RFC 1123 label) */
#define TAP_NIC_MAX 32          /* NIC indexes are 0 .. TAP_NIC_MAX - 1 */
#define TAP_ALIAS_MAX 255       /* longest alias, in bytes (IFALIASZ - 1) */

/* Writes the tap name for NIC NIC_INDEX of VM VM_NAME (see above) to RET.
 * Returns 0, or -EINVAL if VM_NAME is NULL, empty or longer than
 * TAP_VM_NAME_MAX bytes, or NIC_INDEX >= TAP_NIC_MAX. */
int tap_name_for_vm(const char *vm_name, unsigned nic_index, char ret[IFNAMSIZ]);

/* Creates the tap IFNAME (IFF_TAP | IFF_NO_PI, plus IFF_VNET_HDR if
 * VNET_HDR) and returns its fd, O_RDWR | O_CLOEXEC, in *RET_FD. The tap
 * exists as long as that fd (or a copy) is open. An existing interface of
 * that name is never reused.
 * Returns 0, or a negative errno with a one-line message in ERR:
 *   -EINVAL  IFNAME is not a valid interface name;
 *   -EBUSY   an interface IFNAME already exists (another instance running?);
 *   -EPERM   no CAP_NET_ADMIN; -ENOENT no /dev/net/tun; others as the kernel says. */
int tap_open(const char *ifname, bool vnet_hdr, int *ret_fd, char *err, size_t errlen);

/* Sets the alias of interface IFNAME (IFLA_IFALIAS; shown by `ip link`) to
 * ALIAS, normally the owning VM's name; "" clears it.
 * Returns 0, or a negative errno with a one-line message in ERR:
 *   -EINVAL  bad IFNAME, ALIAS NULL or longer than TAP_ALIAS_MAX bytes; -ENODEV no such interface. */
int tap_set_alias(const char *ifname, const char *alias, char *err, size_t errlen);

/* Brings interface IFNAME up (IFF_UP).
 * Returns 0, or a negative errno with a one-line message in ERR
 * (-EINVAL bad name, -ENODEV no such interface). */
int tap_set_up(const char *ifname, char *err, size_t errlen);

/* Opens /dev/vhost-net (O_RDWR | O_CLOEXEC) for QEMU's vhostfd=.
 * Returns 0 and the fd in *RET_FD, -ENOENT if the host has no vhost-net
 * (QEMU then uses its userspace virtio-net), or another negative errno. */
int tap_vhost_open(int *ret_fd);
