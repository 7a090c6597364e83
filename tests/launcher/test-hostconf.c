/* Unit tests of hostconf.c: the per-host limits for spool starts. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "launcher/core/hostconf.h"

#define MiB (1024ull * 1024)

static char path[64];

static void write_conf(const char *text) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

static int setup(void **state) {
        (void)state;
        snprintf(path, sizeof path, "/tmp/vrt-test-hostconf.XXXXXX");
        int fd = mkstemp(path);
        if (fd < 0)
                return -1;
        close(fd);
        return 0;
}

static int teardown(void **state) {
        (void)state;
        unlink(path);
        return 0;
}

static void test_load(void **state) {
        (void)state;
        struct host_limits l;
        char err[512];

        write_conf("# this host\nmax_vms=2\nmax_memory=3G\nreserve_memory=512M\nmigration_address=192.0.2.7\n");
        assert_int_equal(hostconf_load(path, &l, err, sizeof err), 0);
        assert_int_equal(l.max_vms, 2);
        assert_int_equal(l.max_memory, 3072 * MiB);
        assert_int_equal(l.reserve_memory, 512 * MiB);
        assert_string_equal(l.migration_address, "192.0.2.7");

        assert_int_equal(hostconf_load("/nonexistent/host.conf", &l, err, sizeof err), 0);
        assert_int_equal(l.max_vms, 0);
        assert_int_equal(l.max_memory, 0);
}

static void test_load_errors(void **state) {
        (void)state;
        struct host_limits l;
        char err[512], want[128];
        const struct { const char *text, *msg; } cases[] = {
                { "max_vms=two\n", ":1: max_vms=two: not a number of VMs" },
                { "\nmax_memory=lots\n", ":2: max_memory=lots: not a size" },
                { "max_vm=2\n", ":1: unknown key max_vm" },
                { "max_vms=1\nmax_vms=2\n", ":2:" },
                { "migration_address=hostB\n", ":1: migration_address=hostB: not an IPv4 address" },
                { "migration_address=10.0.0.1:4444\n", ":1: migration_address=10.0.0.1:4444: not an IPv4 address" },
        };
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
                write_conf(cases[i].text);
                assert_int_equal(hostconf_load(path, &l, err, sizeof err), -EINVAL);
                snprintf(want, sizeof want, "%s%s", path, cases[i].msg);
                assert_non_null(strstr(err, want));
        }
}

static void test_room(void **state) {
        (void)state;
        struct host_limits l = { .max_vms = 2, .max_memory = 1024 * MiB, .reserve_memory = 256 * MiB };
        char err[256];

        assert_int_equal(hostconf_check_room(&l, 1, 256 * MiB, 512 * MiB, 4096 * MiB, err, sizeof err), 0);
        assert_int_equal(hostconf_check_room(&l, 2, 256 * MiB, 256 * MiB, 4096 * MiB, err, sizeof err), -ENOSPC);
        assert_string_equal(err, "max_vms=2 reached (2 running)");
        assert_int_equal(hostconf_check_room(&l, 1, 768 * MiB, 512 * MiB, 4096 * MiB, err, sizeof err), -ENOSPC);
        assert_string_equal(err, "max_memory=1024M would be exceeded (768M in use, 512M more)");
        assert_int_equal(hostconf_check_room(&l, 0, 0, 512 * MiB, 600 * MiB, err, sizeof err), -ENOSPC);
        assert_string_equal(err, "only 600M of memory available (512M needed, 256M kept in reserve)");
        /* Unknown MemAvailable is not checked; no limits means room. */
        struct host_limits none = { 0 };
        assert_int_equal(hostconf_check_room(&none, 1000, 1ull << 40, 1ull << 40, 0, err, sizeof err), 0);
        assert_true(hostconf_mem_available() > 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_load, setup, teardown),
                cmocka_unit_test_setup_teardown(test_load_errors, setup, teardown),
                cmocka_unit_test(test_room),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
