/* Unit tests of firstboot.c: the generated user-data, run on the host with
 * sh, bash and busybox (the port a file, poweroff stubbed twice over), and
 * firstboot_run() against a fake vrt-launch script that records what it
 * was given and answers with a chosen init.log and exit status. The real
 * guest runs in tests/e2e/test-firstboot.sh. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "images/qcow2.h"
#include "launcher/lifecycle/firstboot.h"
#include "launcher/core/runtime.h"

static char base[64];

/* --- helpers --- */

static char *pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *pathf(const char *fmt, ...) {
        char rel[1024], *p;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rel, sizeof rel, fmt, ap);
        va_end(ap);
        assert_true(asprintf(&p, "%s/%s", base, rel) > 0);
        return p;
}

static void put_mode(const char *rel, const char *text, size_t len, mode_t mode) {
        char *p = pathf("%s", rel);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, len), (ssize_t)len);
        assert_int_equal(close(fd), 0);
        assert_int_equal(chmod(p, mode), 0);
        free(p);
}

static void put(const char *rel, const char *text) {
        put_mode(rel, text, strlen(text), 0644);
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

static void mkdir_rel(const char *rel) {
        char *p = pathf("%s", rel);
        mkdir(p, 0755);
        free(p);
}

static void unlink_rel(const char *rel) {
        char *p = pathf("%s", rel);
        unlink(p);
        free(p);
}

static enum firstboot_state state_rel(const char *rel, bool has_init) {
        char *p = pathf("%s", rel);
        enum firstboot_state st = firstboot_state_of(p, has_init);
        free(p);
        return st;
}

static bool contains(const char *hay, const char *needle) {
        if (strstr(hay, needle))
                return true;
        fprintf(stderr, "--- expected to find:\n%s\n--- in:\n%s\n---\n", needle, hay);
        return false;
}

static bool have(const char *path) {
        return access(path, X_OK) == 0;
}

static int run_argv(char *const argv[], char *const envp[]) {
        pid_t pid = fork();
        if (pid == 0) {
                int fd = open("/dev/null", O_RDONLY);
                dup2(fd, 0);
                execve(argv[0], argv, envp);
                _exit(127);
        }
        int st;
        assert_true(pid > 0);
        assert_int_equal(waitpid(pid, &st, 0), pid);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void rm_rf(const char *path) {
        char *argv[] = { "/bin/rm", "-rf", (char *)path, NULL };
        run_argv(argv, NULL);
}

/* Stand-ins that must never be reached: the wrapper is told by
 * VRT_INIT_TEST_PORT not to power off, and these come first in PATH. */
static void make_stubs(void) {
        static const char stub[] = "#!/bin/sh\necho \"${0##*/} $*\" >>\"$STUB_LOG\"\nexit 0\n";
        char *d = pathf("stubs");
        assert_int_equal(mkdir(d, 0755), 0);
        free(d);
        const char *names[] = { "poweroff", "halt", "reboot", "shutdown", "systemctl" };
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
                char rel[64];
                snprintf(rel, sizeof rel, "stubs/%s", names[i]);
                put_mode(rel, stub, strlen(stub), 0755);
        }
}

static int setup(void **state) {
        (void)state;
        snprintf(base, sizeof base, "/tmp/vrt-test-firstboot.XXXXXX");
        assert_non_null(mkdtemp(base));
        make_stubs();
        return 0;
}

static int teardown(void **state) {
        (void)state;
        rm_rf(base);
        return 0;
}

/* --- the wrapper on the host --- */

struct wrapped {
        int exit_status;        /* of the wrapper itself */
        char *port;             /* what reached the "port" */
        char *stub_log;         /* calls of the poweroff stand-ins */
};

static void wrapped_done(struct wrapped *w) {
        free(w->port);
        free(w->stub_log);
}

/* Generates user-data for script and runs it with shell (absolute path);
 * extra_path goes first in PATH (after the stubs). */
static void run_wrapper(const char *shell, const char *script, size_t len, const char *extra_path, struct wrapped *w) {
        struct firstboot_userdata_request req = { "pluto-4711", "setup.sh", script, len };
        char *ud = NULL;
        assert_int_equal(firstboot_user_data(&req, &ud), 0);
        put("user-data", ud);
        free(ud);
        char *home = pathf("home"), *tmp = pathf("tmp");
        rm_rf(home);
        mkdir(home, 0755);
        mkdir(tmp, 0755);
        unlink_rel("port");
        unlink_rel("stub.log");
        char *ud_path = pathf("user-data"), *port_env, *path_env, *home_env, *tmp_env, *log_env;
        assert_true(asprintf(&port_env, "VRT_INIT_TEST_PORT=%s/port", base) > 0);
        assert_true(asprintf(&path_env, "PATH=%s/stubs:%s%s/usr/bin:/bin", base, extra_path ? extra_path : "",
                             extra_path ? ":" : "") > 0);
        assert_true(asprintf(&home_env, "HOME=%s", home) > 0);
        assert_true(asprintf(&tmp_env, "TMPDIR=%s", tmp) > 0);
        assert_true(asprintf(&log_env, "STUB_LOG=%s/stub.log", base) > 0);
        char *envp[] = { port_env, path_env, home_env, tmp_env, log_env, NULL };
        char *argv[] = { (char *)shell, ud_path, NULL };
        if (strstr(shell, "busybox")) {
                char *bb[] = { (char *)shell, "sh", ud_path, NULL };
                w->exit_status = run_argv(bb, envp);
        } else {
                w->exit_status = run_argv(argv, envp);
        }
        w->port = slurp("port");
        w->stub_log = slurp("stub.log");
        /* The temporary directory is gone again. */
        char *left = pathf("tmp");
        assert_int_equal(rmdir(left), 0);
        free(left);
        free(port_env);
        free(path_env);
        free(home_env);
        free(tmp_env);
        free(log_env);
        free(ud_path);
        free(home);
        free(tmp);
}

static const char *shells[] = { "/bin/sh", "/bin/bash", "/bin/busybox" };

static void test_wrapper_output_and_status(void **state) {
        (void)state;
        for (size_t i = 0; i < sizeof shells / sizeof shells[0]; i++) {
                struct wrapped w;
                if (!have(shells[i]))
                        continue;
                const char *s = "echo hello from $VRT_VM_NAME\necho to stderr >&2\npwd\nexit 3\n";
                run_wrapper(shells[i], s, strlen(s), NULL, &w);
                char want[512];
                snprintf(want, sizeof want, "hello from pluto-4711\nto stderr\n%s/home\nVRT-INIT-STATUS: 3\nVRT-INIT-TEST: poweroff\n", base);
                assert_string_equal(w.port, want);
                assert_string_equal(w.stub_log, "");
                wrapped_done(&w);
        }
}

static void test_wrapper_set_eu(void **state) {
        (void)state;
        for (size_t i = 0; i < sizeof shells / sizeof shells[0]; i++) {
                struct wrapped w;
                if (!have(shells[i]))
                        continue;
                const char *e = "echo before\nfalse\necho after\n";
                run_wrapper(shells[i], e, strlen(e), NULL, &w);
                assert_true(contains(w.port, "before\nVRT-INIT-STATUS: 1\n"));
                assert_null(strstr(w.port, "after"));
                wrapped_done(&w);

                const char *u = "echo \"$VRT_NOT_SET_ANYWHERE\"\necho after\n";
                run_wrapper(shells[i], u, strlen(u), NULL, &w);
                assert_true(contains(w.port, "VRT_NOT_SET_ANYWHERE"));    /* the shell's complaint */
                assert_null(strstr(w.port, "after"));
                assert_null(strstr(w.port, "VRT-INIT-STATUS: 0\n"));
                assert_true(contains(w.port, "VRT-INIT-TEST: poweroff\n"));
                wrapped_done(&w);
        }
}

/* The script reaches the guest byte for byte: quotes, $, backticks,
 * backslashes, lines that look like delimiters, no final newline. */
static void test_wrapper_verbatim(void **state) {
        static const char s[] =
                "#!/bin/sh\n"
                "cat \"$0\"\n"
                "exit 0\n"
                "# $HOME `id` $(id) \\ \\\\ 'single' \"double\" ${x:-y}\n"
                "EOF\n"
                "VRT_SHIM_EOF\n"
                "VRT_INIT_EOF_\n"
                "\t  indented";
        struct wrapped w;
        (void)state;
        run_wrapper("/bin/sh", s, strlen(s), NULL, &w);
        char want[1024];
        snprintf(want, sizeof want, "%s\nVRT-INIT-STATUS: 0\nVRT-INIT-TEST: poweroff\n", s);
        assert_string_equal(w.port, want);
        wrapped_done(&w);
}

static void test_wrapper_interpreters(void **state) {
        struct wrapped w;
        (void)state;
        if (have("/bin/bash")) {
                /* Seed-style: bash with pipefail; under sh this would fail. */
                const char *b = "#!/bin/bash\nset -euxo pipefail\necho \"bash=${BASH_VERSION:+yes}\"\n";
                run_wrapper("/bin/sh", b, strlen(b), NULL, &w);
                assert_true(contains(w.port, "bash=yes\n"));
                assert_true(contains(w.port, "+ echo bash=yes\n"));     /* -x from the script */
                assert_true(contains(w.port, "VRT-INIT-STATUS: 0\n"));
                wrapped_done(&w);

                const char *e = "#!/usr/bin/env bash\nshopt -q -o nounset && echo nounset-on\n";
                run_wrapper("/bin/sh", e, strlen(e), NULL, &w);
                assert_true(contains(w.port, "nounset-on\nVRT-INIT-STATUS: 0\n"));
                wrapped_done(&w);

                /* The rest of the #! line is passed on as one argument. */
                const char *x = "#!/bin/bash -x\necho traced\n";
                run_wrapper("/bin/sh", x, strlen(x), NULL, &w);
                assert_true(contains(w.port, "+ echo traced\ntraced\nVRT-INIT-STATUS: 0\n"));
                wrapped_done(&w);
        }
        /* Other interpreters run the script themselves, without set -eu. */
        if (have("/usr/bin/python3")) {
                const char *p = "#!/usr/bin/env python3\nimport sys\nprint('py', 6 * 7)\nsys.exit(5)\n";
                run_wrapper("/bin/sh", p, strlen(p), NULL, &w);
                assert_string_equal(w.port, "py 42\nVRT-INIT-STATUS: 5\nVRT-INIT-TEST: poweroff\n");
                wrapped_done(&w);
        }
        const char *a = "#!/bin/sh -x\necho shx\n";
        run_wrapper("/bin/sh", a, strlen(a), NULL, &w);
        assert_true(contains(w.port, "+ echo shx\nshx\nVRT-INIT-STATUS: 0\n"));
        wrapped_done(&w);
}

/* A seed-style script ends with "systemctl poweroff": deferred, so the
 * status still gets out; so are poweroff, reboot, halt, shutdown. */
static void test_wrapper_defers_poweroff(void **state) {
        (void)state;
        for (size_t i = 0; i < sizeof shells / sizeof shells[0]; i++) {
                struct wrapped w;
                if (!have(shells[i]))
                        continue;
                const char *s = "poweroff\nreboot\nhalt -p\nshutdown -h now\nsystemctl --no-block poweroff\n"
                                "systemctl is-enabled foo || true\necho still-here\n";
                run_wrapper(shells[i], s, strlen(s), NULL, &w);
                assert_true(contains(w.port, "vrt: poweroff deferred"));
                assert_true(contains(w.port, "vrt: reboot deferred"));
                assert_true(contains(w.port, "vrt: systemctl poweroff deferred"));
                assert_true(contains(w.port, "still-here\nVRT-INIT-STATUS: 0\n"));
                /* Only the harmless systemctl call reached the (stub) real one. */
                assert_string_equal(w.stub_log, "systemctl is-enabled foo\n");
                wrapped_done(&w);
        }
}

/* With busybox applets alone in PATH, as in a minimal guest. */
static void test_wrapper_busybox_only(void **state) {
        struct wrapped w;
        (void)state;
        if (!have("/bin/busybox"))
                skip();
        char *bb = pathf("bb");
        assert_int_equal(mkdir(bb, 0755), 0);
        char *argv[] = { "/bin/busybox", "--install", "-s", bb, NULL };
        assert_int_equal(run_argv(argv, NULL), 0);
        const char *s = "echo \"$VRT_INIT_SCRIPT in $(readlink /proc/$$/exe)\"\npoweroff\n";
        run_wrapper("/bin/busybox", s, strlen(s), bb, &w);
        assert_true(contains(w.port, "setup.sh in /"));
        assert_true(contains(w.port, "/busybox\nvrt: poweroff deferred until the init script has finished\nVRT-INIT-STATUS: 0\nVRT-INIT-TEST: poweroff\n"));
        assert_string_equal(w.stub_log, "");
        wrapped_done(&w);
        free(bb);
}

/* The generated part passes shellcheck as POSIX sh (SC2016: the single
 * quotes that keep $ from expanding are meant). */
static void test_wrapper_shellcheck(void **state) {
        const char *paths[] = { "/usr/bin/shellcheck", "/usr/local/bin/shellcheck" };
        const char *sc = NULL;
        (void)state;
        for (size_t i = 0; i < 2; i++)
                if (have(paths[i]))
                        sc = paths[i];
        if (!sc)
                skip();
        const char *scripts[] = { "#!/bin/bash\nset -euxo pipefail\necho hi\n", "echo plain", "#!/usr/bin/python3 -u\nprint(1)\n" };
        for (size_t i = 0; i < 3; i++) {
                struct firstboot_userdata_request req = { "pluto-4711", "setup.sh", scripts[i], strlen(scripts[i]) };
                char *ud = NULL, *path = pathf("user-data");
                assert_int_equal(firstboot_user_data(&req, &ud), 0);
                put("user-data", ud);
                char *argv[] = { (char *)sc, "-s", "sh", "-e", "SC2016", path, NULL };
                char *envp[] = { "PATH=/usr/bin:/bin", NULL };
                assert_int_equal(run_argv(argv, envp), 0);
                free(ud);
                free(path);
        }
}

static void test_user_data_cloud_config_and_nul(void **state) {
        const char cc[] = "#cloud-config\nruncmd:\n  - [sh, -c, 'echo \"VRT-INIT-STATUS: 0\" > /dev/virtio-ports/org.vrt.init']\n";
        struct firstboot_userdata_request req = { "pluto-4711", "c.yaml", cc, sizeof cc - 1 };
        char *ud = NULL;
        (void)state;
        assert_int_equal(firstboot_user_data(&req, &ud), 0);
        assert_string_equal(ud, cc);
        free(ud);

        const char nul[] = "echo a\0echo b\n";
        req.script = nul;
        req.script_len = sizeof nul - 1;
        ud = (char *)"untouched";
        assert_int_equal(firstboot_user_data(&req, &ud), -EINVAL);
        assert_string_equal(ud, "untouched");

        char *md = NULL, *md2 = NULL;
        assert_int_equal(firstboot_meta_data("pluto-4711", &md), 0);
        assert_int_equal(firstboot_meta_data("pluto-4711", &md2), 0);
        assert_true(contains(md, "instance-id: pluto-4711-"));
        assert_true(contains(md, "\nlocal-hostname: pluto-4711\n"));
        assert_string_not_equal(md, md2);       /* a new instance-id each time */
        free(md);
        free(md2);
}

/* --- state markers and the script check --- */

static void test_state_strings(void **state) {
        (void)state;
        for (int i = 0; i < _FIRSTBOOT_STATE_MAX; i++)
                assert_int_equal(firstboot_state_from_string(firstboot_state_to_string((enum firstboot_state)i)), i);
        assert_int_equal(firstboot_state_from_string("bogus"), _FIRSTBOOT_STATE_INVALID);
        assert_int_equal(firstboot_state_from_string(NULL), _FIRSTBOOT_STATE_INVALID);
        assert_null(firstboot_state_to_string(_FIRSTBOOT_STATE_MAX));
        assert_string_equal(firstboot_state_to_string(FIRSTBOOT_INIT_FAILED), "init-failed");
}

static void test_state_of(void **state) {
        (void)state;
        mkdir_rel("vmx");
        assert_int_equal(state_rel("vmx", false), FIRSTBOOT_CREATED);
        assert_int_equal(state_rel("vmx", true), FIRSTBOOT_PENDING);
        put("vmx/CREATED", "created=x\n");
        assert_int_equal(state_rel("vmx", true), FIRSTBOOT_CREATED);
        put("vmx/INIT-FAILED", "why\n");
        assert_int_equal(state_rel("vmx", true), FIRSTBOOT_INIT_FAILED);
}

static void test_check_script(void **state) {
        char err[512];
        (void)state;
        mkdir_rel("init");
        put("init/ok.sh", "echo ok\n");
        assert_int_equal(firstboot_check_script(base, "ok.sh", err, sizeof err), 0);

        assert_int_equal(firstboot_check_script(base, "missing.sh", err, sizeof err), -EINVAL);
        assert_true(contains(err, "init/missing.sh: No such file or directory"));

        mkdir_rel("init/dir.sh");
        assert_int_equal(firstboot_check_script(base, "dir.sh", err, sizeof err), -EINVAL);
        assert_true(contains(err, "not a regular file"));

        put_mode("init/bin.sh", "a\0b", 3, 0644);
        assert_int_equal(firstboot_check_script(base, "bin.sh", err, sizeof err), -EINVAL);
        assert_true(contains(err, "NUL"));

        char *big = malloc(FIRSTBOOT_SCRIPT_MAX + 1);
        memset(big, '#', FIRSTBOOT_SCRIPT_MAX + 1);
        put_mode("init/big.sh", big, FIRSTBOOT_SCRIPT_MAX + 1, 0644);
        assert_int_equal(firstboot_check_script(base, "big.sh", err, sizeof err), -EINVAL);
        assert_true(contains(err, "at most"));
        put_mode("init/big.sh", big, FIRSTBOOT_SCRIPT_MAX, 0644);
        assert_int_equal(firstboot_check_script(base, "big.sh", err, sizeof err), 0);
        free(big);

        char *fifo = pathf("init/fifo.sh");
        assert_int_equal(mkfifo(fifo, 0644), 0);
        assert_int_equal(firstboot_check_script(base, "fifo.sh", err, sizeof err), -EINVAL);
        free(fifo);

        if (geteuid() != 0) {
                put_mode("init/secret.sh", "x\n", 2, 0000);
                assert_int_equal(firstboot_check_script(base, "secret.sh", err, sizeof err), -EINVAL);
                assert_true(contains(err, "Permission denied"));
        }
}

/* --- firstboot_run() against a fake vrt-launch --- */

/* Records its argv and environment, keeps a copy of the seed, writes
 * $FAKE_INIT_LOG (printf format) to the --init-log file, and exits with
 * $FAKE_EXIT; FAKE_HANG=1 waits for SIGTERM and reports the value the
 * signal carried is unknown to sh, so only the signal itself. */
static const char fake_launcher[] =
        "#!/bin/sh\n"
        "echo \"$@\" >\"$FAKE_DIR/argv\"\n"
        "echo \"VRT_ROOT=$VRT_ROOT VRT_RUNTIME_DIR=$VRT_RUNTIME_DIR\" >\"$FAKE_DIR/env\"\n"
        "seed= log=\n"
        "while [ $# -gt 1 ]; do\n"
        "\tcase $1 in\n"
        "\t--seed-image) seed=$2; shift ;;\n"
        "\t--init-log) log=$2; shift ;;\n"
        "\tesac\n"
        "\tshift\n"
        "done\n"
        "cp \"$seed\" \"$FAKE_DIR/seen.iso\"\n"
        "stat -c %a \"$seed\" >\"$FAKE_DIR/seed-mode\"\n"
        "echo \"vrt-launch[$$]: starting\" >&2\n"
        "if [ \"${FAKE_HANG:-}\" = 1 ]; then\n"
        "\ttrap 'echo TERM >\"$FAKE_DIR/signal\"; exit 0' TERM\n"
        "\tprintf 'working\\n' >\"$log\"\n"
        "\twhile :; do sleep 0.05; done\n"
        "fi\n"
        "printf \"$FAKE_INIT_LOG\" >\"$log\"\n"
        "[ -z \"${FAKE_LAST:-}\" ] || echo \"vrt-launch[$$]: $FAKE_LAST\" >&2\n"
        "exit \"${FAKE_EXIT:-0}\"\n";

static char *launcher_path;

static void make_root(const char *name, const char *init) {
        char rel[256], props[512];
        mkdir_rel("root");
        mkdir_rel("root/vm");
        mkdir_rel("root/init");
        mkdir_rel("run");
        mkdir_rel("fake");
        put("root/vrt.conf", "accel=tcg\ninit_timeout=20\n");
        snprintf(rel, sizeof rel, "root/vm/%s", name);
        mkdir_rel(rel);
        snprintf(props, sizeof props, "name=%s\nimage=testguest\nsize=small\n%s%s%s", name, init ? "init=" : "",
                 init ? init : "", init ? "\n" : "");
        snprintf(rel, sizeof rel, "root/vm/%s/instance.properties", name);
        put(rel, props);
        put_mode("fake-launch", fake_launcher, strlen(fake_launcher), 0755);
        free(launcher_path);
        launcher_path = pathf("fake-launch");
        char *fd = pathf("fake");
        setenv("FAKE_DIR", fd, 1);
        free(fd);
        unsetenv("FAKE_HANG");
        unsetenv("FAKE_LAST");
        unsetenv("FAKE_EXIT");
        unsetenv("FAKE_INIT_LOG");
}

static int run_first_boot(const char *name, volatile sig_atomic_t *cancel, struct firstboot_result *res, char *err, size_t errlen) {
        char *root = pathf("root"), *run = pathf("run");
        struct firstboot_request req = { .root = root, .runtime_dir = run, .name = name, .launcher = launcher_path, .cancel = cancel };
        int r = firstboot_run(&req, res, err, errlen);
        free(root);
        free(run);
        return r;
}

static void test_run_without_init(void **state) {
        struct firstboot_result res;
        char err[1024];
        (void)state;
        make_root("plain", NULL);
        assert_int_equal(run_first_boot("plain", NULL, &res, err, sizeof err), 0);
        assert_int_equal(res.state, FIRSTBOOT_CREATED);
        assert_false(res.ran);
        assert_true(exists("root/vm/plain/CREATED"));
        assert_false(exists("fake/argv"));
        /* Once created, never again. */
        assert_int_equal(run_first_boot("plain", NULL, &res, err, sizeof err), -EALREADY);
        assert_true(contains(err, "created already"));
}

static void test_run_success(void **state) {
        struct firstboot_result res;
        char err[1024];
        (void)state;
        make_root("good", "setup.sh");
        put("root/init/setup.sh", "#!/bin/sh\nhostname good\necho configured\n");
        setenv("FAKE_INIT_LOG", "configured\\nVRT-INIT-STATUS: 0\\n", 1);
        assert_int_equal(run_first_boot("good", NULL, &res, err, sizeof err), 0);
        assert_int_equal(res.state, FIRSTBOOT_CREATED);
        assert_true(res.ran);
        assert_int_equal(res.init_status, 0);
        assert_int_equal(res.timeout, 20);

        char *argv = slurp("fake/argv"), *env = slurp("fake/env"), *want = NULL;
        assert_true(asprintf(&want, "--root %s/root --seed-image %s/root/vm/good/seed.iso --init-log %s/root/vm/good/init.log --run-timeout 20 good\n",
                             base, base, base) > 0);
        assert_string_equal(argv, want);
        free(want);
        assert_true(asprintf(&want, "VRT_ROOT=%s/root VRT_RUNTIME_DIR=%s/run\n", base, base) > 0);
        assert_string_equal(env, want);
        free(want);
        free(argv);
        free(env);

        /* The seed it saw: an ISO with our meta-data and the wrapped script. */
        size_t isolen = 0;
        {
                char *p = pathf("fake/seen.iso");
                struct stat st;
                assert_int_equal(stat(p, &st), 0);
                isolen = (size_t)st.st_size;
                free(p);
        }
        char *full = malloc(isolen + 1);
        {
                char *p = pathf("fake/seen.iso");
                FILE *f = fopen(p, "re");
                assert_int_equal(fread(full, 1, isolen, f), isolen);
                fclose(f);
                free(p);
        }
        full[isolen] = '\0';
        assert_memory_equal(full + 32769, "CD001", 5);
        assert_memory_equal(full + 32808, "cidata ", 7);
        assert_non_null(memmem(full, isolen, "local-hostname: good\n", 21));
        assert_non_null(memmem(full, isolen, "hostname good\necho configured\n", 30));
        free(full);

        /* Only its owner could read the seed (it holds the script). */
        char *mode = slurp("fake/seed-mode");
        assert_string_equal(mode, "600\n");
        free(mode);

        /* The seed is gone, the record of the generated script stays. */
        assert_false(exists("root/vm/good/seed.iso"));
        char *sh = slurp("root/vm/good/init.sh");
        assert_true(contains(sh, "hostname good\necho configured\n"));
        free(sh);
        char *created = slurp("root/vm/good/CREATED");
        assert_true(contains(created, "init=setup.sh\ninit_status=0\n"));
        free(created);
        assert_false(exists("root/vm/good/INIT-FAILED"));
        assert_int_equal(state_rel("root/vm/good", true), FIRSTBOOT_CREATED);
        char *log = slurp("root/vm/good/log/launch.log");
        assert_true(contains(log, "]: starting"));
        free(log);
}

/* Runs a first boot expected to fail; checks the common outcome. */
static void expect_failure(const char *name, int want_r, const char *want_err, struct firstboot_result *res) {
        char err[2048];
        int r = run_first_boot(name, NULL, res, err, sizeof err);
        if (r != want_r)
                fail_msg("%s: got %d (%s), want %d", name, r, err, want_r);
        assert_true(contains(err, want_err));
        assert_int_equal(res->state, FIRSTBOOT_INIT_FAILED);
        char rel[128];
        snprintf(rel, sizeof rel, "root/vm/%s/INIT-FAILED", name);
        char *marker = slurp(rel);
        char line[2100];
        snprintf(line, sizeof line, "%s\n", err);
        assert_string_equal(marker, line);
        free(marker);
        snprintf(rel, sizeof rel, "root/vm/%s/CREATED", name);
        assert_false(exists(rel));
        snprintf(rel, sizeof rel, "root/vm/%s/seed.iso", name);
        assert_false(exists(rel));
}

static void test_run_script_fails(void **state) {
        struct firstboot_result res;
        (void)state;
        make_root("bad", "fail.sh");
        put("root/init/fail.sh", "echo one\necho two\nexit 3\n");
        setenv("FAKE_INIT_LOG", "noise\\none\\n\\n\\033[1mtwo\\r\\nthree\\nVRT-INIT-STATUS: 3\\n", 1);
        expect_failure("bad", -EPROTO, "init script fail.sh failed with status 3 (log: ", &res);
        char err[2048];
        /* The last three lines, cleaned of control characters. */
        assert_int_equal(run_first_boot("bad", NULL, &res, err, sizeof err), -EPROTO);
        assert_true(contains(err, "/root/vm/bad/init.log): one |  [1mtwo | three"));
        assert_int_equal(res.init_status, 3);
        char *log = slurp("root/vm/bad/init.log");
        assert_true(contains(log, "VRT-INIT-STATUS: 3"));
        free(log);
        assert_int_equal(state_rel("root/vm/bad", true), FIRSTBOOT_INIT_FAILED);

        /* A later success clears the failure. */
        setenv("FAKE_INIT_LOG", "VRT-INIT-STATUS: 0\\n", 1);
        assert_int_equal(run_first_boot("bad", NULL, &res, err, sizeof err), 0);
        assert_false(exists("root/vm/bad/INIT-FAILED"));
        assert_true(exists("root/vm/bad/CREATED"));
}

static void test_run_status_parsing(void **state) {
        struct firstboot_result res;
        char err[2048];
        (void)state;
        make_root("parse", "p.sh");
        put("root/init/p.sh", "true\n");
        /* The status may follow output without a newline; the last one counts. */
        setenv("FAKE_INIT_LOG", "echo VRT-INIT-STATUS: 0\\nVRT-INIT-STATUS: 0\\npartialVRT-INIT-STATUS: 7\\n", 1);
        expect_failure("parse", -EPROTO, "failed with status 7", &res);
        assert_int_equal(run_first_boot("parse", NULL, &res, err, sizeof err), -EPROTO);
        assert_true(contains(err, "): echo VRT-INIT-STATUS: 0 | VRT-INIT-STATUS: 0 | partial"));
        /* Not a status: digits must end the line, at most 255. */
        setenv("FAKE_INIT_LOG", "VRT-INIT-STATUS: 0x\\nVRT-INIT-STATUS: 256\\n", 1);
        expect_failure("parse", -EPROTO, "sent no \"VRT-INIT-STATUS: N\" line", &res);
        setenv("FAKE_INIT_LOG", "all fine\\nVRT-INIT-STATUS: 0", 1);       /* no final newline */
        assert_int_equal(run_first_boot("parse", NULL, &res, err, sizeof err), 0);
}

static void test_run_no_status(void **state) {
        struct firstboot_result res;
        (void)state;
        make_root("mute", "m.sh");
        put("root/init/m.sh", "true\n");
        setenv("FAKE_INIT_LOG", "booted\\nbut said nothing\\n", 1);
        expect_failure("mute", -EPROTO, "init script m.sh sent no \"VRT-INIT-STATUS: N\" line before the VM powered off", &res);
        setenv("FAKE_INIT_LOG", "", 1);
        expect_failure("mute", -EPROTO, "sent no", &res);
}

static void test_run_timeout(void **state) {
        struct firstboot_result res;
        (void)state;
        make_root("slow", "sleep.sh");
        put("root/init/sleep.sh", "sleep 100000\n");
        setenv("FAKE_INIT_LOG", "sleeping\\n", 1);
        setenv("FAKE_EXIT", "4", 1);
        expect_failure("slow", -ETIMEDOUT, "init script sleep.sh did not finish within 20 s; the VM was powered off", &res);
        setenv("FAKE_INIT_LOG", "VRT-INIT-STATUS: 0\\n", 1);
        expect_failure("slow", -ETIMEDOUT, "ended with status 0, but the VM did not power off within 20 s", &res);
}

static void test_run_launcher_fails(void **state) {
        struct firstboot_result res;
        (void)state;
        make_root("broken", "x.sh");
        put("root/init/x.sh", "true\n");
        setenv("FAKE_EXIT", "2", 1);
        setenv("FAKE_LAST", "bridge br9 does not exist", 1);
        expect_failure("broken", -EIO, "first boot of broken failed: vrt-launch: bridge br9 does not exist (log: ", &res);
        unsetenv("FAKE_LAST");
        setenv("FAKE_EXIT", "1", 1);
        expect_failure("broken", -EIO, "vrt-launch: starting", &res);

        free(launcher_path);
        launcher_path = pathf("no-such-launcher");
        expect_failure("broken", -ENOENT, "cannot run vrt-launch", &res);
}

static void test_run_script_vanished(void **state) {
        struct firstboot_result res;
        (void)state;
        make_root("gone", "gone.sh");
        expect_failure("gone", -ENOENT, "init script ", &res);
        assert_false(exists("fake/argv"));
}

static volatile sig_atomic_t cancel_flag;

static void on_alarm(int sig) {
        (void)sig;
        cancel_flag = 1;
}

/* As a Ctrl-C during the first boot: cmd_create's handler sets the flag. */
static void test_run_cancel(void **state) {
        struct firstboot_result res;
        char err[1024];
        struct itimerval it = { .it_value = { .tv_usec = 300000 } };
        (void)state;
        make_root("stopme", "s.sh");
        put("root/init/s.sh", "sleep 100\n");
        setenv("FAKE_HANG", "1", 1);
        cancel_flag = 0;
        signal(SIGALRM, on_alarm);
        assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
        assert_int_equal(run_first_boot("stopme", &cancel_flag, &res, err, sizeof err), -ECANCELED);
        assert_true(contains(err, "first boot of stopme interrupted; the VM was powered off"));
        char *sig = slurp("fake/signal");
        assert_string_equal(sig, "TERM\n");
        free(sig);
        assert_true(exists("root/vm/stopme/INIT-FAILED"));
        assert_false(exists("root/vm/stopme/seed.iso"));
}

static int reset_disk(const char *name, char *err, size_t errlen) {
        char *root = pathf("root"), *run = pathf("run");
        int r = firstboot_reset_disk(root, run, name, err, errlen);
        free(root);
        free(run);
        return r;
}

/* --reset: a fresh overlay with the old one's backing file, format and
 * size; the UEFI variables go; refused for a copy and a created VM. */
static void test_reset_disk(void **state) {
        char err[1024], msg[512];
        (void)state;
        make_root("rs", "setup.sh");
        mkdir_rel("root/images");
        char *tmpl = pathf("root/images/testguest.qcow2"), *ovl = pathf("root/vm/rs/hdd.ovl");
        assert_int_equal(qcow2_image_create(tmpl, 8 << 20, msg, sizeof msg), 0);
        assert_int_equal(qcow2_overlay_create(ovl, "../../images/testguest.qcow2", "qcow2", 16 << 20, msg, sizeof msg), 0);
        /* What a failed first boot wrote: data past the header, UEFI vars. */
        int fd = open(ovl, O_WRONLY | O_APPEND | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "written by the failed run", 25), 25);
        close(fd);
        struct stat before, after;
        assert_int_equal(stat(ovl, &before), 0);
        put("root/vm/rs/OVMF_VARS.fd", "vars");

        /* While someone holds the VM's lock (a supervisor), nothing is touched. */
        struct vm_paths p;
        char *rootdir = pathf("root"), *rundir = pathf("run");
        assert_int_equal(vm_paths_init(&p, rootdir, rundir, "rs"), 0);
        int lock = runtime_lock(&p, msg, sizeof msg);
        assert_true(lock >= 0);
        assert_int_equal(reset_disk("rs", err, sizeof err), -EBUSY);
        assert_true(contains(err, "rs is running; stop it before resetting its disk"));
        assert_int_equal(stat(ovl, &after), 0);
        assert_true(after.st_ino == before.st_ino && after.st_size == before.st_size);
        assert_true(exists("root/vm/rs/OVMF_VARS.fd"));
        assert_false(exists("root/vm/rs/.hdd.ovl.reset"));
        close(lock);
        /* ... and the reset leaves no lock behind for the next start. */
        assert_int_equal(reset_disk("rs", err, sizeof err), 0);
        assert_false(runtime_is_running(&p));
        lock = runtime_lock(&p, msg, sizeof msg);
        assert_true(lock >= 0);
        runtime_remove(&p);
        close(lock);
        vm_paths_done(&p);
        free(rootdir);
        free(rundir);
        /* A second reset gives the same result, from the first reset's overlay. */

        assert_int_equal(reset_disk("rs", err, sizeof err), 0);
        assert_int_equal(stat(ovl, &after), 0);
        assert_true(after.st_ino != before.st_ino);
        assert_true(after.st_size < before.st_size);
        fd = open(ovl, O_RDONLY | O_CLOEXEC);
        struct qcow2_header h;
        assert_int_equal(qcow2_header_read(fd, &h, msg, sizeof msg), 0);
        close(fd);
        assert_string_equal(h.backing_file, "../../images/testguest.qcow2");
        assert_string_equal(h.backing_format, "qcow2");
        assert_int_equal(h.size, 16 << 20);
        assert_false(exists("root/vm/rs/OVMF_VARS.fd"));
        assert_false(exists("root/vm/rs/.hdd.ovl.reset"));

        /* A copy has no overlay to reset. */
        unlink(ovl);
        put("root/vm/rs/hdd.img", "raw copy");
        assert_int_equal(reset_disk("rs", err, sizeof err), -EINVAL);
        assert_true(contains(err, "disk=copy cannot be reset"));
        assert_true(exists("root/vm/rs/hdd.img"));
        /* A created VM keeps its disk. */
        assert_int_equal(qcow2_overlay_create(ovl, "../../images/testguest.qcow2", "qcow2", 0, msg, sizeof msg), 0);
        put("root/vm/rs/CREATED", "created=now\n");
        assert_int_equal(reset_disk("rs", err, sizeof err), -EINVAL);
        assert_true(contains(err, "created already"));
        free(tmpl);
        free(ovl);
}

static void test_run_bad_vm(void **state) {
        struct firstboot_result res;
        char err[1024];
        (void)state;
        make_root("exists", "s.sh");
        assert_int_equal(run_first_boot("nosuchvm", NULL, &res, err, sizeof err), -ENOENT);
        assert_true(contains(err, "nosuchvm"));
        assert_false(exists("root/vm/nosuchvm"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_wrapper_output_and_status, setup, teardown),
                cmocka_unit_test_setup_teardown(test_wrapper_set_eu, setup, teardown),
                cmocka_unit_test_setup_teardown(test_wrapper_verbatim, setup, teardown),
                cmocka_unit_test_setup_teardown(test_wrapper_interpreters, setup, teardown),
                cmocka_unit_test_setup_teardown(test_wrapper_defers_poweroff, setup, teardown),
                cmocka_unit_test_setup_teardown(test_wrapper_busybox_only, setup, teardown),
                cmocka_unit_test_setup_teardown(test_wrapper_shellcheck, setup, teardown),
                cmocka_unit_test(test_user_data_cloud_config_and_nul),
                cmocka_unit_test(test_state_strings),
                cmocka_unit_test_setup_teardown(test_state_of, setup, teardown),
                cmocka_unit_test_setup_teardown(test_check_script, setup, teardown),
                cmocka_unit_test_setup_teardown(test_run_without_init, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reset_disk, setup, teardown),
                cmocka_unit_test_setup_teardown(test_run_success, setup, teardown),
                cmocka_unit_test_setup_teardown(test_run_script_fails, setup, teardown),
                cmocka_unit_test_setup_teardown(test_run_status_parsing, setup, teardown),
                cmocka_unit_test_setup_teardown(test_run_no_status, setup, teardown),
                cmocka_unit_test_setup_teardown(test_run_timeout, setup, teardown),
                cmocka_unit_test_setup_teardown(test_run_launcher_fails, setup, teardown),
                cmocka_unit_test_setup_teardown(test_run_script_vanished, setup, teardown),
                cmocka_unit_test_setup_teardown(test_run_cancel, setup, teardown),
                cmocka_unit_test_setup_teardown(test_run_bad_vm, setup, teardown),
        };
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        free(launcher_path);
        return r;
}
