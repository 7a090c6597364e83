/* Tests for net/tap and net/bridge against the kernel.
 *
 * Each test first moves the process into a new, empty network namespace
 * (unshare(CLONE_NEWNET)), so the host's interfaces are never seen or
 * touched; the namespace and everything in it vanish with the next test's
 * unshare or the process's exit. Bridges and other fixtures are made with
 * iproute2's `ip` (fork + execv), which also serves as an independent
 * reader of the results. Without root (or without `ip`) the tests skip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "net/bridge.h"
#include "net/tap.h"

static const char *ip_path;

static void enter_netns(void) {
        static const char *candidates[] = { "/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip" };

        if (geteuid() != 0) {
                print_message("not root: skipping network namespace test\n");
                skip();
        }
        ip_path = NULL;
        for (size_t i = 0; i < sizeof candidates / sizeof *candidates && !ip_path; i++)
                if (access(candidates[i], X_OK) == 0)
                        ip_path = candidates[i];
        if (!ip_path) {
                print_message("no ip(8): skipping network namespace test\n");
                skip();
        }
        /* Never fall through to the host's namespace. */
        if (unshare(CLONE_NEWNET) < 0) {
                print_message("unshare(CLONE_NEWNET): %s: skipping\n", strerror(errno));
                skip();
        }
}

/* Runs ip(8) with ARGV (without argv[0]); its stdout and stderr go to OUT.
 * Returns its exit status, or -1 if it did not exit normally. */
static int run_ip(char *out, size_t outlen, const char *const *argv) {
        const char *full[32] = { "ip" };
        size_t n = 1;
        int p[2];

        for (; argv[n - 1]; n++) {
                assert_true(n < sizeof full / sizeof *full - 1);
                full[n] = argv[n - 1];
        }
        full[n] = NULL;

        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                if (dup2(p[1], 1) < 0 || dup2(p[1], 2) < 0)
                        _exit(126);
                execv(ip_path, (char *const *)full);
                _exit(127);
        }
        close(p[1]);
        size_t used = 0;
        for (;;) {
                char buf[512];
                ssize_t k = read(p[0], buf, sizeof buf);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                size_t take = (size_t)k;
                if (used + take >= outlen)
                        take = outlen - 1 - used;
                memcpy(out + used, buf, take);
                used += take;
        }
        out[used] = '\0';
        close(p[0]);
        int status;
        while (waitpid(pid, &status, 0) < 0)
                assert_int_equal(errno, EINTR);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#define IP_ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* ip ... must succeed; its output is returned in a static buffer. */
#define IP(...) ip_ok(IP_ARGS(__VA_ARGS__))
static const char *ip_ok(const char *const *argv) {
        static char out[8192];
        int st = run_ip(out, sizeof out, argv);
        if (st != 0)
                fail_msg("ip %s %s ... failed (%d): %s", argv[0], argv[1] ? argv[1] : "", st, out);
        return out;
}

static void make_bridge(const char *name, unsigned mtu, bool up) {
        char m[16];
        snprintf(m, sizeof m, "%u", mtu);
        IP("link", "add", name, "type", "bridge");
        IP("link", "set", name, "mtu", m);
        if (up)
                IP("link", "set", name, "up");
}

/* Makes an interface that is not a bridge; returns its link kind. */
static const char *make_non_bridge(const char *name) {
        char out[1024];
        if (run_ip(out, sizeof out, IP_ARGS("link", "add", name, "type", "dummy")) == 0)
                return "dummy";
        /* Kernels without CONFIG_DUMMY: a persistent tap will do. */
        IP("tuntap", "add", "mode", "tap", "name", name);
        return "tun";
}

static unsigned ifflags(const char *name) {
        struct ifreq ifr = { 0 };
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        assert_true(s >= 0);
        snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
        assert_int_equal(ioctl(s, SIOCGIFFLAGS, &ifr), 0);
        close(s);
        return (unsigned short)ifr.ifr_flags;
}

static int ifmtu(const char *name) {
        struct ifreq ifr = { 0 };
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        assert_true(s >= 0);
        snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
        assert_int_equal(ioctl(s, SIOCGIFMTU, &ifr), 0);
        close(s);
        return ifr.ifr_mtu;
}

/* Waits up to a second for NAME to vanish: closing the last fd of a tap
 * unregisters it synchronously, the wait only guards against surprises. */
static bool gone(const char *name) {
        for (int i = 0; i < 100; i++) {
                if (if_nametoindex(name) == 0)
                        return true;
                nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
        }
        return false;
}

static void test_tap_attach_alias_close(void **state) {
        char name[IFNAMSIZ], err[256] = "";
        int fd = -1;

        enter_netns();
        make_bridge("br0", 1400, true);

        assert_int_equal(tap_name_for_vm("web01", 0, name), 0);
        assert_int_equal(tap_open(name, true, &fd, err, sizeof err), 0);
        assert_true(fd >= 0);
        assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);

        /* a non-persistent tap with a vnet header, as asked */
        struct ifreq ifr = { 0 };
        assert_int_equal(ioctl(fd, TUNGETIFF, &ifr), 0);
        assert_string_equal(ifr.ifr_name, name);
        assert_int_equal(ifr.ifr_flags & (IFF_TAP | IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | IFF_PERSIST),
                         IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
        assert_false(ifflags(name) & IFF_UP);

        assert_int_equal(tap_set_alias(name, "web01", err, sizeof err), 0);
        assert_int_equal(bridge_check("br0", err, sizeof err), 0);
        assert_int_equal(bridge_attach("br0", name, err, sizeof err), 0);
        assert_string_equal(err, "");

        assert_true(ifflags(name) & IFF_UP);
        assert_int_equal(ifmtu(name), 1400);
        assert_int_equal(ifmtu("br0"), 1400);
        const char *out = IP("-o", "link", "show", "dev", name);
        if (!strstr(out, " master br0 "))
                fail_msg("not a port of br0: %s", out);
        if (!strstr(out, "alias web01\n"))
                fail_msg("no alias web01: %s", out);
        out = IP("-o", "link", "show", "master", "br0");
        assert_non_null(strstr(out, name));

        close(fd);
        assert_true(gone(name));
        assert_true(if_nametoindex("br0") > 0);
}

static void test_tap_without_vnet_hdr(void **state) {
        char err[256] = "";
        int fd = -1;

        enter_netns();
        assert_int_equal(tap_open("vrttest0", false, &fd, err, sizeof err), 0);
        struct ifreq ifr = { 0 };
        assert_int_equal(ioctl(fd, TUNGETIFF, &ifr), 0);
        assert_int_equal(ifr.ifr_flags & (IFF_TAP | IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | IFF_PERSIST),
                         IFF_TAP | IFF_NO_PI);
        close(fd);
        assert_true(gone("vrttest0"));
}

static void test_tap_open_twice(void **state) {
        char err[256] = "";
        int fd = -1, fd2 = 12345;

        enter_netns();
        assert_int_equal(tap_open("vrttest0", true, &fd, err, sizeof err), 0);
        assert_int_equal(tap_open("vrttest0", true, &fd2, err, sizeof err), -EBUSY);
        assert_string_equal(err, "tap vrttest0: interface already exists (is another instance of this VM running?)");
        assert_int_equal(fd2, 12345);
        /* the first instance's tap is unharmed */
        struct ifreq ifr = { 0 };
        assert_int_equal(ioctl(fd, TUNGETIFF, &ifr), 0);
        assert_true(if_nametoindex("vrttest0") > 0);

        /* once it is gone, the name is free again */
        close(fd);
        assert_true(gone("vrttest0"));
        assert_int_equal(tap_open("vrttest0", true, &fd, err, sizeof err), 0);
        close(fd);
}

static void test_tap_open_name_of_other_interface(void **state) {
        char err[256] = "";
        int fd = 12345;

        enter_netns();
        make_bridge("br0", 1500, true);
        assert_int_equal(tap_open("br0", true, &fd, err, sizeof err), -EBUSY);
        assert_string_equal(err, "tap br0: interface already exists (is another instance of this VM running?)");

        /* a persistent leftover tap is not adopted either: it would outlive the VM */
        IP("tuntap", "add", "mode", "tap", "name", "vrtold0");
        assert_int_equal(tap_open("vrtold0", true, &fd, err, sizeof err), -EBUSY);
        assert_int_equal(fd, 12345);
        assert_int_equal(tap_open("lo", true, &fd, err, sizeof err), -EBUSY);
}

static void test_tap_open_unprivileged(void **state) {
        int p[2];

        enter_netns();
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                char err[256] = "";
                int fd = 12345;
                if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
                        _exit(100);
                int r = tap_open("vrttest0", true, &fd, err, sizeof err);
                if (fd != 12345)
                        _exit(101);
                if (write(p[1], err, strlen(err)) < 0)
                        _exit(102);
                _exit(-r);
        }
        close(p[1]);
        char msg[256] = "";
        ssize_t k = read(p[0], msg, sizeof msg - 1);
        close(p[0]);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_true(k > 0);
        msg[k] = '\0';
        /* /dev/net/tun is 0600 root on Debian (EACCES); where it is 0666 the
         * missing CAP_NET_ADMIN shows in TUNSETIFF (EPERM). */
        if (WEXITSTATUS(status) == EACCES)
                assert_string_equal(msg, "tap vrttest0: cannot open /dev/net/tun: Permission denied");
        else if (WEXITSTATUS(status) == EPERM)
                assert_string_equal(msg, "tap vrttest0: TUNSETIFF: Operation not permitted");
        else
                fail_msg("unexpected status %d: %s", WEXITSTATUS(status), msg);
}

static void test_bridge_check_missing(void **state) {
        char err[256] = "";

        enter_netns();
        assert_int_equal(bridge_check("br0", err, sizeof err), -ENODEV);
        assert_string_equal(err, "bridge br0: no such interface");
}

static void test_bridge_check_not_a_bridge(void **state) {
        char err[256] = "", want[256];

        enter_netns();
        const char *kind = make_non_bridge("eth9");
        IP("link", "set", "eth9", "up");
        assert_int_equal(bridge_check("eth9", err, sizeof err), -ENOTTY);
        snprintf(want, sizeof want, "bridge eth9: interface is not a bridge (it is a %s)", kind);
        assert_string_equal(err, want);

        /* loopback has no link kind at all */
        assert_int_equal(bridge_check("lo", err, sizeof err), -ENOTTY);
        assert_string_equal(err, "bridge lo: interface is not a bridge");
}

static void test_bridge_check_down(void **state) {
        char err[256] = "";

        enter_netns();
        make_bridge("br0", 1500, false);
        assert_int_equal(bridge_check("br0", err, sizeof err), -ENETDOWN);
        assert_string_equal(err, "bridge br0: bridge is down (ip link set br0 up)");

        IP("link", "set", "br0", "up");
        err[0] = '\0';
        assert_int_equal(bridge_check("br0", err, sizeof err), 0);
        assert_string_equal(err, "");
}

static void test_bridge_attach_bad_bridge(void **state) {
        char err[256] = "";
        int fd = -1;

        enter_netns();
        assert_int_equal(tap_open("vrttest0", true, &fd, err, sizeof err), 0);

        assert_int_equal(bridge_attach("br0", "vrttest0", err, sizeof err), -ENODEV);
        assert_string_equal(err, "bridge br0: no such interface");

        make_bridge("br0", 1500, false);
        assert_int_equal(bridge_attach("br0", "vrttest0", err, sizeof err), -ENETDOWN);
        assert_string_equal(err, "bridge br0: bridge is down (ip link set br0 up)");

        make_non_bridge("eth9");
        IP("link", "set", "eth9", "up");
        assert_int_equal(bridge_attach("eth9", "vrttest0", err, sizeof err), -ENOTTY);

        /* nothing happened to the tap */
        assert_false(ifflags("vrttest0") & IFF_UP);
        const char *out = IP("-o", "link", "show", "dev", "vrttest0");
        assert_null(strstr(out, " master "));
        close(fd);
}

static void test_bridge_attach_bad_port(void **state) {
        char err[256] = "";

        enter_netns();
        make_bridge("br0", 1500, true);

        assert_int_equal(bridge_attach("br0", "vrttest0", err, sizeof err), -ENODEV);
        assert_string_equal(err, "bridge br0: port vrttest0: no such interface");

        assert_int_equal(bridge_attach("br0", "a/b", err, sizeof err), -EINVAL);
        assert_string_equal(err, "bridge br0: port \"a/b\": invalid interface name");

        assert_int_equal(bridge_attach("br0", "br0", err, sizeof err), -EINVAL);
        assert_string_equal(err, "bridge br0: cannot be a port of itself");

        /* The kernel refuses: its extended-ack text reaches the message. */
        make_bridge("br1", 9000, true);
        assert_int_equal(bridge_attach("br0", "br1", err, sizeof err), -ELOOP);
        assert_string_equal(err, "bridge br0: cannot add port br1: Can not enslave a bridge to a bridge");
}

static void test_bridge_attach_keeps_bridge_mtu(void **state) {
        char err[256] = "";
        int fd = -1;

        enter_netns();
        /* A port with a smaller MTU would drag an auto-MTU bridge down. */
        IP("link", "add", "br0", "type", "bridge");
        IP("link", "set", "br0", "up");
        assert_int_equal(ifmtu("br0"), 1500);
        assert_int_equal(tap_open("vrttest0", true, &fd, err, sizeof err), 0);
        IP("link", "set", "vrttest0", "mtu", "1280");
        assert_int_equal(bridge_attach("br0", "vrttest0", err, sizeof err), 0);
        assert_int_equal(ifmtu("vrttest0"), 1500);
        assert_int_equal(ifmtu("br0"), 1500);
        close(fd);
}

static void test_alias_and_up(void **state) {
        char err[256] = "";
        int fd = -1;

        enter_netns();
        assert_int_equal(tap_open("vrttest0", true, &fd, err, sizeof err), 0);

        assert_int_equal(tap_set_alias("vrttest0", "a-vm-name-of-sixty-three-characters-which-is-the-longest-allowed", err, sizeof err), 0);
        const char *out = IP("-o", "link", "show", "dev", "vrttest0");
        assert_non_null(strstr(out, "alias a-vm-name-of-sixty-three-characters-which-is-the-longest-allowed\n"));

        /* "" clears the alias */
        assert_int_equal(tap_set_alias("vrttest0", "", err, sizeof err), 0);
        out = IP("-o", "link", "show", "dev", "vrttest0");
        assert_null(strstr(out, "alias"));

        assert_false(ifflags("vrttest0") & IFF_UP);
        assert_int_equal(tap_set_up("vrttest0", err, sizeof err), 0);
        assert_true(ifflags("vrttest0") & IFF_UP);
        /* idempotent */
        assert_int_equal(tap_set_up("vrttest0", err, sizeof err), 0);

        assert_int_equal(tap_set_alias("vrtnone0", "web01", err, sizeof err), -ENODEV);
        assert_string_equal(err, "interface vrtnone0: no such interface");
        assert_int_equal(tap_set_up("vrtnone0", err, sizeof err), -ENODEV);
        assert_string_equal(err, "interface vrtnone0: no such interface");
        close(fd);
}

static void test_vhost_open(void **state) {
        int fd = 12345;

        enter_netns();
        int r = tap_vhost_open(&fd);
        if (access("/dev/vhost-net", F_OK) < 0) {
                assert_int_equal(r, -ENOENT);
                assert_int_equal(fd, 12345);
        } else {
                assert_int_equal(r, 0);
                assert_true(fd >= 0 && fd != 12345);
                assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
                close(fd);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_tap_attach_alias_close),
                cmocka_unit_test(test_tap_without_vnet_hdr),
                cmocka_unit_test(test_tap_open_twice),
                cmocka_unit_test(test_tap_open_name_of_other_interface),
                cmocka_unit_test(test_tap_open_unprivileged),
                cmocka_unit_test(test_bridge_check_missing),
                cmocka_unit_test(test_bridge_check_not_a_bridge),
                cmocka_unit_test(test_bridge_check_down),
                cmocka_unit_test(test_bridge_attach_bad_bridge),
                cmocka_unit_test(test_bridge_attach_bad_port),
                cmocka_unit_test(test_bridge_attach_keeps_bridge_mtu),
                cmocka_unit_test(test_alias_and_up),
                cmocka_unit_test(test_vhost_open),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
