/* Unit tests of snapstate.c: tag and layer name checks, the state file's
 * round trip and its refusals, and which file is the active layer. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "launcher/core/snapstate.h"

static char dir[64];

static void put(const char *rel, const char *text) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", dir, rel);
        FILE *f = fopen(path, "we");
        assert_non_null(f);
        fputs(text, f);
        assert_int_equal(fclose(f), 0);
}

static int setup(void **state) {
        (void)state;
        snprintf(dir, sizeof dir, "/tmp/vrt-snapstate.XXXXXX");
        assert_non_null(mkdtemp(dir));
        return 0;
}

static int teardown(void **state) {
        char path[256];
        (void)state;
        const char *files[] = { "snapshots/state", "snapshots/.state.tmp", "hdd.ovl", "hdd.img" };
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
                snprintf(path, sizeof path, "%s/%s", dir, files[i]);
                unlink(path);
        }
        snprintf(path, sizeof path, "%s/snapshots", dir);
        rmdir(path);
        rmdir(dir);
        return 0;
}

static void test_tags(void **state) {
        char err[256];
        (void)state;
        assert_int_equal(snap_check_tag("s1", err, sizeof err), 0);
        assert_int_equal(snap_check_tag("Before-Upgrade-2", err, sizeof err), 0);
        assert_int_equal(snap_check_tag("a2345678901234567890123456789012", err, sizeof err), 0);
        assert_int_equal(snap_check_tag("a23456789012345678901234567890123", err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "longer than 32"));
        const char *bad[] = { "", "-x", "a b", "a/b", "a.b", "a_b", "..", "ä", "a\n" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                assert_int_equal(snap_check_tag(bad[i], err, sizeof err), -EINVAL);
        assert_int_equal(snap_check_tag(NULL, err, sizeof err), -EINVAL);
}

static void test_layer_names(void **state) {
        (void)state;
        assert_true(snap_layer_name_valid("hdd.ovl"));
        assert_true(snap_layer_name_valid("hdd.img"));
        assert_true(snap_layer_name_valid("snapshots/1.qcow2"));
        assert_true(snap_layer_name_valid("snapshots/4000000000.qcow2"));
        const char *bad[] = { "snapshots/0.qcow2", "snapshots/01.qcow2", "snapshots/.qcow2", "snapshots/1.qcow",
                              "snapshots/../hdd.ovl", "../hdd.ovl", "/etc/passwd", "snapshots/1.qcow2/x",
                              "snapshots/12345678901.qcow2", "hdd.ovl2", "" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                assert_false(snap_layer_name_valid(bad[i]));
}

static void test_round_trip(void **state) {
        struct snap_state s = { .next = 7, .n = 2 }, t;
        char err[512];
        (void)state;
        snprintf(s.active, sizeof s.active, "snapshots/6.qcow2");
        snprintf(s.snaps[0].tag, sizeof s.snaps[0].tag, "s1");
        snprintf(s.snaps[0].layer, sizeof s.snaps[0].layer, "hdd.ovl");
        s.snaps[0].time = 1765026658;
        snprintf(s.snaps[1].tag, sizeof s.snaps[1].tag, "Two");
        snprintf(s.snaps[1].layer, sizeof s.snaps[1].layer, "snapshots/3.qcow2");
        s.snaps[1].time = 1765026700;
        assert_int_equal(snap_state_save(dir, &s, err, sizeof err), 0);
        assert_int_equal(snap_state_load(dir, &t, err, sizeof err), 0);
        assert_true(t.present);
        assert_string_equal(t.active, "snapshots/6.qcow2");
        assert_int_equal(t.next, 7);
        assert_int_equal(t.n, 2);
        assert_string_equal(t.snaps[1].tag, "Two");
        assert_string_equal(t.snaps[1].layer, "snapshots/3.qcow2");
        assert_int_equal(t.snaps[1].time, 1765026700);
        assert_int_equal(snap_state_find(&t, "s1"), 0);
        assert_int_equal(snap_state_find(&t, "Two"), 1);
        assert_int_equal(snap_state_find(&t, "two"), -1);

        char *active = NULL;
        assert_int_equal(snap_active_path(dir, &active, err, sizeof err), 0);
        assert_non_null(active);
        assert_non_null(strstr(active, "/snapshots/6.qcow2"));
        free(active);
}

static void test_no_state(void **state) {
        struct snap_state t;
        char err[512], *active = (char *)"x";
        (void)state;
        assert_int_equal(snap_state_load(dir, &t, err, sizeof err), 0);
        assert_false(t.present);
        assert_int_equal(t.next, 1);
        assert_int_equal(t.n, 0);
        assert_int_equal(snap_active_path(dir, &active, err, sizeof err), 0);
        assert_null(active);            /* diskless */
        put("hdd.img", "");
        assert_int_equal(snap_active_path(dir, &active, err, sizeof err), 0);
        assert_non_null(strstr(active, "/hdd.img"));
        free(active);
        put("hdd.ovl", "");
        assert_int_equal(snap_active_path(dir, &active, err, sizeof err), 0);
        assert_non_null(strstr(active, "/hdd.ovl"));
        free(active);
}

static void test_bad_state(void **state) {
        struct snap_state t;
        char err[512], path[128];
        (void)state;
        snprintf(path, sizeof path, "%s/snapshots", dir);
        assert_int_equal(mkdir(path, 0755), 0);
        const char *bad[] = {
                "next=2\n",                                     /* no active= */
                "active=../../etc/passwd\n",
                "active=snapshots/1.qcow2\nnext=0\n",
                "active=snapshots/1.qcow2\nsnapshot.1=a/b hdd.ovl 1\n",
                "active=snapshots/1.qcow2\nsnapshot.1=s1 hdd.ovl\n",
                "active=snapshots/1.qcow2\nsnapshot.1=s1 /etc/passwd 1\n",
                "active=snapshots/1.qcow2\nsnapshot.1=s1 hdd.ovl 1 x\n",
                "active=snapshots/1.qcow2\nsnapshot.s1=hdd.ovl 1\n",
                "active=snapshots/1.qcow2\nsnapshot.1=s1 hdd.ovl 1\nsnapshot.1=s2 hdd.ovl 2\n",  /* repeated key */
                "active=snapshots/1.qcow2\nsnapshot.1=s1 hdd.ovl 1\nsnapshot.2=s1 hdd.ovl 2\n",  /* repeated tag */
                "active=snapshots/1.qcow2\ncolour=blue\n",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                put("snapshots/state", bad[i]);
                err[0] = '\0';
                assert_int_equal(snap_state_load(dir, &t, err, sizeof err), -EINVAL);
                assert_non_null(strstr(err, "snapshots/state"));
                assert_false(t.present);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_tags),
                cmocka_unit_test(test_layer_names),
                cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
                cmocka_unit_test_setup_teardown(test_no_state, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_state, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
