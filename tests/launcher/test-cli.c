/* Unit tests of the argument parsing of vrt start, stop, destroy, create,
 * init, spool and autostart: bad usage exits 2 with one line saying what is
 * wrong, and nothing is touched; refusals of a start come from vmstate with
 * its one message. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "launcher/cli/cli.h"
#include "launcher/lifecycle/create.h"

static char root[64], runtime[128], errfile[128], errbuf[8192];
static struct cli cli;

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
        snprintf(root, sizeof root, "/tmp/vrt-test-cli.XXXXXX");
        if (!mkdtemp(root))
                return -1;
        snprintf(runtime, sizeof runtime, "%s/run", root);
        snprintf(errfile, sizeof errfile, "%s/stderr", root);
        snprintf(path, sizeof path, "%s/vm", root);
        mkdir(path, 0755);
        cli = (struct cli){ .root = root, .runtime_dir = runtime };
        setenv("VRT_SERVICE_MANAGER", "detached", 1);
        return 0;
}

static int teardown(void **state) {
        (void)state;
        unsetenv("VRT_SERVICE_MANAGER");
        return create_remove_tree(root) == 0 ? 0 : -1;
}

/* Runs cmd with the words given (argv[0] is the command's name), stderr
 * into errbuf. Returns its exit status. */
static int run(int (*cmd)(struct cli *, int, char **), ...) {
        char *argv[16];
        int argc = 0;
        va_list ap;
        va_start(ap, cmd);
        for (const char *w; argc < 15 && (w = va_arg(ap, const char *));)
                argv[argc++] = (char *)w;
        va_end(ap);
        argv[argc] = NULL;
        fflush(stderr);
        int saved = dup(STDERR_FILENO);
        int fd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(saved >= 0 && fd >= 0);
        dup2(fd, STDERR_FILENO);
        close(fd);
        optind = 0;     /* as vrt.c: every command runs getopt afresh */
        int status = cmd(&cli, argc, argv);
        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        FILE *f = fopen(errfile, "re");
        size_t n = f ? fread(errbuf, 1, sizeof errbuf - 1, f) : 0;
        errbuf[n] = '\0';
        if (f)
                fclose(f);
        return status;
}

static void expect(int status, int want, const char *msg) {
        if (status != want || !strstr(errbuf, msg))
                fail_msg("status %d (want %d), stderr \"%s\" (want \"%s\" in it)", status, want, errbuf, msg);
}

static void assert_no_runtime(void) {
        struct stat st;
        assert_int_equal(stat(runtime, &st), -1);
}

static void test_start_stop_usage(void **state) {
        (void)state;
        expect(run(cmd_start, "start", NULL), CLI_INVALID, "usage: vrt start [--wait S] NAME...");
        expect(run(cmd_start, "start", "--wait", "0", "a", NULL), CLI_INVALID, "invalid --wait \"0\" (seconds, 1..86400)");
        expect(run(cmd_start, "start", "--wait", "5s", "a", NULL), CLI_INVALID, "invalid --wait \"5s\"");
        expect(run(cmd_start, "start", "--colour", "a", NULL), CLI_INVALID, "unrecognized option");
        expect(run(cmd_stop, "stop", NULL), CLI_INVALID, "usage: vrt stop");
        expect(run(cmd_stop, "stop", "--force", "--timeout", "5", "a", NULL), CLI_INVALID,
               "--force and --timeout exclude each other");
        expect(run(cmd_stop, "stop", "--timeout", "86401", "a", NULL), CLI_INVALID, "invalid --timeout \"86401\"");
        assert_no_runtime();
}

/* vrt start's refusals are vmstate's, one line each, exit 2. */
static void test_start_refusals(void **state) {
        (void)state;
        make_vm("gone", "image=testguest\nsize=small\n");
        put("vm/gone/DESTROYED", "");
        make_vm("failed", "image=testguest\nsize=small\ninit=setup.sh\n");
        put("vm/failed/INIT-FAILED", "init script setup.sh failed with status 3\n");
        make_vm("pending", "image=testguest\nsize=small\ninit=setup.sh\n");
        expect(run(cmd_start, "start", "ghost", NULL), CLI_INVALID, "vrt: ghost: no such VM (");
        expect(run(cmd_start, "start", "Bad_Name", NULL), CLI_INVALID, "vrt: Bad_Name: invalid VM name");
        expect(run(cmd_start, "start", "gone", NULL), CLI_INVALID, "vrt: gone: destroyed, not started (");
        expect(run(cmd_start, "start", "failed", NULL), CLI_INVALID,
               "vrt: failed: its first boot failed (init script setup.sh failed with status 3); "
               "fix init/setup.sh and run `vrt init --reset failed`, or `vrt destroy failed`\n");
        expect(run(cmd_start, "start", "pending", NULL), CLI_INVALID,
               "vrt: pending: its first boot (init=) has not completed");
        /* Several names: one line each. */
        expect(run(cmd_start, "start", "ghost", "gone", NULL), CLI_INVALID, "vrt: gone: destroyed");
        assert_non_null(strstr(errbuf, "vrt: ghost: no such VM"));
        expect(run(cmd_stop, "stop", "ghost", NULL), CLI_INVALID, "vrt: ghost: no such VM");
        assert_no_runtime();
}

static void test_destroy_usage(void **state) {
        (void)state;
        expect(run(cmd_destroy, "destroy", NULL), CLI_INVALID, "usage: vrt destroy [--force] NAME...");
        expect(run(cmd_destroy, "destroy", "--now", "a", NULL), CLI_INVALID, "usage: vrt destroy");
        expect(run(cmd_destroy, "destroy", "Bad_Name", NULL), CLI_INVALID, "vrt: Bad_Name: invalid VM name");
        expect(run(cmd_destroy, "destroy", "ghost", NULL), CLI_INVALID, "vrt: ghost: no such VM: ghost");
        struct stat st;
        char log[256];
        snprintf(log, sizeof log, "%s/log/destroy.log", root);
        assert_int_equal(stat(log, &st), -1);   /* bad input is not an action */
}

static void test_create_init_usage(void **state) {
        (void)state;
        expect(run(cmd_create, "create", NULL), CLI_INVALID, "usage: vrt create");
        expect(run(cmd_create, "create", "--image", "x", "file.properties", NULL), CLI_INVALID,
               "give either a properties file or --image/--size/..., not both");
        expect(run(cmd_create, "create", "--image", "x", "--comment", "a\nb=c", NULL), CLI_INVALID,
               "--comment: control character in value");
        expect(run(cmd_init, "init", NULL), CLI_INVALID, "usage: vrt init");
        expect(run(cmd_init, "init", "a", "b", NULL), CLI_INVALID, "usage: vrt init");
        expect(run(cmd_init, "init", "ghost", NULL), CLI_INVALID, "no such VM ghost");
        make_vm("plain", "image=testguest\nsize=small\n");
        expect(run(cmd_init, "init", "plain", NULL), CLI_INVALID, "plain has no init= in");
        make_vm("gone", "image=testguest\nsize=small\ninit=x.sh\n");
        put("vm/gone/DESTROYED", "");
        expect(run(cmd_init, "init", "--reset", "gone", NULL), CLI_INVALID, "gone is destroyed");
        assert_no_runtime();
}

static void test_spool_usage(void **state) {
        (void)state;
        expect(run(cmd_spool, "spool", "later", NULL), CLI_INVALID, "unknown queue \"later\" (inst, destroy, stop, start)");
        expect(run(cmd_spool, "spool", "--watch", "start", NULL), CLI_INVALID, "--watch takes all queues");
        expect(run(cmd_spool, "spool", "--rescan", "0", NULL), CLI_INVALID, "invalid --rescan \"0\"");
        expect(run(cmd_autostart, "autostart", "extra", NULL), CLI_INVALID, "usage: vrt autostart [--wait S]");
        expect(run(cmd_autostart, "autostart", "--wait", "x", NULL), CLI_INVALID, "invalid --wait \"x\"");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_start_stop_usage, setup, teardown),
                cmocka_unit_test_setup_teardown(test_start_refusals, setup, teardown),
                cmocka_unit_test_setup_teardown(test_destroy_usage, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_init_usage, setup, teardown),
                cmocka_unit_test_setup_teardown(test_spool_usage, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
