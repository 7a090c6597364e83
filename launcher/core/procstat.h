/* procstat: pure parsers for the /proc files vrt stats reads — a thread's
 * or process's stat line, the status file, and a network namespace's
 * net/dev table. They take the text and open nothing, so tests feed them
 * fixed strings. */
#pragma once

#include <stdint.h>

/* CPU time from a /proc/PID/stat or /proc/PID/task/TID/stat line: utime +
 * stime (fields 14 and 15) in clock ticks. The command name (field 2, in
 * parentheses) may hold spaces and ')'; the fields are counted after the
 * last ')'. Returns 0, or -EINVAL for text that is not such a line. */
int procstat_parse_stat(const char *text, uint64_t *ret_ticks);

/* The number after "KEY:" in a /proc/PID/status text ("VmRSS:  1234 kB"
 * gives 1234, "Tgid:\t77" gives 77). Units are not converted. Returns 0,
 * -ENOENT when the key is missing, -EINVAL when its value is no number. */
int procstat_parse_status(const char *text, const char *key, uint64_t *ret);

/* One interface's counters from /proc/PID/net/dev, as the host counts
 * them (rx: received by the host from the interface). */
struct procstat_netdev {
        uint64_t rx_bytes, rx_packets, tx_bytes, tx_packets;
};

/* Finds IFNAME in a /proc/PID/net/dev text (two header lines, then
 * "NAME: rx_bytes rx_packets errs drop fifo frame compressed multicast
 * tx_bytes tx_packets ..."; a long counter may touch the colon). Returns 0,
 * -ENOENT when the interface is not listed, -EINVAL for a malformed line. */
int procstat_parse_net_dev(const char *text, const char *ifname, struct procstat_netdev *ret);
