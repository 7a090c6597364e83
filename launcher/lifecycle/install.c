#include "launcher/lifecycle/install.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "images/atomic_file.h"
#include "images/chain.h"
#include "images/copy.h"
#include "images/qcow2.h"
#include "launcher/core/actionlog.h"
#include "launcher/core/fileio.h"
#include "launcher/core/log.h"
#include "launcher/vm/qemu_proc.h"
#include "launcher/core/runtime.h"
#include "launcher/core/safepath.h"
#include "launcher/core/spawn.h"
#include "qmp/qmp.h"
#include "launcher/core/util.h"

#define QMP_TIMEOUT_MS 30000    /* TCG under sanitizers can be slow to greet */
#define QUIT_WAIT_MS 5000
#define KILL_WAIT_MS 5000

static char *join_rel(const char *dir, const char *fmt, const char *name) {
        char *rel = NULL, *s;
        if (asprintf(&rel, fmt, name) < 0)
                return NULL;
        s = paths_join(dir, rel);
        free(rel);
        return s;
}

static int check_options(const struct install_options *o, char *err, size_t errlen) {
        struct stat st;

        if (config_check_image_name(o->name) < 0) {
                snprintf(err, errlen, "invalid image name \"%s\" (letters, digits, '.', '_', '-'; no leading dot)", o->name);
                return -EINVAL;
        }
        if (!o->iso || o->iso[0] != '/') {
                snprintf(err, errlen, "installer ISO path \"%s\" is not absolute", o->iso ? o->iso : "");
                return -EINVAL;
        }
        if (stat(o->iso, &st) < 0) {
                int r = -errno;
                snprintf(err, errlen, "installer ISO %s: %s", o->iso, strerror(-r));
                return r;
        }
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
                snprintf(err, errlen, "installer ISO %s: not a regular file or block device", o->iso);
                return -EINVAL;
        }
        if (o->disk_size == 0) {
                snprintf(err, errlen, "disk size is 0");
                return -EINVAL;
        }
        if (o->memory < (UINT64_C(16) << 20) || o->memory % (UINT64_C(1) << 20)) {
                snprintf(err, errlen, "memory must be a whole number of MiB, at least 16M");
                return -EINVAL;
        }
        if (o->cpus < 1 || o->cpus > 255) {
                snprintf(err, errlen, "cpus must be between 1 and 255");
                return -EINVAL;
        }
        if (o->timeout == 0) {
                snprintf(err, errlen, "timeout must be at least 1 second");
                return -EINVAL;
        }
        if (o->firmware != FIRMWARE_BIOS && o->firmware != FIRMWARE_UEFI) {
                snprintf(err, errlen, "unknown firmware");
                return -EINVAL;
        }
        return 0;
}

/* QEMU runs as the configured user when we are root, as the caller otherwise. */
/* Files QEMU writes belong to its user; nothing else does. */
static int hand_over(const char *path, const struct qemu_user *u, mode_t mode, char *err, size_t errlen) {
        char why[1024];
        struct stat st;
        if (!u->drop)
                return 0;
        unsigned checks = lstat(path, &st) == 0 && S_ISDIR(st.st_mode) ? SAFEPATH_DIR : 0;
        int r = safepath_hand_over(path, u->uid, u->gid, mode, checks, why, sizeof why);
        if (r < 0)
                snprintf(err, errlen, "cannot hand %s to QEMU's user: %s", path, why);
        return r;
}

static int setup_runtime(struct install *in, const struct qemu_user *u, char *err, size_t errlen) {
        const struct vm_paths *p = &in->paths;
        int r;

        in->lock_fd = runtime_lock(p, err, errlen);
        if (in->lock_fd == -EBUSY) {
                pid_t pid = 0;
                runtime_read_pid(p->pid_file, &pid);
                snprintf(err, errlen, "an install of %s is already running (pid %d)", in->opts.name, (int)pid);
        }
        if (in->lock_fd < 0) {
                r = in->lock_fd;
                in->lock_fd = -1;
                return r;
        }
        /* Leftovers of an install that was killed. */
        runtime_clean(p);
        unlink(in->vnc_socket);
        rmdir(in->vnc_dir);
        unlink(in->uefi_vars);
        /* Others may pass through (not list) to reach QEMU's own vnc/. */
        char why[1024];
        r = safepath_hand_over(p->run_dir, (uid_t)-1, u->socket_gid, u->socket_gid != (gid_t)-1 ? 0751 : 0711,
                               SAFEPATH_DIR, why, sizeof why);
        if (r < 0) {
                snprintf(err, errlen, "cannot set up %s: %s", p->run_dir, why);
                return r;
        }
        r = runtime_write_pid(p->pid_file, getpid());
        if (r < 0) {
                snprintf(err, errlen, "cannot write %s: %s", p->pid_file, strerror(-r));
                return r;
        }
        /* QEMU creates the VNC socket itself, so it gets a directory of its own. */
        if (mkdir(in->vnc_dir, 0700) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", in->vnc_dir, strerror(-r));
                return r;
        }
        return hand_over(in->vnc_dir, u, 0700, err, errlen);
}

static int start_qemu(struct install *in, const struct qemu_user *u, char *err, size_t errlen) {
        const struct install_options *o = &in->opts;
        struct qemu_proc_fds fds;
        char *vm_name = NULL, *log_dir = NULL, *qpid = NULL;
        int r;

        qemu_proc_fds_init(&fds);
        if (asprintf(&vm_name, "install-%s", o->name) < 0 || asprintf(&qpid, "%s/qemu.pid", in->paths.run_dir) < 0 ||
            !(log_dir = paths_join(o->root, "log"))) {
                r = -ENOMEM;
                snprintf(err, errlen, "out of memory");
                goto fail;
        }
        if (mkdir(log_dir, 0755) < 0 && errno != EEXIST) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", log_dir, strerror(-r));
                goto fail;
        }
        fds.console_log = safepath_open_beneath(o->root, in->console_log, O_WRONLY | O_APPEND | O_CREAT, 0640,
                                                SAFEPATH_ONE_LINK, err, errlen);
        if (fds.console_log < 0) {
                r = fds.console_log;
                fds.console_log = -1;
                goto fail;
        }
        r = qemu_proc_listen(&fds, &in->paths, u->socket_gid, err, errlen);
        if (r < 0)
                goto fail;

        /* The install as a one-off machine: the chosen CPUs, memory and
         * firmware, user networking (the installer may download packages)
         * without a MAC of the registry, the blank disk and the ISO. */
        const struct nic nic = { .net = NET_USER };
        struct qemu_disk_layer disk = { .path = in->staging, .format = "qcow2" };
        struct qemu_launch launch = {
                .qemu = in->host->qemu,
                .machine = in->host->machine,
                .accel = in->host->accel,
                .name = vm_name,
                .cpus = o->cpus,
                .memory_mib = o->memory >> 20,
                .firmware = o->firmware,
                .ovmf_code = in->host->ovmf_code,
                .nics = &nic,
                .n_nics = 1,
                .disk = &disk,
                .n_disk = 1,
                .uefi_vars = in->uefi_vars,
                .install_iso = o->iso,
                .vnc_socket = in->vnc_socket,
        };
        qemu_launch_std_fds(&launch, true);
        struct qemu_proc_request req = {
                .launch = &launch,
                .fds = &fds,
                .qmp_sock = in->paths.qmp_sock,
                .pid_file = qpid,
                .stdout_fd = STDERR_FILENO,     /* QEMU's messages reach the operator as they come */
                .user = u,
                .timeout_ms = QMP_TIMEOUT_MS,
        };
        struct qemu_proc proc = { .pidfd = -1 };
        r = qemu_proc_start(&req, &proc, err, errlen);
        in->qemu_pid = proc.pid;
        in->pidfd = proc.pidfd;
        in->qmp = proc.qmp;
        if (r < 0) {
                char why[512];
                snprintf(why, sizeof why, "%s", err);
                snprintf(err, errlen, "QEMU did not come up: %s (see QEMU's message above)", why);
                goto fail;
        }

        /* Installers end by rebooting; the reboot must end this QEMU
         * rather than boot the installer again. */
        struct json_object *args = json_object_new_object(), *ret = NULL;
        char why[512];
        if (args)
                json_object_object_add(args, "reboot", json_object_new_string("shutdown"));
        r = qmp_execute(in->qmp, "set-action", args, 10000, &ret, why, sizeof why);
        json_object_put(args);
        json_object_put(ret);
        if (r < 0) {
                snprintf(err, errlen, "QEMU refuses set-action reboot=shutdown: %s", why);
                goto fail;
        }
        r = qemu_proc_cont(&proc, 10000, why, sizeof why);
        if (r < 0) {
                snprintf(err, errlen, "cont failed: %s", why);
                goto fail;
        }
        r = 0;
fail:
        qemu_proc_fds_close(&fds);
        free(vm_name);
        free(qpid);
        free(log_dir);
        return r;
}

int install_start(const struct install_options *o, struct install **ret, char *err, size_t errlen) {
        struct install *in = NULL;
        struct qemu_user u;
        struct stat st;
        char *images = NULL, *conf = NULL, *run_name = NULL;
        sigset_t mask;
        int r;

        r = check_options(o, err, errlen);
        if (r < 0)
                return r;
        in = calloc(1, sizeof *in);
        if (!in)
                return -ENOMEM;
        in->lock_fd = in->sig_fd = in->pidfd = -1;
        in->opts = *o;
        if (!(images = paths_join(o->root, "images")) || !(conf = paths_join(o->root, "vrt.conf")) ||
            !(in->staging = join_rel(images, ".%s.qcow2.partial", o->name)) ||
            !(in->template_path = join_rel(images, "%s.qcow2", o->name)) ||
            !(in->sidecar = join_rel(images, "%s.properties", o->name)) ||
            !(in->console_log = join_rel(o->root, "log/install-%s.console.log", o->name)) ||
            asprintf(&run_name, "install.%s", o->name) < 0 ||
            vm_paths_init(&in->paths, o->root, o->runtime_dir, run_name) < 0 ||
            !(in->vnc_dir = paths_join(in->paths.run_dir, "vnc")) ||
            !(in->vnc_socket = paths_join(in->vnc_dir, "vnc.sock")) ||
            !(in->uefi_vars = paths_join(in->paths.run_dir, "OVMF_VARS.fd"))) {
                r = -ENOMEM;
                snprintf(err, errlen, "out of memory");
                goto fail;
        }

        /* VM names have no dots, so install.NAME never meets a VM's runtime
         * directory; its sockets must still fit a sockaddr_un. */
        if (strlen(in->paths.monitor_sock) >= UNIX_PATH_MAX_BYTES ||
            strlen(in->vnc_socket) >= UNIX_PATH_MAX_BYTES) {
                r = -ENAMETOOLONG;
                snprintf(err, errlen, "socket path %s is too long (at most %d bytes): use a shorter image name or runtime directory",
                         in->vnc_socket, UNIX_PATH_MAX_BYTES - 1);
                goto fail;
        }
        if (stat(images, &st) < 0 || !S_ISDIR(st.st_mode)) {
                r = -ENOENT;
                snprintf(err, errlen, "%s: no such directory (is %s a vrt root?)", images, o->root);
                goto fail;
        }
        if (lstat(in->template_path, &st) == 0) {
                r = -EEXIST;
                snprintf(err, errlen, "image %s already exists (%s)", o->name, in->template_path);
                goto fail;
        }
        if (lstat(in->sidecar, &st) == 0) {
                r = -EEXIST;
                snprintf(err, errlen, "image %s already has a sidecar %s (remove it first)", o->name, in->sidecar);
                goto fail;
        }
        r = host_config_load(conf, &in->host, err, errlen);
        if (r < 0)
                goto fail;
        if (o->firmware == FIRMWARE_UEFI && (access(in->host->ovmf_code, R_OK) < 0 || access(in->host->ovmf_vars, R_OK) < 0)) {
                r = -EINVAL;
                snprintf(err, errlen, "firmware uefi needs %s and %s (apt-get install ovmf, or ovmf_code=/ovmf_vars= in %s)",
                         in->host->ovmf_code, in->host->ovmf_vars, conf);
                goto fail;
        }
        r = spawn_resolve_user(in->host, &u, err, errlen);
        if (r < 0)
                goto fail;

        /* From here on a signal must not kill us with the staged disk left
         * behind: SIGINT/SIGTERM wait in the signalfd for install_wait(). */
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGHUP);
        /* A shell starts background jobs with SIGINT ignored; an ignored
         * signal would never reach the signalfd, and `kill -INT` must abort. */
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        in->sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (in->sig_fd < 0) {
                r = -errno;
                snprintf(err, errlen, "signalfd: %s", strerror(-r));
                goto fail;
        }

        r = setup_runtime(in, &u, err, errlen);
        if (r < 0)
                goto fail;
        r = qcow2_image_create(in->staging, o->disk_size, err, errlen);
        if (r == -EEXIST) {
                /* We hold the lock of this host: another host is installing
                 * NAME into the shared root, or an install was killed. */
                r = -EBUSY;
                snprintf(err, errlen, "%s exists: an install of %s runs on another host, or one was killed (remove the file if none runs)",
                         in->staging, o->name);
                goto fail;
        }
        if (r < 0)
                goto fail;
        in->staged = true;
        r = hand_over(in->staging, &u, 0600, err, errlen);
        if (r < 0)
                goto fail;
        if (o->firmware == FIRMWARE_UEFI) {
                r = image_copy_sparse(in->host->ovmf_vars, in->uefi_vars, NULL, NULL, err, errlen);
                if (r < 0)
                        goto fail;
                r = hand_over(in->uefi_vars, &u, 0600, err, errlen);
                if (r < 0)
                        goto fail;
        }
        r = start_qemu(in, &u, err, errlen);
        if (r < 0)
                goto fail;
        actionlog_append(o->root, "install", "%s: installing from %s (disk %llu bytes, QEMU pid %d)", o->name, o->iso,
                         (unsigned long long)o->disk_size, (int)in->qemu_pid);
        free(images);
        free(conf);
        free(run_name);
        *ret = in;
        return 0;
fail:
        free(images);
        free(conf);
        free(run_name);
        install_free(in);
        return r;
}

/* Reaps QEMU once its pidfd is readable and reads what QMP still holds
 * (the SHUTDOWN event precedes the exit). Returns the waitid status. */
static siginfo_t reap(struct install *in) {
        siginfo_t si = { 0 };
        while (waitid(P_PID, (id_t)in->qemu_pid, &si, WEXITED) < 0 && errno == EINTR)
                ;
        in->qemu_pid = 0;
        close_fd(&in->pidfd);
        return si;
}

static void handle_events(struct install *in) {
        struct json_object *ev, *v, *data;
        while (in->qmp && qmp_next_event(in->qmp, &ev) > 0) {
                const char *name = json_object_object_get_ex(ev, "event", &v) ? json_object_get_string(v) : NULL;
                if (name && strcmp(name, "SHUTDOWN") == 0 && json_object_object_get_ex(ev, "data", &data)) {
                        if (json_object_object_get_ex(data, "guest", &v) && json_object_get_boolean(v))
                                in->guest_shutdown = true;
                        if (json_object_object_get_ex(data, "reason", &v))
                                snprintf(in->shutdown_reason, sizeof in->shutdown_reason, "%s", json_object_get_string(v));
                }
                json_object_put(ev);
        }
}

static void drain_qmp(struct install *in) {
        for (int i = 0; in->qmp && i < 64; i++) {
                int r = qmp_process_input(in->qmp);
                handle_events(in);
                if (r < 0)
                        in->qmp = qmp_free(in->qmp);
        }
}

static bool wait_exit(struct install *in, int timeout_ms) {
        struct pollfd pfd = { .fd = in->pidfd, .events = POLLIN };
        int64_t deadline = now_ms() + timeout_ms;
        for (;;) {
                int64_t left = deadline - now_ms();
                int r = poll(&pfd, 1, left > 0 ? (int)left : 0);
                if (r > 0)
                        return true;
                if (r == 0 || (r < 0 && errno != EINTR))
                        return false;
        }
}

/* Ends QEMU: quit over QMP, then SIGKILL; every step bounded. */
static void stop_qemu(struct install *in) {
        if (in->qemu_pid <= 0)
                return;
        if (in->qmp) {
                char why[256];
                struct json_object *ret = NULL;
                qmp_execute(in->qmp, "quit", NULL, 2000, &ret, why, sizeof why);
                json_object_put(ret);
        }
        if (in->pidfd < 0 || !wait_exit(in, QUIT_WAIT_MS)) {
                kill(in->qemu_pid, SIGKILL);
                if (in->pidfd >= 0)
                        wait_exit(in, KILL_WAIT_MS);
        }
        reap(in);
        in->qmp = qmp_free(in->qmp);
}

static int write_sidecar(struct install *in, char *err, size_t errlen) {
        struct atomic_file *af = NULL;
        char stamp[64], *iso = NULL, *text = NULL;
        time_t t = time(NULL);
        struct tm tm;
        int r, n;

        gmtime_r(&t, &tm);
        strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S UTC", &tm);
        /* The comment stays one line whatever the ISO's name holds. */
        iso = strdup(in->opts.iso);
        if (iso)
                for (char *p = iso; *p; p++)
                        if ((unsigned char)*p < 0x20 || *p == 0x7f)
                                *p = '?';
        n = iso ? asprintf(&text, "# installed by vrt image install from %s on %s\nfirmware=%s\n", iso, stamp,
                           firmware_to_string(in->opts.firmware))
                : -1;
        if (n < 0) {
                r = -ENOMEM;
                snprintf(err, errlen, "out of memory");
                goto fail;
        }
        r = atomic_file_open(in->sidecar, 0644, &af, err, errlen);
        if (r < 0)
                goto fail;
        if (write(af->fd, text, (size_t)n) != n) {
                r = errno ? -errno : -EIO;
                snprintf(err, errlen, "%s: write: %s", in->sidecar, strerror(-r));
                goto fail;
        }
        r = atomic_file_commit(af, err, errlen);
fail:
        atomic_file_free(af);
        free(text);
        free(iso);
        return r;
}

static int finalise(struct install *in, char *err, size_t errlen) {
        struct image_chain *chain = NULL;
        char why[1024];
        int fd = -1, r;

        fd = safepath_open(in->staging, O_RDONLY, 0, SAFEPATH_ONE_LINK, err, errlen);
        if (fd < 0) {
                r = fd;
                goto fail;
        }
        /* Durable before it gets its name; then the template's rules:
         * owned by us, read-only for everybody. */
        if (fsync(fd) < 0 || (geteuid() == 0 && fchown(fd, geteuid(), getegid()) < 0) || fchmod(fd, 0444) < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: %s", in->staging, strerror(-r));
                goto fail;
        }
        r = image_chain_inspect(in->staging, &chain, why, sizeof why);
        if (r < 0) {
                snprintf(err, errlen, "the installed disk does not check out: %s", why);
                goto fail;
        }
        in->virtual_size = chain->layers[0].virtual_size;
        in->allocated_size = chain->layers[0].allocated_size;
        r = write_sidecar(in, err, errlen);
        if (r < 0)
                goto fail;
        r = fileio_rename_noreplace(AT_FDCWD, in->staging, in->template_path);
        if (r < 0) {
                unlink(in->sidecar);
                in->keep_staging = true;
                snprintf(err, errlen, "cannot rename %s to %s: %s; the installed disk is kept under the first name",
                         in->staging, in->template_path, strerror(-r));
                goto fail;
        }
        in->staged = false;
        char *images = strdup(in->template_path);
        if (images) {
                *strrchr(images, '/') = '\0';
                fileio_fsync_dir(images);
                free(images);
        }
        r = 0;
fail:
        if (fd >= 0)
                close(fd);
        image_chain_free(chain);
        return r;
}

int install_wait(struct install *in, char *err, size_t errlen) {
        int64_t deadline = now_ms() + (int64_t)in->opts.timeout * 1000;
        int r;

        for (;;) {
                struct pollfd pfd[3];
                int n = 0, i_qmp = -1;
                pfd[n++] = (struct pollfd){ .fd = in->sig_fd, .events = POLLIN };
                pfd[n++] = (struct pollfd){ .fd = in->pidfd, .events = POLLIN };
                if (in->qmp) {
                        i_qmp = n;
                        pfd[n++] = (struct pollfd){ .fd = qmp_get_fd(in->qmp), .events = POLLIN };
                }
                int64_t left = deadline - now_ms();
                /* A timeout of days does not fit poll's int: wake up at least every minute. */
                r = poll(pfd, (nfds_t)n, left > 0 ? (int)(left < 60000 ? left : 60000) : 0);
                if (r < 0 && errno != EINTR) {
                        r = -errno;
                        snprintf(err, errlen, "poll: %s", strerror(-r));
                        goto abort;
                }
                if (r > 0 && (pfd[1].revents & POLLIN)) {
                        drain_qmp(in);
                        siginfo_t si = reap(in);
                        drain_qmp(in);
                        if (si.si_code != CLD_EXITED) {
                                snprintf(err, errlen, "QEMU was killed by signal %s; install discarded", strsignal(si.si_status));
                                return -EIO;
                        }
                        if (si.si_status != 0) {
                                snprintf(err, errlen, "QEMU exited with status %d (see its message above); install discarded", si.si_status);
                                return -EIO;
                        }
                        if (!in->guest_shutdown) {
                                snprintf(err, errlen, "QEMU was told to quit before the guest powered off; install discarded");
                                return -ECANCELED;
                        }
                        log_info("guest %s: finalising %s", strcmp(in->shutdown_reason, "guest-reset") == 0 ? "rebooted" : "powered off",
                                 in->template_path);
                        r = finalise(in, err, errlen);
                        actionlog_append(in->opts.root, "install", "%s: %s", in->opts.name, r < 0 ? err : "installed");
                        return r;
                }
                if (r > 0 && i_qmp >= 0 && pfd[i_qmp].revents) {
                        if (qmp_process_input(in->qmp) < 0) {
                                handle_events(in);
                                in->qmp = qmp_free(in->qmp);    /* QEMU is going; the pidfd says when */
                        }
                        handle_events(in);
                }
                if (r > 0 && (pfd[0].revents & POLLIN)) {
                        struct signalfd_siginfo si;
                        if (read(in->sig_fd, &si, sizeof si) == sizeof si) {
                                if (si.ssi_signo == SIGHUP) {
                                        log_info("SIGHUP ignored: the install goes on");
                                } else {
                                        r = -ECANCELED;
                                        snprintf(err, errlen, "interrupted by %s; install discarded", strsignal((int)si.ssi_signo));
                                        goto abort;
                                }
                        }
                }
                if (now_ms() >= deadline) {
                        r = -ETIMEDOUT;
                        snprintf(err, errlen, "the guest did not power off within %u s; install discarded", in->opts.timeout);
                        goto abort;
                }
        }
abort:
        stop_qemu(in);
        actionlog_append(in->opts.root, "install", "%s: %s", in->opts.name, err);
        return r;
}

struct install *install_free(struct install *in) {
        if (!in)
                return NULL;
        stop_qemu(in);
        in->qmp = qmp_free(in->qmp);
        close_fd(&in->pidfd);
        close_fd(&in->sig_fd);
        if (in->staged && !in->keep_staging && in->staging)
                unlink(in->staging);
        if (in->lock_fd >= 0) {
                if (in->vnc_socket)
                        unlink(in->vnc_socket);
                if (in->vnc_dir)
                        rmdir(in->vnc_dir);
                if (in->uefi_vars)
                        unlink(in->uefi_vars);
                runtime_remove(&in->paths);
                close_fd(&in->lock_fd);
        }
        host_config_free(in->host);
        vm_paths_done(&in->paths);
        free(in->staging);
        free(in->template_path);
        free(in->sidecar);
        free(in->console_log);
        free(in->vnc_dir);
        free(in->vnc_socket);
        free(in->uefi_vars);
        free(in);
        return NULL;
}
