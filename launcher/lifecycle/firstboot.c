#include "launcher/lifecycle/firstboot.h"
#include "launcher/core/fileio.h"
#include "launcher/core/safepath.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "images/atomic_file.h"
#include "images/qcow2.h"
#include "images/seediso.h"
#include "launcher/core/paths.h"
#include "launcher/core/runtime.h"
#include "launcher/core/snapstate.h"
#include "launcher/core/spawn.h"
#include "launcher/lifecycle/service.h"
#include "launcher/core/strv.h"
#include "launcher/vm/supervisor.h"


#define INIT_LOG_TAIL_BYTES 65536
#define WAIT_POLL_MS 100
#define CANCEL_SHUTDOWN_S 10

/* --- the init script --- */

static int read_script(const char *root, const char *script, char **ret, size_t *ret_len, char *err, size_t errlen) {
        char *rel = NULL, *path = NULL, *buf = NULL;
        char msg[1024];
        size_t len = 0;
        int r;

        if (asprintf(&rel, "init/%s", script) < 0)
                return -ENOMEM;
        path = paths_join(root, rel);
        free(rel);
        if (!path)
                return -ENOMEM;
        r = fileio_read_shared(path, FIRSTBOOT_SCRIPT_MAX, &buf, &len, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "init script %s", msg);
                goto fail;
        }
        if (memchr(buf, '\0', len)) {
                r = -EINVAL;
                snprintf(err, errlen, "init script %s: contains NUL bytes (a script must be text)", path);
                goto fail;
        }
        free(path);
        if (ret) {
                *ret = buf;
                *ret_len = len;
        } else {
                free(buf);
        }
        return 0;
fail:
        free(buf);
        free(path);
        return r;
}

int firstboot_check_script(const char *root, const char *script, char *err, size_t errlen) {
        int r = read_script(root, script, NULL, NULL, err, errlen);
        if (r == -ENOMEM)
                snprintf(err, errlen, "out of memory");
        return r == -ENOMEM ? r : r < 0 ? -EINVAL : 0;
}

/* --- user-data and meta-data --- */

static int random_hex(char *out, size_t nbytes) {
        uint8_t b[32];
        if (nbytes > sizeof b)
                return -EINVAL;
        size_t got = 0;
        while (got < nbytes) {
                ssize_t n = getrandom(b + got, nbytes - got, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                got += (size_t)n;
        }
        for (size_t i = 0; i < nbytes; i++)
                snprintf(out + 2 * i, 3, "%02x", b[i]);
        return 0;
}

/* s in single quotes for sh. */
static void put_quoted(FILE *f, const char *s, size_t n) {
        fputc('\'', f);
        for (size_t i = 0; i < n; i++) {
                if (s[i] == '\'')
                        fputs("'\\''", f);
                else
                        fputc(s[i], f);
        }
        fputc('\'', f);
}

/* How the wrapper runs the script, from its #! line: shell scripts with
 * "set -eu" (bash if asked for and present), sourced by a shell that
 * defines the deferring functions first, so they work even where busybox
 * runs its applets without a PATH lookup; anything else with its own
 * interpreter. Named explicitly either way, so a noexec /tmp is fine. */
static void put_runner(FILE *f, const char *script, size_t len) {
        const char *interp = NULL, *arg = NULL;
        size_t interp_len = 0, arg_len = 0;

        if (len >= 2 && script[0] == '#' && script[1] == '!') {
                const char *p = script + 2, *eol = memchr(script, '\n', len);
                const char *end = eol ? eol : script + len;
                while (p < end && (*p == ' ' || *p == '\t'))
                        p++;
                interp = p;
                while (p < end && *p != ' ' && *p != '\t' && *p != '\r')
                        p++;
                interp_len = (size_t)(p - interp);
                while (p < end && (*p == ' ' || *p == '\t'))
                        p++;
                const char *q = end;
                while (q > p && (q[-1] == ' ' || q[-1] == '\t' || q[-1] == '\r'))
                        q--;
                arg = p;
                arg_len = (size_t)(q - p);
        }
        /* The program that matters: "env bash" counts as bash. */
        const char *prog = NULL, *prog_arg = arg;
        size_t prog_len = 0, prog_arg_len = arg_len;
        if (interp_len) {
                prog = interp + interp_len;
                while (prog > interp && prog[-1] != '/')
                        prog--;
                prog_len = (size_t)(interp + interp_len - prog);
                if (prog_len == 3 && memcmp(prog, "env", 3) == 0 && arg_len) {
                        prog = arg;
                        prog_len = strcspn(arg, " \t");
                        if (prog_len > arg_len)
                                prog_len = arg_len;
                        prog_arg = arg + prog_len;
                        prog_arg_len = arg_len - prog_len;
                        while (prog_arg_len && (*prog_arg == ' ' || *prog_arg == '\t')) {
                                prog_arg++;
                                prog_arg_len--;
                        }
                }
        }
#define IS(name) (prog_len == strlen(name) && memcmp(prog, name, prog_len) == 0)
        fputs("vrt_run() {\n", f);
        if (!interp_len || IS("sh") || IS("dash") || IS("ash") || IS("bash")) {
                fputs(IS("bash") ? "\tif command -v bash >/dev/null 2>&1; then vrt_sh='bash'; else vrt_sh='sh'; fi\n"
                                 : "\tvrt_sh='sh'\n",
                      f);
                fputs("\t\"$vrt_sh\" -eu", f);
                if (prog_arg_len) {
                        /* As the kernel would: the rest of the #! line is one argument. */
                        fputc(' ', f);
                        put_quoted(f, prog_arg, prog_arg_len);
                }
                fputs(" -c \"$vrt_defer\"'. \"$0\"' \"$1\"\n", f);
        } else {
                fputc('\t', f);
                put_quoted(f, interp, interp_len);
                if (arg_len) {
                        fputc(' ', f);
                        put_quoted(f, arg, arg_len);
                }
                fputs(" \"$1\"\n", f);
        }
        fputs("}\n", f);
#undef IS
}

/* The wrapper's fixed parts. Everything is POSIX sh (dash, busybox ash,
 * bash) and every variable starts with vrt_ so the script's environment
 * stays clean. */
static const char wrapper_head[] =
        "# It runs the script once with \"set -eu\", sends its output and a last line\n"
        "# \"" FIRSTBOOT_STATUS_PREFIX "N\" to the host over the virtio-serial port org.vrt.init,\n"
        "# and powers the VM off. poweroff, halt, reboot, shutdown and\n"
        "# \"systemctl poweroff|halt|reboot|kexec\" called by the script are deferred\n"
        "# until then; the VM is powered off in any case.\n"
        "# VRT_INIT_TEST_PORT=FILE is for tests of this file on a host only: output\n"
        "# goes to FILE and nothing is powered off.\n"
        "vrt_real_path=${PATH:+$PATH:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        "PATH=$vrt_real_path\n"
        "HOME=${HOME:-/root}\n"
        "VRT_REAL_PATH=$vrt_real_path\n"
        "export PATH HOME VRT_VM_NAME VRT_INIT_SCRIPT VRT_REAL_PATH\n"
        "\n"
        "# udev links the port as /dev/virtio-ports/org.vrt.init; without udev, the\n"
        "# vport whose name it is. The driver may still be loading.\n"
        "vrt_find_port() {\n"
        "\tif [ -n \"${VRT_INIT_TEST_PORT:-}\" ]; then\n"
        "\t\tvrt_port=$VRT_INIT_TEST_PORT\n"
        "\t\treturn 0\n"
        "\tfi\n"
        "\tvrt_i=0\n"
        "\twhile [ \"$vrt_i\" -lt 50 ]; do\n"
        "\t\tif [ -c /dev/virtio-ports/org.vrt.init ]; then\n"
        "\t\t\tvrt_port=/dev/virtio-ports/org.vrt.init\n"
        "\t\t\treturn 0\n"
        "\t\tfi\n"
        "\t\tfor vrt_f in /sys/class/virtio-ports/*/name; do\n"
        "\t\t\t[ -r \"$vrt_f\" ] || continue\n"
        "\t\t\t[ \"$(cat \"$vrt_f\" 2>/dev/null)\" = org.vrt.init ] || continue\n"
        "\t\t\tvrt_d=${vrt_f%/name}\n"
        "\t\t\tvrt_d=/dev/${vrt_d##*/}\n"
        "\t\t\tif [ -c \"$vrt_d\" ]; then\n"
        "\t\t\t\tvrt_port=$vrt_d\n"
        "\t\t\t\treturn 0\n"
        "\t\t\tfi\n"
        "\t\tdone\n"
        "\t\t[ \"$vrt_i\" -gt 0 ] || modprobe virtio_console >/dev/null 2>&1\n"
        "\t\tsleep 0.2 2>/dev/null || sleep 1\n"
        "\t\tvrt_i=$((vrt_i + 1))\n"
        "\tdone\n"
        "\treturn 1\n"
        "}\n"
        "\n"
        "# The commands that would end the boot before the status is sent: as\n"
        "# functions for the script itself, as programs in PATH for what it runs\n"
        "# (where they can be executed: not on a noexec /tmp).\n"
        "# shellcheck disable=SC2034 # unused when the script has another interpreter\n"
        "vrt_defer='\n"
        "for vrt_c in poweroff halt reboot shutdown; do\n"
        "\teval \"$vrt_c() { echo \\\"vrt: $vrt_c deferred until the init script has finished\\\" >&2; }\"\n"
        "done\n"
        "systemctl() {\n"
        "\tfor vrt_a; do\n"
        "\t\tcase $vrt_a in\n"
        "\t\tpoweroff | halt | reboot | kexec)\n"
        "\t\t\techo \"vrt: systemctl $vrt_a deferred until the init script has finished\" >&2\n"
        "\t\t\treturn 0\n"
        "\t\t\t;;\n"
        "\t\tesac\n"
        "\tdone\n"
        "\tcommand systemctl \"$@\"\n"
        "}\n"
        "'\n"
        "vrt_shims() {\n"
        "\tmkdir \"$vrt_dir/bin\" || return 0\n"
        "\tcat >\"$vrt_dir/bin/poweroff\" <<'VRT_SHIM_EOF'\n"
        "#!/bin/sh\n"
        "echo \"vrt: ${0##*/} deferred until the init script has finished\" >&2\n"
        "exit 0\n"
        "VRT_SHIM_EOF\n"
        "\tfor vrt_c in halt reboot shutdown; do\n"
        "\t\tcp \"$vrt_dir/bin/poweroff\" \"$vrt_dir/bin/$vrt_c\"\n"
        "\tdone\n"
        "\tcat >\"$vrt_dir/bin/systemctl\" <<'VRT_SHIM_EOF'\n"
        "#!/bin/sh\n"
        "for a in \"$@\"; do\n"
        "\tcase $a in\n"
        "\tpoweroff | halt | reboot | kexec)\n"
        "\t\techo \"vrt: systemctl $a deferred until the init script has finished\" >&2\n"
        "\t\texit 0\n"
        "\t\t;;\n"
        "\tesac\n"
        "done\n"
        "PATH=$VRT_REAL_PATH exec systemctl \"$@\"\n"
        "VRT_SHIM_EOF\n"
        "\tchmod 0755 \"$vrt_dir\"/bin/* &&\n"
        "\t\t\"$vrt_dir/bin/halt\" >/dev/null 2>&1 &&\n"
        "\t\tPATH=$vrt_dir/bin:$PATH\n"
        "}\n"
        "\n";

static const char wrapper_tail[] =
        "\n"
        "vrt_poweroff() {\n"
        "\tif [ -n \"${VRT_INIT_TEST_PORT:-}\" ]; then\n"
        "\t\techo 'VRT-INIT-TEST: poweroff' >>\"$VRT_INIT_TEST_PORT\"\n"
        "\t\treturn 0\n"
        "\tfi\n"
        "\tPATH=$vrt_real_path\n"
        "\tif [ -d /run/systemd/system ] && systemctl --no-block poweroff; then\n"
        "\t\treturn 0\n"
        "\tfi\n"
        "\tif poweroff; then\n"
        "\t\t# A clean shutdown ends this process; should nothing happen, force it.\n"
        "\t\t(sleep 120; sync; poweroff -f) >/dev/null 2>&1 &\n"
        "\t\treturn 0\n"
        "\tfi\n"
        "\tpoweroff -f\n"
        "}\n"
        "\n"
        "vrt_port=\n"
        "if ! vrt_find_port; then\n"
        "\techo \"vrt: no virtio-serial port org.vrt.init; the host sees no status\" >&2\n"
        "\tvrt_port=/dev/console\n"
        "fi\n"
        "# A failed exec redirection would end the shell: try in a subshell first.\n"
        "(exec 3>>\"$vrt_port\") 2>/dev/null || vrt_port=/dev/console\n"
        "if (exec 3>>\"$vrt_port\") 2>/dev/null; then exec 3>>\"$vrt_port\"; else exec 3>&2; fi\n"
        "vrt_dir=\n"
        "vrt_main 2>&3\n"
        "vrt_status=$?\n"
        "printf '%s%d\\n' '" FIRSTBOOT_STATUS_PREFIX "' \"$vrt_status\" >&3\n"
        "exec 3>&-\n"
        "echo \"vrt: init script $VRT_INIT_SCRIPT finished with status $vrt_status\" >&2\n"
        "[ -z \"$vrt_dir\" ] || rm -rf \"$vrt_dir\"\n"
        "sync\n"
        "vrt_poweroff\n";

int firstboot_user_data(const struct firstboot_userdata_request *req, char **ret) {
        char delim[64], hex[17];
        char *out = NULL;
        size_t outlen = 0;
        const char *s = req->script;
        size_t n = req->script_len;
        int r;

        if (memchr(s, '\0', n))
                return -EINVAL;
        /* cloud-init's own format goes through untouched. */
        if (n >= 13 && memcmp(s, "#cloud-config", 13) == 0) {
                char *copy = strndup(s, n);
                if (!copy)
                        return -ENOMEM;
                *ret = copy;
                return 0;
        }
        /* A delimiter that cannot occur in the script: the here-document
         * then carries it verbatim (quoted delimiter: no expansion). */
        for (;;) {
                r = random_hex(hex, 8);
                if (r < 0)
                        return r;
                snprintf(delim, sizeof delim, "VRT_INIT_EOF_%s", hex);
                if (!memmem(s, n, delim, strlen(delim)))
                        break;
        }

        FILE *f = open_memstream(&out, &outlen);
        if (!f)
                return -ENOMEM;
        fputs("#!/bin/sh\n"
              "# Generated by vrt: NoCloud user-data for the first boot of VM VRT_VM_NAME\n"
              "# with its init script VRT_INIT_SCRIPT, which is the here-document in vrt_main.\n", f);
        fputs("VRT_VM_NAME=", f);
        put_quoted(f, req->vm_name, strlen(req->vm_name));
        fputs("\nVRT_INIT_SCRIPT=", f);
        put_quoted(f, req->script_name, strlen(req->script_name));
        fputc('\n', f);
        fputs(wrapper_head, f);
        put_runner(f, s, n);
        fputs("\nvrt_main() {\n"
              "\tumask 022\n"
              "\tvrt_dir=$(mktemp -d \"${TMPDIR:-/tmp}/vrt-init.XXXXXX\") || return 125\n"
              "\tcat >\"$vrt_dir/script\" <<'", f);
        fputs(delim, f);
        fputs("' || return 125\n", f);
        fwrite(s, 1, n, f);
        if (n && s[n - 1] != '\n')
                fputc('\n', f);
        fputs(delim, f);
        fputs("\n\tvrt_shims\n"
              "\tcd \"$HOME\" 2>/dev/null || cd /\n"
              "\tvrt_run \"$vrt_dir/script\" </dev/null >&3 2>&1\n"
              "}\n", f);
        fputs(wrapper_tail, f);
        if (fclose(f) != 0) {
                free(out);
                return -ENOMEM;
        }
        *ret = out;
        return 0;
}

int firstboot_meta_data(const char *vm_name, char **ret) {
        char hex[17];
        int r = random_hex(hex, 8);
        if (r < 0)
                return r;
        /* A new instance-id per first boot: cloud-init runs its
         * per-instance modules for it. */
        if (asprintf(ret, "instance-id: %s-%s\nlocal-hostname: %s\n", vm_name, hex, vm_name) < 0)
                return -ENOMEM;
        return 0;
}

/* --- files in the VM directory --- */

/* Replaces vm_dir/file with text, atomically. */
static int write_file(const char *vm_dir, const char *file, const void *data, size_t len, mode_t mode,
                      char *err, size_t errlen) {
        struct atomic_file *af = NULL;
        size_t done = 0;
        char *path = paths_join(vm_dir, file);
        int r;

        if (!path)
                return -ENOMEM;
        if (unlink(path) < 0 && errno != ENOENT) {
                r = -errno;
                snprintf(err, errlen, "cannot replace %s: %s", path, strerror(-r));
                goto fail;
        }
        r = atomic_file_open(path, mode, &af, err, errlen);
        if (r < 0)
                goto fail;
        while (done < len) {
                ssize_t n = write(af->fd, (const char *)data + done, len - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        r = n < 0 ? -errno : -EIO;
                        snprintf(err, errlen, "cannot write %s: %s", path, strerror(-r));
                        goto fail;
                }
                done += (size_t)n;
        }
        r = atomic_file_commit(af, err, errlen);
fail:
        atomic_file_free(af);
        free(path);
        return r;
}

static void remove_file(const char *vm_dir, const char *file) {
        char *path = paths_join(vm_dir, file);
        if (path)
                unlink(path);
        free(path);
}

/* --- the init log --- */

/* One line of guest output, made printable and cut. */
static size_t clean_line(const char *s, size_t n, char *out, size_t outlen) {
        size_t k = 0;
        while (n && isspace((unsigned char)s[n - 1]))
                n--;
        while (n && isspace((unsigned char)*s)) {
                s++;
                n--;
        }
        for (size_t i = 0; i < n && k + 1 < outlen && k < FIRSTBOOT_TAIL_LINE_MAX; i++) {
                unsigned char c = (unsigned char)s[i];
                out[k++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
        }
        if (k == FIRSTBOOT_TAIL_LINE_MAX && n > FIRSTBOOT_TAIL_LINE_MAX && k + 4 < outlen) {
                memcpy(out + k, "...", 3);
                k += 3;
        }
        out[k] = '\0';
        return k;
}

/* Finds the last status line and the output before it. The status line
 * may follow output that lacked a final newline. */
void firstboot_parse_init_log(const char *data, size_t len, struct firstboot_init_report *rep) {
        const char *end = data + len, *p;
        size_t plen = strlen(FIRSTBOOT_STATUS_PREFIX);

        rep->has_status = false;
        rep->status = -1;
        rep->tail[0] = '\0';
        for (p = data; p + plen <= data + len; p++) {
                p = memmem(p, (size_t)(data + len - p), FIRSTBOOT_STATUS_PREFIX, plen);
                if (!p)
                        break;
                const char *d = p + plen;
                long v = 0;
                int digits = 0;
                while (d < data + len && isdigit((unsigned char)*d) && digits < 4) {
                        v = v * 10 + (*d - '0');
                        d++;
                        digits++;
                }
                if (digits && v <= 255 && (d == data + len || *d == '\n' || *d == '\r')) {
                        rep->has_status = true;
                        rep->status = (int)v;
                        end = p;
                }
        }
        /* The last FIRSTBOOT_TAIL_LINES non-empty lines before end. */
        char lines[FIRSTBOOT_TAIL_LINES][FIRSTBOOT_TAIL_LINE_MAX + 4];
        int count = 0;
        const char *e = end;
        while (e > data && count < FIRSTBOOT_TAIL_LINES) {
                const char *b = e;
                while (b > data && b[-1] != '\n')
                        b--;
                if (clean_line(b, (size_t)(e - b), lines[count], sizeof lines[count]) > 0)
                        count++;
                e = b > data ? b - 1 : data;
                if (b == data)
                        break;
        }
        size_t k = 0;
        for (int i = count - 1; i >= 0; i--)
                k += (size_t)snprintf(rep->tail + k, sizeof rep->tail - k, "%s%s", k ? " | " : "", lines[i]);
}

static int read_init_log(const char *path, struct firstboot_init_report *rep) {
        char *buf = NULL;
        struct stat st;
        ssize_t n;
        int fd = -1, r;

        rep->has_status = false;
        rep->status = -1;
        rep->tail[0] = '\0';
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || fstat(fd, &st) < 0) {
                r = -errno;
                goto fail;
        }
        buf = malloc(INIT_LOG_TAIL_BYTES);
        if (!buf) {
                r = -ENOMEM;
                goto fail;
        }
        off_t from = st.st_size > INIT_LOG_TAIL_BYTES ? st.st_size - INIT_LOG_TAIL_BYTES : 0;
        n = pread(fd, buf, INIT_LOG_TAIL_BYTES, from);
        if (n < 0) {
                r = -errno;
                goto fail;
        }
        firstboot_parse_init_log(buf, (size_t)n, rep);
        r = 0;
fail:
        if (fd >= 0)
                close(fd);
        free(buf);
        return r;
}

/* --- running vrt-launch --- */

/* Starts argv with stdin /dev/null and stdout+stderr appended to log_fd,
 * in its own process group (our caller's Ctrl-C reaches it only through
 * us, as one SIGTERM), and stopped with SIGTERM should we die. */
static pid_t spawn(char *const *argv, char *const *envp, int log_fd, char *err, size_t errlen) {
        struct spawn_options o = {
                .argv = argv,
                .envp = envp,
                .stdout_fd = log_fd,
                .session = SPAWN_SESSION_GROUP,
                .death_signal = SIGTERM,
                .fail_prefix = "vrt: cannot execute ",
        };
        struct spawn_result res;
        int r = spawn_process(&o, &res, err, errlen);
        if (r < 0)
                return r;
        close(res.pidfd);       /* waited for with waitpid(): it is our child */
        return res.pid;
}

/* Waits for pid; on cancel sends one SIGTERM (vrt-launch then powers the
 * guest down within CANCEL_SHUTDOWN_S, then escalates). Returns the wait
 * status or a negative errno. */
static int wait_child(pid_t pid, volatile sig_atomic_t *cancel, bool *ret_cancelled) {
        bool sent = false;
        int status;
        for (;;) {
                pid_t w = waitpid(pid, &status, WNOHANG);
                if (w == pid)
                        break;
                if (w < 0 && errno != EINTR)
                        return -errno;
                if (cancel && *cancel && !sent) {
                        /* A half-initialised guest gets a short graceful window. */
                        union sigval v = { .sival_int = CANCEL_SHUTDOWN_S };
                        if (sigqueue(pid, SIGTERM, v) < 0)
                                kill(pid, SIGTERM);
                        sent = true;
                }
                poll(NULL, 0, WAIT_POLL_MS);
        }
        *ret_cancelled = sent;
        return status;
}

/* --- the first boot --- */

struct run {
        const struct firstboot_request *req;
        struct firstboot_result *res;
        struct vm_paths p;
        struct instance *inst;
        struct host_config *host;
        char *script;
        size_t script_len;
        char *user_data, *meta_data;
        char *seed_path, *launch_log, *launcher, *conf_path;
        char **envp;
        int log_fd;
};

static void run_done(struct run *x) {
        vm_paths_done(&x->p);
        instance_free(x->inst);
        host_config_free(x->host);
        free(x->script);
        free(x->user_data);
        free(x->meta_data);
        free(x->seed_path);
        free(x->launch_log);
        free(x->launcher);
        free(x->conf_path);
        strv_free(x->envp);
        if (x->log_fd >= 0)
                close(x->log_fd);
}

static int mark_created(struct run *x, char *err, size_t errlen) {
        char text[512], when[64];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (x->inst->init)
                snprintf(text, sizeof text, "created=%s\ninit=%s\ninit_status=0\n", when, x->inst->init);
        else
                snprintf(text, sizeof text, "created=%s\n", when);
        int r = write_file(x->p.vm_dir, FIRSTBOOT_CREATED_FILE, text, strlen(text), 0644, err, errlen);
        if (r == 0) {
                remove_file(x->p.vm_dir, FIRSTBOOT_FAILED_FILE);
                x->res->state = FIRSTBOOT_CREATED;
        }
        return r;
}

/* Records the failure described in err; err keeps its text. */
static void mark_failed(struct run *x, const char *err) {
        char msg[512];
        size_t n = strlen(err);
        char *text = malloc(n + 2);
        if (text) {
                memcpy(text, err, n);
                text[n] = '\n';
                text[n + 1] = '\0';
                /* Best effort: the error we report is the one that counts. */
                write_file(x->p.vm_dir, FIRSTBOOT_FAILED_FILE, text, n + 1, 0644, msg, sizeof msg);
                free(text);
        }
        x->res->state = FIRSTBOOT_INIT_FAILED;
}

/* Builds the seed and the record of the generated script. */
static int prepare(struct run *x, char *err, size_t errlen) {
        struct firstboot_userdata_request u = {
                .vm_name = x->req->name,
                .script_name = x->inst->init,
        };
        int r = read_script(x->req->root, x->inst->init, &x->script, &x->script_len, err, errlen);
        if (r < 0)
                return r;
        u.script = x->script;
        u.script_len = x->script_len;
        r = firstboot_user_data(&u, &x->user_data);
        if (r == 0)
                r = firstboot_meta_data(x->req->name, &x->meta_data);
        if (r < 0) {
                snprintf(err, errlen, "cannot generate the seed for %s: %s", x->req->name, strerror(-r));
                return r;
        }
        const struct seediso_file files[] = {
                { "meta-data", x->meta_data, strlen(x->meta_data) },
                { "user-data", x->user_data, strlen(x->user_data) },
        };
        const struct seediso_spec spec = { "cidata", files, 2, time(NULL) };
        if (unlink(x->seed_path) < 0 && errno != ENOENT) {
                r = -errno;
                snprintf(err, errlen, "cannot remove the stale seed %s: %s", x->seed_path, strerror(-r));
                return r;
        }
        /* QEMU reads the seed as the unprivileged user. */
        /* The seed holds the init script, which may carry secrets: only
         * its owner reads it (vrt-launch hands it to QEMU's user). */
        r = seediso_write(x->seed_path, &spec, 0600, err, errlen);
        if (r < 0)
                return r;
        return write_file(x->p.vm_dir, FIRSTBOOT_SCRIPT_FILE, x->user_data, strlen(x->user_data), 0640, err, errlen);
}

static int boot(struct run *x, char *err, size_t errlen) {
        char timeout[32], last[512];
        struct firstboot_init_report rep;
        struct stat st;
        bool cancelled = false;
        int r, status;

        if (x->req->launcher) {
                x->launcher = strdup(x->req->launcher);
                if (!x->launcher)
                        return -ENOMEM;
        } else if (service_find_launcher(&x->launcher) < 0) {
                snprintf(err, errlen, "cannot find vrt-launch (next to this program or in $PATH)");
                return -ENOENT;
        }
        if (access(x->launcher, X_OK) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot run vrt-launch %s: %s", x->launcher, strerror(-r));
                return r;
        }
        x->envp = spawn_environment(x->req->root, x->req->runtime_dir, NULL);
        if (!x->envp)
                return -ENOMEM;
        if (mkdir(x->p.log_dir, 0755) < 0 && errno != EEXIST) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", x->p.log_dir, strerror(-r));
                return r;
        }
        x->log_fd = safepath_open_beneath(x->p.vm_dir, x->launch_log, O_WRONLY | O_APPEND | O_CREAT, 0640, SAFEPATH_ONE_LINK,
                                          err, errlen);
        if (x->log_fd < 0) {
                r = x->log_fd;
                x->log_fd = -1;
                return r;
        }
        if (fstat(x->log_fd, &st) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot open %s: %s", x->launch_log, strerror(-r));
                return r;
        }
        snprintf(timeout, sizeof timeout, "%u", x->res->timeout);
        char *argv[] = {
                x->launcher, "--root", (char *)x->req->root, "--seed-image", x->seed_path,
                "--init-log", x->p.init_log, "--run-timeout", timeout, (char *)x->req->name, NULL,
        };
        if (x->req->on_boot)
                x->req->on_boot(x->inst->init, x->res->timeout, x->req->userdata);
        char why[256];
        pid_t pid = spawn(argv, x->envp, x->log_fd, why, sizeof why);
        if (pid < 0) {
                snprintf(err, errlen, "cannot start %s: %s", x->launcher, why);
                return (int)pid;
        }
        x->res->ran = true;
        status = wait_child(pid, x->req->cancel, &cancelled);
        /* The seed has done its job, whatever the outcome: no later boot sees it. */
        unlink(x->seed_path);
        if (status < 0) {
                snprintf(err, errlen, "waiting for vrt-launch: %s", strerror(-status));
                return status;
        }
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        read_init_log(x->p.init_log, &rep);
        x->res->init_status = rep.has_status ? rep.status : -1;
        char tail[sizeof rep.tail + 32] = "";
        if (rep.tail[0])
                snprintf(tail, sizeof tail, ": %s", rep.tail);

        if (cancelled) {
                snprintf(err, errlen, "first boot of %s interrupted; the VM was powered off (log: %s)", x->req->name,
                         x->p.init_log);
                return -ECANCELED;
        }
        if (code == SUPERVISOR_EXIT_TIMEOUT) {
                if (rep.has_status)
                        snprintf(err, errlen, "init script %s ended with status %d, but the VM did not power off within %u s; it was stopped (log: %s)",
                                 x->inst->init, rep.status, x->res->timeout, x->p.init_log);
                else
                        snprintf(err, errlen, "init script %s did not finish within %u s; the VM was powered off (log: %s)%s",
                                 x->inst->init, x->res->timeout, x->p.init_log, tail);
                return -ETIMEDOUT;
        }
        if (code != SUPERVISOR_EXIT_OK) {
                if (service_launch_log_last(x->launch_log, pid, st.st_size, last, sizeof last) < 0)
                        snprintf(last, sizeof last, "exit status %d", code);
                snprintf(err, errlen, "first boot of %s failed: vrt-launch: %s (log: %s)", x->req->name, last,
                         x->launch_log);
                return -EIO;
        }
        if (!rep.has_status) {
                snprintf(err, errlen, "init script %s sent no \"" FIRSTBOOT_STATUS_PREFIX "N\" line before the VM powered off (log: %s)%s",
                         x->inst->init, x->p.init_log, tail);
                return -EPROTO;
        }
        if (rep.status != 0) {
                snprintf(err, errlen, "init script %s failed with status %d (log: %s)%s", x->inst->init, rep.status,
                         x->p.init_log, tail);
                return -EPROTO;
        }
        return 0;
}

int firstboot_run(const struct firstboot_request *req, struct firstboot_result *ret, char *err, size_t errlen) {
        struct firstboot_result res = { .state = FIRSTBOOT_PENDING, .init_status = -1 };
        struct run x = { .req = req, .res = &res, .log_fd = -1 };
        int r;

        if (errlen)
                err[0] = '\0';
        r = vm_paths_init(&x.p, req->root, req->runtime_dir, req->name);
        if (r < 0)
                goto out;
        r = instance_load(x.p.instance, req->name, req->runtime_dir, &x.inst, err, errlen);
        if (r < 0)
                goto out;
        if (vmstate_has_marker(x.p.vm_dir, FIRSTBOOT_CREATED_FILE)) {
                snprintf(err, errlen, "%s is created already (%s/%s)", req->name, x.p.vm_dir, FIRSTBOOT_CREATED_FILE);
                res.state = FIRSTBOOT_CREATED;
                r = -EALREADY;
                goto out;
        }
        if (runtime_is_running(&x.p)) {
                snprintf(err, errlen, "%s is running; its first boot needs it stopped", req->name);
                r = -EBUSY;
                goto out;
        }
        if (!x.inst->init) {
                r = mark_created(&x, err, errlen);
                goto out;
        }

        x.conf_path = paths_join(req->root, "vrt.conf");
        x.seed_path = paths_join(x.p.vm_dir, FIRSTBOOT_SEED_FILE);
        x.launch_log = paths_join(x.p.log_dir, "launch.log");
        if (!x.conf_path || !x.seed_path || !x.launch_log) {
                r = -ENOMEM;
                goto failed;
        }
        r = host_config_load(x.conf_path, &x.host, err, errlen);
        if (r < 0)
                goto failed;
        res.timeout = x.host->init_timeout;
        r = prepare(&x, err, errlen);
        if (r == 0)
                r = boot(&x, err, errlen);
        if (r == 0)
                r = mark_created(&x, err, errlen);
        if (r == 0)
                goto out;
failed:
        if (x.seed_path)
                unlink(x.seed_path);
        if (!err[0])
                snprintf(err, errlen, "first boot of %s: %s", req->name, strerror(-r));
        mark_failed(&x, err);
out:
        if (r == -ENOMEM && !err[0])
                snprintf(err, errlen, "out of memory");
        run_done(&x);
        *ret = res;
        return r;
}

#define RESET_TMP ".hdd.ovl.reset"

int firstboot_reset_disk(const char *root, const char *runtime_dir, const char *name, char *err, size_t errlen) {
        struct vm_paths p = { 0 };
        struct qcow2_header h;
        char *tmp = NULL, msg[512];
        int fd = -1, lock_fd = -1, r;

        if (errlen)
                err[0] = '\0';
        r = vm_paths_init(&p, root, runtime_dir, name);
        if (r < 0)
                goto out;
        if (vmstate_has_marker(p.vm_dir, FIRSTBOOT_CREATED_FILE)) {
                snprintf(err, errlen, "%s is created already (%s/%s): its disk is not reset", name, p.vm_dir,
                         FIRSTBOOT_CREATED_FILE);
                r = -EINVAL;
                goto out;
        }
        /* Held until the new overlay is in place: no start slips in
         * between the check and the rename, nor boots a half-reset VM. */
        lock_fd = runtime_lock(&p, msg, sizeof msg);
        if (lock_fd == -EBUSY) {
                snprintf(err, errlen, "%s is running; stop it before resetting its disk (%s)", name, msg);
                r = -EBUSY;
                goto out;
        }
        if (lock_fd < 0) {
                snprintf(err, errlen, "%s", msg);
                r = lock_fd;
                goto out;
        }
        {
                struct snap_state st;
                r = snap_state_load(p.vm_dir, &st, msg, sizeof msg);
                if (r == 0 && st.present) {
                        snprintf(err, errlen, "%s has snapshots (%s/%s): its disk is not reset", name, p.vm_dir,
                                 SNAP_STATE_FILE);
                        r = -EINVAL;
                }
                if (r < 0) {
                        if (!err[0])
                                snprintf(err, errlen, "%s", msg);
                        goto out;
                }
        }
        fd = open(p.overlay, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                if (r == -ENOENT)
                        snprintf(err, errlen, "%s has no overlay %s (disk=copy cannot be reset)", name, p.overlay);
                else
                        snprintf(err, errlen, "cannot open %s: %s", p.overlay, strerror(-r));
                r = r == -ENOENT ? -EINVAL : r;
                goto out;
        }
        r = qcow2_header_read(fd, &h, msg, sizeof msg);
        if (r == 0 && (!h.has_backing_file || !h.has_backing_format)) {
                snprintf(msg, sizeof msg, "no backing file with an explicit format");
                r = -EINVAL;
        }
        if (r < 0) {
                snprintf(err, errlen, "%s: %s", p.overlay, msg);
                goto out;
        }
        tmp = paths_join(p.vm_dir, RESET_TMP);
        if (!tmp) {
                r = -ENOMEM;
                goto out;
        }
        unlink(tmp);    /* left by a reset that was interrupted */
        r = qcow2_overlay_create(tmp, h.backing_file, h.backing_format, h.size, msg, sizeof msg);
        if (r < 0) {
                snprintf(err, errlen, "cannot reset %s: %s", p.overlay, msg);
                goto out;
        }
        if (rename(tmp, p.overlay) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot replace %s: %s", p.overlay, strerror(-r));
                unlink(tmp);
                goto out;
        }
        if (unlink(p.uefi_vars) < 0 && errno != ENOENT) {
                r = -errno;
                snprintf(err, errlen, "cannot remove %s: %s", p.uefi_vars, strerror(-r));
                goto out;
        }
        fileio_fsync_dir(p.vm_dir);
out:
        if (r == -ENOMEM && !err[0])
                snprintf(err, errlen, "out of memory");
        if (fd >= 0)
                close(fd);
        if (lock_fd >= 0) {
                runtime_remove(&p);
                close(lock_fd);
        }
        free(tmp);
        vm_paths_done(&p);
        return r;
}
