/* Unit tests of the spool (inst/ start/ stop/ destroy/, autostart) with
 * fake actions: which entries reach an action, which are dropped and
 * logged, start.lock, claims under overlapping runs (forked children),
 * inst/done and inst/failed, stale claims, the watch loop. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "launcher/core/lease.h"
#include "launcher/lifecycle/create.h"
#include "launcher/lifecycle/spool.h"

static char root[64];

/* What the fake actions saw; calls also go to ROOT/calls (O_APPEND), so
 * forked runs can be checked too. */
struct fake {
        char calls[4096];
        bool fail_instantiate;
        bool fail_destroy;
        bool check_claimed;     /* stop/start: assert the request is gone before acting */
        unsigned sleep_ms;      /* in start/stop, to make runs overlap */
};
static struct fake fake;

static char *path_of(const char *rel) {
        char *p;
        assert_true(asprintf(&p, "%s/%s", root, rel) > 0);
        return p;
}

static void touch(const char *rel) {
        char *p = path_of(rel);
        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        close(fd);
        free(p);
}

static void write_file(const char *rel, const char *text) {
        char *p = path_of(rel);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
        free(p);
}

static bool exists(const char *rel) {
        char *p = path_of(rel);
        struct stat st;
        bool e = lstat(p, &st) == 0;
        free(p);
        return e;
}

static char *read_file(const char *rel) {
        char *p = path_of(rel), *buf = calloc(1, 1 << 16);
        assert_non_null(buf);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                ssize_t n = read(fd, buf, (1 << 16) - 1);
                assert_true(n >= 0);
                close(fd);
        }
        free(p);
        return buf;
}

static unsigned count(const char *haystack, const char *needle) {
        unsigned n = 0;
        for (const char *p = haystack; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

static void mkdir_rel(const char *rel) {
        char *p = path_of(rel);
        assert_true(mkdir(p, 0755) == 0 || errno == EEXIST);
        free(p);
}

static void make_vm(const char *name, const char *extra) {
        char rel[256], text[256];
        snprintf(rel, sizeof rel, "vm/%s", name);
        mkdir_rel(rel);
        snprintf(rel, sizeof rel, "vm/%s/instance.properties", name);
        snprintf(text, sizeof text, "image=testguest\nsize=tiny\n%s", extra ? extra : "");
        write_file(rel, text);
}

static void record(const char *fmt, ...) {
        char line[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        strncat(fake.calls, line, sizeof fake.calls - strlen(fake.calls) - 1);
        char *p = path_of("calls");
        int fd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
        close(fd);
        free(p);
}

static void nap(unsigned ms) {
        struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
}

static int fake_start_stop(const char *what, const char *dir, char *const *names, size_t n, struct service_result *res) {
        for (size_t i = 0; i < n; i++) {
                char rel[256];
                snprintf(rel, sizeof rel, "%s/%s", dir, names[i]);
                if (fake.check_claimed)
                        assert_false(exists(rel));
                record("%s %s\n", what, names[i]);
                res[i].outcome = SERVICE_DONE;
                snprintf(res[i].message, sizeof res[i].message, "%s by fake", what);
        }
        if (fake.sleep_ms)
                nap(fake.sleep_ms);
        return 0;
}

static int fake_start(void *u, char *const *names, size_t n, struct service_result *res) {
        return fake_start_stop("start", "start", names, n, res);
}

static int fake_stop(void *u, char *const *names, size_t n, bool force, struct service_result *res) {
        return fake_start_stop(force ? "stop-forced" : "stop", "stop", names, n, res);
}

static int fake_destroy(void *u, const char *name, struct service_result *res) {
        record("destroy %s\n", name);
        if (fake.fail_destroy) {
                snprintf(res->message, sizeof res->message, "destroy failed: disk busy");
                return -EBUSY;
        }
        snprintf(res->message, sizeof res->message, "destroyed by fake");
        return 0;
}

static int fake_instantiate(void *u, const char *path, char **ret_name, char *err, size_t errlen) {
        const char *base = strrchr(path, '/');
        assert_non_null(base);
        /* The request was taken into a hidden per-run directory, name kept. */
        assert_non_null(strstr(path, "/inst/.claim-"));
        record("instantiate %s\n", base + 1);
        if (fake.fail_instantiate || strstr(base, "bad")) {
                snprintf(err, errlen, "%s:1: unknown key colour", base + 1);
                return -EINVAL;
        }
        *ret_name = strdup("newvm");
        return 0;
}

static const struct spool_handlers handlers = {
        .instantiate = fake_instantiate,
        .start = fake_start,
        .stop = fake_stop,
        .destroy = fake_destroy,
};

static struct spool spool_for_test(void) {
        return (struct spool){ .root = root, .runtime_dir = "/run/vrt-test", .h = &handlers };
}

static int setup(void **state) {
        snprintf(root, sizeof root, "/tmp/vrt-test-spool.XXXXXX");
        assert_non_null(mkdtemp(root));
        const char *dirs[] = { "vm", "inst", "start", "stop", "destroy", "log", "autostart" };
        for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
                mkdir_rel(dirs[i]);
        fake = (struct fake){ 0 };
        /* This host, and no host.conf limits, whatever the machine has. */
        setenv("VRT_HOST", "hostA", 1);
        setenv("VRT_HOST_CONF", "/nonexistent/host.conf", 1);
        return 0;
}

static int teardown(void **state) {
        assert_int_equal(create_remove_tree(root), 0);
        return 0;
}

static void test_queue_names(void **state) {
        for (int q = 0; q < _SPOOL_QUEUE_MAX; q++)
                assert_int_equal(spool_queue_from_string(spool_queue_to_string((enum spool_queue)q)), q);
        assert_int_equal(spool_queue_from_string("restart"), _SPOOL_QUEUE_INVALID);
        assert_null(spool_queue_to_string(_SPOOL_QUEUE_MAX));
}

static void test_root_ready(void **state) {
        char *vm = path_of("vm");
        assert_true(spool_root_ready(root));
        assert_int_equal(rmdir(vm), 0);
        assert_false(spool_root_ready(root));
        assert_int_equal(spool_wait_root(root, 0), -ETIMEDOUT);
        struct spool s = spool_for_test();
        struct spool_stats st = { 0 };
        assert_int_equal(spool_run(&s, &st), -ENOENT);
        write_file("vrt.conf", "accel=tcg\n");
        assert_true(spool_root_ready(root));
        assert_int_equal(spool_wait_root(root, 1), 0);
        free(vm);
}

static void test_start_entries(void **state) {
        struct spool s = spool_for_test();
        struct spool_stats st = { 0 };
        make_vm("alpha", NULL);
        make_vm("bravo", NULL);
        make_vm("gone", NULL);
        touch("vm/gone/DESTROYED");
        touch("start/alpha");
        touch("start/bravo");
        touch("start/gone");
        touch("start/nosuch");
        touch("start/Bad_Name");
        touch("start/.hidden");
        touch("start/.nfs0000000000001234");
        mkdir_rel("start/somedir");
        touch("start/somedir/inside");
        fake.check_claimed = true;

        assert_int_equal(spool_run_queue(&s, SPOOL_START, &st), 0);
        assert_string_equal(fake.calls, "start alpha\nstart bravo\n");
        assert_int_equal(st.done, 2);
        assert_int_equal(st.dropped, 4);
        assert_int_equal(st.failed, 0);
        assert_false(st.start_skipped);
        /* Everything visible was taken; hidden entries are not ours. */
        assert_false(exists("start/alpha"));
        assert_false(exists("start/gone"));
        assert_false(exists("start/nosuch"));
        assert_false(exists("start/Bad_Name"));
        assert_false(exists("start/somedir"));
        assert_true(exists("start/.hidden"));
        assert_true(exists("start/.nfs0000000000001234"));
        assert_true(exists("start.lock"));

        char *log = read_file("log/start.log");
        assert_non_null(strstr(log, " alpha: start by fake\n"));
        assert_non_null(strstr(log, " gone: destroyed, not started ("));
        assert_non_null(strstr(log, "/vm/gone/DESTROYED exists; `vrt cleanup` removes the VM): request removed\n"));
        assert_non_null(strstr(log, " nosuch: no such VM ("));
        assert_non_null(strstr(log, "/vm/nosuch/instance.properties: No such file or directory): request removed\n"));
        assert_non_null(strstr(log, " start/Bad_Name: invalid VM name"));
        assert_non_null(strstr(log, " start/somedir: a directory, not a request: removed\n"));
        /* Lines carry a timestamp: "YYYY-MM-DD HH:MM:SS ". */
        assert_true(log[4] == '-' && log[7] == '-' && log[10] == ' ' && log[13] == ':' && log[19] == ' ');
        free(log);

        /* A second run finds nothing to do. */
        fake.calls[0] = '\0';
        assert_int_equal(spool_run_queue(&s, SPOOL_START, &st), 0);
        assert_string_equal(fake.calls, "");
}

/* Several hosts on one root: a start naming another host, or for which
 * this host has no room, stays for the others; a forced stop is forced;
 * a request with bad text is dropped with file:line. */
static void test_placement(void **state) {
        struct spool s = spool_for_test();
        struct spool_stats st = { 0 };
        make_vm("alpha", NULL);
        make_vm("bravo", NULL);
        make_vm("charlie", NULL);
        make_vm("delta", NULL);
        write_file("start/alpha", "host=hostA\n");
        write_file("start/bravo", "# for the other one\nhost=hostB\n");
        write_file("start/charlie", "colour=blue\n");
        touch("start/delta");
        /* No host can start a VM that does not exist: not left for hostB. */
        write_file("start/nosuch", "host=hostB\n");
        write_file("stop/alpha", "force=yes\n");
        touch("stop/bravo");
        write_file("stop/charlie", "force=maybe\n");

        assert_int_equal(spool_run_queue(&s, SPOOL_START, &st), 0);
        assert_string_equal(fake.calls, "start alpha\nstart delta\n");
        assert_int_equal(st.done, 2);
        assert_int_equal(st.left, 1);
        assert_int_equal(st.dropped, 2);
        assert_true(exists("start/bravo"));
        assert_false(exists("start/charlie"));
        assert_false(exists("start/nosuch"));
        char *log = read_file("log/start.log");
        assert_non_null(strstr(log, " start/bravo: left for another host: for host hostB\n"));
        assert_non_null(strstr(log, " start/charlie:1: unknown key colour (host=, force=): request removed\n"));
        assert_non_null(strstr(log, " nosuch: no such VM ("));
        free(log);

        /* hostB itself takes it. */
        setenv("VRT_HOST", "hostB", 1);
        fake.calls[0] = '\0';
        st = (struct spool_stats){ 0 };
        assert_int_equal(spool_run_queue(&s, SPOOL_START, &st), 0);
        assert_string_equal(fake.calls, "start bravo\n");
        assert_false(exists("start/bravo"));

        /* No room: a reserve no host has. */
        write_file("host.conf", "reserve_memory=1000000G\n");
        char *hc = path_of("host.conf");
        setenv("VRT_HOST_CONF", hc, 1);
        touch("start/delta");
        fake.calls[0] = '\0';
        st = (struct spool_stats){ 0 };
        assert_int_equal(spool_run_queue(&s, SPOOL_START, &st), 0);
        assert_string_equal(fake.calls, "");
        assert_int_equal(st.left, 1);
        assert_true(exists("start/delta"));
        log = read_file("log/start.log");
        assert_non_null(strstr(log, " start/delta: left for another host: no room on host hostB: only "));
        free(log);
        /* A broken host.conf takes nothing and says where. */
        write_file("host.conf", "max_vms=lots\n");
        st = (struct spool_stats){ 0 };
        assert_int_equal(spool_run_queue(&s, SPOOL_START, &st), 0);
        assert_true(exists("start/delta"));
        log = read_file("log/start.log");
        assert_non_null(strstr(log, "host.conf:1: max_vms=lots"));
        free(log);
        free(hc);

        fake.calls[0] = '\0';
        st = (struct spool_stats){ 0 };
        assert_int_equal(spool_run_queue(&s, SPOOL_STOP, &st), 0);
        assert_string_equal(fake.calls, "stop bravo\nstop-forced alpha\n");
        assert_int_equal(st.dropped, 1);
        assert_false(exists("stop/charlie"));
        log = read_file("log/stop.log");
        assert_non_null(strstr(log, " stop/charlie:1: force=maybe: must be yes or no: request removed\n"));
        free(log);
}

static void test_start_lock_held(void **state) {
        struct spool s = spool_for_test();
        struct spool_stats st = { 0 };
        make_vm("alpha", NULL);
        touch("start/alpha");
        char *lock = path_of("start.lock");
        int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), 0);

        assert_int_equal(spool_run_queue(&s, SPOOL_START, &st), 0);
        assert_true(st.start_skipped);
        assert_string_equal(fake.calls, "");
        assert_true(exists("start/alpha"));     /* left for the next run */
        char *log = read_file("log/start.log");
        assert_non_null(strstr(log, "start run skipped: "));
        assert_int_equal(count(log, "\n"), 1);
        free(log);

        /* A retry in watch mode does not log again. */
        s.quiet_skip = true;
        assert_int_equal(spool_run_queue(&s, SPOOL_START, &st), 0);
        log = read_file("log/start.log");
        assert_int_equal(count(log, "\n"), 1);
        free(log);

        close(fd);
        s.quiet_skip = false;
        st = (struct spool_stats){ 0 };
        assert_int_equal(spool_run_queue(&s, SPOOL_START, &st), 0);
        assert_false(st.start_skipped);
        assert_string_equal(fake.calls, "start alpha\n");
        free(lock);
}

static void test_stop_and_destroy(void **state) {
        struct spool s = spool_for_test();
        struct spool_stats st = { 0 };
        make_vm("alpha", NULL);
        make_vm("bravo", NULL);
        touch("stop/alpha");
        touch("stop/ghost");
        touch("destroy/alpha");
        touch("destroy/bravo");
        fake.check_claimed = true;
        fake.fail_destroy = true;

        assert_int_equal(spool_run(&s, &st), 0);
        /* Queue order: destroy, then stop. */
        assert_string_equal(fake.calls, "destroy alpha\ndestroy bravo\nstop alpha\n");
        assert_int_equal(st.failed, 2);
        assert_int_equal(st.done, 1);
        assert_int_equal(st.dropped, 1);
        assert_false(exists("destroy/alpha"));
        assert_false(exists("stop/ghost"));
        char *log = read_file("log/destroy.log");
        assert_non_null(strstr(log, " alpha: destroy failed: disk busy\n"));
        free(log);
        log = read_file("log/stop.log");
        assert_non_null(strstr(log, " alpha: stop by fake\n"));
        assert_non_null(strstr(log, " ghost: no such VM"));
        free(log);
}

/* Runs queue q in n forked children at once; returns after all ended. */
static void overlapping_runs(enum spool_queue q, int n) {
        pid_t pids[8];
        for (int i = 0; i < n; i++) {
                pids[i] = fork();
                assert_true(pids[i] >= 0);
                if (pids[i] == 0) {
                        struct spool s = spool_for_test();
                        struct spool_stats st = { 0 };
                        _exit(spool_run_queue(&s, q, &st) == 0 ? 0 : 1);
                }
        }
        for (int i = 0; i < n; i++) {
                int status;
                assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
                assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
}

static void test_overlapping_stop_runs_act_once(void **state) {
        char name[32], rel[64];
        for (int i = 0; i < 40; i++) {
                snprintf(name, sizeof name, "vm%02d", i);
                make_vm(name, NULL);
                snprintf(rel, sizeof rel, "stop/%s", name);
                touch(rel);
        }
        overlapping_runs(SPOOL_STOP, 4);
        char *calls = read_file("calls");
        for (int i = 0; i < 40; i++) {
                char line[32];
                snprintf(line, sizeof line, "stop vm%02d\n", i);
                assert_int_equal(count(calls, line), 1);
        }
        free(calls);
        char *log = read_file("log/stop.log");
        assert_int_equal(count(log, ": stop by fake\n"), 40);
        free(log);
}

static void test_overlapping_start_runs_act_once(void **state) {
        char name[32], rel[64];
        for (int i = 0; i < 20; i++) {
                snprintf(name, sizeof name, "vm%02d", i);
                make_vm(name, NULL);
                snprintf(rel, sizeof rel, "start/%s", name);
                touch(rel);
        }
        fake.sleep_ms = 200;    /* hold start.lock while the other runs try */
        overlapping_runs(SPOOL_START, 3);
        char *calls = read_file("calls");
        for (int i = 0; i < 20; i++) {
                char line[32];
                snprintf(line, sizeof line, "start vm%02d\n", i);
                assert_int_equal(count(calls, line), 1);
        }
        free(calls);
        char *log = read_file("log/start.log");
        assert_int_equal(count(log, ": start by fake\n"), 20);
        free(log);
}

static void test_inst(void **state) {
        struct spool s = spool_for_test();
        struct spool_stats st = { 0 };
        write_file("inst/pluto-4711.properties", "image=testguest\nsize=tiny\n");
        write_file("inst/bad.properties", "colour=blue\n");
        write_file("inst/notes.txt", "not a request\n");
        mkdir_rel("inst/dir.properties");
        mkdir_rel("inst/done");
        write_file("inst/done/pluto-4711.properties", "an earlier request of the same name\n");

        assert_int_equal(spool_run_queue(&s, SPOOL_INST, &st), 0);
        assert_int_equal(count(fake.calls, "instantiate "), 2);
        assert_int_equal(st.done, 1);
        assert_int_equal(st.failed, 1);
        assert_false(exists("inst/pluto-4711.properties"));
        assert_true(exists("inst/done/pluto-4711.properties.1"));   /* the earlier one is kept */
        assert_false(exists("inst/bad.properties"));
        assert_true(exists("inst/failed/bad.properties"));
        char *why = read_file("inst/failed/bad.properties.error");
        assert_string_equal(why, "bad.properties:1: unknown key colour\n");
        free(why);
        assert_true(exists("inst/notes.txt"));
        assert_true(exists("inst/dir.properties"));
        /* No claim directory is left behind. */
        char *inst = path_of("inst");
        DIR *d = opendir(inst);
        struct dirent *de;
        assert_non_null(d);
        while ((de = readdir(d)))
                assert_null(strstr(de->d_name, ".claim-"));
        closedir(d);
        free(inst);
        char *log = read_file("log/create.log");
        assert_non_null(strstr(log, " inst/pluto-4711.properties: created VM newvm\n"));
        assert_non_null(strstr(log, " inst/bad.properties: failed: bad.properties:1: unknown key colour\n"));
        free(log);
}

static void test_inst_stale_claim_requeued(void **state) {
        struct spool s = spool_for_test();
        struct spool_stats st = { 0 };
        char host[65] = "", rel[256];
        pid_t dead = fork();
        assert_true(dead >= 0);
        if (dead == 0)
                _exit(0);
        assert_int_equal(waitpid(dead, NULL, 0), dead);
        /* Claims are named by the lease's host name (VRT_HOST here), not
         * the node name that hosts told apart by VRT_HOST share. */
        setenv("VRT_HOST", "hostA", 1);
        char why[128];
        assert_int_equal(lease_host_name(host, sizeof host, why, sizeof why), 0);
        assert_string_equal(host, "hostA");
        snprintf(rel, sizeof rel, "inst/.claim-hostB-%d", (int)dead);
        mkdir_rel(rel);
        snprintf(rel, sizeof rel, "inst/.claim-hostB-%d/theirs.properties", (int)dead);
        write_file(rel, "image=testguest\nsize=tiny\n");
        snprintf(rel, sizeof rel, "inst/.claim-%s-%d", host, (int)dead);
        mkdir_rel(rel);
        snprintf(rel, sizeof rel, "inst/.claim-%s-%d/orphan.properties", host, (int)dead);
        write_file(rel, "image=testguest\nsize=tiny\n");
        /* A live run's claim (ours) is not touched. */
        snprintf(rel, sizeof rel, "inst/.claim-%s-1", host);
        mkdir_rel(rel);
        snprintf(rel, sizeof rel, "inst/.claim-%s-1/busy.properties", host);
        write_file(rel, "image=testguest\nsize=tiny\n");

        assert_int_equal(spool_run_queue(&s, SPOOL_INST, &st), 0);
        assert_string_equal(fake.calls, "instantiate orphan.properties\n");
        assert_true(exists("inst/done/orphan.properties"));
        assert_true(exists(rel));
        /* Another host's claim, whatever its pid means here, stays its own. */
        snprintf(rel, sizeof rel, "inst/.claim-hostB-%d/theirs.properties", (int)dead);
        assert_true(exists(rel));
        char *log = read_file("log/create.log");
        assert_non_null(strstr(log, " inst/orphan.properties: requeued"));
        free(log);
}

/* inst/ may be writable by whoever drops requests: nothing there may make
 * the spool (root) read a file elsewhere, or move or write files elsewhere. */
static void test_inst_symlinks_not_followed(void **state) {
        struct spool s = spool_for_test();
        struct spool_stats st = { 0 };
        char host[65] = "", rel[256], *outside = path_of("outside"), *target;
        mkdir_rel("outside");
        write_file("outside/secret", "root:SECRET-HASH:19000:0:99999:7:::\n");
        write_file("outside/victim.properties", "image=testguest\nsize=tiny\n");
        char *link = path_of("inst/link.properties");
        assert_true(asprintf(&target, "%s/secret", outside) > 0);
        assert_int_equal(symlink(target, link), 0);
        free(target);
        free(link);
        /* A claim directory of a dead run that is really a symlink. */
        pid_t dead = fork();
        assert_true(dead >= 0);
        if (dead == 0)
                _exit(0);
        assert_int_equal(waitpid(dead, NULL, 0), dead);
        char host_err[128];
        assert_int_equal(lease_host_name(host, sizeof host, host_err, sizeof host_err), 0);
        snprintf(rel, sizeof rel, "inst/.claim-%s-%d", host, (int)dead);
        link = path_of(rel);
        assert_int_equal(symlink(outside, link), 0);
        free(link);

        assert_int_equal(spool_run_queue(&s, SPOOL_INST, &st), 0);
        assert_string_equal(fake.calls, "");
        assert_int_equal(st.failed, 1);
        assert_true(exists("outside/victim.properties"));
        assert_false(exists("inst/victim.properties"));
        assert_true(exists("inst/failed/link.properties"));
        char *why = read_file("inst/failed/link.properties.error");
        assert_non_null(strstr(why, "not a regular file"));
        assert_null(strstr(why, "SECRET"));
        free(why);
        char *log = read_file("log/create.log");
        assert_null(strstr(log, "SECRET"));
        free(log);

        /* inst/done and inst/failed planted as symlinks: requests are not
         * moved, nor error files written, through them. */
        char *done = path_of("inst/done");
        assert_int_equal(symlink(outside, done), 0);
        free(done);
        char *failed = path_of("inst/failed");
        assert_int_equal(create_remove_tree(failed), 0);
        assert_int_equal(symlink(outside, failed), 0);
        free(failed);
        write_file("inst/ok.properties", "image=testguest\nsize=tiny\n");
        write_file("inst/bad.properties", "colour=blue\n");
        memset(&st, 0, sizeof st);
        assert_int_equal(spool_run_queue(&s, SPOOL_INST, &st), 0);
        assert_false(exists("outside/ok.properties"));
        assert_false(exists("outside/bad.properties"));
        assert_false(exists("outside/bad.properties.error"));
        free(outside);
}

/* managed_by=pacemaker: requests and autostart entries for the VM are
 * refused and logged, the cluster decides; others still run. */
static void test_cluster_managed_left_alone(void **state) {
        struct spool s = spool_for_test();
        struct spool_stats st = { 0 };
        make_vm("alpha", "managed_by=pacemaker\n");
        make_vm("bravo", "managed_by=vrt\n");
        touch("start/alpha");
        touch("start/bravo");
        touch("stop/alpha");
        touch("destroy/alpha");
        touch("autostart/alpha");
        assert_int_equal(spool_run(&s, &st), 0);
        assert_int_equal(count(fake.calls, "start alpha"), 0);
        assert_int_equal(count(fake.calls, "stop alpha"), 0);
        assert_int_equal(count(fake.calls, "destroy alpha"), 0);
        assert_int_equal(count(fake.calls, "start bravo\n"), 1);
        assert_int_equal(st.failed, 3);
        assert_false(exists("start/alpha"));
        assert_false(exists("vm/alpha/DESTROYED"));
        char *log = read_file("log/start.log");
        assert_non_null(strstr(log, " alpha: managed_by=pacemaker: request ignored (the cluster decides; use pcs resource)\n"));
        free(log);
        struct spool_stats sa = { 0 };
        assert_int_equal(spool_autostart(&s, &sa), 0);
        assert_int_equal(count(fake.calls, "start alpha"), 0);
        assert_int_equal(sa.failed, 1);
        assert_int_equal(sa.done, 0);
        (void)state;
}

static void test_autostart(void **state) {
        struct spool s = spool_for_test();
        struct spool_stats st = { 0 };
        make_vm("alpha", NULL);
        make_vm("bravo", NULL);
        make_vm("charlie", "autostart=yes\n");
        make_vm("delta", "autostart=yes\n");
        make_vm("echo", "autostart=yes\n");
        make_vm("foxtrot", "autostart=no\n");
        make_vm("golf", NULL);
        touch("vm/delta/DESTROYED");
        touch("autostart/alpha");
        char *link = path_of("autostart/bravo.sh");
        assert_int_equal(symlink("../vm/bravo/start.sh", link), 0);     /* the seed's style, dangling */
        free(link);
        touch("autostart/echo");
        touch("autostart/Bad_Name");
        touch("autostart/ghost");
        touch("autostart/.hidden");

        assert_int_equal(spool_autostart(&s, &st), 0);
        assert_int_equal(count(fake.calls, "start "), 4);
        assert_int_equal(count(fake.calls, "start alpha\n"), 1);
        assert_int_equal(count(fake.calls, "start bravo\n"), 1);
        assert_int_equal(count(fake.calls, "start charlie\n"), 1);
        assert_int_equal(count(fake.calls, "start echo\n"), 1);
        assert_int_equal(st.done, 4);
        assert_int_equal(st.dropped, 2);
        /* Autostart entries are configuration: they stay. */
        assert_true(exists("autostart/alpha"));
        assert_true(exists("autostart/ghost"));
        char *log = read_file("log/start.log");
        assert_non_null(strstr(log, " autostart: alpha: start by fake\n"));
        assert_non_null(strstr(log, " autostart: delta: destroyed, not started ("));
        assert_non_null(strstr(log, " autostart: ghost: no such VM"));
        assert_non_null(strstr(log, " autostart: autostart/Bad_Name: invalid VM name"));
        free(log);
}

/* Polls for up to ms milliseconds until ROOT/calls contains needle. */
static bool wait_call(const char *needle, unsigned ms) {
        for (unsigned t = 0; t < ms; t += 10) {
                char *calls = read_file("calls");
                bool found = strstr(calls, needle) != NULL;
                free(calls);
                if (found)
                        return true;
                nap(10);
        }
        return false;
}

static void test_watch(void **state) {
        make_vm("alpha", NULL);
        make_vm("bravo", NULL);
        touch("start/alpha");   /* there before the watch starts */
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct spool s = spool_for_test();
                _exit(spool_watch(&s, 60) == 0 ? 0 : 1);
        }
        assert_true(wait_call("start alpha\n", 5000));
        touch("stop/bravo");
        assert_true(wait_call("stop bravo\n", 2000));   /* inotify, not the 60 s rescan */
        write_file("inst/x.properties", "image=testguest\nsize=tiny\n");
        assert_true(wait_call("instantiate x.properties\n", 2000));
        assert_int_equal(kill(pid, SIGTERM), 0);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        char *calls = read_file("calls");
        assert_int_equal(count(calls, "start alpha\n"), 1);
        free(calls);
}

static void test_watch_rescan(void **state) {
        make_vm("alpha", NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct spool s = spool_for_test();
                _exit(spool_watch(&s, 1) == 0 ? 0 : 1);
        }
        nap(300);
        /* Replace start/ by a new directory: the old watch is gone, like a
         * change inotify never reports; the rescan still finds the entry. */
        char *old = path_of("start"), *tmp = path_of("start.new");
        assert_int_equal(mkdir(tmp, 0755), 0);
        char *f = path_of("start.new/alpha");
        int fd = open(f, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        close(fd);
        assert_int_equal(rmdir(old), 0);
        assert_int_equal(rename(tmp, old), 0);
        assert_true(wait_call("start alpha\n", 4000));
        kill(pid, SIGTERM);
        assert_int_equal(waitpid(pid, NULL, 0), pid);
        free(old);
        free(tmp);
        free(f);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_queue_names, setup, teardown),
                cmocka_unit_test_setup_teardown(test_root_ready, setup, teardown),
                cmocka_unit_test_setup_teardown(test_start_entries, setup, teardown),
                cmocka_unit_test_setup_teardown(test_placement, setup, teardown),
                cmocka_unit_test_setup_teardown(test_start_lock_held, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stop_and_destroy, setup, teardown),
                cmocka_unit_test_setup_teardown(test_overlapping_stop_runs_act_once, setup, teardown),
                cmocka_unit_test_setup_teardown(test_overlapping_start_runs_act_once, setup, teardown),
                cmocka_unit_test_setup_teardown(test_inst, setup, teardown),
                cmocka_unit_test_setup_teardown(test_inst_stale_claim_requeued, setup, teardown),
                cmocka_unit_test_setup_teardown(test_inst_symlinks_not_followed, setup, teardown),
                cmocka_unit_test_setup_teardown(test_autostart, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cluster_managed_left_alone, setup, teardown),
                cmocka_unit_test_setup_teardown(test_watch, setup, teardown),
                cmocka_unit_test_setup_teardown(test_watch_rescan, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
