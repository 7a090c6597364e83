/* stats: what a VM uses right now — CPU, memory, disks, NICs — for `vrt
 * stats`, `vrt top` and the Prometheus exposition. One sample of a running
 * VM is one QMP connection to its monitor.sock (query-status,
 * query-cpus-fast, query-memory-size-summary, query-balloon,
 * query-blockstats) plus /proc of the QEMU process: the CPU time of each
 * vCPU thread QEMU names, QEMU's resident memory, and the tap counters in
 * QEMU's network namespace. Every sample is bounded by a timeout; a VM that
 * does not answer in time is reported as not responding, with why.
 *
 * Counters are totals since QEMU started; rates need two samples of the
 * same VM (stats_rates). NIC counters are the guest's view: what the guest
 * received is what the host sent into its tap (as virsh domifstat). */
#pragma once

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "launcher/core/config.h"

struct json_object;

#define STATS_DISKS_MAX 16

struct stats_disk {
        char id[64];            /* the device id ("disk0"), else the node name */
        uint64_t rd_bytes, wr_bytes, rd_ops, wr_ops;
        /* per second, when stats_vm.has_rates */
        double rd_bytes_rate, wr_bytes_rate, rd_ops_rate, wr_ops_rate;
};

struct stats_nic {
        unsigned index;         /* 0 = net=, 1 = net.1=, ... */
        enum net_mode net;
        char tap[IFNAMSIZ];     /* "" for net=user */
        bool has_counters;      /* the tap was found */
        uint64_t rx_bytes, rx_packets, tx_bytes, tx_packets;   /* the guest's view */
        double rx_bytes_rate, tx_bytes_rate, rx_packets_rate, tx_packets_rate;
};

struct stats_vm {
        char name[VM_NAME_MAX + 1];
        char state[16];         /* as vrt list: running, stopped, destroyed, invalid, init-pending, init-failed */
        bool running;           /* a supervisor holds the lock */
        bool responding;        /* running, and QMP answered every query in time */
        char error[256];        /* why not responding (or why the VM is invalid) */
        int64_t time_ms;        /* when sampled, CLOCK_MONOTONIC */
        long long uptime;       /* seconds since the supervisor started; -1 when not running */
        pid_t qemu_pid;         /* 0 when unknown */
        char qemu_status[24];   /* QEMU's run state ("running", "paused"), "" when unknown */
        unsigned vcpus;         /* vCPUs QEMU reports */
        uint64_t vcpu_ticks;    /* CPU time of the vCPU threads, clock ticks */
        uint64_t qemu_ticks;    /* CPU time of the whole QEMU process */
        uint64_t rss_bytes;     /* QEMU's resident memory */
        uint64_t memory_bytes;  /* guest RAM (base memory), 0 when unknown */
        uint64_t balloon_bytes; /* the balloon's "actual", 0 without a balloon */
        struct stats_disk disks[STATS_DISKS_MAX];
        unsigned n_disks;
        struct stats_nic nics[VM_NICS_MAX];
        unsigned n_nics;        /* NICs of the instance (0 for net=none) */

        /* Filled by stats_rates(): */
        bool has_rates;
        double interval;        /* seconds between the two samples */
        double vcpus_busy;      /* vCPU seconds per second: 0 .. vcpus */
        double cpu_percent;     /* vcpus_busy / vcpus * 100 */
        double disk_rd_rate, disk_wr_rate, net_rx_rate, net_tx_rate;   /* bytes/s, all devices */
};

struct stats_options {
        const char *root;
        const char *runtime_dir;
        int timeout_ms;         /* for one VM's whole sample */
};

/* Samples VM NAME into *ret (always filled: state and error say what is
 * known). Returns 0 — also for a VM that is stopped or does not answer —
 * -EINVAL for a bad name (message in ret->error), -ENOENT when there is no
 * such VM, -ENOMEM. Several threads may sample (other VMs) at once. */
int stats_sample(const struct stats_options *o, const char *name, struct stats_vm *ret);

/* Seconds of CPU time from clock ticks. */
double stats_ticks_to_seconds(uint64_t ticks);

/* Fills cur's rates from an earlier sample prev of the same VM (nothing
 * when either did not respond, QEMU restarted in between, or no time
 * passed). Disks are matched by id, NICs by index. */
void stats_rates(struct stats_vm *cur, const struct stats_vm *prev);

/* The JSON object `vrt stats --json` prints for one VM (new reference,
 * NULL on allocation failure). */
struct json_object *stats_to_json(const struct stats_vm *v);

/* The Prometheus text exposition (format 0.0.4) for n VMs, each metric
 * family once with HELP and TYPE. Returns a new string or NULL. */
char *stats_prometheus(const struct stats_vm *vms, size_t n);

/* Writes s escaped as a Prometheus label value (\\, \" and \n) into buf;
 * returns buf, cut to len. */
char *stats_prom_escape(const char *s, char *buf, size_t len);

/* Fills the parts of *v that come from the QMP replies (status, vcpus,
 * memory, balloon, blockstats; NULL when the query failed or is absent)
 * — the pure half of stats_sample(), for tests. Thread ids of the vCPUs go
 * to tids (at most max_tids, duplicates removed); returns how many. */
size_t stats_parse_qmp(struct stats_vm *v, struct json_object *status, struct json_object *cpus,
                       struct json_object *memory, struct json_object *balloon, struct json_object *block,
                       pid_t *tids, size_t max_tids);
