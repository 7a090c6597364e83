/* Unit tests of migreq.c's incoming marker: how the spool tells the
 * vrt-launch NAME that systemd starts (vrt@NAME.service) that it is the
 * target of a live migration. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "launcher/core/migreq.h"

static char dir[64];
static char marker[128];

static int setup(void **state) {
        (void)state;
        snprintf(dir, sizeof dir, "/tmp/vrt-test-migreq.XXXXXX");
        if (!mkdtemp(dir))
                return -1;
        snprintf(marker, sizeof marker, "%s/vm1%s", dir, MIGREQ_INCOMING_SUFFIX);
        return 0;
}

static int teardown(void **state) {
        (void)state;
        char p[160];
        unlink(marker);
        rmdir(marker);
        snprintf(p, sizeof p, "%s/sub/vm1%s", dir, MIGREQ_INCOMING_SUFFIX);
        unlink(p);
        snprintf(p, sizeof p, "%s/sub", dir);
        rmdir(p);
        rmdir(dir);
        return 0;
}

static void write_marker(const char *text) {
        FILE *f = fopen(marker, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

static void test_mark_and_take(void **state) {
        (void)state;
        unsigned t = 0;
        assert_int_equal(migreq_incoming_take(dir, "vm1", &t), 0);      /* none */
        assert_int_equal(migreq_incoming_mark(dir, "vm1", 600), 0);
        assert_int_equal(access(marker, F_OK), 0);
        assert_int_equal(migreq_incoming_take(dir, "vm1", &t), 1);
        assert_int_equal(t, 600);
        assert_int_equal(access(marker, F_OK), -1);                      /* taken: once only */
        assert_int_equal(migreq_incoming_take(dir, "vm1", &t), 0);
        /* Another VM's marker is not this one's. */
        assert_int_equal(migreq_incoming_mark(dir, "vm2", 30), 0);
        assert_int_equal(migreq_incoming_take(dir, "vm1", &t), 0);
        assert_int_equal(migreq_incoming_take(dir, "vm2", &t), 1);
        assert_int_equal(t, 30);
}

static void test_mark_creates_runtime_dir(void **state) {
        (void)state;
        char sub[128];
        unsigned t = 0;
        snprintf(sub, sizeof sub, "%s/sub", dir);
        assert_int_equal(migreq_incoming_mark(sub, "vm1", 5), 0);
        assert_int_equal(migreq_incoming_take(sub, "vm1", &t), 1);
        assert_int_equal(t, 5);
}

static void test_stale_and_bad_markers_are_ignored(void **state) {
        (void)state;
        char text[128];
        unsigned t = 77;
        snprintf(text, sizeof text, "timeout=600\nsince=%lld\n", (long long)time(NULL) - MIGREQ_INCOMING_MAX_AGE_S - 10);
        write_marker(text);
        assert_int_equal(migreq_incoming_take(dir, "vm1", &t), 0);
        assert_int_equal(access(marker, F_OK), -1);     /* stale: removed */
        assert_int_equal(t, 77);
        snprintf(text, sizeof text, "timeout=0\nsince=%lld\n", (long long)time(NULL));
        write_marker(text);
        assert_int_equal(migreq_incoming_take(dir, "vm1", &t), 0);
        write_marker("since=1\n");
        assert_int_equal(migreq_incoming_take(dir, "vm1", &t), 0);
        snprintf(text, sizeof text, "timeout=600\n");
        write_marker(text);
        assert_int_equal(migreq_incoming_take(dir, "vm1", &t), 0);
        assert_int_equal(t, 77);
}

static void test_not_a_regular_file(void **state) {
        (void)state;
        unsigned t = 0;
        char target[160];
        assert_int_equal(mkdir(marker, 0755), 0);
        assert_int_equal(migreq_incoming_take(dir, "vm1", &t), 0);
        assert_int_equal(rmdir(marker), 0);
        /* A symlink to a good marker is not followed. */
        snprintf(target, sizeof target, "%s/vm2%s", dir, MIGREQ_INCOMING_SUFFIX);
        assert_int_equal(migreq_incoming_mark(dir, "vm2", 600), 0);
        assert_int_equal(symlink(target, marker), 0);
        assert_int_equal(migreq_incoming_take(dir, "vm1", &t), 0);
        unlink(marker);
        assert_int_equal(migreq_incoming_take(dir, "vm2", &t), 1);
}

static void test_remove(void **state) {
        (void)state;
        unsigned t = 0;
        assert_int_equal(migreq_incoming_mark(dir, "vm1", 600), 0);
        migreq_incoming_remove(dir, "vm1");
        assert_int_equal(migreq_incoming_take(dir, "vm1", &t), 0);
        migreq_incoming_remove(dir, "vm1");     /* none: fine */
}

/* ROOT/migrate/NAME while a migration may be going on (the lease may be
 * free for a moment at the handover): live within timeout= + the slack. */
static void test_check_migrating(void **state) {
        (void)state;
        char err[256] = "", req[160];
        assert_int_equal(migreq_check_migrating(dir, "vm1", "not started", err, sizeof err), 0);   /* none */
        assert_int_equal(migreq_write(dir, MIGREQ_DIR, "vm1", "host=hostB\nfrom=hostA\ntimeout=60\n"), 0);
        assert_int_equal(migreq_check_migrating(dir, "vm1", "not started", err, sizeof err), -EAGAIN);
        assert_string_equal(err, "vm1 is being migrated from host hostA to host hostB; not started");
        snprintf(req, sizeof req, "%s/%s/vm1", dir, MIGREQ_DIR);
        struct timespec old[2] = { { .tv_sec = time(NULL) - 60 - MIGREQ_LIVE_SLACK_S - 5 }, { 0 } };
        old[1] = old[0];
        assert_int_equal(utimensat(AT_FDCWD, req, old, 0), 0);
        assert_int_equal(migreq_check_migrating(dir, "vm1", "not started", err, sizeof err), 0);   /* stale */
        /* No timeout=: it counts for a day at most. */
        assert_int_equal(migreq_write(dir, MIGREQ_DIR, "vm1", "host=hostB\n"), 0);
        assert_int_equal(migreq_check_migrating(dir, "vm1", "x", err, sizeof err), -EAGAIN);
        assert_string_equal(err, "vm1 is being migrated from host ? to host hostB; x");
        /* Longer than any request vrt migrate writes: not one of its. */
        char big[3000];
        memset(big, 'a', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        assert_int_equal(migreq_write(dir, MIGREQ_DIR, "vm1", big), 0);
        assert_int_equal(migreq_check_migrating(dir, "vm1", "x", err, sizeof err), 0);
        /* Not a regular file: not a request of vrt migrate's. */
        unlink(req);
        assert_int_equal(mkdir(req, 0755), 0);
        assert_int_equal(migreq_check_migrating(dir, "vm1", "x", err, sizeof err), 0);
        assert_int_equal(rmdir(req), 0);
        snprintf(req, sizeof req, "%s/%s", dir, MIGREQ_DIR);
        assert_int_equal(rmdir(req), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_mark_and_take, setup, teardown),
                cmocka_unit_test_setup_teardown(test_mark_creates_runtime_dir, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stale_and_bad_markers_are_ignored, setup, teardown),
                cmocka_unit_test_setup_teardown(test_not_a_regular_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
                cmocka_unit_test_setup_teardown(test_check_migrating, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
