/* Unit tests of lease.c: which host runs a VM, on the shared root. */
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
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "launcher/core/lease.h"

static char dir[64];
static char lease_path[128];

static int setup(void **state) {
        (void)state;
        snprintf(dir, sizeof dir, "/tmp/vrt-test-lease.XXXXXX");
        if (!mkdtemp(dir))
                return -1;
        snprintf(lease_path, sizeof lease_path, "%s/%s", dir, LEASE_FILE);
        return 0;
}

static int teardown(void **state) {
        (void)state;
        char p[160];
        unlink(lease_path);
        snprintf(p, sizeof p, "%s/target", dir);
        unlink(p);
        snprintf(p, sizeof p, "%s/mountinfo", dir);
        unlink(p);
        rmdir(dir);
        return 0;
}

static char *slurp(const char *path) {
        static char buf[4096];
        int fd = open(path, O_RDONLY);
        ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
        if (fd >= 0)
                close(fd);
        buf[n > 0 ? n : 0] = '\0';
        return buf;
}

static void test_acquire_probe_release(void **state) {
        (void)state;
        struct lease_holder stale, h;
        char err[512];

        int fd = lease_acquire(dir, "alpha", "hostA", &stale, err, sizeof err);
        assert_true(fd >= 0);
        assert_string_equal(stale.host, "");
        char want[64];
        snprintf(want, sizeof want, "host=hostA\npid=%ld\n", (long)getpid());
        assert_non_null(strstr(slurp(lease_path), want));

        assert_int_equal(lease_probe(dir, &h), 1);
        assert_string_equal(h.host, "hostA");
        assert_int_equal(h.pid, getpid());
        assert_true(h.since > 0);

        /* A second open file is a second holder, even in this process. */
        assert_int_equal(lease_acquire(dir, "alpha", "hostB", &stale, err, sizeof err), -EBUSY);
        snprintf(want, sizeof want, "alpha runs on host hostA (pid %ld, since ", (long)getpid());
        assert_non_null(strstr(err, want));
        assert_non_null(strstr(err, "); not started"));

        lease_release(&fd);
        assert_int_equal(fd, -1);
        assert_string_equal(slurp(lease_path), "");
        assert_int_equal(lease_probe(dir, &h), 0);
        lease_release(&fd);     /* safe twice */
}

static void test_probe_without_file(void **state) {
        (void)state;
        struct lease_holder h;
        assert_int_equal(lease_probe(dir, &h), 0);
        assert_int_equal(lease_probe("/nonexistent/vrt-test", &h), 0);     /* no VM dir: nobody runs it */
}

static void test_stale_is_taken_over(void **state) {
        (void)state;
        struct lease_holder stale;
        char err[512];
        const char *text = "host=hostB\npid=4242\nsince=1765026658\nboot_id=0f3c-aa\n";
        int w = open(lease_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(w >= 0);
        assert_int_equal(write(w, text, strlen(text)), (ssize_t)strlen(text));
        close(w);

        int fd = lease_acquire(dir, "alpha", "hostA", &stale, err, sizeof err);
        assert_true(fd >= 0);
        assert_string_equal(stale.host, "hostB");
        assert_int_equal(stale.pid, 4242);
        assert_int_equal(stale.since, 1765026658);
        assert_string_equal(stale.boot_id, "0f3c-aa");
        assert_non_null(strstr(slurp(lease_path), "host=hostA\n"));
        lease_release(&fd);
}

/* A holder that dies with SIGKILL leaves its text but no lock. */
static void test_killed_holder_leaves_stale_lease(void **state) {
        (void)state;
        int pipefd[2];
        struct lease_holder stale, h;
        char err[512], c;

        assert_int_equal(pipe(pipefd), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                int fd = lease_acquire(dir, "alpha", "hostK", &stale, err, sizeof err);
                (void)!write(pipefd[1], fd >= 0 ? "y" : "n", 1);
                pause();
                _exit(0);
        }
        assert_int_equal(read(pipefd[0], &c, 1), 1);
        assert_int_equal(c, 'y');
        assert_int_equal(lease_probe(dir, &h), 1);
        assert_string_equal(h.host, "hostK");
        assert_int_equal(h.pid, pid);
        assert_int_equal(lease_acquire(dir, "alpha", "hostA", &stale, err, sizeof err), -EBUSY);
        assert_non_null(strstr(err, "alpha runs on host hostK"));

        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        assert_int_equal(lease_probe(dir, &h), 0);
        int fd = lease_acquire(dir, "alpha", "hostA", &stale, err, sizeof err);
        assert_true(fd >= 0);
        assert_string_equal(stale.host, "hostK");
        assert_int_equal(stale.pid, pid);
        lease_release(&fd);
        close(pipefd[0]);
        close(pipefd[1]);
}

static void test_links_are_refused(void **state) {
        (void)state;
        struct lease_holder stale;
        char err[512], target[160];
        snprintf(target, sizeof target, "%s/target", dir);
        int t = open(target, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(t >= 0);
        assert_int_equal(write(t, "keep", 4), 4);
        close(t);

        assert_int_equal(symlink(target, lease_path), 0);
        assert_int_equal(lease_acquire(dir, "alpha", "hostA", &stale, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "is a symbolic link"));
        assert_string_equal(slurp(target), "keep");
        unlink(lease_path);

        assert_int_equal(link(target, lease_path), 0);
        assert_int_equal(lease_acquire(dir, "alpha", "hostA", &stale, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "single name"));
        assert_string_equal(slurp(target), "keep");
        unlink(lease_path);

        assert_int_equal(mkfifo(lease_path, 0644), 0);
        assert_int_equal(lease_acquire(dir, "alpha", "hostA", &stale, err, sizeof err), -EINVAL);
        unlink(lease_path);
}

static void test_parse(void **state) {
        (void)state;
        struct lease_holder h;
        char err[256];
        const char *ok = "host=h-1.example\npid=7\nsince=12\nfuture_key=whatever\n";
        assert_int_equal(lease_parse(ok, strlen(ok), &h, err, sizeof err), 0);
        assert_string_equal(h.host, "h-1.example");
        assert_int_equal(h.pid, 7);
        assert_int_equal(h.since, 12);
        const char *bad[] = {
                "pid=-1\n", "pid=99999999999\n", "pid=\n", "since=1x\n", "host=a b\n", "host=\n",
                "boot_id=ZZ\n", "host=a/b\n", "pid=1\npid=2\n", "garbage line\n",
        };
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
                assert_int_equal(lease_parse(bad[i], strlen(bad[i]), &h, err, sizeof err), -EINVAL);
}

static void test_describe(void **state) {
        (void)state;
        char buf[256];
        struct lease_holder h = { .pid = 0 };
        lease_describe(&h, buf, sizeof buf);
        assert_string_equal(buf, "a host that is still taking the lease");
        snprintf(h.host, sizeof h.host, "hostA");
        lease_describe(&h, buf, sizeof buf);
        assert_string_equal(buf, "host hostA (since an unknown time)");
}

static void test_host_name(void **state) {
        (void)state;
        char buf[LEASE_HOST_MAX + 1], err[256];
        setenv("VRT_HOST", "hostB", 1);
        assert_int_equal(lease_host_name(buf, sizeof buf, err, sizeof err), 0);
        assert_string_equal(buf, "hostB");
        setenv("VRT_HOST", "host B", 1);
        assert_int_equal(lease_host_name(buf, sizeof buf, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "VRT_HOST \"host B\""));
        unsetenv("VRT_HOST");
        assert_int_equal(lease_host_name(buf, sizeof buf, err, sizeof err), 0);
        assert_true(buf[0] != '\0');
}

/* A mountinfo line for dir's own device, as the kernel writes it. */
static void write_mountinfo(const char *type, const char *super) {
        struct stat st;
        char path[160], line[1024];
        assert_int_equal(stat(dir, &st), 0);
        snprintf(path, sizeof path, "%s/mountinfo", dir);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "22 1 0:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n");
        snprintf(line, sizeof line, "98 22 %u:%u / /tmp rw,relatime shared:40 - %s srv:/export %s\n",
                 major(st.st_dev), minor(st.st_dev), type, super);
        fputs(line, f);
        fclose(f);
}

static void test_check_root(void **state) {
        (void)state;
        char err[512], mi[160];
        snprintf(mi, sizeof mi, "%s/mountinfo", dir);

        write_mountinfo("nfs4", "rw,vers=4.2,rsize=1048576,hard,proto=tcp,local_lock=all,addr=10.0.0.1");
        assert_int_equal(lease_check_root(dir, mi, false, err, sizeof err), -ENOLCK);
        assert_non_null(strstr(err, "nfs4 /tmp mounted with local_lock=all"));
        assert_non_null(strstr(err, "shared_root=no"));

        write_mountinfo("nfs", "rw,vers=3,nolock,proto=tcp");
        assert_int_equal(lease_check_root(dir, mi, false, err, sizeof err), -ENOLCK);
        assert_non_null(strstr(err, "with nolock"));

        write_mountinfo("nfs4", "rw,vers=4.2,hard,local_lock=none,addr=10.0.0.1");
        assert_int_equal(lease_check_root(dir, mi, true, err, sizeof err), 0);

        /* nolock means nothing to a local file system. */
        write_mountinfo("ext4", "rw,nolock");
        assert_int_equal(lease_check_root(dir, mi, true, err, sizeof err), 0);

        assert_int_equal(lease_check_root("/nonexistent/vrt-test", mi, false, err, sizeof err), -ENOENT);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_acquire_probe_release, setup, teardown),
                cmocka_unit_test_setup_teardown(test_probe_without_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stale_is_taken_over, setup, teardown),
                cmocka_unit_test_setup_teardown(test_killed_holder_leaves_stale_lease, setup, teardown),
                cmocka_unit_test_setup_teardown(test_links_are_refused, setup, teardown),
                cmocka_unit_test(test_parse),
                cmocka_unit_test(test_describe),
                cmocka_unit_test(test_host_name),
                cmocka_unit_test_setup_teardown(test_check_root, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
