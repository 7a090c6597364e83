/* Golden tests of the QEMU argv builder: tests/launcher/golden/NAME.properties holds
 * an instance plus prefixed host.* (vrt.conf), image.* (sidecar), chain.N=
 * (disk layers, top first: FORMAT:PATH) and launch.* keys; NAME.argv holds
 * the expected argv, one argument per line, or NAME.err the expected error.
 * VRT_REGENERATE_GOLDEN=1 rewrites the expectations. A golden file without
 * its input, or an input without expectation, fails the run. */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "launcher/core/config.h"
#include "launcher/vm/qemu_argv.h"
#include "launcher/core/strv.h"
#include "launcher/core/util.h"

static const char *golden_dir;
static char tmpdir[] = "/tmp/vrt-golden-XXXXXX";

static char *read_all(const char *path) {
        FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        char *buf = NULL;
        size_t cap = 0, len = 0;
        for (;;) {
                if (len + 4096 + 1 > cap) {
                        cap = cap * 2 + 8192;
                        buf = realloc(buf, cap);
                        assert_non_null(buf);
                }
                size_t n = fread(buf + len, 1, 4096, f);
                len += n;
                if (n == 0)
                        break;
        }
        fclose(f);
        buf[len] = '\0';
        return buf;
}

static void write_all(const char *path, const char *text) {
        FILE *f = fopen(path, "we");
        assert_non_null(f);
        fputs(text, f);
        assert_int_equal(fclose(f), 0);
}

static char *path_in(const char *dir, const char *name, const char *suffix) {
        char *p;
        assert_true(asprintf(&p, "%s/%s%s", dir, name, suffix) > 0);
        return p;
}

struct golden_case {
        char *name;
};

/* "" is NIC 0, ".N" NIC N; -1 for anything else. */
static int nic_index(const char *suffix) {
        if (!*suffix)
                return 0;
        if (suffix[0] == '.' && suffix[1] >= '1' && suffix[1] < '0' + VM_NICS_MAX && !suffix[2])
                return suffix[1] - '0';
        return -1;
}

/* Runs the builder for one case; returns the argv text or the error line. */
static char *run_case(const char *name, int *ret_is_err) {
        char *input_path = path_in(golden_dir, name, ".properties");
        char *input = read_all(input_path);
        assert_non_null(input);

        char *host_txt = NULL, *inst_txt = NULL, *image_txt = NULL;
        size_t host_len = 0, inst_len = 0, image_len = 0;
        FILE *host_f = open_memstream(&host_txt, &host_len);
        FILE *inst_f = open_memstream(&inst_txt, &inst_len);
        FILE *image_f = open_memstream(&image_txt, &image_len);
        struct qemu_disk_layer layers[8];
        char *layer_buf[8] = { 0 };
        size_t n_layers = 0;
        struct qemu_launch l = {
                .fd_qmp = 3, .fd_monitor = 4, .fd_console = 5, .fd_console_log = 6,
                .fd_init_log = -1, .fd_agent = 24,
        };
        qemu_launch_no_nic_fds(&l);
        char *launch_strings[8] = { 0 };
        size_t n_launch = 0;

        char *save = NULL;
        for (char *line = strtok_r(input, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                if (strncmp(line, "host.", 5) == 0)
                        fprintf(host_f, "%s\n", line + 5);
                else if (strncmp(line, "image.", 6) == 0)
                        fprintf(image_f, "%s\n", line + 6);
                else if (strncmp(line, "chain.", 6) == 0) {
                        char *eq = strchr(line, '='), *colon = eq ? strchr(eq, ':') : NULL;
                        assert_non_null(colon);
                        assert_true(n_layers < 8);
                        *colon = '\0';
                        layer_buf[n_layers] = strdup(eq + 1);
                        layers[n_layers].format = layer_buf[n_layers];
                        layers[n_layers].path = colon + 1;
                        n_layers++;
                } else if (strncmp(line, "launch.", 7) == 0) {
                        char *key = line + 7, *eq = strchr(key, '=');
                        assert_non_null(eq);
                        *eq = '\0';
                        char *val = strdup(eq + 1);
                        launch_strings[n_launch++] = val;
                        if (strcmp(key, "uefi_vars") == 0) l.uefi_vars = val;
                        else if (strcmp(key, "install_iso") == 0) l.install_iso = val;
                        else if (strcmp(key, "seed_image") == 0) l.seed_image = val;
                        else if (strcmp(key, "vnc_socket") == 0) l.vnc_socket = val;
                        /* tap=FD for NIC 0, tap.N=FD for NIC N; vhost likewise */
                        else if (strncmp(key, "tap", 3) == 0 && nic_index(key + 3) >= 0) l.fd_tap[nic_index(key + 3)] = atoi(val);
                        else if (strncmp(key, "vhost", 5) == 0 && nic_index(key + 5) >= 0) l.fd_vhost[nic_index(key + 5)] = atoi(val);
                        else if (strcmp(key, "init_log") == 0) l.fd_init_log = atoi(val);
                        else if (strcmp(key, "console_log") == 0) l.fd_console_log = atoi(val);
                        else fail_msg("%s: unknown launch key %s", input_path, key);
                } else
                        fprintf(inst_f, "%s\n", line);
        }
        fclose(host_f);
        fclose(inst_f);
        fclose(image_f);

        char *host_path = path_in(tmpdir, name, ".conf");
        char *inst_path = path_in(tmpdir, name, ".instance");
        char *image_path = path_in(tmpdir, name, ".image");
        write_all(host_path, host_txt);
        write_all(inst_path, inst_txt);
        write_all(image_path, image_txt);

        struct host_config *host = NULL;
        struct instance *inst = NULL;
        struct image_meta *meta = NULL;
        char **argv = NULL;
        char err[1024] = "";
        char *out = NULL;
        int r = host_config_load(host_path, &host, err, sizeof err);
        if (r >= 0)
                r = instance_load(inst_path, name, "/run/vrt", &inst, err, sizeof err);
        if (r >= 0)
                r = instance_check(inst, host, err, sizeof err);
        if (r >= 0)
                r = image_meta_load(image_path, &meta, err, sizeof err);
        if (r >= 0) {
                qemu_launch_for_instance(&l, host, inst, host_config_find_size(host, inst->size), meta);
                l.disk = layers;
                l.n_disk = n_layers;
                r = qemu_argv_build(&l, &argv, err, sizeof err);
        }
        if (r < 0) {
                /* Temp paths vary per run: print them as the golden input names. */
                char *p;
                while ((p = strstr(err, tmpdir))) {
                        size_t n = strlen(tmpdir);
                        memmove(p, "GOLDEN", 6);
                        memmove(p + 6, p + n, strlen(p + n) + 1);
                }
                assert_true(asprintf(&out, "%s\n", err) > 0);
                *ret_is_err = 1;
        } else {
                *ret_is_err = 0;
                size_t len = 0;
                FILE *f = open_memstream(&out, &len);
                for (char **a = argv; *a; a++)
                        fprintf(f, "%s\n", *a);
                fclose(f);
        }

        strv_free(argv);
        image_meta_free(meta);
        instance_free(inst);
        host_config_free(host);
        unlink(host_path);
        unlink(inst_path);
        unlink(image_path);
        free(host_path);
        free(inst_path);
        free(image_path);
        for (size_t i = 0; i < n_layers; i++)
                free(layer_buf[i]);
        for (size_t i = 0; i < n_launch; i++)
                free(launch_strings[i]);
        free(host_txt);
        free(inst_txt);
        free(image_txt);
        free(input);
        free(input_path);
        return out;
}

static void test_golden(void **state) {
        const struct golden_case *c = *state;
        int got_err;
        char *got = run_case(c->name, &got_err);
        char *argv_path = path_in(golden_dir, c->name, ".argv");
        char *err_path = path_in(golden_dir, c->name, ".err");
        const char *expect_path = access(err_path, F_OK) == 0 ? err_path : argv_path;

        if (getenv("VRT_REGENERATE_GOLDEN")) {
                expect_path = got_err ? err_path : argv_path;
                unlink(got_err ? argv_path : err_path);
                write_all(expect_path, got);
        }
        char *want = read_all(expect_path);
        if (!want)
                fail_msg("%s: no %s.argv or %s.err (run with VRT_REGENERATE_GOLDEN=1)", c->name, c->name, c->name);
        if (strcmp(want, got) != 0) {
                fprintf(stderr, "--- expected %s\n%s--- got\n%s", expect_path, want, got);
                fail_msg("%s: argv differs from golden file", c->name);
        }
        free(want);
        free(got);
        free(argv_path);
        free(err_path);
}

int main(int argc, char **argv) {
        golden_dir = argc > 1 ? argv[1] : getenv("VRT_GOLDEN_DIR");
        if (!golden_dir) {
                fprintf(stderr, "usage: %s GOLDEN-DIR\n", argv[0]);
                return 2;
        }
        if (!mkdtemp(tmpdir)) {
                perror("mkdtemp");
                return 1;
        }
        DIR *d = opendir(golden_dir);
        if (!d) {
                perror(golden_dir);
                return 1;
        }
        struct CMUnitTest tests[256];
        struct golden_case cases[256];
        size_t n = 0;
        int orphans = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (has_suffix(de->d_name, ".properties")) {
                        if (n == 256)
                                break;
                        cases[n].name = strndup(de->d_name, strlen(de->d_name) - strlen(".properties"));
                        tests[n] = (struct CMUnitTest){ .name = cases[n].name, .test_func = test_golden,
                                                        .initial_state = &cases[n] };
                        n++;
                } else if (has_suffix(de->d_name, ".argv") || has_suffix(de->d_name, ".err")) {
                        /* An expectation whose input is gone is dead weight: fail. */
                        char *stem = strndup(de->d_name, strrchr(de->d_name, '.') - de->d_name);
                        char *input = path_in(golden_dir, stem, ".properties");
                        if (access(input, F_OK) != 0) {
                                fprintf(stderr, "unused golden file %s/%s\n", golden_dir, de->d_name);
                                orphans++;
                        }
                        free(input);
                        free(stem);
                }
        }
        closedir(d);
        if (n < 12) {
                fprintf(stderr, "expected at least 12 golden cases in %s, found %zu\n", golden_dir, n);
                return 1;
        }
        int failed = _cmocka_run_group_tests("argv-golden", tests, n, NULL, NULL);
        for (size_t i = 0; i < n; i++)
                free(cases[i].name);
        rmdir(tmpdir);
        return failed || orphans ? 1 : 0;
}
