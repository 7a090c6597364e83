/* Unit tests for net/tap and net/bridge that need no privileges:
 * the tap naming scheme and argument validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>

#include "net/bridge.h"
#include "net/tap.h"

#define NAME63 "abcdefghijklmnopqrstuvwxyz0123456789-abcdefghijklmnopqrstuvwxyz"

static void assert_valid_tap_name(const char *name) {
        size_t n = strlen(name);
        assert_true(n > 0 && n <= 15);
        assert_true(strncmp(name, "vrt", 3) == 0);
        for (size_t i = 0; i < n; i++) {
                char c = name[i];
                assert_true((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '_');
        }
}

static void test_name_golden(void **state) {
        /* Pinned: a changed scheme renames the taps of running VMs. */
        char name[IFNAMSIZ];
        assert_int_equal(tap_name_for_vm("web01", 0, name), 0);
        assert_string_equal(name, "vrtweb032p0r0j0");
        assert_int_equal(tap_name_for_vm("web01", 1, name), 0);
        assert_string_equal(name, "vrtweb032p0r0j1");
        assert_int_equal(tap_name_for_vm("a", 31, name), 0);
        assert_string_equal(name, "vrtagahaim5v");
}

static void test_name_shape(void **state) {
        char name[IFNAMSIZ];

        assert_int_equal(tap_name_for_vm(NAME63, 0, name), 0);
        assert_int_equal(strlen(NAME63), 63);
        assert_valid_tap_name(name);
        assert_int_equal(strlen(name), 15);
        assert_memory_equal(name, "vrtabcd", 7);
        assert_int_equal(name[14], '0');

        assert_int_equal(tap_name_for_vm("a", 0, name), 0);
        assert_valid_tap_name(name);
        assert_int_equal(strlen(name), 3 + 1 + 7 + 1);
        assert_memory_equal(name, "vrta", 4);

        assert_int_equal(tap_name_for_vm("db-1", 10, name), 0);
        assert_valid_tap_name(name);
        assert_memory_equal(name, "vrtdb-1", 7);
        assert_int_equal(name[14], 'a');        /* nic 10 in base32 */
}

static void test_name_sanitises(void **state) {
        /* Not valid VM names, but the result must still be a valid ifname. */
        static const char *odd[] = { "a/b:c d", "..", "x%d", "\xc3\xa4xyz", "A.B_C" };
        for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
                char name[IFNAMSIZ];
                assert_int_equal(tap_name_for_vm(odd[i], 0, name), 0);
                assert_valid_tap_name(name);
        }
        char name[IFNAMSIZ];
        assert_int_equal(tap_name_for_vm("a/b:c", 0, name), 0);
        assert_memory_equal(name, "vrta-b-", 7);
}

static void test_name_deterministic(void **state) {
        char a[IFNAMSIZ], b[IFNAMSIZ];
        assert_int_equal(tap_name_for_vm(NAME63, 3, a), 0);
        assert_int_equal(tap_name_for_vm(NAME63, 3, b), 0);
        assert_string_equal(a, b);

        /* Depends on the name's bytes, not on where they are stored. */
        char *copy = strdup(NAME63);
        assert_non_null(copy);
        assert_int_equal(tap_name_for_vm(copy, 3, b), 0);
        assert_string_equal(a, b);
        free(copy);
}

static int cmp_name(const void *a, const void *b) {
        return strcmp(a, b);
}

static void test_name_distinct_near_identical(void **state) {
        /* Every 63-character name at edit distance one (substitution) from
         * two base names, plus the bases: all must map to distinct taps. */
        static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789-";
        static const char *bases[] = {
                NAME63,
                "webserver-production-frankfurt-rack-01-node-0000000000000000001",
        };
        size_t max = 2 * (1 + 63 * (sizeof alphabet - 1));
        char (*names)[IFNAMSIZ] = calloc(max, IFNAMSIZ);
        assert_non_null(names);
        size_t n = 0;

        for (size_t b = 0; b < 2; b++) {
                char vm[64];
                assert_int_equal(strlen(bases[b]), 63);
                memcpy(vm, bases[b], 64);
                assert_int_equal(tap_name_for_vm(vm, 0, names[n++]), 0);
                for (size_t pos = 0; pos < 63; pos++) {
                        for (const char *c = alphabet; *c; c++) {
                                if (*c == bases[b][pos])
                                        continue;
                                vm[pos] = *c;
                                assert_int_equal(tap_name_for_vm(vm, 0, names[n]), 0);
                                assert_valid_tap_name(names[n]);
                                n++;
                                vm[pos] = bases[b][pos];
                        }
                }
        }
        assert_true(n > 4000);
        qsort(names, n, IFNAMSIZ, cmp_name);
        for (size_t i = 1; i < n; i++)
                if (strcmp(names[i - 1], names[i]) == 0)
                        fail_msg("tap name collision: %s", names[i]);
        free(names);
}

static void test_name_distinct_prefixes_and_nics(void **state) {
        /* Names sharing the 4 visible bytes differ in the hash. */
        static const char *vms[] = { "web", "web0", "web01", "web02", "web1", "web10", "web-a", "web-b" };
        char names[8 * TAP_NIC_MAX][IFNAMSIZ];
        size_t n = 0;
        for (size_t v = 0; v < 8; v++)
                for (unsigned nic = 0; nic < TAP_NIC_MAX; nic++)
                        assert_int_equal(tap_name_for_vm(vms[v], nic, names[n++]), 0);
        qsort(names, n, IFNAMSIZ, cmp_name);
        for (size_t i = 1; i < n; i++)
                if (strcmp(names[i - 1], names[i]) == 0)
                        fail_msg("tap name collision: %s", names[i]);
}

static void test_name_rejects(void **state) {
        char name[IFNAMSIZ];
        memset(name, 'X', sizeof name);

        assert_int_equal(tap_name_for_vm(NULL, 0, name), -EINVAL);
        assert_int_equal(tap_name_for_vm("", 0, name), -EINVAL);
        assert_int_equal(tap_name_for_vm(NAME63 "x", 0, name), -EINVAL);
        assert_int_equal(tap_name_for_vm("web01", TAP_NIC_MAX, name), -EINVAL);
        assert_int_equal(tap_name_for_vm("web01", (unsigned)-1, name), -EINVAL);
        /* ret_ is written only on success */
        for (size_t i = 0; i < sizeof name; i++)
                assert_int_equal(name[i], 'X');
}

static void test_tap_open_invalid_names(void **state) {
        static const char *bad[] = {
                "", "0123456789abcdef" /* 16 bytes */, "a/b", "a:b", "a b", "a\tb", "tap%d", ".", "..",
        };
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
                char err[128] = "";
                char want[128];
                int fd = 12345;
                assert_int_equal(tap_open(bad[i], true, &fd, err, sizeof err), -EINVAL);
                assert_int_equal(fd, 12345);
                snprintf(want, sizeof want, "tap \"%s\": invalid interface name", bad[i]);
                assert_string_equal(err, want);
        }
        char err[128] = "";
        int fd = 12345;
        assert_int_equal(tap_open(NULL, true, &fd, err, sizeof err), -EINVAL);
        assert_string_equal(err, "tap \"\": invalid interface name");
        assert_int_equal(fd, 12345);
}

static void test_set_alias_set_up_invalid(void **state) {
        char err[128] = "";
        char alias[TAP_ALIAS_MAX + 2];

        assert_int_equal(tap_set_alias("a/b", "web01", err, sizeof err), -EINVAL);
        assert_string_equal(err, "interface \"a/b\": invalid interface name");

        memset(alias, 'a', sizeof alias - 1);
        alias[sizeof alias - 1] = '\0';         /* TAP_ALIAS_MAX + 1 bytes */
        assert_int_equal(tap_set_alias("vrtx", alias, err, sizeof err), -EINVAL);
        assert_string_equal(err, "interface vrtx: alias missing or longer than 255 bytes");
        assert_int_equal(tap_set_alias("vrtx", NULL, err, sizeof err), -EINVAL);
        assert_string_equal(err, "interface vrtx: alias missing or longer than 255 bytes");

        assert_int_equal(tap_set_up("", err, sizeof err), -EINVAL);
        assert_string_equal(err, "interface \"\": invalid interface name");
}

static void test_bridge_invalid_names(void **state) {
        char err[128] = "";
        assert_int_equal(bridge_check("0123456789abcdef", err, sizeof err), -EINVAL);
        assert_string_equal(err, "bridge \"0123456789abcdef\": invalid interface name");
        assert_int_equal(bridge_check(NULL, err, sizeof err), -EINVAL);
        assert_string_equal(err, "bridge \"\": invalid interface name");
        assert_int_equal(bridge_attach("br/0", "vrtx", err, sizeof err), -EINVAL);
        assert_string_equal(err, "bridge \"br/0\": invalid interface name");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_name_golden),
                cmocka_unit_test(test_name_shape),
                cmocka_unit_test(test_name_sanitises),
                cmocka_unit_test(test_name_deterministic),
                cmocka_unit_test(test_name_distinct_near_identical),
                cmocka_unit_test(test_name_distinct_prefixes_and_nics),
                cmocka_unit_test(test_name_rejects),
                cmocka_unit_test(test_tap_open_invalid_names),
                cmocka_unit_test(test_set_alias_set_up_invalid),
                cmocka_unit_test(test_bridge_invalid_names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
