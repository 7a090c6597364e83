#include "launcher/cli/statsview.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "launcher/core/paths.h"
#include "launcher/core/runtime.h"
#include "launcher/core/strv.h"

int statsview_init(struct statsview *s, const struct cli *cli, int argc, char **argv, char *err, size_t errlen) {
        struct strv v = { 0 };
        int r = 0;
        *s = (struct statsview){ 0 };
        if (argc == 0) {
                char *vm_dir = paths_join(cli->root, "vm");
                r = vm_dir ? strv_add_dir(&v, vm_dir, NULL, true) : -ENOMEM;
                free(vm_dir);
                if (r < 0)
                        snprintf(err, errlen, "cannot read %s/vm: %s", cli->root, strerror(-r));
                s->all = true;
        } else {
                for (int i = 0; i < argc; i++) {
                        /* Check each name now: a typo is bad input, not a VM that is "stopped". */
                        struct vm_paths p;
                        struct stat st;
                        r = config_check_vm_name(argv[i], cli->runtime_dir, err, errlen);
                        if (r < 0)
                                break;
                        if (vm_paths_init(&p, cli->root, cli->runtime_dir, argv[i]) < 0) {
                                r = -ENOMEM;
                                break;
                        }
                        int stat_errno = stat(p.vm_dir, &st) < 0 ? errno : 0;
                        if (stat_errno && !runtime_is_running(&p)) {
                                snprintf(err, errlen, "no such VM %s (%s: %s)", argv[i], p.vm_dir, strerror(stat_errno));
                                r = -ENOENT;
                        }
                        vm_paths_done(&p);
                        if (r < 0)
                                break;
                        strv_add(&v, argv[i]);
                }
        }
        if (r == 0 && v.error) {
                r = v.error;
                snprintf(err, errlen, "out of memory");
        }
        if (r < 0) {
                strv_done(&v);
                return r;
        }
        s->names = v.items;
        s->n = v.n;
        return 0;
}

/* One VM's sample, run on a thread of its own. */
struct job {
        const struct stats_options *o;
        const char *name;
        struct stats_vm vm;
        int r;
        pthread_t thread;
        bool started;
};

static void *job_run(void *arg) {
        struct job *j = arg;
        j->r = stats_sample(j->o, j->name, &j->vm);
        return NULL;
}

int statsview_sample(struct statsview *s, const struct cli *cli) {
        struct stats_options o = { cli->root, cli->runtime_dir, STATSVIEW_TIMEOUT_MS };
        struct stats_vm *vms = calloc(s->n ? s->n : 1, sizeof *vms);
        struct job *jobs = calloc(s->n ? s->n : 1, sizeof *jobs);
        size_t n = 0;
        int r = 0;
        if (!vms || !jobs) {
                free(vms);
                free(jobs);
                return -ENOMEM;
        }
        /* All VMs at once, so VMs that do not answer cost one timeout in
         * all, not one each; a thread that cannot start samples inline. */
        for (size_t i = 0; i < s->n; i++) {
                jobs[i] = (struct job){ .o = &o, .name = s->names[i] };
                jobs[i].started = pthread_create(&jobs[i].thread, NULL, job_run, &jobs[i]) == 0;
                if (!jobs[i].started)
                        job_run(&jobs[i]);
        }
        for (size_t i = 0; i < s->n; i++) {
                struct job *j = &jobs[i];
                if (j->started)
                        pthread_join(j->thread, NULL);
                if (j->r == -ENOMEM)
                        r = -ENOMEM;
                /* A VM listed but gone meanwhile (cleanup) is left out of "all". */
                if (s->all && (j->r == -ENOENT || strcmp(j->vm.state, "destroyed") == 0))
                        continue;
                vms[n] = j->vm;
                for (size_t k = 0; k < s->n_vms; k++)
                        if (strcmp(s->vms[k].name, vms[n].name) == 0)
                                stats_rates(&vms[n], &s->vms[k]);
                n++;
        }
        free(jobs);
        if (r < 0) {
                free(vms);
                return r;
        }
        free(s->vms);
        s->vms = vms;
        s->n_vms = n;
        return 0;
}

void statsview_done(struct statsview *s) {
        strv_free(s->names);
        free(s->vms);
        *s = (struct statsview){ 0 };
}

void statsview_bytes(double b, char *buf, size_t len) {
        static const char units[] = "BKMGTPE";
        unsigned u = 0;
        if (b < 0) {
                snprintf(buf, len, "-");
                return;
        }
        while (b >= 1024 && u + 1 < sizeof units - 1) {
                b /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, len, "%.0f", b);
        else
                snprintf(buf, len, b < 10 ? "%.1f%c" : "%.0f%c", b, units[u]);
}

int statsview_parse_interval(const char *s, double *ret) {
        char *end;
        errno = 0;
        double x = strtod(s, &end);
        if (errno || end == s || *end || !isfinite(x) || x < 0.1 || x > 3600)
                return -EINVAL;
        *ret = x;
        return 0;
}
