/* Unit tests of the key=value parser and the config model. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "launcher/core/config.h"
#include "launcher/core/props.h"
#include "launcher/vm/qemu_argv.h"

static char dir[] = "/tmp/vrt-config-XXXXXX";

static char *write_file(const char *name, const char *text) {
        char *path;
        assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
        FILE *f = fopen(path, "we");
        assert_non_null(f);
        fputs(text, f);
        assert_int_equal(fclose(f), 0);
        return path;
}

static int count_handler(const char *key, const char *value, unsigned line, void *userdata, char *err, size_t errlen) {
        (*(int *)userdata)++;
        return 0;
}

/* Parses text and returns the error line ("" when it parsed). */
static const char *props_error(const char *text) {
        static char err[1024];
        int n = 0;
        err[0] = '\0';
        props_parse_buffer("t.properties", text, strlen(text), count_handler, &n, err, sizeof err);
        return err;
}

static void test_props_syntax(void **state) {
        assert_string_equal(props_error("# comment\n\n  a = 1 \nb=\n"), "");
        assert_string_equal(props_error("a=1\na=2\n"), "t.properties:2: duplicate key a");
        assert_string_equal(props_error("a=1\nno equals here\n"), "t.properties:2: expected key=value, got \"no equals here\"");
        assert_string_equal(props_error("=value\n"), "t.properties:1: invalid key \"\"");
        assert_string_equal(props_error("Key With Space=1\n"), "t.properties:1: invalid key \"Key With Space\"");
        assert_string_equal(props_error("a=1\r\nb=2\r\n"), "");

        char *long_value = malloc(PROPS_MAX_VALUE + 8);
        memset(long_value, 'x', PROPS_MAX_VALUE + 1);
        long_value[PROPS_MAX_VALUE + 1] = '\0';
        char *text;
        assert_true(asprintf(&text, "k=%s\n", long_value) > 0);
        assert_string_equal(props_error(text), "t.properties:1: value of k longer than 1024 bytes");
        free(text);
        free(long_value);

        char *long_line = malloc(PROPS_MAX_LINE + 16);
        memset(long_line, 'y', PROPS_MAX_LINE + 10);
        long_line[PROPS_MAX_LINE + 10] = '\0';
        assert_string_equal(props_error(long_line), "t.properties:1: line longer than 4096 bytes");
        free(long_line);

        char nul[] = "a=1\nb=x\0y\n";
        int n = 0;
        char err[256] = "";
        assert_int_equal(props_parse_buffer("t", nul, sizeof nul - 1, count_handler, &n, err, sizeof err), -EINVAL);
        assert_string_equal(err, "t:2: NUL byte in line");
}

static void test_props_missing_file(void **state) {
        char err[512];
        int n = 0;
        assert_int_equal(props_parse_file("/nonexistent/x.properties", count_handler, &n, err, sizeof err), -ENOENT);
        assert_string_equal(err, "/nonexistent/x.properties: No such file or directory");
}

/* A FIFO (or a symlink to one) is refused at once instead of blocking
 * until some writer opens it. */
static void test_props_fifo(void **state) {
        char err[512], *path;
        int n = 0;
        assert_true(asprintf(&path, "%s/fifo.properties", dir) > 0);
        assert_int_equal(mkfifo(path, 0600), 0);
        alarm(10);
        assert_int_equal(props_parse_file(path, count_handler, &n, err, sizeof err), -EINVAL);
        alarm(0);
        assert_non_null(strstr(err, "not a regular file"));
        unlink(path);
        free(path);
}

static void test_sizes(void **state) {
        uint64_t v;
        assert_int_equal(config_parse_size("512M", &v), 0);
        assert_int_equal(v, 512ULL << 20);
        assert_int_equal(config_parse_size("1G", &v), 0);
        assert_int_equal(v, 1ULL << 30);
        assert_int_equal(config_parse_size("2GiB", &v), 0);
        assert_int_equal(v, 2ULL << 30);
        assert_int_equal(config_parse_size("10240", &v), 0);
        assert_int_equal(v, 10240);
        assert_int_equal(config_parse_size("1T", &v), 0);
        assert_int_equal(v, 1ULL << 40);
        assert_int_equal(config_parse_size("", &v), -EINVAL);
        assert_int_equal(config_parse_size("-1G", &v), -EINVAL);
        assert_int_equal(config_parse_size("1X", &v), -EINVAL);
        assert_int_equal(config_parse_size("1GG", &v), -EINVAL);
        assert_int_equal(config_parse_size(" 1G", &v), -EINVAL);
        assert_int_equal(config_parse_size("99999999999999T", &v), -ERANGE);
        assert_int_equal(config_parse_size("99999999999999999999999", &v), -ERANGE);

        unsigned u;
        assert_int_equal(config_parse_uint("120", 1, 86400, &u), 0);
        assert_int_equal(u, 120);
        assert_int_equal(config_parse_uint("0", 1, 86400, &u), -ERANGE);
        assert_int_equal(config_parse_uint("86401", 1, 86400, &u), -ERANGE);
        assert_int_equal(config_parse_uint("12s", 1, 86400, &u), -EINVAL);
        assert_int_equal(config_parse_uint("+1", 1, 86400, &u), -EINVAL);
}

static void test_vm_names(void **state) {
        char err[512];
        assert_int_equal(config_check_vm_name("pluto-4711", "/run/vrt", err, sizeof err), 0);
        assert_int_equal(config_check_vm_name("a", "/run/vrt", err, sizeof err), 0);
        assert_int_equal(config_check_vm_name("Pluto", "/run/vrt", err, sizeof err), -EINVAL);
        assert_int_equal(config_check_vm_name("-pluto", "/run/vrt", err, sizeof err), -EINVAL);
        assert_int_equal(config_check_vm_name("pluto-", "/run/vrt", err, sizeof err), -EINVAL);
        assert_int_equal(config_check_vm_name("plu_to", "/run/vrt", err, sizeof err), -EINVAL);
        assert_int_equal(config_check_vm_name("a/b", "/run/vrt", err, sizeof err), -EINVAL);
        assert_int_equal(config_check_vm_name("..", "/run/vrt", err, sizeof err), -EINVAL);
        assert_int_equal(config_check_vm_name("", "/run/vrt", err, sizeof err), -EINVAL);
        assert_string_equal(err, "empty VM name");
        char name63[64], name64[65];
        memset(name63, 'a', 63);
        name63[63] = '\0';
        memset(name64, 'a', 64);
        name64[64] = '\0';
        assert_int_equal(config_check_vm_name(name63, "/run/vrt", err, sizeof err), 0);
        assert_int_equal(config_check_vm_name(name64, "/run/vrt", err, sizeof err), -EINVAL);
        /* A long runtime dir leaves less room: the socket path must fit 108 bytes. */
        char rundir[80];
        memset(rundir, 'r', sizeof rundir - 1);
        rundir[0] = '/';
        rundir[sizeof rundir - 1] = '\0';
        assert_int_equal(config_check_vm_name(name63, rundir, err, sizeof err), -ENAMETOOLONG);
        assert_non_null(strstr(err, "socket paths must fit in 108 bytes"));
}

static void test_enum_tables(void **state) {
        for (int i = 0; i < _DISK_MODE_MAX; i++)
                assert_int_equal(disk_mode_from_string(disk_mode_to_string(i)), i);
        for (int i = 0; i < _NET_MODE_MAX; i++)
                assert_int_equal(net_mode_from_string(net_mode_to_string(i)), i);
        for (int i = 0; i < _FIRMWARE_MAX; i++)
                assert_int_equal(firmware_from_string(firmware_to_string(i)), i);
        assert_int_equal(disk_mode_from_string("Overlay"), _DISK_MODE_INVALID);
        assert_int_equal(net_mode_from_string(NULL), _NET_MODE_INVALID);
        assert_null(firmware_to_string(_FIRMWARE_MAX));
}

static void test_escape_commas(void **state) {
        char *s = qemu_escape_commas("a,b,,c");
        assert_string_equal(s, "a,,b,,,,c");
        free(s);
        s = qemu_escape_commas("");
        assert_string_equal(s, "");
        free(s);
}

static const char *host_error(const char *text) {
        static char err[1024];
        struct host_config *h = NULL;
        char *path = write_file("vrt.conf", text);
        err[0] = '\0';
        if (host_config_load(path, &h, err, sizeof err) == 0)
                err[0] = '\0';
        host_config_free(h);
        unlink(path);
        free(path);
        /* Show paths relative to the test dir. */
        static char out[1024];
        const char *p = strstr(err, "vrt.conf");
        snprintf(out, sizeof out, "%s", p ? p : err);
        return out;
}

static void test_host_config(void **state) {
        struct host_config *h = NULL;
        char err[512];
        char *path = write_file("vrt.conf", "bridge=br1\nsize.small.memory=2G\nsize.gpu.cpus=8\nsize.gpu.memory=32G\n");
        assert_int_equal(host_config_load(path, &h, err, sizeof err), 0);
        assert_string_equal(h->bridge, "br1");
        assert_string_equal(h->accel, "kvm:tcg");
        assert_string_equal(h->user, "vrt");
        assert_int_equal(h->shutdown_timeout, 120);
        const struct size_class *s = host_config_find_size(h, "small");
        assert_non_null(s);
        assert_int_equal(s->memory, 2ULL << 30);
        assert_int_equal(s->cpus, 1);           /* built-in value kept */
        s = host_config_find_size(h, "gpu");
        assert_non_null(s);
        assert_int_equal(s->cpus, 8);
        assert_null(host_config_find_size(h, "nope"));
        host_config_free(h);
        unlink(path);
        free(path);

        /* A missing vrt.conf is the defaults. */
        assert_int_equal(host_config_load("/nonexistent/vrt.conf", &h, err, sizeof err), 0);
        host_config_free(h);

        assert_string_equal(host_error("colour=blue\n"), "vrt.conf:1: unknown key colour");
        assert_string_equal(host_error("shutdown_timeout=soon\n"), "vrt.conf:1: shutdown_timeout: invalid number of seconds \"soon\" (1..86400)");
        assert_string_equal(host_error("size.small.cpus=0\n"), "vrt.conf:1: size.small.cpus: invalid CPU count \"0\" (1..288)");
        assert_string_equal(host_error("size.small.memory=1K\n"), "vrt.conf:1: size.small.memory: invalid memory size \"1K\" (e.g. 512M, 2G; at least 16M)");
        assert_string_equal(host_error("size.odd.memory=20000000\n"),
                            "vrt.conf:1: size.odd.memory=20000000: memory must be a whole number of MiB (e.g. 512M, 2G)");
        assert_string_equal(host_error("ovmf_code=OVMF_CODE.fd\n"), "vrt.conf:1: ovmf_code=OVMF_CODE.fd: not an absolute path");
        assert_string_equal(host_error("ovmf_vars=vars.fd\n"), "vrt.conf:1: ovmf_vars=vars.fd: not an absolute path");
        assert_string_equal(host_error("size.small.colour=1\n"), "vrt.conf:1: unknown key size.small.colour (sizes have cpus, memory, disk)");
        assert_string_equal(host_error("size.cpus=1\n"), "vrt.conf:1: invalid size key size.cpus (expected size.NAME.cpus|memory|disk)");
        assert_string_equal(host_error("qemu=qemu-system-x86_64\n"), "vrt.conf:1: qemu must be an absolute path, got \"qemu-system-x86_64\"");
        assert_string_equal(host_error("accel=xen\n"), "vrt.conf:1: invalid accel \"xen\" (kvm, tcg or kvm:tcg)");
        assert_string_equal(host_error("accel=kvm::tcg\n"), "vrt.conf:1: invalid accel \"kvm::tcg\" (kvm, tcg or kvm:tcg)");
        assert_string_equal(host_error("bridge=\n"), "vrt.conf:1: bridge: empty value");
        assert_string_equal(host_error("user=vrt\nuser=root\n"), "vrt.conf:2: duplicate key user");
        assert_string_equal(host_error("machine=q35,accel=kvm\n"), "vrt.conf:1: invalid machine \"q35,accel=kvm\"");
}

static const char *instance_error(const char *text) {
        static char out[1024];
        char err[1024] = "";
        struct instance *inst = NULL;
        char *path = write_file("instance.properties", text);
        if (instance_load(path, "vm1", "/run/vrt", &inst, err, sizeof err) == 0)
                err[0] = '\0';
        instance_free(inst);
        unlink(path);
        free(path);
        const char *p = strstr(err, "instance.properties");
        snprintf(out, sizeof out, "%s", p ? p : err);
        return out;
}

static void test_instance(void **state) {
        assert_string_equal(instance_error("image=debian-12\nsize=small\ncomment=\n"), "");
        assert_string_equal(instance_error("size=small\n"), "instance.properties: missing required key image");
        assert_string_equal(instance_error("image=debian-12\n"), "instance.properties: missing required key size");
        assert_string_equal(instance_error("image=../etc/passwd\nsize=small\n"), "instance.properties:1: invalid image name \"../etc/passwd\" (a file name in images/ without .qcow2)");
        assert_string_equal(instance_error("image=a\nsize=small\ndisk=thin\n"), "instance.properties:3: invalid disk \"thin\" (overlay or copy)");
        assert_string_equal(instance_error("image=a\nsize=small\nnet=nat\n"), "instance.properties:3: invalid net \"nat\" (bridge, user or none)");
        assert_string_equal(instance_error("image=a\nsize=small\nfirmware=efi\n"), "instance.properties:3: invalid firmware \"efi\" (bios or uefi)");
        assert_string_equal(instance_error("image=a\nsize=small\nautostart=maybe\n"), "instance.properties:3: invalid autostart \"maybe\" (yes or no)");
        assert_string_equal(instance_error("image=a\nsize=small\nmanaged_by=pacemaker\n"), "");
        assert_string_equal(instance_error("image=a\nsize=small\nmanaged_by=corosync\n"), "instance.properties:3: invalid managed_by \"corosync\" (vrt or pacemaker)");
        assert_string_equal(instance_error("image=a\nsize=small\nautostart=yes\nmanaged_by=pacemaker\n"), "instance.properties:4: managed_by=pacemaker and autostart=yes exclude each other (the cluster starts it)");
        assert_string_equal(instance_error("image=a\nsize=small\nshutdown_timeout=0\n"), "instance.properties:3: invalid shutdown_timeout \"0\" (1..86400 seconds)");
        assert_string_equal(instance_error("image=a\nsize=small\nname=Bad_Name\n"), "instance.properties:3: invalid VM name \"Bad_Name\": use lowercase letters, digits and inner '-' (RFC 1123 label)");
        assert_string_equal(instance_error("image=a\nsize=small\nbridge=a-very-long-bridge-name\n"), "instance.properties:3: invalid bridge name \"a-very-long-bridge-name\" (at most 15 characters)");
        assert_string_equal(instance_error("image=a\nsize=small\nhostfwd=tcp::22-:22\n"), "instance.properties:3: hostfwd needs net=user");
        assert_string_equal(instance_error("image=a\nsize=small\ncomment=tab\there\n"), "");
        assert_string_equal(instance_error("image=a\nsize=small\ncomment=bell\a\n"), "instance.properties:3: comment: control character in value");
}

static void test_instance_round_trip(void **state) {
        char err[512];
        struct instance *a = NULL, *b = NULL;
        char *path = write_file("rt.properties",
                                "image=debian-12\nsize=small\ncomment=a=b, c\nname=rt\ndisk=copy\nnet=user\n"
                                "hostfwd=tcp::2222-:22\nfirmware=uefi\nmac=52:54:00:01:02:03\ninit=setup.sh\n"
                                "autostart=yes\nshutdown_timeout=30\n");
        assert_int_equal(instance_load(path, NULL, "/run/vrt", &a, err, sizeof err), 0);
        assert_false(a->cluster_managed);
        char *text = instance_to_string(a);
        assert_non_null(text);
        char *path2 = write_file("rt2.properties", text);
        assert_int_equal(instance_load(path2, NULL, "/run/vrt", &b, err, sizeof err), 0);
        char *text2 = instance_to_string(b);
        assert_string_equal(text, text2);
        assert_string_equal(b->comment, "a=b, c");
        assert_int_equal(b->disk, DISK_COPY);
        assert_int_equal(b->n_nics, 1);
        assert_int_equal(b->nics[0].net, NET_USER);
        assert_string_equal(b->nics[0].hostfwd, "tcp::2222-:22");
        assert_int_equal(b->nics[0].n_fwd, 1);
        assert_false(b->nics[0].fwd[0].udp);
        assert_string_equal(b->nics[0].fwd[0].host_addr, "");
        assert_int_equal(b->nics[0].fwd[0].host_port, 2222);
        assert_int_equal(b->nics[0].fwd[0].guest_port, 22);
        assert_int_equal(b->firmware, FIRMWARE_UEFI);
        assert_true(b->autostart);
        assert_int_equal(b->shutdown_timeout, 30);
        free(text);
        free(text2);
        instance_free(a);
        instance_free(b);
        unlink(path);
        unlink(path2);
        free(path);
        free(path2);
}

/* Extra NICs: net.N=, bridge.N=, mac.N=, hostfwd.N= for N in 1..7. */
static void test_instance_nics(void **state) {
        assert_string_equal(instance_error("image=a\nsize=small\nnet.1=user\nnet.2=bridge\nbridge.2=br1\n"), "");
        assert_string_equal(instance_error("image=a\nsize=small\nnet.2=user\n"),
                            "instance.properties:3: NIC 2 has keys but NIC 1 has no net.1= (NICs are numbered from 1 without gaps)");
        assert_string_equal(instance_error("image=a\nsize=small\nbridge.1=br1\n"),
                            "instance.properties:3: NIC 1 needs net.1= (bridge or user)");
        assert_string_equal(instance_error("image=a\nsize=small\nnet.1=none\n"),
                            "instance.properties:3: invalid net.1 \"none\" (bridge or user)");
        assert_string_equal(instance_error("image=a\nsize=small\nnet=none\nnet.1=user\n"),
                            "instance.properties:4: net.1= with net=none (line 3): the first NIC is net=");
        assert_string_equal(instance_error("image=a\nsize=small\nnet=bridge\ncomment=x\nhostfwd=tcp::22-:22\n"),
                            "instance.properties:5: hostfwd needs net=user");
        assert_string_equal(instance_error("image=a\nsize=small\nnet.1=bridge\nhostfwd.1=tcp::22-:22\n"),
                            "instance.properties:4: hostfwd.1 needs net.1=user");
        assert_string_equal(instance_error("image=a\nsize=small\nmac=52:54:00:00:00:01\nnet.1=user\nmac.1=52:54:00:00:00:01\n"),
                            "instance.properties:5: mac.1=52:54:00:00:00:01 is the MAC of NIC 0 too");
        assert_string_equal(instance_error("image=a\nsize=small\nnet.1=user\nmac.1=01:00:5e:00:00:01\n"),
                            "instance.properties:4: invalid mac.1 \"01:00:5e:00:00:01\": MAC address 01:00:5e:00:00:01 is a multicast address (first octet odd)");
        assert_string_equal(instance_error("image=a\nsize=small\nbridge.1=a-very-long-bridge-name\n"),
                            "instance.properties:3: invalid bridge.1 name \"a-very-long-bridge-name\" (at most 15 characters)");
        /* A host port is forwarded once, across all NICs. */
        assert_string_equal(instance_error("image=a\nsize=small\nnet=user\nhostfwd=tcp::2222-:22;udp::2222-:53\n"
                                           "net.1=user\nhostfwd.1=tcp:127.0.0.1:8080-:80;tcp:127.0.0.2:8080-:80\n"), "");
        assert_string_equal(instance_error("image=a\nsize=small\nnet=user\nhostfwd=tcp::2222-:22\nnet.1=user\n"
                                           "hostfwd.1=tcp:127.0.0.1:2222-:22\n"),
                            "instance.properties:6: hostfwd.1: host port tcp 2222 is forwarded twice (also by NIC 0)");
        assert_string_equal(instance_error("image=a\nsize=small\nnet=user\nhostfwd=::2222-:22;tcp::2222-:23\n"),
                            "instance.properties:4: hostfwd: host port tcp 2222 is forwarded twice (also by NIC 0)");
        assert_string_equal(instance_error("image=a\nsize=small\nnet=user\nhostfwd=tcp:2222-:22\n"),
                            "instance.properties:4: hostfwd: invalid rule \"tcp:2222-:22\": the host side needs [ADDRESS]:PORT (e.g. tcp::2222-:22)");
        /* Each rule is parsed once, here; QEMU never sees one it would refuse. */
        static const struct { const char *rule, *why; } bad[] = {
                { "tcp::0-:22", "host port must be a number 1..65535" },
                { "tcp::-:22", "no host port" },
                { "tcp::65536-:22", "host port must be a number 1..65535" },
                { "tcp::2222-:0", "guest port must be a number 1..65535" },
                { "tcp::2222-:99999", "guest port must be a number 1..65535" },
                { "tcp::2222-:", "no guest port" },
                { "sctp::2222-:22", "unknown protocol (tcp or udp)" },
                { "tcp::2222-22", "the guest side needs [ADDRESS]:PORT" },
                { "tcp::2222-:22-23", "port ranges are not supported" },
                { "tcp::2222", "no '-' between the host and the guest side" },
                { "tcp:1.2.3:2222-:22", "invalid host address (an IPv4 address or empty)" },
                { "tcp::2222-1.2.3.4.5:22", "invalid guest address (an IPv4 address or empty)" },
                { "2222", "no ':' after the protocol" },
        };
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
                char text[256], want[512];
                snprintf(text, sizeof text, "image=a\nsize=small\nnet=user\nhostfwd=tcp::80-:80;%s\n", bad[i].rule);
                snprintf(want, sizeof want, "instance.properties:4: hostfwd: invalid rule \"%s\": %s (e.g. tcp::2222-:22)",
                         bad[i].rule, bad[i].why);
                assert_string_equal(instance_error(text), want);
        }
        /* 0.0.0.0 is every address, as an empty one. */
        assert_string_equal(instance_error("image=a\nsize=small\nnet=user\nhostfwd=tcp:127.0.0.1:2222-:22\nnet.1=user\n"
                                           "hostfwd.1=tcp:0.0.0.0:2222-:22\n"),
                            "instance.properties:6: hostfwd.1: host port tcp 2222 is forwarded twice (also by NIC 0)");
        assert_string_equal(instance_error("image=a\nsize=small\nnet=user\nhostfwd=udp:0.0.0.0:53-:53;tcp::53-:53;udp::53-:54\n"),
                            "instance.properties:4: hostfwd: host port udp 53 is forwarded twice (also by NIC 0)");
        /* Numbers out of range or spelled otherwise are unknown keys. */
        assert_string_equal(instance_error("image=a\nsize=small\nnet.8=user\n"), "instance.properties:3: unknown key net.8");
        assert_string_equal(instance_error("image=a\nsize=small\nnet.0=user\n"), "instance.properties:3: unknown key net.0");
        assert_string_equal(instance_error("image=a\nsize=small\nnet.01=user\n"), "instance.properties:3: unknown key net.01");
        assert_string_equal(instance_error("image=a\nsize=small\nnet.1=user\nnet.1=bridge\n"),
                            "instance.properties:4: duplicate key net.1");
}

static void test_instance_nics_round_trip(void **state) {
        char err[512];
        struct instance *a = NULL, *b = NULL;
        char *path = write_file("nics.properties",
                                "image=debian-12\nsize=small\nname=nics\nnet=bridge\nmac=52:54:00:01:02:03\n"
                                "net.1=bridge\nbridge.1=br-storage\nmac.1=52:54:00:01:02:04\n"
                                "net.2=user\nhostfwd.2=tcp::2222-:22\n");
        assert_int_equal(instance_load(path, NULL, "/run/vrt", &a, err, sizeof err), 0);
        assert_int_equal(a->n_nics, 3);
        char *text = instance_to_string(a);
        assert_non_null(text);
        assert_non_null(strstr(text, "net=bridge\nmac=52:54:00:01:02:03\nnet.1=bridge\nbridge.1=br-storage\n"
                                     "mac.1=52:54:00:01:02:04\nnet.2=user\nhostfwd.2=tcp::2222-:22\n"));
        char *path2 = write_file("nics2.properties", text);
        assert_int_equal(instance_load(path2, NULL, "/run/vrt", &b, err, sizeof err), 0);
        assert_int_equal(b->n_nics, 3);
        assert_int_equal(b->nics[1].net, NET_BRIDGE);
        assert_string_equal(b->nics[1].bridge, "br-storage");
        assert_null(b->nics[2].mac);
        assert_string_equal(b->nics[2].hostfwd, "tcp::2222-:22");
        free(text);
        instance_free(a);
        instance_free(b);
        unlink(path);
        unlink(path2);
        free(path);
        free(path2);
}

static void test_image_meta(void **state) {
        char err[512];
        struct image_meta *m = NULL;
        char *path = write_file("tmpl.properties", "kernel=k.vmlinuz\ninitrd=/abs/i.img\ncmdline=console=ttyS0 root=/dev/vda\n");
        assert_int_equal(image_meta_load(path, &m, err, sizeof err), 0);
        char *want;
        assert_true(asprintf(&want, "%s/k.vmlinuz", dir) > 0);
        assert_string_equal(m->kernel, want);
        assert_string_equal(m->initrd, "/abs/i.img");
        assert_string_equal(m->cmdline, "console=ttyS0 root=/dev/vda");
        free(want);
        image_meta_free(m);
        unlink(path);
        free(path);

        path = write_file("bad.properties", "initrd=i.img\n");
        assert_int_equal(image_meta_load(path, &m, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "bad.properties: initrd= without kernel="));
        unlink(path);
        free(path);

        /* No sidecar at all: an image without metadata. */
        assert_int_equal(image_meta_load("/nonexistent/x.properties", &m, err, sizeof err), 0);
        assert_null(m->kernel);
        image_meta_free(m);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_props_syntax),
                cmocka_unit_test(test_props_missing_file),
                cmocka_unit_test(test_props_fifo),
                cmocka_unit_test(test_sizes),
                cmocka_unit_test(test_vm_names),
                cmocka_unit_test(test_enum_tables),
                cmocka_unit_test(test_escape_commas),
                cmocka_unit_test(test_host_config),
                cmocka_unit_test(test_instance),
                cmocka_unit_test(test_instance_round_trip),
                cmocka_unit_test(test_instance_nics),
                cmocka_unit_test(test_instance_nics_round_trip),
                cmocka_unit_test(test_image_meta),
        };
        if (!mkdtemp(dir))
                return 1;
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        rmdir(dir);
        return r;
}
