/* Unit tests of vrt create's library (create.c) and of destroy/cleanup
 * (destroy.c): all-or-nothing creation, the sweep of interrupted creates
 * in each of their states, concurrent creates, destroy and cleanup. The
 * template is made with qemu-img (skipped without it). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "images/qcow2.h"
#include "launcher/core/config.h"
#include "launcher/lifecycle/create.h"
#include "launcher/lifecycle/destroy.h"
#include "launcher/lifecycle/registry.h"
#include "fake-supervisor.h"

static char base[64];
static char root[128], run[128];
static bool have_qemu_img;

/* destroy waits for a supervisor with poll() on its pidfd, at most 1000 s
 * per call. When set, the next such long poll returns at once as if that
 * time had passed; all others are real. */
static bool expire_next_long_poll;
int poll(struct pollfd *fds, nfds_t n, int timeout) {
        if (expire_next_long_poll && timeout >= 1000000) {
                expire_next_long_poll = false;
                return 0;
        }
        struct timespec ts = { timeout / 1000, (long)(timeout % 1000) * 1000000L };
        return (int)syscall(SYS_ppoll, fds, n, timeout < 0 ? NULL : &ts, NULL, (size_t)8);
}

/* --- helpers --- */

static char *pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *pathf(const char *fmt, ...) {
        char rel[1024], *p;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rel, sizeof rel, fmt, ap);
        va_end(ap);
        assert_true(asprintf(&p, "%s/%s", root, rel) > 0);
        return p;
}

static void put(const char *rel, const char *text) {
        char *p = pathf("%s", rel);
        FILE *f = fopen(p, "we");
        assert_non_null(f);
        fputs(text, f);
        assert_int_equal(fclose(f), 0);
        free(p);
}

static char *slurp(const char *rel) {
        char *p = pathf("%s", rel), *buf = NULL;
        size_t cap = 0;
        FILE *f = fopen(p, "re");
        free(p);
        if (!f)
                return strdup("");
        ssize_t n = getdelim(&buf, &cap, '\0', f);
        fclose(f);
        if (n < 0) {
                free(buf);
                return strdup("");
        }
        return buf;
}

static bool exists(const char *rel) {
        char *p = pathf("%s", rel);
        bool e = access(p, F_OK) == 0;
        free(p);
        return e;
}

static int run_argv(char *const argv[]) {
        pid_t pid = fork();
        if (pid == 0) {
                int fd = open("/dev/null", O_WRONLY);
                dup2(fd, 1);
                dup2(fd, 2);
                execvp(argv[0], argv);
                _exit(127);
        }
        int status;
        waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void rm_rf(const char *path) {
        assert_int_equal(create_remove_tree(path), 0);
}

/* Entries of ROOT/vm, sorted into one comma-separated string. */
static char *vm_entries(void) {
        char *p = pathf("vm"), *out = calloc(1, 4096);
        DIR *d = opendir(p);
        struct dirent *de;
        free(p);
        assert_non_null(out);
        if (!d)
                return out;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                        if (*out)
                                strcat(out, ",");
                        strncat(out, de->d_name, 4096 - strlen(out) - 2);
                }
        closedir(d);
        return out;
}

static int setup(void **state) {
        (void)state;
        if (!have_qemu_img)
                skip();
        strcpy(base, "/tmp/vrt-create-XXXXXX");
        assert_non_null(mkdtemp(base));
        snprintf(root, sizeof root, "%s/root", base);
        snprintf(run, sizeof run, "%s/run", base);
        assert_int_equal(mkdir(root, 0755), 0);
        assert_int_equal(mkdir(run, 0755), 0);
        const char *dirs[] = { "images", "inst", "vm", "init", "log" };
        for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
                char *p = pathf("%s", dirs[i]);
                assert_int_equal(mkdir(p, 0755), 0);
                free(p);
        }
        put("vrt.conf", "accel=tcg\nsize.tiny.cpus=1\nsize.tiny.memory=128M\n"
                        "size.big.disk=1G\nsize.mini.disk=1M\n");
        char *tmpl = pathf("images/tmpl.qcow2");
        char *argv[] = { (char *)"qemu-img", (char *)"create", (char *)"-q", (char *)"-f", (char *)"qcow2", tmpl, (char *)"64M", NULL };
        assert_int_equal(run_argv(argv), 0);
        assert_int_equal(chmod(tmpl, 0444), 0);
        free(tmpl);
        return 0;
}

static int teardown(void **state) {
        (void)state;
        rm_rf(base);
        return 0;
}

static int create_from(const char *props, const char *default_name, struct create_result *res, char *err, size_t errlen) {
        char *p = pathf("inst/t.properties");
        put("inst/t.properties", props);
        struct create_request req = {
                .root = root, .runtime_dir = run, .props_path = p, .default_name = default_name,
        };
        int r = create_vm(&req, res, err, errlen);
        free(p);
        return r;
}

/* --- creation --- */

static void test_create_overlay(void **state) {
        struct create_result res = { 0 };
        char err[2048] = "";
        (void)state;
        assert_int_equal(create_from("image=tmpl\nsize=tiny\ncomment=first\nname=pluto-4711\nnet=none\n", NULL, &res, err, sizeof err), 0);
        assert_string_equal(res.name, "pluto-4711");
        assert_false(res.name_generated);
        assert_int_equal(res.disk_mode, DISK_OVERLAY);
        assert_string_equal(res.backing_file, "../../images/tmpl.qcow2");
        assert_int_equal(res.disk_size, 64 << 20);
        assert_true(exists("vm/pluto-4711/hdd.ovl"));
        assert_true(exists("vm/pluto-4711/log"));
        assert_false(exists("vm/pluto-4711/.lock"));
        assert_false(exists("vm/pluto-4711/.intent"));
        assert_false(exists("vm/pluto-4711/.commit"));

        char *props = slurp("vm/pluto-4711/instance.properties"), expect[512];
        snprintf(expect, sizeof expect, "image=tmpl\nsize=tiny\ncomment=first\nname=pluto-4711\ndisk=overlay\nnet=none\nmac=%s\n", res.mac);
        assert_string_equal(props, expect);
        free(props);

        /* The header records the relative backing file and its format. */
        char *ovl = pathf("vm/pluto-4711/hdd.ovl");
        int fd = open(ovl, O_RDONLY | O_CLOEXEC);
        struct qcow2_header h;
        assert_true(fd >= 0);
        assert_int_equal(qcow2_header_read(fd, &h, err, sizeof err), 0);
        close(fd);
        free(ovl);
        assert_string_equal(h.backing_file, "../../images/tmpl.qcow2");
        assert_string_equal(h.backing_format, "qcow2");
        assert_int_equal(h.size, 64 << 20);

        char *names = slurp("install/installed.txt"), *macs = slurp("install/mac-addresses.txt");
        assert_string_equal(names, "pluto-4711\n");
        snprintf(expect, sizeof expect, "%s\n", res.mac);
        assert_string_equal(macs, expect);
        free(names);
        free(macs);
        char *entries = vm_entries();
        assert_string_equal(entries, "pluto-4711");
        free(entries);
        create_result_done(&res);
}

/* Each NIC gets its own MAC, registered with the name; given ones are kept. */
static void test_create_nics(void **state) {
        struct create_result res = { 0 };
        char err[2048] = "";
        struct instance *inst = NULL;
        (void)state;
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=multi-1\nnet=none\nnet.1=user\nnet.2=user\n"
                                     "mac.2=52:54:00:00:00:42\n", NULL, &res, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "net.1= with net=none"));
        err[0] = '\0';
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=multi-1\nnet=user\nnet.1=user\nnet.2=user\n"
                                     "mac.2=52:54:00:00:00:42\n", NULL, &res, err, sizeof err), 0);
        char *path = pathf("vm/multi-1/instance.properties");
        assert_int_equal(instance_load(path, NULL, run, &inst, err, sizeof err), 0);
        assert_int_equal(inst->n_nics, 3);
        assert_string_equal(inst->nics[0].mac, res.mac);
        assert_string_equal(inst->nics[2].mac, "52:54:00:00:00:42");
        assert_non_null(inst->nics[1].mac);
        assert_string_not_equal(inst->nics[1].mac, inst->nics[0].mac);
        assert_string_not_equal(inst->nics[1].mac, inst->nics[2].mac);
        char *macs = slurp("install/mac-addresses.txt"), expect[256];
        snprintf(expect, sizeof expect, "%s\n%s\n%s\n", inst->nics[0].mac, inst->nics[1].mac, inst->nics[2].mac);
        assert_string_equal(macs, expect);
        snprintf(expect, sizeof expect, "%s, %s, %s", inst->nics[0].mac, inst->nics[1].mac, inst->nics[2].mac);
        assert_string_equal(res.macs, expect);
        free(macs);
        instance_free(inst);
        free(path);
        create_result_done(&res);
        /* A MAC of any NIC is never handed out again. */
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=multi-2\nmac=52:54:00:00:00:42\n", NULL, &res, err,
                                     sizeof err), -EINVAL);
        assert_non_null(strstr(err, "t.properties:4: mac=52:54:00:00:00:42 is already registered"));
}

static void test_create_names(void **state) {
        struct create_result res = { 0 };
        char err[2048] = "";
        (void)state;
        /* From the file name (default_name), then generated. */
        assert_int_equal(create_from("image=tmpl\nsize=tiny\n", "venus-1", &res, err, sizeof err), 0);
        assert_string_equal(res.name, "venus-1");
        create_result_done(&res);
        assert_int_equal(create_from("image=tmpl\nsize=tiny\n", NULL, &res, err, sizeof err), 0);
        assert_true(res.name_generated);
        assert_int_equal(strlen(res.name), strlen("tmpl-1234"));
        assert_memory_equal(res.name, "tmpl-", 5);
        for (int i = 5; i < 9; i++)
                assert_true(res.name[i] >= '0' && res.name[i] <= '9');
        create_result_done(&res);

        /* An explicit name wins over the default and must match name=. */
        char *p = pathf("inst/t.properties");
        put("inst/t.properties", "image=tmpl\nsize=tiny\n");
        struct create_request req = { .root = root, .runtime_dir = run, .props_path = p, .name = "mars-2", .default_name = "ignored" };
        assert_int_equal(create_vm(&req, &res, err, sizeof err), 0);
        assert_string_equal(res.name, "mars-2");
        create_result_done(&res);
        put("inst/t.properties", "image=tmpl\nsize=tiny\nname=mars-3\n");
        req.name = "mars-4";
        assert_int_equal(create_vm(&req, &res, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "t.properties:3: name=mars-3 conflicts with the name mars-4 given"));
        free(p);

        char *got = NULL;
        assert_int_equal(create_default_name("/x/inst/pluto-4711.properties", &got), 0);
        assert_string_equal(got, "pluto-4711");
        free(got);
        assert_int_equal(create_default_name("inst/instance.properties", &got), 0);
        assert_null(got);
        assert_int_equal(create_default_name("inst/instance-2.properties", &got), 0);
        assert_null(got);
        assert_int_equal(create_default_name("Foo_Bar.properties", &got), 0);
        assert_null(got);
        assert_int_equal(create_default_name("plain", &got), 0);
        assert_string_equal(got, "plain");
        free(got);
}

static int progress_calls;
static uint64_t progress_last, progress_total;
static int count_progress(uint64_t done, uint64_t total, void *userdata) {
        (void)userdata;
        progress_calls++;
        progress_last = done;
        progress_total = total;
        return 0;
}

static void test_create_copy_and_sizes(void **state) {
        struct create_result res = { 0 };
        char err[2048] = "";
        (void)state;
        char *p = pathf("inst/t.properties");
        put("inst/t.properties", "image=tmpl\nsize=big\ndisk=copy\nname=copy-1\n");
        struct create_request req = { .root = root, .runtime_dir = run, .props_path = p, .progress = count_progress };
        assert_int_equal(create_vm(&req, &res, err, sizeof err), 0);
        free(p);
        assert_int_equal(res.disk_mode, DISK_COPY);
        assert_null(res.backing_file);
        assert_true(res.size_not_applied);      /* a copy keeps the template's 64M */
        assert_true(exists("vm/copy-1/hdd.img"));
        assert_false(exists("vm/copy-1/hdd.ovl"));
        assert_true(progress_calls >= 2);
        assert_true(progress_last == progress_total);
        create_result_done(&res);

        /* An overlay grows to the size class's disk ... */
        assert_int_equal(create_from("image=tmpl\nsize=big\nname=big-1\n", NULL, &res, err, sizeof err), 0);
        assert_int_equal(res.disk_size, 1 << 30);
        create_result_done(&res);
        /* ... not beyond what qcow2 can address, nor wrap when rounded ... */
        put("vrt.conf", "accel=tcg\nsize.tiny.cpus=1\nsize.tiny.memory=128M\n"
                        "size.huge.disk=18446744073709551615\nsize.vast.disk=4096T\n");
        assert_int_equal(create_from("image=tmpl\nsize=huge\nname=huge-1\n", NULL, &res, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "t.properties:2: size=huge: its disk of 18446744073709551615 bytes exceeds the qcow2 limit"));
        assert_int_equal(create_from("image=tmpl\nsize=vast\nname=vast-1\n", NULL, &res, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "t.properties:2: size=vast: its disk of 4096T exceeds the qcow2 limit"));
        assert_false(exists("vm/huge-1"));
        assert_false(exists("vm/vast-1"));
        put("vrt.conf", "accel=tcg\nsize.tiny.cpus=1\nsize.tiny.memory=128M\n"
                        "size.big.disk=1G\nsize.mini.disk=1M\n");
        /* ... but cannot shrink below the template. */
        assert_int_equal(create_from("image=tmpl\nsize=mini\nname=mini-1\n", NULL, &res, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "t.properties:2: size=mini: its disk of 1M is smaller than template tmpl (64M)"));
        assert_false(exists("vm/mini-1"));
}

/* A template that is itself an overlay (relative backing file, as `vrt
 * image overlay` writes) cannot be copied: the copy's backing file would
 * not resolve from vm/NAME. Refused as bad input, nothing left behind; an
 * overlay over it works. */
static void test_create_copy_of_layered_template(void **state) {
        struct create_result res = { 0 };
        char err[2048] = "";
        (void)state;
        char *layered = pathf("images/layered.qcow2");
        char *argv[] = { (char *)"qemu-img", (char *)"create", (char *)"-q", (char *)"-f", (char *)"qcow2",
                         (char *)"-b", (char *)"tmpl.qcow2", (char *)"-F", (char *)"qcow2", layered, NULL };
        assert_int_equal(run_argv(argv), 0);
        free(layered);
        assert_int_equal(create_from("image=layered\nsize=tiny\ndisk=copy\nname=lay-1\n", NULL, &res, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "t.properties:1: image=layered: disk=copy cannot copy template"));
        assert_null(strchr(err, '\n'));
        char *entries = vm_entries(), *names = slurp("install/installed.txt");
        assert_string_equal(entries, "");
        assert_string_equal(names, "");
        free(entries);
        free(names);
        assert_int_equal(create_from("image=layered\nsize=tiny\nname=lay-2\n", NULL, &res, err, sizeof err), 0);
        create_result_done(&res);
}

struct bad_case {
        const char *props;
        const char *expect;     /* substring of the one-line error */
};

static void test_create_bad_input_leaves_nothing(void **state) {
        static const struct bad_case cases[] = {
                { "image=nope\nsize=tiny\n", "t.properties:1: image=nope: template" },
                { "image=tmpl\nsize=huge\n", "t.properties:2: unknown size \"huge\"" },
                { "size=tiny\n", "missing required key image" },
                { "image=tmpl\n", "missing required key size" },
                { "image=tmpl\nsize=tiny\nmac=01:00:5e:00:00:01\n", "t.properties:3: invalid mac \"01:00:5e:00:00:01\"" },
                { "image=tmpl\nsize=tiny\nmac=52:54:00:zz:00:01\n", "t.properties:3: invalid mac" },
                { "image=tmpl\nsize=tiny\nmac=00:00:00:00:00:00\n", "t.properties:3: invalid mac" },
                { "image=tmpl\nsize=tiny\ninit=missing.sh\n", "t.properties:3: init=missing.sh:" },
                { "image=tmpl\nsize=tiny\nname=Bad_Name\n", "t.properties:3: invalid VM name" },
                { "image=tmpl\nsize=tiny\ncolour=red\n", "t.properties:3: unknown key colour" },
                { "image=tmpl\nsize=tiny\nname=taken-1\n", "name taken-1 is already registered" },
                { "image=tmpl\nsize=tiny\nmac=52:54:00:00:00:99\n", "t.properties:3: mac=52:54:00:00:00:99 is already registered" },
                { "image=../etc\nsize=tiny\n", "t.properties:1: invalid image name" },
                { "image=tmpl\nsize=tiny\ndisk=thin\n", "t.properties:3: invalid disk \"thin\"" },
                { "image=tmpl\nsize=tiny\nnet.1=user\nmac.1=52:54:00:00:00:99\n", "t.properties:4: mac.1=52:54:00:00:00:99 is already registered" },
                { "image=tmpl\nsize=tiny\nnet.2=user\n", "t.properties:3: NIC 2 has keys but NIC 1 has no net.1=" },
        };
        struct create_result res = { 0 };
        char err[2048];
        (void)state;
        /* Entries that make the two "taken" cases fail. */
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=taken-1\nmac=52:54:00:00:00:99\n", NULL, &res, err, sizeof err), 0);
        create_result_done(&res);
        char *names_before = slurp("install/installed.txt"), *macs_before = slurp("install/mac-addresses.txt");
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                err[0] = '\0';
                int r = create_from(cases[i].props, NULL, &res, err, sizeof err);
                if (r != -EINVAL || !strstr(err, cases[i].expect))
                        fail_msg("case %zu: r=%d err=\"%s\", expected \"%s\"", i, r, err, cases[i].expect);
                assert_null(strchr(err, '\n'));
                char *entries = vm_entries(), *n = slurp("install/installed.txt"), *m = slurp("install/mac-addresses.txt");
                assert_string_equal(entries, "taken-1");
                assert_string_equal(n, names_before);
                assert_string_equal(m, macs_before);
                free(entries);
                free(n);
                free(m);
        }
        free(names_before);
        free(macs_before);
}

static void test_create_cancel(void **state) {
        struct create_result res = { 0 };
        volatile sig_atomic_t cancel = 1;
        char err[2048] = "";
        (void)state;
        char *p = pathf("inst/t.properties");
        put("inst/t.properties", "image=tmpl\nsize=tiny\nname=gone-1\n");
        struct create_request req = { .root = root, .runtime_dir = run, .props_path = p, .cancel = &cancel };
        assert_int_equal(create_vm(&req, &res, err, sizeof err), -ECANCELED);
        free(p);
        char *entries = vm_entries(), *names = slurp("install/installed.txt");
        assert_string_equal(entries, "");
        assert_string_equal(names, "");
        free(entries);
        free(names);
}

/* A copy that hits the file size limit: the disk-full path. */
static void test_create_disk_full(void **state) {
        (void)state;
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct rlimit rl = { 64 * 1024, 64 * 1024 };
                struct create_result res = { 0 };
                char err[2048] = "";
                signal(SIGXFSZ, SIG_IGN);
                /* A template with data, so the copy must write. */
                char *tmpl = pathf("images/tmpl.qcow2");
                char *fill[] = { (char *)"qemu-io", (char *)"-c", (char *)"write -P 0x55 0 1M", tmpl, NULL };
                chmod(tmpl, 0644);
                if (run_argv(fill) != 0)
                        _exit(3);
                if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
                        _exit(4);
                int r = create_from("image=tmpl\nsize=tiny\ndisk=copy\nname=full-1\n", NULL, &res, err, sizeof err);
                _exit(r == -EFBIG || r == -ENOSPC ? 0 : 5);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        char *entries = vm_entries(), *names = slurp("install/installed.txt");
        assert_string_equal(entries, "");
        assert_string_equal(names, "");
        free(entries);
        free(names);
}

static void test_create_malformed_registry(void **state) {
        struct create_result res = { 0 };
        char err[2048] = "";
        (void)state;
        char *d = pathf("install");
        assert_int_equal(mkdir(d, 0755), 0);
        free(d);
        put("install/installed.txt", "ok-1\nnot ok\n");
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=x-1\n", NULL, &res, err, sizeof err), -EUCLEAN);
        assert_non_null(strstr(err, "installed.txt:2: invalid VM name \"not ok\""));
        char *entries = vm_entries();
        assert_string_equal(entries, "");
        free(entries);
}

/* --- the sweep of interrupted creates --- */

static void make_staging(const char *name, const char *mac, bool with_disk) {
        char rel[256], text[256];
        snprintf(rel, sizeof rel, "vm/.%s.creating", name);
        char *p = pathf("%s", rel);
        assert_int_equal(mkdir(p, 0755), 0);
        free(p);
        snprintf(rel, sizeof rel, "vm/.%s.creating/.lock", name);
        put(rel, "");
        snprintf(rel, sizeof rel, "vm/.%s.creating/.intent", name);
        snprintf(text, sizeof text, "name=%s\nmac=%s\n", name, mac);
        put(rel, text);
        snprintf(rel, sizeof rel, "vm/.%s.creating/instance.properties", name);
        snprintf(text, sizeof text, "image=tmpl\nsize=tiny\nname=%s\nmac=%s\n", name, mac);
        put(rel, text);
        if (with_disk) {
                snprintf(rel, sizeof rel, "vm/.%s.creating/hdd.ovl", name);
                put(rel, "x");
        }
}

static int sweep_now(void) {
        struct registry *reg = NULL;
        char err[1024] = "";
        assert_int_equal(registry_lock(root, &reg, err, sizeof err), 0);
        int r = create_sweep(root, reg, err, sizeof err);
        registry_free(reg);
        return r;
}

static void test_sweep_killed_while_building(void **state) {
        (void)state;
        make_staging("build-1", "52:54:00:00:00:01", false);
        assert_int_equal(sweep_now(), 1);
        char *entries = vm_entries();
        assert_string_equal(entries, "");
        free(entries);
        char *names = slurp("install/installed.txt");
        assert_string_equal(names, "");
        free(names);
}

/* Killed between mkdir and creating .lock (both happen under the registry
 * lock, so the sweeper knows no live creator is in that moment). */
static void test_sweep_no_lock_file(void **state) {
        (void)state;
        make_staging("early-1", "52:54:00:00:00:05", false);
        char *lock = pathf("vm/.early-1.creating/.lock");
        assert_int_equal(unlink(lock), 0);
        free(lock);
        assert_int_equal(sweep_now(), 1);
        char *entries = vm_entries();
        assert_string_equal(entries, "");
        free(entries);
}

static void test_sweep_killed_between_appends(void **state) {
        (void)state;
        char *d = pathf("install");
        assert_int_equal(mkdir(d, 0755), 0);
        free(d);
        put("install/installed.txt", "old-1\n");
        put("install/mac-addresses.txt", "52:54:00:00:00:aa\n");
        make_staging("half-1", "52:54:00:00:00:02", true);
        put("vm/.half-1.creating/.commit", "names_size=6\nmacs_size=18\n");
        /* The dead creator appended its MAC and part of its name. */
        put("install/mac-addresses.txt", "52:54:00:00:00:aa\n52:54:00:00:00:02\n");
        put("install/installed.txt", "old-1\nhalf");
        assert_int_equal(sweep_now(), 1);
        char *names = slurp("install/installed.txt"), *macs = slurp("install/mac-addresses.txt"), *entries = vm_entries();
        assert_string_equal(names, "old-1\n");
        assert_string_equal(macs, "52:54:00:00:00:aa\n");
        assert_string_equal(entries, "");
        free(names);
        free(macs);
        free(entries);
}

static void test_sweep_killed_after_commit(void **state) {
        (void)state;
        char *d = pathf("install");
        assert_int_equal(mkdir(d, 0755), 0);
        free(d);
        make_staging("done-1", "52:54:00:00:00:03", true);
        put("vm/.done-1.creating/.commit", "names_size=0\nmacs_size=0\n");
        put("install/mac-addresses.txt", "52:54:00:00:00:03\n");
        put("install/installed.txt", "done-1\n");
        assert_int_equal(sweep_now(), 1);
        /* Rolled forward: the VM is published, without control files. */
        char *entries = vm_entries();
        assert_string_equal(entries, "done-1");
        free(entries);
        assert_true(exists("vm/done-1/hdd.ovl"));
        assert_false(exists("vm/done-1/.lock"));
        assert_false(exists("vm/done-1/.commit"));
        assert_false(exists("vm/done-1/.intent"));
        char *names = slurp("install/installed.txt");
        assert_string_equal(names, "done-1\n");
        free(names);
}

/* A live creator (another process holding .lock) is left alone, and its
 * name and MAC are not given to anybody else. */
static void test_sweep_spares_live_creator(void **state) {
        struct create_result res = { 0 };
        char err[2048] = "";
        int ready[2], release[2];
        char c;
        (void)state;
        make_staging("live-1", "52:54:00:00:00:04", false);
        /* Its second NIC's MAC is reserved as well. */
        put("vm/.live-1.creating/.intent", "name=live-1\nmac=52:54:00:00:00:04\nmac.1=52:54:00:00:00:05\n");
        assert_int_equal(pipe(ready), 0);
        assert_int_equal(pipe(release), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                char *lock = pathf("vm/.live-1.creating/.lock");
                int fd = open(lock, O_RDWR | O_CLOEXEC);
                if (fd < 0 || flock(fd, LOCK_EX) < 0)
                        _exit(1);
                if (write(ready[1], "x", 1) != 1 || read(release[0], &c, 1) != 1)
                        _exit(2);
                _exit(0);
        }
        assert_int_equal(read(ready[0], &c, 1), 1);
        assert_int_equal(sweep_now(), 0);
        assert_true(exists("vm/.live-1.creating/.intent"));
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=live-1\n", NULL, &res, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "being created right now by another vrt create"));
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=other-1\nmac=52:54:00:00:00:04\n", NULL, &res, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "t.properties:4: mac=52:54:00:00:00:04 is being given to live-1"));
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=other-2\nnet.1=user\nmac.1=52:54:00:00:00:05\n", NULL, &res,
                                     err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "t.properties:5: mac.1=52:54:00:00:00:05 is being given to live-1"));
        /* Others still get created next to it. */
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=other-2\n", NULL, &res, err, sizeof err), 0);
        create_result_done(&res);
        assert_true(exists("vm/.live-1.creating"));

        /* Once the creator is gone, the next create sweeps its leftovers. */
        assert_int_equal(write(release[1], "x", 1), 1);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=live-1\n", NULL, &res, err, sizeof err), 0);
        create_result_done(&res);
        char *entries = vm_entries();
        assert_non_null(strstr(entries, "live-1"));
        assert_null(strstr(entries, ".live-1.creating"));
        free(entries);
        close(ready[0]);
        close(ready[1]);
        close(release[0]);
        close(release[1]);
}

#define PARALLEL 8

static void test_parallel_creates(void **state) {
        pid_t pids[PARALLEL];
        struct registry *reg = NULL;
        char err[2048] = "";
        (void)state;
        put("inst/p.properties", "image=tmpl\nsize=tiny\n");
        char *p = pathf("inst/p.properties");
        for (int i = 0; i < PARALLEL; i++) {
                pids[i] = fork();
                assert_true(pids[i] >= 0);
                if (pids[i] == 0) {
                        struct create_result res = { 0 };
                        struct create_request req = { .root = root, .runtime_dir = run, .props_path = p };
                        _exit(create_vm(&req, &res, err, sizeof err) == 0 ? 0 : 1);
                }
        }
        for (int i = 0; i < PARALLEL; i++) {
                int status;
                assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
                assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
        free(p);
        assert_int_equal(registry_load(root, &reg, err, sizeof err), 0);
        assert_int_equal(reg->n_names, PARALLEL);
        assert_int_equal(reg->n_macs, PARALLEL);
        for (size_t i = 0; i < reg->n_names; i++) {
                char rel[300];
                snprintf(rel, sizeof rel, "vm/%s/hdd.ovl", reg->names[i].name);
                assert_true(exists(rel));
                for (size_t k = i + 1; k < reg->n_names; k++)
                        assert_string_not_equal(reg->names[i].name, reg->names[k].name);
                for (size_t k = i + 1; k < reg->n_macs; k++)
                        assert_memory_not_equal(reg->macs[i].mac, reg->macs[k].mac, MAC_LEN);
        }
        registry_free(reg);
}

/* --- destroy and cleanup --- */

static void test_destroy_not_running(void **state) {
        struct create_result res = { 0 };
        struct destroy_result d = { 0 };
        char err[2048] = "";
        (void)state;
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=d-1\n", NULL, &res, err, sizeof err), 0);
        create_result_done(&res);
        assert_int_equal(destroy_vm(root, run, "d-1", false, &d, err, sizeof err), 0);
        assert_false(d.was_running);
        assert_false(d.already_destroyed);
        assert_string_equal(d.removed[0], "hdd.ovl");
        assert_false(exists("vm/d-1/hdd.ovl"));
        assert_true(exists("vm/d-1/instance.properties"));
        char *marker = slurp("vm/d-1/DESTROYED");
        assert_memory_equal(marker, "destroyed=", 10);
        free(marker);
        /* The runtime dir it used as a lock is gone again. */
        char rt[256];
        snprintf(rt, sizeof rt, "%s/d-1", run);
        assert_int_equal(access(rt, F_OK), -1);

        /* Idempotent: the first timestamp stays. */
        char *first = slurp("vm/d-1/DESTROYED");
        memset(&d, 0, sizeof d);
        assert_int_equal(destroy_vm(root, run, "d-1", false, &d, err, sizeof err), 0);
        assert_true(d.already_destroyed);
        assert_string_equal(d.removed[0], "");
        char *second = slurp("vm/d-1/DESTROYED");
        assert_string_equal(first, second);
        free(first);
        free(second);

        assert_int_equal(destroy_vm(root, run, "never-1", false, &d, err, sizeof err), -ENOENT);
        assert_non_null(strstr(err, "no such VM: never-1"));
        assert_int_equal(destroy_vm(root, run, "Bad_Name", false, &d, err, sizeof err), -EINVAL);
}

/* A VM running on another host sharing the root: no supervisor here, but
 * its QEMU holds image locks on the disk (as QEMU's file-posix does, OFD
 * locks from byte 100). Destroy refuses and deletes nothing; once the lock
 * is gone it destroys. With qemu-system-x86_64 at hand, a real QEMU holds
 * the disk too. */
static void test_destroy_disk_held_elsewhere(void **state) {
        struct create_result res = { 0 };
        struct destroy_result d = { 0 };
        char err[2048] = "";
        (void)state;
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=far-1\n", NULL, &res, err, sizeof err), 0);
        create_result_done(&res);
        char *disk = pathf("vm/far-1/hdd.ovl");
        int fd = open(disk, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 101, .l_len = 1 };
        assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
        assert_int_equal(destroy_vm(root, run, "far-1", true, &d, err, sizeof err), -EBUSY);
        assert_non_null(strstr(err, "hdd.ovl is in use by a QEMU process"));
        assert_true(exists("vm/far-1/hdd.ovl"));
        assert_false(exists("vm/far-1/DESTROYED"));
        close(fd);

        char *qemu_argv[] = { (char *)"qemu-system-x86_64", (char *)"-S", (char *)"-nodefaults", (char *)"-display",
                              (char *)"none", (char *)"-accel", (char *)"tcg", (char *)"-machine", (char *)"q35", (char *)"-blockdev",
                              NULL, (char *)"-blockdev", (char *)"{\"driver\":\"qcow2\",\"file\":\"f\",\"node-name\":\"d\"}",
                              (char *)"-device", (char *)"virtio-blk-pci,drive=d", NULL };
        char *file_node = NULL;
        assert_true(asprintf(&file_node, "{\"driver\":\"file\",\"filename\":\"%s\",\"node-name\":\"f\"}", disk) > 0);
        qemu_argv[10] = file_node;
        if (access("/usr/bin/qemu-system-x86_64", X_OK) == 0) {
                pid_t q = fork();
                assert_true(q >= 0);
                if (q == 0) {
                        int null = open("/dev/null", O_RDWR);
                        dup2(null, 0);
                        dup2(null, 1);
                        dup2(null, 2);
                        prctl(PR_SET_PDEATHSIG, SIGKILL);
                        execv("/usr/bin/qemu-system-x86_64", qemu_argv);
                        _exit(127);
                }
                /* Wait until QEMU has opened the disk. */
                for (int i = 0; i < 200; i++) {
                        struct flock probe = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 200 };
                        int pfd = open(disk, O_RDONLY | O_CLOEXEC);
                        assert_true(pfd >= 0);
                        assert_int_equal(fcntl(pfd, F_OFD_GETLK, &probe), 0);
                        close(pfd);
                        if (probe.l_type != F_UNLCK)
                                break;
                        usleep(50 * 1000);
                }
                assert_int_equal(destroy_vm(root, run, "far-1", true, &d, err, sizeof err), -EBUSY);
                assert_true(exists("vm/far-1/hdd.ovl"));
                kill(q, SIGKILL);
                assert_int_equal(waitpid(q, NULL, 0), q);
        }
        free(file_node);
        free(disk);

        assert_int_equal(destroy_vm(root, run, "far-1", true, &d, err, sizeof err), 0);
        assert_false(exists("vm/far-1/hdd.ovl"));
        assert_true(exists("vm/far-1/DESTROYED"));
}

/* A stand-in supervisor: holds the VM's lock, writes its pid, is called
 * vrt-launch, and reports the SIGTERM's queued value before it exits. */
static pid_t fake_supervisor(const char *name, int report_fd) {
        int ready[2];
        char c;
        assert_int_equal(pipe(ready), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                char dir[256], path[300];
                sigset_t set;
                siginfo_t si;
                snprintf(dir, sizeof dir, "%s/%s", run, name);
                mkdir(dir, 0755);
                snprintf(path, sizeof path, "%s/lock", dir);
                int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
                if (fd < 0 || flock(fd, LOCK_EX) < 0)
                        _exit(1);
                snprintf(path, sizeof path, "%s/pid", dir);
                FILE *f = fopen(path, "we");
                if (!f)
                        _exit(1);
                fprintf(f, "%d\n", (int)getpid());
                fclose(f);
                prctl(PR_SET_NAME, "vrt-launch");
                sigemptyset(&set);
                sigaddset(&set, SIGTERM);
                sigprocmask(SIG_BLOCK, &set, NULL);
                if (write(ready[1], "x", 1) != 1)
                        _exit(1);
                if (sigwaitinfo(&set, &si) != SIGTERM)
                        _exit(1);
                int value = si.si_code == SI_QUEUE ? si.si_value.sival_int : 0;
                if (write(report_fd, &value, sizeof value) != sizeof value)
                        _exit(1);
                unlink(path);
                _exit(0);
        }
        assert_int_equal(read(ready[0], &c, 1), 1);
        close(ready[0]);
        close(ready[1]);
        return pid;
}

static void test_destroy_running(void **state) {
        struct create_result res = { 0 };
        struct destroy_result d = { 0 };
        char err[2048] = "";
        int report[2], value = -1, status;
        (void)state;
        assert_int_equal(pipe(report), 0);
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=r-1\n", NULL, &res, err, sizeof err), 0);
        create_result_done(&res);
        pid_t pid = fake_supervisor("r-1", report[1]);
        assert_int_equal(destroy_vm(root, run, "r-1", false, &d, err, sizeof err), 0);
        assert_true(d.was_running);
        assert_int_equal(read(report[0], &value, sizeof value), sizeof value);
        assert_int_equal(value, 0);     /* a plain graceful SIGTERM */
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_false(exists("vm/r-1/hdd.ovl"));
        assert_true(exists("vm/r-1/DESTROYED"));

        /* --force: the SIGTERM carries a 1 s shutdown timeout. */
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=r-2\n", NULL, &res, err, sizeof err), 0);
        create_result_done(&res);
        pid = fake_supervisor("r-2", report[1]);
        memset(&d, 0, sizeof d);
        assert_int_equal(destroy_vm(root, run, "r-2", true, &d, err, sizeof err), 0);
        assert_true(d.was_running);
        assert_int_equal(read(report[0], &value, sizeof value), sizeof value);
        assert_int_equal(value, 1);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(exists("vm/r-2/DESTROYED"));

        /* A shutdown timeout beyond one poll's 1000 s: the first 1000 s
         * passing is no reason to give up. */
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=r-3\nshutdown_timeout=3600\n", NULL, &res, err, sizeof err), 0);
        create_result_done(&res);
        pid = fake_supervisor("r-3", report[1]);
        memset(&d, 0, sizeof d);
        expire_next_long_poll = true;
        assert_int_equal(destroy_vm(root, run, "r-3", false, &d, err, sizeof err), 0);
        assert_false(expire_next_long_poll);
        assert_true(d.was_running);
        assert_int_equal(read(report[0], &value, sizeof value), sizeof value);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(exists("vm/r-3/DESTROYED"));
        close(report[0]);
        close(report[1]);
}

/* destroy stops through stop.c: --force is a QMP quit on monitor.sock
 * and no signal, and a vrt.conf that no longer parses does not keep a VM
 * from being destroyed (the built-in shutdown timeout applies). */
static void test_destroy_force_over_qmp(void **state) {
        struct create_result res = { 0 };
        struct destroy_result d = { 0 };
        char err[2048] = "", *report = pathf("report");
        int pidfd = -1;
        (void)state;
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=q-1\n", NULL, &res, err, sizeof err), 0);
        create_result_done(&res);
        put("vrt.conf", "shutdown_timeout=soon\n");
        pid_t pid = fake_supervisor_start(root, run, "q-1", report, FAKE_SERVE_QMP, &pidfd);
        assert_true(pid > 0);
        assert_int_equal(destroy_vm(root, run, "q-1", true, &d, err, sizeof err), 0);
        assert_true(d.was_running);
        assert_int_equal(waitpid(pid, NULL, 0), pid);
        close(pidfd);
        char *got = slurp("report");
        assert_string_equal(got, "quit\n");
        free(got);
        assert_true(exists("vm/q-1/DESTROYED"));
        assert_false(exists("vm/q-1/hdd.ovl"));

        /* Graceful, with vrt.conf still broken: a queued SIGTERM. */
        put("vrt.conf", "accel=tcg\nsize.tiny.cpus=1\nsize.tiny.memory=128M\n");
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=q-2\n", NULL, &res, err, sizeof err), 0);
        create_result_done(&res);
        put("vrt.conf", "shutdown_timeout=soon\n");
        unlink(report);
        pid = fake_supervisor_start(root, run, "q-2", report, 0, &pidfd);
        assert_true(pid > 0);
        memset(&d, 0, sizeof d);
        assert_int_equal(destroy_vm(root, run, "q-2", false, &d, err, sizeof err), 0);
        assert_true(d.was_running);
        assert_int_equal(waitpid(pid, NULL, 0), pid);
        close(pidfd);
        got = slurp("report");
        assert_string_equal(got, "term code=-1 value=0\n");
        free(got);
        assert_true(exists("vm/q-2/DESTROYED"));
        free(report);
}

static void test_cleanup(void **state) {
        struct create_result res = { 0 };
        struct destroy_result d = { 0 };
        struct cleanup_result c = { 0 };
        char err[2048] = "";
        (void)state;
        const char *names[] = { "keep-1", "gone-1", "busy-1" };
        for (size_t i = 0; i < 3; i++) {
                char props[128];
                snprintf(props, sizeof props, "image=tmpl\nsize=tiny\nname=%s\n", names[i]);
                assert_int_equal(create_from(props, NULL, &res, err, sizeof err), 0);
                create_result_done(&res);
        }
        assert_int_equal(destroy_vm(root, run, "gone-1", false, &d, err, sizeof err), 0);
        assert_int_equal(destroy_vm(root, run, "busy-1", false, &d, err, sizeof err), 0);
        /* busy-1 runs again (against the rules, but cleanup must not care). */
        char rt[256];
        snprintf(rt, sizeof rt, "%s/busy-1", run);
        assert_int_equal(mkdir(rt, 0755), 0);
        strcat(rt, "/lock");
        int lock = open(rt, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        assert_true(lock >= 0);
        pid_t holder = fork();
        if (holder == 0) {
                if (flock(lock, LOCK_EX) < 0)
                        _exit(1);
                pause();
                _exit(0);
        }
        close(lock);
        while (1) {     /* wait until the child holds it */
                int fd = open(rt, O_RDONLY | O_CLOEXEC);
                bool held = flock(fd, LOCK_SH | LOCK_NB) < 0;
                close(fd);
                if (held)
                        break;
                usleep(1000);
        }
        /* A leftover of a killed cleanup. */
        char *left = pathf("vm/.old-1.removing");
        assert_int_equal(mkdir(left, 0755), 0);
        free(left);

        assert_int_equal(destroy_cleanup(root, run, &c, err, sizeof err), 0);
        assert_int_equal(c.n, 2);
        for (size_t i = 0; i < c.n; i++) {
                if (strcmp(c.entries[i].name, "gone-1") == 0) {
                        assert_true(c.entries[i].removed);
                } else {
                        assert_string_equal(c.entries[i].name, "busy-1");
                        assert_false(c.entries[i].removed);
                        assert_string_equal(c.entries[i].reason, "still running");
                }
        }
        assert_int_equal(c.swept, 1);
        cleanup_result_done(&c);
        char *entries = vm_entries();
        assert_non_null(strstr(entries, "keep-1"));
        assert_non_null(strstr(entries, "busy-1"));
        assert_null(strstr(entries, "gone-1"));
        assert_null(strstr(entries, "old-1"));
        free(entries);
        char *log = slurp("log/cleanup.log");
        assert_non_null(strstr(log, "gone-1: removed"));
        free(log);
        kill(holder, SIGKILL);
        waitpid(holder, NULL, 0);

        /* The name stays registered: no new VM may take it, and a destroy
         * of it is a no-op. */
        assert_int_equal(create_from("image=tmpl\nsize=tiny\nname=gone-1\n", NULL, &res, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "name gone-1 is already registered"));
        memset(&d, 0, sizeof d);
        assert_int_equal(destroy_vm(root, run, "gone-1", false, &d, err, sizeof err), 0);
        assert_true(d.gone);
}

int main(void) {
        char *argv[] = { (char *)"qemu-img", (char *)"--version", NULL };
        have_qemu_img = run_argv(argv) == 0;
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_create_overlay, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_nics, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_names, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_copy_and_sizes, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_copy_of_layered_template, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_bad_input_leaves_nothing, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_cancel, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_disk_full, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_malformed_registry, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sweep_killed_while_building, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sweep_no_lock_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sweep_killed_between_appends, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sweep_killed_after_commit, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sweep_spares_live_creator, setup, teardown),
                cmocka_unit_test_setup_teardown(test_parallel_creates, setup, teardown),
                cmocka_unit_test_setup_teardown(test_destroy_not_running, setup, teardown),
                cmocka_unit_test_setup_teardown(test_destroy_running, setup, teardown),
                cmocka_unit_test_setup_teardown(test_destroy_disk_held_elsewhere, setup, teardown),
                cmocka_unit_test_setup_teardown(test_destroy_force_over_qmp, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cleanup, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
