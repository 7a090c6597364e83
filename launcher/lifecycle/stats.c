#include "launcher/lifecycle/stats.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "launcher/core/paths.h"
#include "launcher/core/procstat.h"
#include "launcher/core/runtime.h"
#include "launcher/core/util.h"
#include "launcher/core/vmstate.h"
#include "net/tap.h"
#include "qmp/qmp.h"

#define MAX_VCPU_THREADS 512

/* Reads a /proc file (st_size is 0 there, so read to EOF) into buf. */
static int read_proc(const char *path, char *buf, size_t len) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        size_t got = 0;
        if (fd < 0)
                return -errno;
        for (;;) {
                ssize_t n = read(fd, buf + got, len - 1 - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int r = -errno;
                        close(fd);
                        return r;
                }
                if (n == 0 || (got += (size_t)n) == len - 1)
                        break;
        }
        close(fd);
        buf[got] = '\0';
        return 0;
}

double stats_ticks_to_seconds(uint64_t ticks) {
        long hz = sysconf(_SC_CLK_TCK);
        return hz > 0 ? (double)ticks / (double)hz : 0;
}

static json_object *member(json_object *o, const char *key) {
        json_object *v;
        return o && json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static const char *member_str(json_object *o, const char *key) {
        json_object *v = member(o, key);
        return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static uint64_t member_u64(json_object *o, const char *key) {
        json_object *v = member(o, key);
        if (!v || !json_object_is_type(v, json_type_int))
                return 0;
        int64_t x = json_object_get_int64(v);
        return x > 0 ? (uint64_t)x : 0;
}

/* The name a user knows a disk by: the legacy device name, else the qdev
 * id ("/machine/peripheral/disk0/virtio-backend" is "disk0"), else the
 * node name. */
static void disk_id(json_object *b, char *buf, size_t len) {
        const char *dev = member_str(b, "device"), *qdev = member_str(b, "qdev");
        if (dev && *dev) {
                snprintf(buf, len, "%s", dev);
        } else if (qdev && strncmp(qdev, "/machine/peripheral/", 20) == 0) {
                snprintf(buf, len, "%s", qdev + 20);
                buf[strcspn(buf, "/")] = '\0';
        } else if (qdev && *qdev) {
                snprintf(buf, len, "%s", qdev);
        } else {
                snprintf(buf, len, "%s", member_str(b, "node-name") ? member_str(b, "node-name") : "?");
        }
}

size_t stats_parse_qmp(struct stats_vm *v, json_object *status, json_object *cpus, json_object *memory,
                       json_object *balloon, json_object *block, pid_t *tids, size_t max_tids) {
        size_t n_tids = 0;
        const char *s = member_str(status, "status");
        snprintf(v->qemu_status, sizeof v->qemu_status, "%s", s ? s : "");
        v->vcpus = 0;
        if (cpus && json_object_is_type(cpus, json_type_array)) {
                v->vcpus = (unsigned)json_object_array_length(cpus);
                for (size_t k = 0; k < json_object_array_length(cpus); k++) {
                        pid_t tid = (pid_t)member_u64(json_object_array_get_idx(cpus, k), "thread-id");
                        bool seen = tid <= 0;
                        /* Single-threaded TCG runs every vCPU on one thread: count it once. */
                        for (size_t j = 0; j < n_tids && !seen; j++)
                                seen = tids[j] == tid;
                        if (!seen && n_tids < max_tids)
                                tids[n_tids++] = tid;
                }
        }
        v->memory_bytes = member_u64(memory, "base-memory");
        v->balloon_bytes = member_u64(balloon, "actual");
        v->n_disks = 0;
        if (block && json_object_is_type(block, json_type_array)) {
                for (size_t k = 0; k < json_object_array_length(block) && v->n_disks < STATS_DISKS_MAX; k++) {
                        json_object *b = json_object_array_get_idx(block, k), *st = member(b, "stats");
                        struct stats_disk *d = &v->disks[v->n_disks++];
                        *d = (struct stats_disk){ 0 };
                        disk_id(b, d->id, sizeof d->id);
                        d->rd_bytes = member_u64(st, "rd_bytes");
                        d->wr_bytes = member_u64(st, "wr_bytes");
                        d->rd_ops = member_u64(st, "rd_operations");
                        d->wr_ops = member_u64(st, "wr_operations");
                }
        }
        return n_tids;
}

/* What vrt list calls a VM that does not run. */
static void stopped_state(struct stats_vm *v, const struct vm_paths *p, const struct instance *inst) {
        struct stat st;
        const char *s;
        if (stat(p->destroyed, &st) == 0)
                s = "destroyed";
        else if (!inst)
                s = "invalid";
        else {
                enum firstboot_state fs = firstboot_state_of(p->vm_dir, inst->init != NULL);
                s = fs == FIRSTBOOT_CREATED ? "stopped" : firstboot_state_to_string(fs);
        }
        snprintf(v->state, sizeof v->state, "%s", s);
}

static int remaining(int64_t deadline) {
        int64_t left = deadline - now_ms();
        return left > 0 ? (int)left : 0;
}

/* Runs one query; NULL (and, unless optional, a note in v->error) when it fails. */
static json_object *query(struct stats_vm *v, struct qmp *q, const char *cmd, int64_t deadline, bool optional) {
        char err[200];
        json_object *ret = NULL;
        int r = qmp_execute(q, cmd, NULL, remaining(deadline), &ret, err, sizeof err);
        if (r < 0) {
                /* A missing balloon device is an error reply, and no fault. */
                if (!optional || r != -EREMOTEIO) {
                        if (!v->error[0])
                                snprintf(v->error, sizeof v->error, "%s: %s", cmd, err);
                        v->responding = false;
                }
                return NULL;
        }
        return ret;
}

/* The tap counters of NIC k, from the network namespace QEMU runs in. */
static void nic_counters(struct stats_vm *v, const char *net_dev) {
        for (unsigned k = 0; k < v->n_nics; k++) {
                struct stats_nic *n = &v->nics[k];
                struct procstat_netdev c;
                if (!n->tap[0] || !net_dev || procstat_parse_net_dev(net_dev, n->tap, &c) < 0)
                        continue;
                /* The host's rx on a tap is what the guest sent. */
                n->has_counters = true;
                n->rx_bytes = c.tx_bytes;
                n->rx_packets = c.tx_packets;
                n->tx_bytes = c.rx_bytes;
                n->tx_packets = c.rx_packets;
        }
}

static void sample_running(const struct stats_options *o, const struct vm_paths *p, struct stats_vm *v) {
        int64_t deadline = now_ms() + o->timeout_ms;
        struct qmp *q = NULL;
        char err[200], path[64], buf[16384];
        pid_t tids[MAX_VCPU_THREADS];
        size_t n_tids;
        uint64_t x;

        v->responding = true;
        if (qmp_connect_unix(p->monitor_sock, 0, &q, err, sizeof err) < 0 ||
            qmp_handshake(q, remaining(deadline), err, sizeof err) < 0) {
                snprintf(v->error, sizeof v->error, "QMP: %s", err);
                v->responding = false;
                qmp_free(q);
                return;
        }
        json_object *status = query(v, q, "query-status", deadline, false);
        json_object *cpus = v->responding ? query(v, q, "query-cpus-fast", deadline, false) : NULL;
        json_object *memory = v->responding ? query(v, q, "query-memory-size-summary", deadline, false) : NULL;
        json_object *balloon = v->responding ? query(v, q, "query-balloon", deadline, true) : NULL;
        json_object *block = v->responding ? query(v, q, "query-blockstats", deadline, false) : NULL;
        qmp_free(q);
        n_tids = stats_parse_qmp(v, status, cpus, memory, balloon, block, tids, MAX_VCPU_THREADS);
        json_object_put(status);
        json_object_put(cpus);
        json_object_put(memory);
        json_object_put(balloon);
        json_object_put(block);
        if (!v->responding)
                return;

        /* The vCPU threads belong to QEMU: their thread group is its pid. */
        if (n_tids > 0) {
                snprintf(path, sizeof path, "/proc/%d/status", (int)tids[0]);
                if (read_proc(path, buf, sizeof buf) == 0 && procstat_parse_status(buf, "Tgid", &x) == 0)
                        v->qemu_pid = (pid_t)x;
        }
        if (v->qemu_pid <= 0) {
                snprintf(v->error, sizeof v->error, "no vCPU thread of QEMU found in /proc");
                v->responding = false;
                return;
        }
        for (size_t k = 0; k < n_tids; k++) {
                snprintf(path, sizeof path, "/proc/%d/task/%d/stat", (int)v->qemu_pid, (int)tids[k]);
                if (read_proc(path, buf, sizeof buf) == 0 && procstat_parse_stat(buf, &x) == 0)
                        v->vcpu_ticks += x;
        }
        snprintf(path, sizeof path, "/proc/%d/stat", (int)v->qemu_pid);
        if (read_proc(path, buf, sizeof buf) == 0 && procstat_parse_stat(buf, &x) == 0)
                v->qemu_ticks = x;
        snprintf(path, sizeof path, "/proc/%d/status", (int)v->qemu_pid);
        if (read_proc(path, buf, sizeof buf) == 0 && procstat_parse_status(buf, "VmRSS", &x) == 0)
                v->rss_bytes = x * 1024;
        snprintf(path, sizeof path, "/proc/%d/net/dev", (int)v->qemu_pid);
        nic_counters(v, read_proc(path, buf, sizeof buf) == 0 ? buf : NULL);
}

int stats_sample(const struct stats_options *o, const char *name, struct stats_vm *ret) {
        struct vm_paths p;
        struct instance *inst = NULL;
        struct stat st;
        char err[256];

        *ret = (struct stats_vm){ .uptime = -1 };
        snprintf(ret->name, sizeof ret->name, "%s", name);
        if (config_check_vm_name(name, o->runtime_dir, ret->error, sizeof ret->error) < 0)
                return -EINVAL;
        if (vm_paths_init(&p, o->root, o->runtime_dir, name) < 0)
                return -ENOMEM;
        ret->running = runtime_is_running(&p);
        if (!ret->running && stat(p.vm_dir, &st) < 0) {
                snprintf(ret->error, sizeof ret->error, "no such VM %s (%s: %s)", name, p.vm_dir, strerror(errno));
                vm_paths_done(&p);
                return -ENOENT;
        }
        if (instance_load(p.instance, name, o->runtime_dir, &inst, err, sizeof err) < 0)
                snprintf(ret->error, sizeof ret->error, "%s", err);
        if (inst && inst->nics[0].net != NET_NONE) {
                for (unsigned k = 0; k < inst->n_nics; k++) {
                        struct stats_nic *n = &ret->nics[ret->n_nics++];
                        n->index = k;
                        n->net = inst->nics[k].net;
                        if (n->net == NET_BRIDGE && tap_name_for_vm(name, k, n->tap) < 0)
                                n->tap[0] = '\0';
                }
        }
        ret->time_ms = now_ms();
        if (ret->running) {
                pid_t pid;
                snprintf(ret->state, sizeof ret->state, "running");
                ret->error[0] = '\0';
                /* The pid file is written once, when the supervisor starts. */
                if (runtime_read_pid(p.pid_file, &pid) == 0 && stat(p.pid_file, &st) == 0) {
                        ret->uptime = (long long)(time(NULL) - st.st_mtime);
                        if (ret->uptime < 0)
                                ret->uptime = 0;
                }
                sample_running(o, &p, ret);
        } else {
                stopped_state(ret, &p, inst);
        }
        instance_free(inst);
        vm_paths_done(&p);
        return 0;
}

static double rate(uint64_t now, uint64_t before, double secs) {
        return now >= before ? (double)(now - before) / secs : 0;
}

void stats_rates(struct stats_vm *cur, const struct stats_vm *prev) {
        cur->has_rates = false;
        if (!cur->responding || !prev->responding || cur->qemu_pid != prev->qemu_pid || cur->time_ms <= prev->time_ms)
                return;
        double secs = (double)(cur->time_ms - prev->time_ms) / 1000.0;
        cur->interval = secs;
        cur->vcpus_busy = cur->vcpu_ticks >= prev->vcpu_ticks
                ? stats_ticks_to_seconds(cur->vcpu_ticks - prev->vcpu_ticks) / secs : 0;
        cur->cpu_percent = cur->vcpus ? cur->vcpus_busy / cur->vcpus * 100.0 : 0;
        cur->disk_rd_rate = cur->disk_wr_rate = cur->net_rx_rate = cur->net_tx_rate = 0;
        for (unsigned k = 0; k < cur->n_disks; k++) {
                struct stats_disk *d = &cur->disks[k];
                for (unsigned j = 0; j < prev->n_disks; j++) {
                        const struct stats_disk *e = &prev->disks[j];
                        if (strcmp(d->id, e->id) != 0)
                                continue;
                        d->rd_bytes_rate = rate(d->rd_bytes, e->rd_bytes, secs);
                        d->wr_bytes_rate = rate(d->wr_bytes, e->wr_bytes, secs);
                        d->rd_ops_rate = rate(d->rd_ops, e->rd_ops, secs);
                        d->wr_ops_rate = rate(d->wr_ops, e->wr_ops, secs);
                        cur->disk_rd_rate += d->rd_bytes_rate;
                        cur->disk_wr_rate += d->wr_bytes_rate;
                        break;
                }
        }
        for (unsigned k = 0; k < cur->n_nics; k++) {
                struct stats_nic *n = &cur->nics[k];
                for (unsigned j = 0; j < prev->n_nics; j++) {
                        const struct stats_nic *e = &prev->nics[j];
                        if (e->index != n->index || !n->has_counters || !e->has_counters)
                                continue;
                        n->rx_bytes_rate = rate(n->rx_bytes, e->rx_bytes, secs);
                        n->tx_bytes_rate = rate(n->tx_bytes, e->tx_bytes, secs);
                        n->rx_packets_rate = rate(n->rx_packets, e->rx_packets, secs);
                        n->tx_packets_rate = rate(n->tx_packets, e->tx_packets, secs);
                        cur->net_rx_rate += n->rx_bytes_rate;
                        cur->net_tx_rate += n->tx_bytes_rate;
                        break;
                }
        }
        cur->has_rates = true;
}

static json_object *u64_json(uint64_t x) {
        return json_object_new_int64(x > INT64_MAX ? INT64_MAX : (int64_t)x);
}

/* A number with at most 3 decimals, so the JSON stays readable. */
static json_object *num_json(double x) {
        char buf[64];
        snprintf(buf, sizeof buf, "%.3f", x);
        return json_object_new_double_s(x, buf);
}

static json_object *rate_json(const struct stats_vm *v, double x) {
        return v->has_rates ? num_json(x) : NULL;
}

json_object *stats_to_json(const struct stats_vm *v) {
        json_object *o = json_object_new_object();
        bool live = v->responding;
        if (!o)
                return NULL;
        json_object_object_add(o, "name", json_object_new_string(v->name));
        json_object_object_add(o, "state", json_object_new_string(v->state));
        json_object_object_add(o, "responding", json_object_new_boolean(live));
        json_object_object_add(o, "error", v->error[0] ? json_object_new_string(v->error) : NULL);
        json_object_object_add(o, "uptime_seconds", v->uptime >= 0 ? json_object_new_int64(v->uptime) : NULL);
        json_object_object_add(o, "qemu_pid", live ? json_object_new_int(v->qemu_pid) : NULL);
        json_object_object_add(o, "qemu_status", live && v->qemu_status[0] ? json_object_new_string(v->qemu_status) : NULL);
        json_object_object_add(o, "interval_seconds", rate_json(v, v->interval));

        json_object *cpu = json_object_new_object();
        json_object_object_add(cpu, "vcpus", live ? json_object_new_int((int)v->vcpus) : NULL);
        json_object_object_add(cpu, "seconds", live ? num_json(stats_ticks_to_seconds(v->vcpu_ticks)) : NULL);
        json_object_object_add(cpu, "qemu_seconds", live ? num_json(stats_ticks_to_seconds(v->qemu_ticks)) : NULL);
        json_object_object_add(cpu, "vcpus_busy", live ? rate_json(v, v->vcpus_busy) : NULL);
        json_object_object_add(cpu, "percent", live ? rate_json(v, v->cpu_percent) : NULL);
        json_object_object_add(o, "cpu", cpu);

        json_object *mem = json_object_new_object();
        json_object_object_add(mem, "resident_bytes", live ? u64_json(v->rss_bytes) : NULL);
        json_object_object_add(mem, "guest_bytes", live && v->memory_bytes ? u64_json(v->memory_bytes) : NULL);
        json_object_object_add(mem, "balloon_bytes", live && v->balloon_bytes ? u64_json(v->balloon_bytes) : NULL);
        json_object_object_add(o, "memory", mem);

        json_object *disks = json_object_new_array();
        for (unsigned k = 0; live && k < v->n_disks; k++) {
                const struct stats_disk *d = &v->disks[k];
                json_object *x = json_object_new_object();
                json_object_object_add(x, "id", json_object_new_string(d->id));
                json_object_object_add(x, "rd_bytes", u64_json(d->rd_bytes));
                json_object_object_add(x, "wr_bytes", u64_json(d->wr_bytes));
                json_object_object_add(x, "rd_ops", u64_json(d->rd_ops));
                json_object_object_add(x, "wr_ops", u64_json(d->wr_ops));
                json_object_object_add(x, "rd_bytes_per_second", rate_json(v, d->rd_bytes_rate));
                json_object_object_add(x, "wr_bytes_per_second", rate_json(v, d->wr_bytes_rate));
                json_object_object_add(x, "rd_ops_per_second", rate_json(v, d->rd_ops_rate));
                json_object_object_add(x, "wr_ops_per_second", rate_json(v, d->wr_ops_rate));
                json_object_array_add(disks, x);
        }
        json_object_object_add(o, "disks", disks);

        json_object *nics = json_object_new_array();
        for (unsigned k = 0; k < v->n_nics; k++) {
                const struct stats_nic *n = &v->nics[k];
                bool c = live && n->has_counters;
                json_object *x = json_object_new_object();
                json_object_object_add(x, "index", json_object_new_int((int)n->index));
                json_object_object_add(x, "net", json_object_new_string(net_mode_to_string(n->net)));
                json_object_object_add(x, "tap", n->tap[0] ? json_object_new_string(n->tap) : NULL);
                json_object_object_add(x, "rx_bytes", c ? u64_json(n->rx_bytes) : NULL);
                json_object_object_add(x, "tx_bytes", c ? u64_json(n->tx_bytes) : NULL);
                json_object_object_add(x, "rx_packets", c ? u64_json(n->rx_packets) : NULL);
                json_object_object_add(x, "tx_packets", c ? u64_json(n->tx_packets) : NULL);
                json_object_object_add(x, "rx_bytes_per_second", c ? rate_json(v, n->rx_bytes_rate) : NULL);
                json_object_object_add(x, "tx_bytes_per_second", c ? rate_json(v, n->tx_bytes_rate) : NULL);
                json_object_object_add(x, "rx_packets_per_second", c ? rate_json(v, n->rx_packets_rate) : NULL);
                json_object_object_add(x, "tx_packets_per_second", c ? rate_json(v, n->tx_packets_rate) : NULL);
                json_object_array_add(nics, x);
        }
        json_object_object_add(o, "nics", nics);
        return o;
}

char *stats_prom_escape(const char *s, char *buf, size_t len) {
        size_t o = 0;
        for (; *s && o + 3 < len; s++) {
                if (*s == '\\' || *s == '"') {
                        buf[o++] = '\\';
                        buf[o++] = *s;
                } else if (*s == '\n') {
                        buf[o++] = '\\';
                        buf[o++] = 'n';
                } else {
                        buf[o++] = *s;
                }
        }
        if (len)
                buf[o < len ? o : len - 1] = '\0';
        return buf;
}

/* One metric family: which value of a VM (or of its disk or NIC) it shows. */
enum scope { PER_VM, PER_DISK, PER_NIC };
struct family {
        const char *name, *type, *help;
        enum scope scope;
        bool live_only;         /* only for VMs that answered */
        double (*value)(const struct stats_vm *v, unsigned k);
};

static double f_running(const struct stats_vm *v, unsigned k) { return v->running; }
static double f_responding(const struct stats_vm *v, unsigned k) { return v->responding; }
static double f_uptime(const struct stats_vm *v, unsigned k) { return (double)v->uptime; }
static double f_vcpus(const struct stats_vm *v, unsigned k) { return v->vcpus; }
static double f_cpu(const struct stats_vm *v, unsigned k) { return stats_ticks_to_seconds(v->vcpu_ticks); }
static double f_qcpu(const struct stats_vm *v, unsigned k) { return stats_ticks_to_seconds(v->qemu_ticks); }
static double f_rss(const struct stats_vm *v, unsigned k) { return (double)v->rss_bytes; }
static double f_mem(const struct stats_vm *v, unsigned k) { return (double)v->memory_bytes; }
static double f_balloon(const struct stats_vm *v, unsigned k) { return (double)v->balloon_bytes; }
static double f_rd_b(const struct stats_vm *v, unsigned k) { return (double)v->disks[k].rd_bytes; }
static double f_wr_b(const struct stats_vm *v, unsigned k) { return (double)v->disks[k].wr_bytes; }
static double f_rd_o(const struct stats_vm *v, unsigned k) { return (double)v->disks[k].rd_ops; }
static double f_wr_o(const struct stats_vm *v, unsigned k) { return (double)v->disks[k].wr_ops; }
static double f_rx_b(const struct stats_vm *v, unsigned k) { return (double)v->nics[k].rx_bytes; }
static double f_tx_b(const struct stats_vm *v, unsigned k) { return (double)v->nics[k].tx_bytes; }
static double f_rx_p(const struct stats_vm *v, unsigned k) { return (double)v->nics[k].rx_packets; }
static double f_tx_p(const struct stats_vm *v, unsigned k) { return (double)v->nics[k].tx_packets; }

static const struct family families[] = {
        { "vrt_vm_running", "gauge", "1 if a supervisor runs the VM on this host.", PER_VM, false, f_running },
        { "vrt_vm_responding", "gauge", "1 if the running VM's QEMU answered QMP within the timeout.", PER_VM, false, f_responding },
        { "vrt_vm_uptime_seconds", "gauge", "Seconds since the VM's supervisor started.", PER_VM, true, f_uptime },
        { "vrt_vm_vcpus", "gauge", "Number of vCPUs.", PER_VM, true, f_vcpus },
        { "vrt_vm_cpu_seconds_total", "counter", "CPU time used by the VM's vCPU threads.", PER_VM, true, f_cpu },
        { "vrt_vm_qemu_cpu_seconds_total", "counter", "CPU time used by the whole QEMU process (vCPUs, I/O, emulation).", PER_VM, true, f_qcpu },
        { "vrt_vm_memory_resident_bytes", "gauge", "Resident memory of the QEMU process.", PER_VM, true, f_rss },
        { "vrt_vm_memory_bytes", "gauge", "Guest RAM size.", PER_VM, true, f_mem },
        { "vrt_vm_balloon_bytes", "gauge", "Guest memory the balloon leaves the guest (VMs with a balloon only).", PER_VM, true, f_balloon },
        { "vrt_vm_disk_read_bytes_total", "counter", "Bytes read by the guest from a disk.", PER_DISK, true, f_rd_b },
        { "vrt_vm_disk_written_bytes_total", "counter", "Bytes written by the guest to a disk.", PER_DISK, true, f_wr_b },
        { "vrt_vm_disk_reads_total", "counter", "Read operations of the guest on a disk.", PER_DISK, true, f_rd_o },
        { "vrt_vm_disk_writes_total", "counter", "Write operations of the guest on a disk.", PER_DISK, true, f_wr_o },
        { "vrt_vm_network_receive_bytes_total", "counter", "Bytes received by the guest on a bridged NIC.", PER_NIC, true, f_rx_b },
        { "vrt_vm_network_transmit_bytes_total", "counter", "Bytes sent by the guest on a bridged NIC.", PER_NIC, true, f_tx_b },
        { "vrt_vm_network_receive_packets_total", "counter", "Packets received by the guest on a bridged NIC.", PER_NIC, true, f_rx_p },
        { "vrt_vm_network_transmit_packets_total", "counter", "Packets sent by the guest on a bridged NIC.", PER_NIC, true, f_tx_p },
};

char *stats_prometheus(const struct stats_vm *vms, size_t n) {
        char *text = NULL, vm[2 * VM_NAME_MAX + 8], dev[160];
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f)
                return NULL;
        for (size_t fi = 0; fi < sizeof families / sizeof families[0]; fi++) {
                const struct family *m = &families[fi];
                fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, m->type);
                for (size_t i = 0; i < n; i++) {
                        const struct stats_vm *v = &vms[i];
                        if (m->live_only && !v->responding)
                                continue;
                        if (m->value == f_balloon && !v->balloon_bytes)
                                continue;
                        stats_prom_escape(v->name, vm, sizeof vm);
                        if (m->scope == PER_VM)
                                fprintf(f, "%s{vm=\"%s\"} %.15g\n", m->name, vm, m->value(v, 0));
                        else if (m->scope == PER_DISK)
                                for (unsigned k = 0; k < v->n_disks; k++)
                                        fprintf(f, "%s{vm=\"%s\",disk=\"%s\"} %.15g\n", m->name, vm,
                                                stats_prom_escape(v->disks[k].id, dev, sizeof dev), m->value(v, k));
                        else
                                for (unsigned k = 0; k < v->n_nics; k++)
                                        if (v->nics[k].has_counters)
                                                fprintf(f, "%s{vm=\"%s\",nic=\"%u\",tap=\"%s\"} %.15g\n", m->name, vm,
                                                        v->nics[k].index, v->nics[k].tap, m->value(v, k));
                }
        }
        if (fclose(f) != 0) {
                free(text);
                return NULL;
        }
        return text;
}
