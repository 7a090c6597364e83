/* Unit tests of procstat.c (the /proc parsers) and stats.c's pure half:
 * QMP replies into a sample, rates between samples, the JSON and the
 * Prometheus exposition. With --exposition it prints the exposition of
 * the fixture VMs instead, for `promtool check metrics` (test-stats-promtool.sh). */
#include <errno.h>
#include <json-c/json.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "launcher/core/procstat.h"
#include "launcher/lifecycle/stats.h"

/* --- procstat --- */

static void test_stat_line(void **state) {
        uint64_t t = 0;
        /* A thread name with spaces and parentheses: fields count after the last ')'. */
        const char *line = "4242 (CPU 0/TCG) (x)) R 4200 4242 4200 0 -1 4194368 1049 0 0 0 1234 56 0 0 20 0 "
                           "3 0 98765 123456789 2345 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_int_equal(procstat_parse_stat(line, &t), 0);
        assert_int_equal(t, 1234 + 56);
        assert_int_equal(procstat_parse_stat("4242 (qemu) R 1 2 3", &t), -EINVAL);
        assert_int_equal(procstat_parse_stat("no parenthesis at all", &t), -EINVAL);
        assert_int_equal(procstat_parse_stat("1 (a) R 1 1 1 0 -1 0 0 0 0 0 x 5 0", &t), -EINVAL);
        assert_int_equal(procstat_parse_stat("", &t), -EINVAL);
}

static void test_stat_of_self(void **state) {
        /* The kernel's own line for this process parses, and the CPU time
         * grows while we burn some. */
        char buf[4096];
        uint64_t before, after;
        FILE *f = fopen("/proc/self/stat", "re");
        assert_non_null(f);
        assert_non_null(fgets(buf, sizeof buf, f));
        fclose(f);
        assert_int_equal(procstat_parse_stat(buf, &before), 0);
        volatile unsigned long x = 0;
        for (;;) {
                for (unsigned long i = 0; i < 10000000; i++)
                        x += i;
                f = fopen("/proc/self/stat", "re");
                assert_non_null(f);
                assert_non_null(fgets(buf, sizeof buf, f));
                fclose(f);
                assert_int_equal(procstat_parse_stat(buf, &after), 0);
                if (after > before)
                        break;
        }
        assert_true(after > before);
}

static void test_status(void **state) {
        const char *text = "Name:\tqemu-system-x86\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t3724\nNgid:\t0\n"
                           "Pid:\t3724\nVmPeak:\t 1234 kB\nVmRSS:\t  259992 kB\nRssAnon:\t  13000 kB\nBroken:\tabc\n";
        uint64_t v = 0;
        assert_int_equal(procstat_parse_status(text, "VmRSS", &v), 0);
        assert_int_equal(v, 259992);
        assert_int_equal(procstat_parse_status(text, "Tgid", &v), 0);
        assert_int_equal(v, 3724);
        /* "Rss" must not match "RssAnon", nor "Vm" match "VmPeak". */
        assert_int_equal(procstat_parse_status(text, "Rss", &v), -ENOENT);
        assert_int_equal(procstat_parse_status(text, "Vm", &v), -ENOENT);
        assert_int_equal(procstat_parse_status(text, "Broken", &v), -EINVAL);

        char buf[4096];
        FILE *f = fopen("/proc/self/status", "re");
        assert_non_null(f);
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        assert_int_equal(procstat_parse_status(buf, "Tgid", &v), 0);
        assert_int_equal(v, (uint64_t)getpid());
}

static const char net_dev[] =
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
        "    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n"
        "vrtweb032p0r0j0: 5000 50 0 0 0 0 0 0 7000 70 0 0 0 0 0 0\n"
        "  eth0:123456789012 987654 0 1 0 0 0 3 11223344 5566 0 0 0 0 0 0\n"
        "  bad0: 1 2 3\n";

static void test_net_dev(void **state) {
        struct procstat_netdev c;
        assert_int_equal(procstat_parse_net_dev(net_dev, "vrtweb032p0r0j0", &c), 0);
        assert_int_equal(c.rx_bytes, 5000);
        assert_int_equal(c.rx_packets, 50);
        assert_int_equal(c.tx_bytes, 7000);
        assert_int_equal(c.tx_packets, 70);
        /* A counter that touches the colon. */
        assert_int_equal(procstat_parse_net_dev(net_dev, "eth0", &c), 0);
        assert_int_equal(c.rx_bytes, 123456789012ULL);
        assert_int_equal(c.tx_packets, 5566);
        assert_int_equal(procstat_parse_net_dev(net_dev, "eth", &c), -ENOENT);
        assert_int_equal(procstat_parse_net_dev(net_dev, "vrtweb032p0r0j1", &c), -ENOENT);
        assert_int_equal(procstat_parse_net_dev(net_dev, "bad0", &c), -EINVAL);
        assert_int_equal(procstat_parse_net_dev(net_dev, "", &c), -EINVAL);
}

/* --- stats: QMP replies as QEMU 7.2 sends them --- */

static const char cpus_json[] =
        "[{\"thread-id\": 3730, \"props\": {\"core-id\": 0, \"thread-id\": 0, \"socket-id\": 0}, \"qom-path\": "
        "\"/machine/unattached/device[0]\", \"cpu-index\": 0, \"target\": \"x86_64\"},"
        " {\"thread-id\": 3731, \"props\": {\"core-id\": 0, \"thread-id\": 0, \"socket-id\": 1}, \"qom-path\": "
        "\"/machine/unattached/device[1]\", \"cpu-index\": 1, \"target\": \"x86_64\"}]";
/* Single-threaded TCG: both vCPUs on one thread. */
static const char cpus_one_thread_json[] =
        "[{\"thread-id\": 900, \"cpu-index\": 0}, {\"thread-id\": 900, \"cpu-index\": 1}]";
static const char block_json[] =
        "[{\"device\": \"\", \"qdev\": \"/machine/peripheral/disk0/virtio-backend\", \"node-name\": \"disk0-fmt\","
        " \"stats\": {\"rd_bytes\": 4200448, \"wr_bytes\": 8192, \"rd_operations\": 310, \"wr_operations\": 2,"
        " \"flush_operations\": 1}},"
        " {\"device\": \"\", \"qdev\": \"/machine/peripheral/seed/virtio-backend\", \"stats\": {\"rd_bytes\": 1024,"
        " \"wr_bytes\": 0, \"rd_operations\": 1, \"wr_operations\": 0}},"
        " {\"device\": \"ide0-cd0\", \"stats\": {}}]";

static json_object *parse(const char *s) {
        json_object *o = json_tokener_parse(s);
        assert_non_null(o);
        return o;
}

static void test_parse_qmp(void **state) {
        struct stats_vm v = { 0 };
        pid_t tids[8];
        json_object *status = parse("{\"status\": \"running\", \"singlestep\": false, \"running\": true}");
        json_object *cpus = parse(cpus_json), *block = parse(block_json);
        json_object *mem = parse("{\"base-memory\": 134217728, \"plugged-memory\": 0}");
        json_object *balloon = parse("{\"actual\": 100663296}");

        assert_int_equal(stats_parse_qmp(&v, status, cpus, mem, balloon, block, tids, 8), 2);
        assert_int_equal(tids[0], 3730);
        assert_int_equal(tids[1], 3731);
        assert_string_equal(v.qemu_status, "running");
        assert_int_equal(v.vcpus, 2);
        assert_int_equal(v.memory_bytes, 134217728);
        assert_int_equal(v.balloon_bytes, 100663296);
        assert_int_equal(v.n_disks, 3);
        assert_string_equal(v.disks[0].id, "disk0");
        assert_int_equal(v.disks[0].rd_bytes, 4200448);
        assert_int_equal(v.disks[0].wr_bytes, 8192);
        assert_int_equal(v.disks[0].rd_ops, 310);
        assert_int_equal(v.disks[0].wr_ops, 2);
        assert_string_equal(v.disks[1].id, "seed");
        assert_string_equal(v.disks[2].id, "ide0-cd0");
        assert_int_equal(v.disks[2].rd_bytes, 0);

        /* Failed or missing queries leave zeros, never stale values. */
        assert_int_equal(stats_parse_qmp(&v, NULL, NULL, NULL, NULL, NULL, tids, 8), 0);
        assert_string_equal(v.qemu_status, "");
        assert_int_equal(v.vcpus, 0);
        assert_int_equal(v.balloon_bytes, 0);
        assert_int_equal(v.n_disks, 0);

        json_object *one = parse(cpus_one_thread_json);
        assert_int_equal(stats_parse_qmp(&v, status, one, mem, NULL, NULL, tids, 8), 1);
        assert_int_equal(v.vcpus, 2);
        assert_int_equal(tids[0], 900);
        /* Wrong types are no numbers. */
        json_object *odd = parse("[{\"thread-id\": \"12\"}, 7]");
        assert_int_equal(stats_parse_qmp(&v, status, odd, mem, NULL, NULL, tids, 8), 0);
        assert_int_equal(v.vcpus, 2);

        json_object_put(status);
        json_object_put(cpus);
        json_object_put(block);
        json_object_put(mem);
        json_object_put(balloon);
        json_object_put(one);
        json_object_put(odd);
}

/* Two VMs as two samples 2 s apart would leave them. */
static void fixture(struct stats_vm *prev, struct stats_vm *cur) {
        long hz = sysconf(_SC_CLK_TCK);
        *prev = (struct stats_vm){ .name = "web\"01", .state = "running", .running = true, .responding = true,
                                   .time_ms = 10000, .uptime = 60, .qemu_pid = 77, .vcpus = 2,
                                   .vcpu_ticks = (uint64_t)(10 * hz), .qemu_ticks = (uint64_t)(12 * hz),
                                   .rss_bytes = 300 << 20, .memory_bytes = 1ULL << 30, .n_disks = 1, .n_nics = 2 };
        snprintf(prev->disks[0].id, sizeof prev->disks[0].id, "disk0");
        prev->disks[0].rd_bytes = 1000;
        prev->disks[0].wr_bytes = 2000;
        prev->disks[0].rd_ops = 10;
        prev->disks[0].wr_ops = 20;
        prev->nics[0] = (struct stats_nic){ .index = 0, .net = NET_BRIDGE, .tap = "vrtweb0abcdefg0", .has_counters = true,
                                            .rx_bytes = 100, .tx_bytes = 200, .rx_packets = 1, .tx_packets = 2 };
        prev->nics[1] = (struct stats_nic){ .index = 1, .net = NET_USER };
        *cur = *prev;
        cur->time_ms = 12000;
        cur->uptime = 62;
        cur->vcpu_ticks += (uint64_t)(3 * hz);  /* 1.5 of 2 vCPUs busy */
        cur->qemu_ticks += (uint64_t)(4 * hz);
        cur->disks[0].rd_bytes += 4096;
        cur->disks[0].wr_ops += 8;
        cur->nics[0].rx_bytes += 3000;
        cur->nics[0].tx_packets += 10;
}

static void test_rates(void **state) {
        struct stats_vm prev, cur;
        fixture(&prev, &cur);
        stats_rates(&cur, &prev);
        assert_true(cur.has_rates);
        assert_float_equal(cur.interval, 2.0, 1e-9);
        assert_float_equal(cur.vcpus_busy, 1.5, 1e-9);
        assert_float_equal(cur.cpu_percent, 75.0, 1e-9);
        assert_float_equal(cur.disks[0].rd_bytes_rate, 2048.0, 1e-9);
        assert_float_equal(cur.disks[0].wr_ops_rate, 4.0, 1e-9);
        assert_float_equal(cur.disk_rd_rate, 2048.0, 1e-9);
        assert_float_equal(cur.net_rx_rate, 1500.0, 1e-9);
        assert_float_equal(cur.nics[0].tx_packets_rate, 5.0, 1e-9);
        assert_float_equal(cur.net_tx_rate, 0.0, 1e-9);

        /* A restarted QEMU (other pid) or a VM that did not answer gives no rates. */
        fixture(&prev, &cur);
        cur.qemu_pid = 78;
        stats_rates(&cur, &prev);
        assert_false(cur.has_rates);
        fixture(&prev, &cur);
        prev.responding = false;
        stats_rates(&cur, &prev);
        assert_false(cur.has_rates);
        fixture(&prev, &cur);
        cur.time_ms = prev.time_ms;
        stats_rates(&cur, &prev);
        assert_false(cur.has_rates);
        /* Counters that went backwards (a device replaced) are no negative rates. */
        fixture(&prev, &cur);
        cur.disks[0].rd_bytes = 0;
        stats_rates(&cur, &prev);
        assert_float_equal(cur.disks[0].rd_bytes_rate, 0.0, 1e-9);
}

static void test_json(void **state) {
        struct stats_vm prev, cur;
        fixture(&prev, &cur);
        stats_rates(&cur, &prev);
        json_object *o = stats_to_json(&cur), *x, *y;
        assert_non_null(o);
        assert_true(json_object_object_get_ex(o, "cpu", &x));
        assert_true(json_object_object_get_ex(x, "vcpus_busy", &y));
        assert_string_equal(json_object_to_json_string(y), "1.500");
        assert_true(json_object_object_get_ex(x, "seconds", &y));
        assert_float_equal(json_object_get_double(y), 13.0, 1e-9);
        assert_true(json_object_object_get_ex(o, "nics", &x));
        assert_int_equal(json_object_array_length(x), 2);
        /* The user-mode NIC has no tap and no counters: null, not 0. */
        y = json_object_array_get_idx(x, 1);
        assert_true(json_object_object_get_ex(y, "rx_bytes", &y));
        assert_null(y);
        json_object_put(o);

        /* A VM that does not answer has its error and no numbers. */
        cur.responding = false;
        snprintf(cur.error, sizeof cur.error, "QMP: timed out");
        o = stats_to_json(&cur);
        assert_true(json_object_object_get_ex(o, "error", &x));
        assert_string_equal(json_object_get_string(x), "QMP: timed out");
        assert_true(json_object_object_get_ex(o, "memory", &x));
        assert_true(json_object_object_get_ex(x, "resident_bytes", &y));
        assert_null(y);
        json_object_put(o);
}

static void test_escape(void **state) {
        char buf[64];
        assert_string_equal(stats_prom_escape("a\"b\\c\nd", buf, sizeof buf), "a\\\"b\\\\c\\nd");
        assert_string_equal(stats_prom_escape("plain", buf, sizeof buf), "plain");
        assert_string_equal(stats_prom_escape("abcdefgh", buf, 6), "abc");
}

/* The fixture VMs the exposition shows: one answering, one stopped, one
 * that did not answer. */
static size_t exposition_vms(struct stats_vm vms[3]) {
        struct stats_vm prev;
        fixture(&prev, &vms[0]);
        vms[0].balloon_bytes = 512 << 20;
        vms[1] = (struct stats_vm){ .name = "db", .state = "stopped", .uptime = -1 };
        vms[2] = (struct stats_vm){ .name = "hung", .state = "running", .running = true, .uptime = 5,
                                    .error = "QMP: timed out" };
        return 3;
}

static void test_exposition(void **state) {
        struct stats_vm vms[3];
        size_t n = exposition_vms(vms);
        char *text = stats_prometheus(vms, n);
        assert_non_null(text);
        /* Exact lines for the answering VM, with its name escaped. */
        static const char *const want[] = {
                "# HELP vrt_vm_cpu_seconds_total CPU time used by the VM's vCPU threads.\n"
                "# TYPE vrt_vm_cpu_seconds_total counter\n"
                "vrt_vm_cpu_seconds_total{vm=\"web\\\"01\"} 13\n",
                "vrt_vm_running{vm=\"web\\\"01\"} 1\nvrt_vm_running{vm=\"db\"} 0\nvrt_vm_running{vm=\"hung\"} 1\n",
                "vrt_vm_responding{vm=\"web\\\"01\"} 1\nvrt_vm_responding{vm=\"db\"} 0\nvrt_vm_responding{vm=\"hung\"} 0\n",
                "vrt_vm_memory_resident_bytes{vm=\"web\\\"01\"} 314572800\n",
                "vrt_vm_balloon_bytes{vm=\"web\\\"01\"} 536870912\n",
                "vrt_vm_disk_read_bytes_total{vm=\"web\\\"01\",disk=\"disk0\"} 5096\n",
                "vrt_vm_disk_writes_total{vm=\"web\\\"01\",disk=\"disk0\"} 28\n",
                "vrt_vm_network_receive_bytes_total{vm=\"web\\\"01\",nic=\"0\",tap=\"vrtweb0abcdefg0\"} 3100\n",
                "vrt_vm_network_transmit_packets_total{vm=\"web\\\"01\",nic=\"0\",tap=\"vrtweb0abcdefg0\"} 12\n",
        };
        for (size_t k = 0; k < sizeof want / sizeof want[0]; k++)
                if (!strstr(text, want[k]))
                        fail_msg("missing:\n%s\nin:\n%s", want[k], text);
        /* Counters only for VMs that answered; the NIC without a tap has none. */
        assert_null(strstr(text, "vrt_vm_cpu_seconds_total{vm=\"hung\""));
        assert_null(strstr(text, "vrt_vm_uptime_seconds{vm=\"db\""));
        assert_null(strstr(text, "nic=\"1\""));
        /* Every family's HELP and TYPE come once, right before its samples. */
        size_t helps = 0, types = 0;
        for (const char *p = text; (p = strstr(p, "# HELP ")); p++)
                helps++;
        for (const char *p = text; (p = strstr(p, "# TYPE ")); p++)
                types++;
        assert_int_equal(helps, 17);
        assert_int_equal(types, 17);
        free(text);
}

int main(int argc, char **argv) {
        if (argc == 2 && strcmp(argv[1], "--exposition") == 0) {
                struct stats_vm vms[3];
                size_t n = exposition_vms(vms);
                char *text = stats_prometheus(vms, n);
                if (!text)
                        return 1;
                fputs(text, stdout);
                free(text);
                return 0;
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_stat_line),
                cmocka_unit_test(test_stat_of_self),
                cmocka_unit_test(test_status),
                cmocka_unit_test(test_net_dev),
                cmocka_unit_test(test_parse_qmp),
                cmocka_unit_test(test_rates),
                cmocka_unit_test(test_json),
                cmocka_unit_test(test_escape),
                cmocka_unit_test(test_exposition),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
