/* Unit tests of vmstate.c: the markers, "running, supervisor pid" and the
 * one answer to "may NAME start?" with its one message per refusal. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "fake-supervisor.h"
#include "launcher/core/util.h"
#include "launcher/core/vmstate.h"
#include "launcher/lifecycle/create.h"

static char root[64], runtime[128];

static void put(const char *rel, const char *text) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", root, rel);
        FILE *f = fopen(path, "we");
        assert_non_null(f);
        fputs(text, f);
        assert_int_equal(fclose(f), 0);
}

static void make_vm(const char *name, const char *props) {
        char path[256];
        snprintf(path, sizeof path, "%s/vm/%s", root, name);
        assert_int_equal(mkdir(path, 0755), 0);
        snprintf(path, sizeof path, "vm/%s/instance.properties", name);
        put(path, props);
}

static int setup(void **state) {
        (void)state;
        char path[256];
        snprintf(root, sizeof root, "/tmp/vrt-test-vmstate.XXXXXX");
        if (!mkdtemp(root))
                return -1;
        snprintf(runtime, sizeof runtime, "%s/run", root);
        snprintf(path, sizeof path, "%s/vm", root);
        mkdir(path, 0755);
        mkdir(runtime, 0755);
        return 0;
}

static int teardown(void **state) {
        (void)state;
        return create_remove_tree(root) == 0 ? 0 : -1;
}

static void expect_refusal(const char *name, int want, const char *msg) {
        char err[1024] = "";
        assert_int_equal(vmstate_check_startable(root, runtime, name, err, sizeof err), want);
        if (!strstr(err, msg))
                fail_msg("%s: got \"%s\", want \"%s\" in it", name, err, msg);
}

static void test_check_startable(void **state) {
        (void)state;
        char err[1024] = "", want[512];
        make_vm("plain", "image=testguest\nsize=small\n");
        make_vm("gone", "image=testguest\nsize=small\n");
        put("vm/gone/DESTROYED", "destroyed=now\n");
        make_vm("pending", "image=testguest\nsize=small\ninit=setup.sh\n");
        make_vm("failed", "image=testguest\nsize=small\ninit=setup.sh\n");
        put("vm/failed/INIT-FAILED", "init script setup.sh failed with status 3 (log: x)\n");
        make_vm("done", "image=testguest\nsize=small\ninit=setup.sh\n");
        put("vm/done/CREATED", "created=now\n");
        make_vm("broken", "colour=red\n");

        assert_int_equal(vmstate_check_startable(root, runtime, "plain", err, sizeof err), 0);
        assert_int_equal(vmstate_check_startable(root, runtime, "done", err, sizeof err), 0);
        /* vrt-launch reports a broken instance.properties with file:line. */
        assert_int_equal(vmstate_check_startable(root, runtime, "broken", err, sizeof err), 0);

        expect_refusal("Bad_Name", -EINVAL, "invalid VM name");
        snprintf(want, sizeof want, "no such VM (%s/vm/ghost/instance.properties: No such file or directory)", root);
        expect_refusal("ghost", -ENOENT, want);
        snprintf(want, sizeof want, "destroyed, not started (%s/vm/gone/DESTROYED exists; `vrt cleanup` removes the VM)", root);
        expect_refusal("gone", -ESTALE, want);
        expect_refusal("pending", -EAGAIN, "its first boot (init=) has not completed; fix the script and run `vrt init pending [--reset]`");
        expect_refusal("failed", -ENOTRECOVERABLE,
                       "its first boot failed (init script setup.sh failed with status 3 (log: x)); "
                       "fix init/setup.sh and run `vrt init --reset failed`, or `vrt destroy failed`");
        /* An empty INIT-FAILED still points at the log. */
        put("vm/failed/INIT-FAILED", "");
        snprintf(want, sizeof want, "its first boot failed (log: %s/vm/failed/init.log)", root);
        expect_refusal("failed", -ENOTRECOVERABLE, want);
        /* Destroyed wins over a failed first boot. */
        put("vm/failed/DESTROYED", "");
        expect_refusal("failed", -ESTALE, "destroyed, not started");

        assert_int_equal(vmstate_check_exists(root, runtime, "gone", err, sizeof err), 0);
        assert_int_equal(vmstate_check_exists(root, runtime, "ghost", err, sizeof err), -ENOENT);
        assert_int_equal(vmstate_check_exists(root, runtime, "Bad_Name", err, sizeof err), -EINVAL);
}

static void test_markers(void **state) {
        (void)state;
        char dir[256];
        make_vm("m", "image=testguest\nsize=small\ninit=x.sh\n");
        snprintf(dir, sizeof dir, "%s/vm/m", root);
        assert_false(vmstate_is_destroyed(dir));
        assert_int_equal(firstboot_state_of(dir, true), FIRSTBOOT_PENDING);
        assert_int_equal(firstboot_state_of(dir, false), FIRSTBOOT_CREATED);
        put("vm/m/CREATED", "");
        assert_int_equal(firstboot_state_of(dir, true), FIRSTBOOT_CREATED);
        put("vm/m/INIT-FAILED", "");
        assert_int_equal(firstboot_state_of(dir, true), FIRSTBOOT_INIT_FAILED);
        /* A dangling symlink is a marker too: never followed. */
        char link[300];
        snprintf(link, sizeof link, "%s/DESTROYED", dir);
        assert_int_equal(symlink("/nonexistent", link), 0);
        assert_true(vmstate_is_destroyed(dir));
        for (int s = 0; s < _FIRSTBOOT_STATE_MAX; s++)
                assert_int_equal(firstboot_state_from_string(firstboot_state_to_string((enum firstboot_state)s)), s);
        assert_int_equal(firstboot_state_from_string("created "), _FIRSTBOOT_STATE_INVALID);
}

static void test_running(void **state) {
        (void)state;
        struct vm_paths p;
        struct vm_running run = { .pid = 42 };
        char msg[256], report[128];
        snprintf(report, sizeof report, "%s/report", root);
        make_vm("r", "image=testguest\nsize=small\n");
        assert_int_equal(vm_paths_init(&p, root, runtime, "r"), 0);
        assert_int_equal(vmstate_running(&p, 0, 0, &run), 0);
        assert_int_equal(run.pid, 42);          /* untouched */

        /* Locked, no pid file: running, pid unknown after the wait. */
        int lock = runtime_lock(&p, msg, sizeof msg);
        assert_true(lock >= 0);
        int64_t t0 = now_ms();
        assert_int_equal(vmstate_running(&p, 200, 0, &run), 1);
        assert_true(now_ms() - t0 >= 200);
        assert_int_equal(run.pid, 0);
        assert_int_equal(run.pidfd, -1);
        /* A pid file, but of a process that is no vrt-launch: not pinned. */
        assert_int_equal(runtime_write_pid(p.pid_file, getpid()), 0);
        assert_int_equal(vmstate_running(&p, 0, 0, &run), 1);
        assert_int_equal(run.pid, getpid());
        assert_true(run.since > 0 && run.since <= time(NULL));
        assert_int_equal(vmstate_running(&p, 0, VMSTATE_PIN, &run), 1);
        assert_int_equal(run.pid, 0);
        assert_int_equal(run.pidfd, -1);
        runtime_remove(&p);
        close(lock);

        /* A real (stand-in) supervisor is pinned. */
        int pidfd = -1;
        pid_t pid = fake_supervisor_start(root, runtime, "r", report, 0, &pidfd);
        assert_true(pid > 0);
        assert_int_equal(vmstate_running(&p, 0, VMSTATE_PIN, &run), 1);
        assert_int_equal(run.pid, pid);
        assert_true(run.pidfd >= 0);
        close(run.pidfd);
        kill(pid, SIGTERM);
        assert_int_equal(waitpid(pid, NULL, 0), pid);
        close(pidfd);
        assert_int_equal(vmstate_running(&p, 0, VMSTATE_PIN, &run), 0);
        vm_paths_done(&p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_check_startable, setup, teardown),
                cmocka_unit_test_setup_teardown(test_markers, setup, teardown),
                cmocka_unit_test_setup_teardown(test_running, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
