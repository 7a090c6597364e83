/* bench-overlay: overlay creation, native against qemu-img, measured in one
 * run so the ratio does not depend on the machine's mood.
 *
 * For each directory: a 10 GiB qcow2 base made by qemu-img, then paired
 * runs rotating which goes first: a loop of --loop calls of
 * qcow2_overlay_create() in this process (durable: fsync of file and
 * directory; each call timed, the removal between calls not), `qemu-img
 * create -f qcow2 -b BASE -F qcow2 NEW` (posix_spawn, timed from spawn to
 * waitpid; qemu-img does not fsync), and, when --vrt names an executable,
 * `vrt image overlay BASE NEW` (timed the same way). Prints medians, the
 * median of the per-pair ratios and the allocated size of a fresh overlay.
 * The first native call of each loop runs right after a child process,
 * with cold caches; it is reported separately as "cold". */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "images/qcow2.h"

#define MAX_DIRS 8
#define BASE_NAME "bench-base.qcow2"

struct options {
        int runs;
        int loop;
        const char *dirs[MAX_DIRS];
        int n_dirs;
        const char *vrt;
        const char *qemu_img;
};

static double now_us(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

static double percentile(const double *v, int n, double p) {
        double *s = malloc(sizeof *s * (size_t)n), r;

        memcpy(s, v, sizeof *s * (size_t)n);
        qsort(s, (size_t)n, sizeof *s, cmp_double);
        r = s[(int)(p * (n - 1) + 0.5)];
        free(s);
        return r;
}

/* Runs argv with stdin and stdout on /dev/null; returns the wall time from
 * spawn to waitpid in microseconds, or a negative value on failure.
 * posix_spawn (vfork-style) rather than fork: a fork would leave this
 * process's pages copy-on-write and bill the next native call for the
 * page faults. */
static double run_timed(const char *const argv[]) {
        posix_spawn_file_actions_t fa;
        double t0, t1;
        int status, r;
        pid_t pid;

        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        t0 = now_us();
        r = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (r != 0) {
                fprintf(stderr, "%s: %s\n", argv[0], strerror(r));
                return -1;
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -1;
        t1 = now_us();
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "%s exited with status %d\n", argv[0], status);
                return -1;
        }
        return t1 - t0;
}

/* The durability floor of this file system: fsync of a freshly written
 * 4 KiB file plus fsync of its directory, which every crash-safe create
 * pays and qemu-img does not. */
static double fsync_floor(const char *dir, const char *path) {
        static const char block[4096] = { 1 };
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        double t0, t = -1;

        if (fd >= 0 && dfd >= 0 && write(fd, block, sizeof block) == (ssize_t)sizeof block) {
                t0 = now_us();
                if (fsync(fd) == 0 && fsync(dfd) == 0)
                        t = now_us() - t0;
        }
        if (fd >= 0)
                close(fd);
        if (dfd >= 0)
                close(dfd);
        unlink(path);
        return t;
}

static uint64_t allocated(const char *path, uint64_t *apparent) {
        struct stat st;

        if (stat(path, &st) < 0)
                return 0;
        *apparent = (uint64_t)st.st_size;
        return (uint64_t)st.st_blocks * 512;
}

static const char *fs_name(const char *dir) {
        struct statfs s;

        if (statfs(dir, &s) < 0)
                return "?";
        switch ((unsigned long)s.f_type) {
        case 0x01021994: return "tmpfs";
        case 0xef53: return "ext4";
        case 0x58465342: return "xfs";
        case 0x9123683e: return "btrfs";
        case 0x6969: return "nfs";
        case 0x794c7630: return "overlayfs";
        default: return "other";
        }
}

static char *join(const char *dir, const char *name) {
        char *p = NULL;

        if (asprintf(&p, "%s/%s", dir, name) < 0)
                abort();
        return p;
}

static int bench_dir(const struct options *o, const char *dir) {
        double *nat = calloc((size_t)o->runs, sizeof(double));
        double *qi = calloc((size_t)o->runs, sizeof(double));
        double *vr = calloc((size_t)o->runs, sizeof(double));
        double *ratio = calloc((size_t)o->runs, sizeof(double));
        double *vratio = calloc((size_t)o->runs, sizeof(double));
        double *cold = calloc((size_t)o->runs, sizeof(double));
        double *cratio = calloc((size_t)o->runs, sizeof(double));
        double *floor_us = calloc((size_t)o->runs, sizeof(double));
        char *floor_path = join(dir, "bench-fsync.tmp");
        char *base = join(dir, BASE_NAME);
        char *nat_path = join(dir, "bench-native.qcow2");
        char *qi_path = join(dir, "bench-qemu-img.qcow2");
        char *vr_path = join(dir, "bench-vrt.qcow2");
        bool with_vrt = o->vrt && access(o->vrt, X_OK) == 0;
        uint64_t nat_alloc = 0, nat_size = 0, qi_alloc = 0, qi_size = 0;
        char err[512];
        int r = 1;

        unlink(base);
        if (run_timed((const char *const[]){ o->qemu_img, "create", "-q", "-f", "qcow2", base, "10G", NULL }) < 0) {
                fprintf(stderr, "cannot create the base image in %s\n", dir);
                goto done;
        }

        /* One warm-up of each, then the paired runs. */
        for (int i = -1; i < o->runs; i++) {
                double t_nat = 0, t_cold = 0, t_qi = 0, t_vr = 0;

                unlink(nat_path);
                unlink(qi_path);
                unlink(vr_path);
                for (int k = 0; k < 3; k++) {
                        /* Rotate the order so no variant always runs first. */
                        int which = (k + (i < 0 ? 0 : i)) % 3;
                        if (which == 0) {
                                for (int l = 0; l < o->loop; l++) {
                                        double t0, t;

                                        unlink(nat_path);
                                        t0 = now_us();
                                        if (qcow2_overlay_create(nat_path, BASE_NAME, "qcow2", 0, err, sizeof err) < 0) {
                                                fprintf(stderr, "%s\n", err);
                                                goto done;
                                        }
                                        t = now_us() - t0;
                                        if (l == 0)
                                                t_cold = t;
                                        t_nat += t;
                                }
                                t_nat /= o->loop;
                        } else if (which == 1) {
                                t_qi = run_timed((const char *const[]){ o->qemu_img, "create", "-q", "-f", "qcow2", "-b",
                                                                        BASE_NAME, "-F", "qcow2", qi_path, NULL });
                                if (t_qi < 0)
                                        goto done;
                        } else if (with_vrt) {
                                t_vr = run_timed((const char *const[]){ o->vrt, "image", "overlay", base, vr_path,
                                                                        NULL });
                                if (t_vr < 0) {
                                        fprintf(stderr, "vrt image overlay failed: leaving out the vrt row\n");
                                        with_vrt = false;
                                }
                        }
                }
                if (i < 0)
                        continue;
                floor_us[i] = fsync_floor(dir, floor_path);
                nat[i] = t_nat;
                cold[i] = t_cold;
                cratio[i] = t_qi / t_cold;
                qi[i] = t_qi;
                vr[i] = t_vr;
                ratio[i] = t_qi / t_nat;
                vratio[i] = t_vr > 0 ? t_qi / t_vr : 0;
        }
        nat_alloc = allocated(nat_path, &nat_size);
        qi_alloc = allocated(qi_path, &qi_size);

        printf("\n%s (%s), 10 GiB qcow2 base, %d paired runs, native loop of %d\n", dir, fs_name(dir), o->runs,
               o->loop);
        printf("  %-36s %9s %9s %9s\n", "", "median", "p10", "p90");
        printf("  %-36s %7.0fus %7.0fus %7.0fus\n", "native qcow2_overlay_create(), loop", percentile(nat, o->runs, 0.5),
               percentile(nat, o->runs, 0.1), percentile(nat, o->runs, 0.9));
        printf("  %-36s %7.0fus %7.0fus %7.0fus\n", "native, cold (first after a child)",
               percentile(cold, o->runs, 0.5), percentile(cold, o->runs, 0.1), percentile(cold, o->runs, 0.9));
        printf("  %-36s %7.0fus %7.0fus %7.0fus\n", "  of which fsync floor (file+dir)",
               percentile(floor_us, o->runs, 0.5), percentile(floor_us, o->runs, 0.1),
               percentile(floor_us, o->runs, 0.9));
        printf("  %-36s %7.0fus %7.0fus %7.0fus\n", "qemu-img create -b -F (spawn+wait)", percentile(qi, o->runs, 0.5),
               percentile(qi, o->runs, 0.1), percentile(qi, o->runs, 0.9));
        if (with_vrt)
                printf("  %-36s %7.0fus %7.0fus %7.0fus\n", "vrt image overlay (spawn+wait)",
                       percentile(vr, o->runs, 0.5), percentile(vr, o->runs, 0.1), percentile(vr, o->runs, 0.9));
        else
                printf("  %-36s %s\n", "vrt image overlay",
                       o->vrt ? "skipped (not executable or failed)" : "skipped (no --vrt)");
        printf("  ratio qemu-img / native loop, median of pairs: %.1fx (target >= 50x: %s)\n",
               percentile(ratio, o->runs, 0.5), percentile(ratio, o->runs, 0.5) >= 50 ? "met" : "NOT met");
        printf("  ratio qemu-img / native cold, median of pairs: %.1fx\n", percentile(cratio, o->runs, 0.5));
        if (with_vrt)
                printf("  ratio qemu-img / vrt, median of pairs: %.1fx\n", percentile(vratio, o->runs, 0.5));
        printf("  fresh overlay allocated: native %llu bytes (apparent %llu), qemu-img %llu bytes (apparent %llu)\n",
               (unsigned long long)nat_alloc, (unsigned long long)nat_size, (unsigned long long)qi_alloc,
               (unsigned long long)qi_size);
        r = 0;
done:
        unlink(nat_path);
        unlink(qi_path);
        unlink(vr_path);
        unlink(base);
        free(nat);
        free(qi);
        free(vr);
        free(ratio);
        free(vratio);
        free(cold);
        free(cratio);
        free(floor_us);
        free(floor_path);
        free(base);
        free(nat_path);
        free(qi_path);
        free(vr_path);
        return r;
}

static void usage(FILE *f) {
        fprintf(f, "usage: bench-overlay [--runs N] [--loop N] [--dir DIR]... [--vrt PATH] [--qemu-img PATH]\n"
                   "  default dirs: $TMPDIR or /var/tmp (disk) and /dev/shm (tmpfs)\n");
}

int main(int argc, char **argv) {
        struct options o = { .runs = 30, .loop = 10, .qemu_img = "/usr/bin/qemu-img" };
        const char *tmp = getenv("TMPDIR");
        char *made[MAX_DIRS] = { 0 };
        int r = 0;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
                        o.runs = atoi(argv[++i]);
                } else if (strcmp(argv[i], "--loop") == 0 && i + 1 < argc) {
                        o.loop = atoi(argv[++i]);
                } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc && o.n_dirs < MAX_DIRS) {
                        o.dirs[o.n_dirs++] = argv[++i];
                } else if (strcmp(argv[i], "--vrt") == 0 && i + 1 < argc) {
                        o.vrt = argv[++i];
                } else if (strcmp(argv[i], "--qemu-img") == 0 && i + 1 < argc) {
                        o.qemu_img = argv[++i];
                } else if (strcmp(argv[i], "--help") == 0) {
                        usage(stdout);
                        return 0;
                } else {
                        usage(stderr);
                        return 2;
                }
        }
        if (o.runs < 1 || o.loop < 1) {
                usage(stderr);
                return 2;
        }
        if (o.n_dirs == 0) {
                /* A fresh directory on disk and one on tmpfs: on disk the
                 * native writer pays for fsync, which qemu-img skips. */
                const char *parents[] = { tmp && *tmp ? tmp : "/var/tmp", "/dev/shm" };
                for (int i = 0; i < 2; i++) {
                        char *d = join(parents[i], "bench-overlay.XXXXXX");
                        if (access(parents[i], W_OK) == 0 && mkdtemp(d)) {
                                made[o.n_dirs] = d;
                                o.dirs[o.n_dirs++] = d;
                        } else {
                                free(d);
                        }
                }
        }
        printf("bench-overlay: qemu-img %s, vrt %s\n", o.qemu_img, o.vrt ? o.vrt : "(none)");
        for (int i = 0; i < o.n_dirs; i++) {
                fflush(stdout);
                r |= bench_dir(&o, o.dirs[i]);
        }
        for (int i = 0; i < MAX_DIRS; i++) {
                if (made[i])
                        rmdir(made[i]);
                free(made[i]);
        }
        return r;
}
