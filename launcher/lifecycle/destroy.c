#include "launcher/lifecycle/destroy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "launcher/core/actionlog.h"
#include "launcher/core/fileio.h"
#include "launcher/core/config.h"
#include "launcher/core/lease.h"
#include "launcher/core/migreq.h"
#include "launcher/lifecycle/create.h"
#include "launcher/core/paths.h"
#include "launcher/lifecycle/registry.h"
#include "launcher/core/runtime.h"
#include "launcher/core/snapstate.h"
#include "launcher/core/util.h"
#include "launcher/core/vmstate.h"
#include "launcher/lifecycle/stop.h"

#define DESTROY_POLL_MS 50
#define REMOVING_SUFFIX ".removing"
/* A QEMU whose supervisor is gone may hold its disk a moment longer. */
#define DESTROY_DISK_BUSY_MS 3000

static void sleep_ms(long ms) {
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* Stops the VM's supervisor, if one runs, and waits until it is gone or
 * the deadline passes. The lock held without a known supervisor means one
 * is starting or another destroy is at work: wait for either to finish. */
static int stop_vm(const char *root, const struct vm_paths *p, const char *name, bool force, int64_t deadline,
                   bool *was_running, char *err, size_t errlen) {
        for (;;) {
                struct stop_job j = { .pidfd = -1 };
                int64_t left = deadline - now_ms();
                if (left <= 0) {
                        snprintf(err, errlen, "VM did not stop in time (supervisor still holds %s)", p->lock_file);
                        return -ETIMEDOUT;
                }
                struct stop_request req = { .force = force, .wait_s = (unsigned)((left + 999) / 1000) };
                int r = stop_begin(root, p, name, &req, &j, err, errlen);
                if (r == 0)
                        return 0;
                if (r == -EAGAIN) {
                        sleep_ms(DESTROY_POLL_MS);
                        continue;
                }
                if (r < 0)
                        return r;
                *was_running = true;
                if (j.deadline > deadline)
                        j.deadline = deadline;
                r = stop_wait(&j, err, errlen);
                if (r == -ETIMEDOUT)
                        snprintf(err, errlen, "VM did not stop in time (supervisor %d still runs)", (int)j.pid);
                stop_job_done(&j);
                if (r < 0)
                        return r;
        }
}

/* Writes vm/NAME/DESTROYED once: the first destroy's timestamp stays. */
static int write_marker(const struct vm_paths *p, bool *already, char *err, size_t errlen) {
        char tmp[4200], text[256], stamp[64], host[256] = "";
        struct timespec ts;
        struct tm tm;
        int fd, r = 0;

        if (vmstate_is_destroyed(p->vm_dir)) {
                *already = true;
                return 0;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        localtime_r(&ts.tv_sec, &tm);
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S%z", &tm);
        gethostname(host, sizeof host - 1);
        snprintf(text, sizeof text, "destroyed=%s\nhost=%s\n", stamp, host);
        snprintf(tmp, sizeof tmp, "%s/.DESTROYED.%d.tmp", p->vm_dir, (int)getpid());
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(-r));
                return r;
        }
        size_t len = strlen(text);
        if (write(fd, text, len) != (ssize_t)len || fsync(fd) < 0)
                r = errno ? -errno : -EIO;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        /* link() never replaces: of two destroys on two hosts one marker wins. */
        if (r == 0 && link(tmp, p->destroyed) < 0) {
                if (errno == EEXIST)
                        *already = true;
                else
                        r = -errno;
        }
        unlink(tmp);
        if (r < 0)
                snprintf(err, errlen, "cannot write %s: %s", p->destroyed, strerror(-r));
        return r;
}

/* The snapshot layers and state go with the disk (snapstate.h). */
static int remove_snapshots(const struct vm_paths *p, char *err, size_t errlen) {
        char *dir = paths_join(p->vm_dir, SNAP_DIR);
        if (!dir) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        DIR *d = opendir(dir);
        if (!d) {
                int r = errno == ENOENT ? 0 : -errno;
                if (r < 0)
                        snprintf(err, errlen, "cannot open %s: %s", dir, strerror(-r));
                free(dir);
                return r;
        }
        int dfd = dirfd(d), r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                char rel[300];
                snprintf(rel, sizeof rel, SNAP_DIR "/%s", de->d_name);
                bool ours = snap_layer_name_valid(rel) || strcmp(de->d_name, "state") == 0 ||
                            strcmp(de->d_name, ".lock") == 0 || strcmp(de->d_name, ".state.tmp") == 0;
                if (ours && unlinkat(dfd, de->d_name, 0) < 0 && errno != ENOENT) {
                        r = -errno;
                        snprintf(err, errlen, "cannot delete %s/%s: %s", dir, de->d_name, strerror(-r));
                        break;
                }
        }
        closedir(d);
        if (r == 0)
                rmdir(dir);     /* stays if something else is in it */
        free(dir);
        return r;
}

/* Takes the VM's lease for this destroy. -EREMOTE when a host started it
 * meanwhile (err names it). */
static int take_lease(const char *root, const struct vm_paths *p, const char *name, int *ret_fd, char *err,
                      size_t errlen) {
        char host[LEASE_HOST_MAX + 1];
        struct lease_holder stale;
        int r = lease_host_name(host, sizeof host, err, errlen);
        if (r < 0)
                return r;
        r = migreq_check_migrating(root, name, "not destroyed", err, errlen);
        if (r < 0)
                return r;
        r = lease_acquire(p->vm_dir, name, host, &stale, err, errlen);
        if (r == -EBUSY) {
                struct lease_holder h;
                char where[300];
                lease_probe(p->vm_dir, &h);
                vmstate_describe_elsewhere(&h, where, sizeof where);
                snprintf(err, errlen, "%s; not destroyed", where);
                return -EREMOTE;
        }
        if (r < 0)
                return r;
        (void)lease_sync(r);
        *ret_fd = r;
        return 0;
}

int destroy_vm(const char *root, const char *runtime_dir, const char *name, bool force,
               struct destroy_result *ret, char *err, size_t errlen) {
        struct destroy_result res = { 0 };
        struct vm_paths p = { 0 };
        char msg[512];
        struct stat st;
        int r, lock_fd = -1, lease_fd = -1;

        if (config_check_vm_name(name, runtime_dir, msg, sizeof msg) < 0) {
                snprintf(err, errlen, "%s", msg);
                return -EINVAL;
        }
        if (vm_paths_init(&p, root, runtime_dir, name) < 0)
                return -ENOMEM;
        if (lstat(p.vm_dir, &st) < 0) {
                struct registry *reg = NULL;
                r = -errno;
                if (r != -ENOENT) {
                        snprintf(err, errlen, "%s: %s", p.vm_dir, strerror(-r));
                        goto done;
                }
                r = registry_load(root, &reg, err, errlen);
                if (r < 0)
                        goto done;
                if (registry_has_name(reg, name, NULL)) {
                        /* Destroyed and cleaned up before: nothing left to do. */
                        res.gone = res.already_destroyed = true;
                        r = 0;
                } else {
                        snprintf(err, errlen, "no such VM: %s (%s does not exist)", name, p.vm_dir);
                        r = -ENOENT;
                }
                registry_free(reg);
                if (r < 0)
                        goto done;
                *ret = res;
                goto done;
        }
        if (!S_ISDIR(st.st_mode)) {
                snprintf(err, errlen, "%s is not a directory", p.vm_dir);
                r = -ENOTDIR;
                goto done;
        }

        /* Not while it moves: stopping it would break the migration. */
        r = migreq_check_migrating(root, name, "not destroyed", err, errlen);
        if (r < 0)
                goto done;
        /* Another host's VM is destroyed there: its disk is in use there. */
        struct lease_holder holder;
        if (vmstate_elsewhere(p.vm_dir, &holder) == 1) {
                vmstate_describe_elsewhere(&holder, msg, sizeof msg);
                snprintf(err, errlen, "%s; not destroyed (destroy it there, or stop it first)", msg);
                r = -EREMOTE;
                goto done;
        }
        unsigned timeout = force ? 1 : stop_shutdown_timeout(root, &p, name);
        int64_t deadline = now_ms() + INT64_C(1000) * (timeout + STOP_ESCALATION_S), busy_until = 0;
        for (;;) {
                r = stop_vm(root, &p, name, force, deadline, &res.was_running, err, errlen);
                if (r < 0)
                        goto done;
                /* Hold the lock: no start between our check and the marker. */
                lock_fd = runtime_lock(&p, msg, sizeof msg);
                if (lock_fd >= 0) {
                        const char *busy = vmstate_disk_in_use(&p);
                        if (!busy) {
                                /* The lease too, held until the disk is gone: no host
                                 * starts the VM between our check and the marker. */
                                r = take_lease(root, &p, name, &lease_fd, err, errlen);
                                if (r < 0)
                                        goto done;
                                break;
                        }
                        close(lock_fd);
                        lock_fd = -1;
                        if (busy_until == 0)
                                busy_until = now_ms() + DESTROY_DISK_BUSY_MS;
                        if (now_ms() >= busy_until || now_ms() >= deadline) {
                                snprintf(err, errlen, "%s is in use by a QEMU process that this host does not supervise "
                                         "(running on another host sharing the root?); not destroyed", busy);
                                r = -EBUSY;
                                goto done;
                        }
                        sleep_ms(DESTROY_POLL_MS);
                        continue;
                }
                if (lock_fd != -EBUSY) {
                        r = lock_fd;
                        snprintf(err, errlen, "%s", msg);
                        goto done;
                }
                if (now_ms() >= deadline) {
                        snprintf(err, errlen, "%s", msg);
                        r = -ETIMEDOUT;
                        goto done;
                }
                sleep_ms(DESTROY_POLL_MS);
        }
        runtime_clean(&p);

        /* Marker first: an interrupted destroy leaves a VM that is marked
         * and still has a disk, which the next destroy or cleanup handles. */
        r = write_marker(&p, &res.already_destroyed, err, errlen);
        if (r < 0)
                goto done;
        const char *disks[2] = { p.overlay, p.copy };
        const char *names[2] = { "hdd.ovl", "hdd.img" };
        for (size_t i = 0; i < 2; i++) {
                if (unlink(disks[i]) == 0) {
                        snprintf(res.removed[i], sizeof res.removed[i], "%s", names[i]);
                } else if (errno != ENOENT) {
                        r = -errno;
                        snprintf(err, errlen, "cannot delete %s: %s", disks[i], strerror(-r));
                        goto done;
                }
        }
        r = remove_snapshots(&p, err, errlen);
        if (r < 0)
                goto done;
        r = fileio_fsync_dir(p.vm_dir);
        if (r < 0) {
                snprintf(err, errlen, "cannot fsync %s: %s", p.vm_dir, strerror(-r));
                goto done;
        }
        *ret = res;
        r = 0;
done:
        lease_release(&lease_fd);
        if (lock_fd >= 0) {
                runtime_remove(&p);
                close(lock_fd);
        }
        vm_paths_done(&p);
        return r;
}

/* --- cleanup --- */

static int add_entry(struct cleanup_result *res, const char *name, bool removed, const char *reason) {
        struct cleanup_entry *e = realloc(res->entries, (res->n + 1) * sizeof *e);
        if (!e)
                return -ENOMEM;
        res->entries = e;
        e[res->n] = (struct cleanup_entry){ .name = strdup(name), .removed = removed };
        if (!e[res->n].name)
                return -ENOMEM;
        snprintf(e[res->n].reason, sizeof e[res->n].reason, "%s", reason ? reason : "");
        res->n++;
        return 0;
}

/* Removes one destroyed VM. Returns 1 removed, 0 skipped or gone, < 0 failed. */
static int cleanup_one(const char *root, const char *runtime_dir, const char *vm_root, const char *name,
                       struct cleanup_result *res) {
        char reason[256] = "", hidden[VM_NAME_MAX + sizeof REMOVING_SUFFIX + 2];
        struct vm_paths p = { 0 };
        char *hidden_path = NULL;
        int r, lock_fd = -1;

        if (vm_paths_init(&p, root, runtime_dir, name) < 0)
                return -ENOMEM;
        lock_fd = runtime_lock(&p, reason, sizeof reason);
        if (lock_fd == -EBUSY) {
                r = add_entry(res, name, false, "still running");
                goto done;
        }
        if (lock_fd < 0) {
                r = add_entry(res, name, false, reason);
                if (r == 0)
                        r = lock_fd;
                goto done;
        }
        snprintf(hidden, sizeof hidden, ".%s%s", name, REMOVING_SUFFIX);
        hidden_path = paths_join(vm_root, hidden);
        if (!hidden_path) {
                r = -ENOMEM;
                goto done;
        }
        /* A leftover of an interrupted cleanup of an earlier VM dir. */
        create_remove_tree(hidden_path);
        if (rename(p.vm_dir, hidden_path) < 0) {
                /* ENOENT: a concurrent cleanup took it first. */
                r = errno == ENOENT ? 0 : -errno;
                if (r < 0) {
                        snprintf(reason, sizeof reason, "cannot rename %s: %s", p.vm_dir, strerror(-r));
                        add_entry(res, name, false, reason);
                }
                goto done;
        }
        fileio_fsync_dir(vm_root);
        r = create_remove_tree(hidden_path);
        if (r < 0) {
                /* Invisible already; the next cleanup finishes the removal. */
                snprintf(reason, sizeof reason, "cannot remove %s: %s", hidden_path, strerror(-r));
                actionlog_append(root, "cleanup", "%s: removal incomplete: %s", name, reason);
                add_entry(res, name, false, reason);
                goto done;
        }
        actionlog_append(root, "cleanup", "%s: removed %s (destroyed; the name stays registered)", name, p.vm_dir);
        r = add_entry(res, name, true, NULL);
        if (r == 0)
                r = 1;
done:
        if (lock_fd >= 0) {
                runtime_remove(&p);
                close(lock_fd);
        }
        free(hidden_path);
        vm_paths_done(&p);
        return r;
}

int destroy_cleanup(const char *root, const char *runtime_dir, struct cleanup_result *ret,
                    char *err, size_t errlen) {
        struct cleanup_result res = { 0 };
        struct registry *reg = NULL;
        char *vm_root = NULL;
        DIR *d = NULL;
        struct dirent *de;
        int r, failures = 0;

        vm_root = paths_join(root, "vm");
        if (!vm_root)
                return -ENOMEM;
        /* Interrupted creates first, under the registry lock. */
        r = registry_lock(root, &reg, err, errlen);
        if (r < 0)
                goto fail;
        r = create_sweep(root, reg, err, errlen);
        registry_free(reg);
        if (r < 0)
                goto fail;
        res.swept = (unsigned)r;

        d = opendir(vm_root);
        if (!d && errno == ENOENT) {
                free(vm_root);
                *ret = res;
                return 0;
        }
        if (!d) {
                r = -errno;
                snprintf(err, errlen, "cannot read %s: %s", vm_root, strerror(-r));
                goto fail;
        }
        while ((de = readdir(d))) {
                char msg[256], *path;
                if (de->d_name[0] == '.') {
                        if (has_suffix(de->d_name, REMOVING_SUFFIX) && strlen(de->d_name) > 1 + strlen(REMOVING_SUFFIX)) {
                                path = paths_join(vm_root, de->d_name);
                                if (path && create_remove_tree(path) == 0) {
                                        actionlog_append(root, "cleanup", "removed leftover %s", path);
                                        res.swept++;
                                }
                                free(path);
                        }
                        continue;
                }
                if (config_check_vm_name(de->d_name, NULL, msg, sizeof msg) < 0)
                        continue;
                path = paths_join(vm_root, de->d_name);
                if (!path) {
                        r = -ENOMEM;
                        goto fail;
                }
                bool destroyed = vmstate_is_destroyed(path);
                free(path);
                if (!destroyed)
                        continue;
                r = cleanup_one(root, runtime_dir, vm_root, de->d_name, &res);
                if (r == -ENOMEM)
                        goto fail;
                if (r < 0)
                        failures++;
        }
        closedir(d);
        free(vm_root);
        *ret = res;
        return failures;
fail:
        if (d)
                closedir(d);
        free(vm_root);
        cleanup_result_done(&res);
        return r;
}

void cleanup_result_done(struct cleanup_result *r) {
        if (!r)
                return;
        for (size_t i = 0; i < r->n; i++)
                free(r->entries[i].name);
        free(r->entries);
        *r = (struct cleanup_result){ 0 };
}
