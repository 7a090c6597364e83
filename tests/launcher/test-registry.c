/* Unit tests of the registry (install/installed.txt, install/mac-addresses.txt):
 * appends, lookups, never reusing an entry, the seed's plain format,
 * malformed files, rollback, and concurrent appends from forked children. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "launcher/lifecycle/registry.h"

static char root[64];

static char *path_of(const char *rel) {
        char *p;
        assert_true(asprintf(&p, "%s/%s", root, rel) > 0);
        return p;
}

static void write_file(const char *rel, const char *text, size_t len) {
        char *p = path_of(rel);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, len), (ssize_t)len);
        close(fd);
        free(p);
}

static char *read_file(const char *rel) {
        char *p = path_of(rel), *buf = calloc(1, 1 << 20);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_non_null(buf);
        ssize_t n = read(fd, buf, (1 << 20) - 1);
        assert_true(n >= 0);
        close(fd);
        free(p);
        return buf;
}

static void rm_root(void) {
        const char *files[] = { "install/installed.txt", "install/mac-addresses.txt", "install/registry.lock" };
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
                char *p = path_of(files[i]);
                unlink(p);
                free(p);
        }
        char *d = path_of("install");
        rmdir(d);
        free(d);
}

static int setup(void **state) {
        (void)state;
        strcpy(root, "/tmp/vrt-registry-XXXXXX");
        assert_non_null(mkdtemp(root));
        return 0;
}

static int teardown(void **state) {
        (void)state;
        rm_root();
        assert_int_equal(rmdir(root), 0);
        return 0;
}

static void make_install(void) {
        char *d = path_of("install");
        assert_int_equal(mkdir(d, 0755), 0);
        free(d);
}

static const uint8_t mac_a[MAC_LEN] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
static const uint8_t mac_b[MAC_LEN] = { 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef };

static void test_empty_root_creates_install(void **state) {
        struct registry *r = NULL;
        char err[512] = "";
        (void)state;
        assert_int_equal(registry_lock(root, &r, err, sizeof err), 0);
        assert_int_equal(r->n_names, 0);
        assert_int_equal(r->n_macs, 0);
        assert_false(registry_has_name(r, "pluto-4711", NULL));
        assert_false(registry_has_mac(r, mac_a, NULL));
        struct stat st;
        char *d = path_of("install");
        assert_int_equal(stat(d, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        free(d);
        registry_free(r);
}

static void test_append_and_contains(void **state) {
        struct registry *r = NULL;
        char err[512] = "";
        unsigned line = 0;
        (void)state;
        assert_int_equal(registry_lock(root, &r, err, sizeof err), 0);
        assert_int_equal(registry_add_name(r, "pluto-4711", err, sizeof err), 0);
        assert_int_equal(registry_add_name(r, "mars-1", err, sizeof err), 0);
        assert_int_equal(registry_add_mac(r, mac_b, err, sizeof err), 0);
        assert_true(registry_has_name(r, "mars-1", &line));
        assert_int_equal(line, 2);
        assert_true(registry_has_name(r, "PLUTO-4711", &line)); /* host names ignore case */
        assert_int_equal(line, 1);
        assert_true(registry_has_mac(r, mac_b, &line));
        assert_int_equal(line, 1);
        registry_free(r);

        char *names = read_file("install/installed.txt"), *macs = read_file("install/mac-addresses.txt");
        assert_string_equal(names, "pluto-4711\nmars-1\n");
        assert_string_equal(macs, "52:54:00:ab:cd:ef\n");
        free(names);
        free(macs);

        /* A fresh load (another process, later) sees the same. */
        assert_int_equal(registry_load(root, &r, err, sizeof err), 0);
        assert_true(registry_has_name(r, "pluto-4711", NULL));
        assert_true(registry_has_mac(r, mac_b, NULL));
        assert_false(registry_has_mac(r, mac_a, NULL));
        registry_free(r);
}

static void test_never_reuse(void **state) {
        struct registry *r = NULL;
        char err[512] = "";
        (void)state;
        assert_int_equal(registry_lock(root, &r, err, sizeof err), 0);
        assert_int_equal(registry_add_name(r, "pluto-4711", err, sizeof err), 0);
        assert_int_equal(registry_add_mac(r, mac_a, err, sizeof err), 0);
        registry_free(r);

        assert_int_equal(registry_lock(root, &r, err, sizeof err), 0);
        assert_int_equal(registry_add_name(r, "pluto-4711", err, sizeof err), -EEXIST);
        assert_non_null(strstr(err, "installed.txt:1: name pluto-4711 is already registered"));
        assert_int_equal(registry_add_name(r, "Pluto-4711", err, sizeof err), -EEXIST);
        assert_int_equal(registry_add_mac(r, mac_a, err, sizeof err), -EEXIST);
        assert_non_null(strstr(err, "mac-addresses.txt:1: MAC 52:54:00:12:34:56 is already registered"));
        registry_free(r);

        char *names = read_file("install/installed.txt");
        assert_string_equal(names, "pluto-4711\n");
        free(names);
}

static void test_seed_format_tolerated(void **state) {
        struct registry *r = NULL;
        char err[512] = "";
        unsigned line = 0;
        (void)state;
        make_install();
        /* Comments, blank lines, CRLF, blanks around entries, upper-case
         * MACs, duplicates and no newline at the end. */
        const char names[] = "# VMs\n\npluto-4711\r\n  Old_Name.1 \nmars\npluto-4711\nlast-one";
        const char macs[] = "# MACs\n52:54:00:AB:CD:EF\n\n52:54:00:12:34:56";
        write_file("install/installed.txt", names, sizeof names - 1);
        write_file("install/mac-addresses.txt", macs, sizeof macs - 1);
        assert_int_equal(registry_lock(root, &r, err, sizeof err), 0);
        assert_true(registry_has_name(r, "pluto-4711", &line));
        assert_int_equal(line, 3);
        assert_true(registry_has_name(r, "old_name.1", &line));
        assert_int_equal(line, 4);
        assert_true(registry_has_name(r, "last-one", &line));
        assert_int_equal(line, 7);
        assert_true(registry_has_mac(r, mac_b, &line));
        assert_int_equal(line, 2);
        assert_true(registry_has_mac(r, mac_a, &line));
        assert_int_equal(line, 4);
        assert_false(registry_has_name(r, "VMs", NULL));

        /* An unterminated last line gets its newline before ours. */
        assert_int_equal(registry_add_name(r, "venus-1", err, sizeof err), 0);
        assert_true(registry_has_name(r, "venus-1", &line));
        assert_int_equal(line, 8);
        const uint8_t mac_c[MAC_LEN] = { 0x52, 0x54, 0x00, 0, 0, 1 };
        assert_int_equal(registry_add_mac(r, mac_c, err, sizeof err), 0);
        registry_free(r);

        char *n = read_file("install/installed.txt"), *m = read_file("install/mac-addresses.txt");
        assert_string_equal(n, "# VMs\n\npluto-4711\r\n  Old_Name.1 \nmars\npluto-4711\nlast-one\nvenus-1\n");
        assert_string_equal(m, "# MACs\n52:54:00:AB:CD:EF\n\n52:54:00:12:34:56\n52:54:00:00:00:01\n");
        free(n);
        free(m);

        /* ... and a reload numbers lines the same way. */
        assert_int_equal(registry_load(root, &r, err, sizeof err), 0);
        assert_true(registry_has_name(r, "venus-1", &line));
        assert_int_equal(line, 8);
        registry_free(r);
}

struct malformed_case {
        const char *file;
        const char *text;
        size_t len;
        const char *expect;
};

static void test_malformed(void **state) {
        static const struct malformed_case cases[] = {
                { "install/installed.txt", "ok\nbad name\n", 12, "installed.txt:2: invalid VM name \"bad name\"" },
                { "install/installed.txt", "a\n\n# c\nx=y\n", 11, "installed.txt:4: invalid VM name \"x=y\"" },
                { "install/installed.txt", "a\nb\0c\n", 6, "installed.txt:2: NUL byte in line" },
                { "install/installed.txt", "\xc3\xa4rger\n", 7, "installed.txt:1: invalid VM name" },
                { "install/installed.txt", "pluto-4711\npluto-47", 19, NULL },  /* unterminated: fine */
                { "install/mac-addresses.txt", "52:54:00:12:34:56\n52:54:00:12:34\n", 33, "mac-addresses.txt:2: invalid MAC address \"52:54:00:12:34\"" },
                { "install/mac-addresses.txt", "52-54-00-12-34-56\n", 18, "mac-addresses.txt:1: invalid MAC address" },
                { "install/mac-addresses.txt", "#x\n52:54:00:12:34:56 pluto\n", 27, "mac-addresses.txt:2: invalid MAC address" },
        };
        (void)state;
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                struct registry *r = NULL;
                char err[512] = "";
                rm_root();
                make_install();
                write_file(cases[i].file, cases[i].text, cases[i].len);
                int ret = registry_lock(root, &r, err, sizeof err);
                if (!cases[i].expect) {
                        assert_int_equal(ret, 0);
                        registry_free(r);
                        continue;
                }
                assert_int_equal(ret, -EINVAL);
                assert_null(r);
                if (!strstr(err, cases[i].expect))
                        fail_msg("case %zu: got \"%s\", expected \"%s\"", i, err, cases[i].expect);
                /* The message names the file by its full path. */
                assert_non_null(strstr(err, root));
                assert_int_equal(registry_load(root, &r, err, sizeof err), -EINVAL);
        }
}

static void test_not_a_file(void **state) {
        struct registry *r = NULL;
        char err[512] = "";
        (void)state;
        make_install();
        char *p = path_of("install/installed.txt");
        assert_int_equal(mkdir(p, 0755), 0);
        assert_true(registry_lock(root, &r, err, sizeof err) < 0);
        assert_non_null(strstr(err, "installed.txt"));
        assert_int_equal(rmdir(p), 0);
        free(p);
}

static void test_bad_names_refused(void **state) {
        struct registry *r = NULL;
        char err[512] = "";
        char long_name[REGISTRY_NAME_MAX + 2];
        (void)state;
        memset(long_name, 'a', sizeof long_name - 1);
        long_name[sizeof long_name - 1] = '\0';
        assert_int_equal(registry_check_name("pluto-4711"), 0);
        assert_int_equal(registry_check_name("Old_Name.1"), 0);
        assert_int_equal(registry_check_name(""), -EINVAL);
        assert_int_equal(registry_check_name(NULL), -EINVAL);
        assert_int_equal(registry_check_name("a b"), -EINVAL);
        assert_int_equal(registry_check_name("a\nb"), -EINVAL);
        assert_int_equal(registry_check_name(long_name), -EINVAL);
        long_name[REGISTRY_NAME_MAX] = '\0';
        assert_int_equal(registry_check_name(long_name), 0);

        assert_int_equal(registry_lock(root, &r, err, sizeof err), 0);
        assert_int_equal(registry_add_name(r, "a\nb", err, sizeof err), -EINVAL);
        assert_int_equal(registry_add_name(r, "", err, sizeof err), -EINVAL);
        registry_free(r);
        /* Nothing was written. */
        char *p = path_of("install/installed.txt");
        assert_int_equal(access(p, F_OK), -1);
        free(p);
}

static void test_append_needs_lock(void **state) {
        struct registry *r = NULL;
        char err[512] = "";
        (void)state;
        make_install();
        assert_int_equal(registry_load(root, &r, err, sizeof err), 0);
        assert_int_equal(registry_add_name(r, "x", err, sizeof err), -ENOLCK);
        assert_int_equal(registry_add_mac(r, mac_a, err, sizeof err), -ENOLCK);
        assert_int_equal(registry_truncate(r, 0, 0, err, sizeof err), -ENOLCK);
        registry_free(r);
}

static void test_changed_under_lock(void **state) {
        struct registry *r = NULL;
        char err[512] = "";
        (void)state;
        assert_int_equal(registry_lock(root, &r, err, sizeof err), 0);
        assert_int_equal(registry_add_name(r, "a", err, sizeof err), 0);
        /* Someone writes without the lock: refuse rather than guess. */
        write_file("install/installed.txt", "a\nintruder\n", 11);
        assert_int_equal(registry_add_name(r, "b", err, sizeof err), -ESTALE);
        assert_non_null(strstr(err, "changed while locked"));
        registry_free(r);
        char *n = read_file("install/installed.txt");
        assert_string_equal(n, "a\nintruder\n");
        free(n);
}

static void test_truncate_rollback(void **state) {
        struct registry *r = NULL;
        char err[512] = "";
        (void)state;
        assert_int_equal(registry_lock(root, &r, err, sizeof err), 0);
        assert_int_equal(registry_add_name(r, "keep", err, sizeof err), 0);
        assert_int_equal(registry_add_mac(r, mac_a, err, sizeof err), 0);
        off_t ns = r->names_size, ms = r->macs_size;
        assert_int_equal(ns, 5);
        assert_int_equal(ms, 18);
        assert_int_equal(registry_add_mac(r, mac_b, err, sizeof err), 0);
        assert_int_equal(registry_add_name(r, "gone", err, sizeof err), 0);
        assert_int_equal(registry_truncate(r, ns, ms, err, sizeof err), 0);
        assert_false(registry_has_name(r, "gone", NULL));
        assert_false(registry_has_mac(r, mac_b, NULL));
        assert_true(registry_has_name(r, "keep", NULL));
        /* Larger sizes than the files are no-ops. */
        assert_int_equal(registry_truncate(r, 1000, 1000, err, sizeof err), 0);
        assert_true(registry_has_mac(r, mac_a, NULL));
        registry_free(r);
        char *n = read_file("install/installed.txt");
        assert_string_equal(n, "keep\n");
        free(n);
}

/* A write that fails half-way (file size limit: the disk-full case) leaves
 * no torn line behind. */
static void test_failed_append_leaves_no_torn_line(void **state) {
        (void)state;
        make_install();
        write_file("install/installed.txt", "first-entry-1\n", 14);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct registry *r = NULL;
                char err[512];
                struct rlimit rl = { 20, 20 };
                signal(SIGXFSZ, SIG_IGN);
                if (registry_lock(root, &r, err, sizeof err) < 0 || setrlimit(RLIMIT_FSIZE, &rl) < 0)
                        _exit(1);
                int ret = registry_add_name(r, "a-rather-long-name", err, sizeof err);
                if (ret != -EFBIG && ret != -ENOSPC)
                        _exit(2);
                if (registry_has_name(r, "a-rather-long-name", NULL) || !strstr(err, "cannot append"))
                        _exit(3);
                registry_free(r);
                _exit(0);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        char *n = read_file("install/installed.txt");
        assert_string_equal(n, "first-entry-1\n");
        free(n);
}

#define CHILDREN 8
#define PER_CHILD 25

/* Each child takes the lock PER_CHILD times, checks a name and a MAC of its
 * own and one that every child wants, and appends what is free. */
static void child_appends(int id) {
        for (int j = 0; j < PER_CHILD; j++) {
                struct registry *r = NULL;
                char err[512], name[32];
                uint8_t mac[MAC_LEN] = { 0x52, 0x54, 0x00, (uint8_t)id, (uint8_t)j, 0x01 };
                if (registry_lock(root, &r, err, sizeof err) < 0)
                        _exit(10);
                snprintf(name, sizeof name, "c%d-%d", id, j);
                if (registry_has_name(r, name, NULL) || registry_has_mac(r, mac, NULL))
                        _exit(11);
                if (registry_add_mac(r, mac, err, sizeof err) < 0 || registry_add_name(r, name, err, sizeof err) < 0)
                        _exit(12);
                snprintf(name, sizeof name, "shared-%d", j);
                if (!registry_has_name(r, name, NULL) && registry_add_name(r, name, err, sizeof err) < 0)
                        _exit(13);
                registry_free(r);
        }
        _exit(0);
}

static void test_concurrent_children(void **state) {
        pid_t pids[CHILDREN];
        struct registry *r = NULL;
        char err[512] = "";
        (void)state;
        for (int i = 0; i < CHILDREN; i++) {
                pids[i] = fork();
                assert_true(pids[i] >= 0);
                if (pids[i] == 0)
                        child_appends(i);
        }
        for (int i = 0; i < CHILDREN; i++) {
                int status;
                assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
                assert_true(WIFEXITED(status));
                assert_int_equal(WEXITSTATUS(status), 0);
        }
        assert_int_equal(registry_load(root, &r, err, sizeof err), 0);
        /* Every private entry once, every shared one exactly once. */
        assert_int_equal(r->n_names, CHILDREN * PER_CHILD + PER_CHILD);
        assert_int_equal(r->names_lines, CHILDREN * PER_CHILD + PER_CHILD);
        assert_int_equal(r->n_macs, CHILDREN * PER_CHILD);
        for (size_t i = 0; i < r->n_names; i++)
                for (size_t k = i + 1; k < r->n_names; k++)
                        assert_string_not_equal(r->names[i].name, r->names[k].name);
        for (size_t i = 0; i < r->n_macs; i++)
                for (size_t k = i + 1; k < r->n_macs; k++)
                        assert_memory_not_equal(r->macs[i].mac, r->macs[k].mac, MAC_LEN);
        registry_free(r);
        /* No torn lines: every line ends in a newline and parses. */
        char *n = read_file("install/installed.txt");
        assert_true(strlen(n) > 0 && n[strlen(n) - 1] == '\n');
        free(n);
}

/* The lock really excludes: while a child holds it, the parent waits. */
static void test_lock_excludes(void **state) {
        int ready[2], release[2];
        struct registry *r = NULL;
        char err[512] = "", c;
        (void)state;
        assert_int_equal(pipe(ready), 0);
        assert_int_equal(pipe(release), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct registry *cr = NULL;
                if (registry_lock(root, &cr, err, sizeof err) < 0)
                        _exit(1);
                if (write(ready[1], "x", 1) != 1 || read(release[0], &c, 1) != 1)
                        _exit(2);
                if (registry_add_name(cr, "first", err, sizeof err) < 0)
                        _exit(3);
                registry_free(cr);
                _exit(0);
        }
        assert_int_equal(read(ready[0], &c, 1), 1);
        /* F_GETLK shows the child's write lock. */
        char *lp = path_of("install/registry.lock");
        int fd = open(lp, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        assert_int_equal(fcntl(fd, F_GETLK, &fl), 0);
        assert_int_equal(fl.l_type, F_WRLCK);
        assert_int_equal(fl.l_pid, pid);
        close(fd);
        free(lp);
        assert_int_equal(write(release[1], "x", 1), 1);
        /* This waits until the child appended and let go. */
        assert_int_equal(registry_lock(root, &r, err, sizeof err), 0);
        assert_true(registry_has_name(r, "first", NULL));
        registry_free(r);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        close(ready[0]);
        close(ready[1]);
        close(release[0]);
        close(release[1]);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_empty_root_creates_install, setup, teardown),
                cmocka_unit_test_setup_teardown(test_append_and_contains, setup, teardown),
                cmocka_unit_test_setup_teardown(test_never_reuse, setup, teardown),
                cmocka_unit_test_setup_teardown(test_seed_format_tolerated, setup, teardown),
                cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
                cmocka_unit_test_setup_teardown(test_not_a_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_names_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_append_needs_lock, setup, teardown),
                cmocka_unit_test_setup_teardown(test_changed_under_lock, setup, teardown),
                cmocka_unit_test_setup_teardown(test_truncate_rollback, setup, teardown),
                cmocka_unit_test_setup_teardown(test_failed_append_leaves_no_torn_line, setup, teardown),
                cmocka_unit_test_setup_teardown(test_concurrent_children, setup, teardown),
                cmocka_unit_test_setup_teardown(test_lock_excludes, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
