#include "launcher/core/vmstate.h"
#include "launcher/core/safepath.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "launcher/core/config.h"
#include "launcher/core/fileio.h"
#include "launcher/core/runtime.h"
#include "launcher/core/snapstate.h"
#include "launcher/core/util.h"

#define RUNNING_POLL_MS 20

static const char *const state_names[_FIRSTBOOT_STATE_MAX] = {
        [FIRSTBOOT_CREATED] = "created",
        [FIRSTBOOT_INIT_FAILED] = "init-failed",
        [FIRSTBOOT_PENDING] = "init-pending",
};

const char *firstboot_state_to_string(enum firstboot_state s) {
        return s >= 0 && s < _FIRSTBOOT_STATE_MAX ? state_names[s] : NULL;
}

enum firstboot_state firstboot_state_from_string(const char *s) {
        return (enum firstboot_state)table_lookup(state_names, _FIRSTBOOT_STATE_MAX, s);
}

bool vmstate_has_marker(const char *vm_dir, const char *file) {
        char *p = paths_join(vm_dir, file);
        struct stat st;
        bool r = p && lstat(p, &st) == 0;
        free(p);
        return r;
}

bool vmstate_is_destroyed(const char *vm_dir) {
        return vmstate_has_marker(vm_dir, VMSTATE_DESTROYED_FILE);
}

enum firstboot_state firstboot_state_of(const char *vm_dir, bool has_init) {
        /* INIT-FAILED first: only a successful run removes it. */
        if (vmstate_has_marker(vm_dir, FIRSTBOOT_FAILED_FILE))
                return FIRSTBOOT_INIT_FAILED;
        if (vmstate_has_marker(vm_dir, FIRSTBOOT_CREATED_FILE) || !has_init)
                return FIRSTBOOT_CREATED;
        return FIRSTBOOT_PENDING;
}

/* True when pid is a vrt-launch: comm is the executable's name. */
static bool is_supervisor(pid_t pid) {
        char path[64], comm[32] = "";
        snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        ssize_t n = read(fd, comm, sizeof comm - 1);
        close(fd);
        if (n <= 0)
                return false;
        comm[n] = '\0';
        return strncmp(comm, "vrt-launch", 10) == 0;
}

/* Pins pid with a pidfd. Returns the pidfd, or -1 when pid is not (any
 * more) the supervisor that holds the lock. */
static int pin(const struct vm_paths *p, pid_t pid) {
        pid_t again = 0;
        int fd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (fd < 0)
                return -1;
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        if (!runtime_is_running(p) || runtime_read_pid(p->pid_file, &again) < 0 || again != pid || !is_supervisor(pid)) {
                close(fd);
                return -1;
        }
        return fd;
}

int vmstate_running(const struct vm_paths *p, unsigned wait_ms, int flags, struct vm_running *ret) {
        int64_t deadline = now_ms() + wait_ms;
        for (;;) {
                struct vm_running v = { .pidfd = -1 };
                struct stat st;
                if (!runtime_is_running(p))
                        return 0;
                if (runtime_read_pid(p->pid_file, &v.pid) == 0) {
                        if (stat(p->pid_file, &st) == 0)
                                v.since = st.st_mtime;  /* written once, when the supervisor starts */
                        if (!(flags & VMSTATE_PIN))
                                goto found;
                        v.pidfd = pin(p, v.pid);
                        if (v.pidfd >= 0)
                                goto found;
                        v.pid = 0;
                        v.since = 0;
                }
                if (now_ms() >= deadline) {
                        if (!runtime_is_running(p))
                                return 0;
                        *ret = (struct vm_running){ .pidfd = -1 };
                        return 1;
                }
                struct timespec ts = { 0, RUNNING_POLL_MS * 1000 * 1000 };
                nanosleep(&ts, NULL);
                continue;
found:
                *ret = v;
                return 1;
        }
}

/* The first line of vm_dir/INIT-FAILED, for the message. */
static void failed_reason(const char *vm_dir, char *buf, size_t len) {
        char *path = paths_join(vm_dir, FIRSTBOOT_FAILED_FILE), *text = NULL, why[64];
        size_t n;
        buf[0] = '\0';
        if (path && fileio_read_regular(path, 4096, &text, &n, why, sizeof why) == 0) {
                text[strcspn(text, "\n")] = '\0';
                snprintf(buf, len, "%s", str_trim(text));
        }
        free(text);
        free(path);
}

/* Checks the name and that the VM exists; p is set up on success. */
static int check_exists(const char *root, const char *runtime_dir, const char *name, struct vm_paths *p,
                        char *err, size_t errlen) {
        struct stat st;
        if (config_check_vm_name(name, runtime_dir, err, errlen) < 0)
                return -EINVAL;
        if (vm_paths_init(p, root, runtime_dir, name) < 0) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        if (stat(p->instance, &st) < 0) {
                snprintf(err, errlen, "no such VM (%s: %s)", p->instance, strerror(errno));
                vm_paths_done(p);
                return -ENOENT;
        }
        return 0;
}

int vmstate_check_exists(const char *root, const char *runtime_dir, const char *name, char *err, size_t errlen) {
        struct vm_paths p = { 0 };
        int r = check_exists(root, runtime_dir, name, &p, err, errlen);
        if (r == 0)
                vm_paths_done(&p);
        return r;
}

bool vmstate_cluster_managed(const char *root, const char *runtime_dir, const char *name) {
        struct instance *inst = NULL;
        char *props = NULL, err[512];
        if (asprintf(&props, "%s/vm/%s/instance.properties", root, name) < 0)
                return false;
        bool managed = instance_load(props, name, runtime_dir, &inst, err, sizeof err) == 0 && inst->cluster_managed;
        instance_free(inst);
        free(props);
        return managed;
}

int vmstate_check_startable(const char *root, const char *runtime_dir, const char *name, char *err, size_t errlen) {
        struct vm_paths p = { 0 };
        struct instance *inst = NULL;
        char msg[512];
        int r;

        r = check_exists(root, runtime_dir, name, &p, err, errlen);
        if (r < 0)
                return r;
        if (vmstate_is_destroyed(p.vm_dir)) {
                snprintf(err, errlen, "destroyed, not started (%s exists; `vrt cleanup` removes the VM)", p.destroyed);
                r = -ESTALE;
                goto out;
        }
        /* The files root hands to QEMU's user or writes: a link planted
         * there is refused here already (vrt-launch refuses it too). */
        char *snap = NULL;
        const char *own[] = { p.overlay, p.copy, p.uefi_vars, p.console_log, NULL };
        if (snap_active_path(p.vm_dir, &snap, msg, sizeof msg) == 0 && snap)
                own[4] = snap;
        for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
                if (own[i] && (r = safepath_check_planted(own[i], 0, msg, sizeof msg)) < 0) {
                        snprintf(err, errlen, "%s; not started", msg);
                        free(snap);
                        goto out;
                }
        free(snap);
        if ((r = safepath_check_planted(p.log_dir, SAFEPATH_DIR, msg, sizeof msg)) < 0) {
                snprintf(err, errlen, "%s; not started", msg);
                goto out;
        }
        r = 0;
        if (instance_load(p.instance, name, runtime_dir, &inst, msg, sizeof msg) < 0)
                goto out;
        switch (firstboot_state_of(p.vm_dir, inst->init != NULL)) {
        case FIRSTBOOT_PENDING:
                snprintf(err, errlen, "its first boot (init=) has not completed; "
                         "fix the script and run `vrt init %s [--reset]`, or remove init= from %s", name, p.instance);
                r = -EAGAIN;
                break;
        case FIRSTBOOT_INIT_FAILED:
                failed_reason(p.vm_dir, msg, sizeof msg);
                if (!msg[0])
                        snprintf(msg, sizeof msg, "log: %s", p.init_log);
                snprintf(err, errlen, "its first boot failed (%s); fix init/%s and run `vrt init --reset %s`, "
                         "or `vrt destroy %s`", msg, inst->init ? inst->init : "SCRIPT", name, name);
                r = -ENOTRECOVERABLE;
                break;
        default:
                break;
        }
out:
        instance_free(inst);
        vm_paths_done(&p);
        return r;
}

int vmstate_elsewhere(const char *vm_dir, struct lease_holder *ret) {
        char me[LEASE_HOST_MAX + 1], err[128];
        int r = lease_probe(vm_dir, ret);
        if (r <= 0)
                return r;
        if (!ret->host[0])
                return 0;
        /* Without a valid own name every named holder is another host. */
        if (lease_host_name(me, sizeof me, err, sizeof err) == 0 && strcmp(me, ret->host) == 0)
                return 0;
        return 1;
}

void vmstate_describe_elsewhere(const struct lease_holder *h, char *buf, size_t len) {
        char who[256];
        lease_describe(h, who, sizeof who);
        snprintf(buf, len, "runs on %s", who);
}

#define QEMU_LOCK_START 100
#define QEMU_LOCK_LEN 200

const char *vmstate_disk_in_use(const struct vm_paths *p) {
        static char active[4096];
        char msg[256], *snap = NULL;
        const char *disks[3] = { p->overlay, p->copy, NULL };
        /* With snapshots, QEMU writes the active layer in snapshots/. */
        if (snap_active_path(p->vm_dir, &snap, msg, sizeof msg) == 0 && snap) {
                snprintf(active, sizeof active, "%s", snap);
                disks[2] = active;
        }
        free(snap);
        for (size_t i = 0; i < 3 && disks[i]; i++) {
                int fd = open(disks[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
                if (fd < 0)
                        continue;
                struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = QEMU_LOCK_START, .l_len = QEMU_LOCK_LEN };
                bool held = fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
                close(fd);
                if (held)
                        return disks[i];
        }
        return NULL;
}
