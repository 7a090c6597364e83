#include "launcher/core/paths.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *paths_root_from_env(void) {
        const char *r = getenv("VRT_ROOT");
        return r && *r ? r : VRT_DEFAULT_ROOT;
}

const char *paths_runtime_from_env(void) {
        const char *r = getenv("VRT_RUNTIME_DIR");
        return r && *r ? r : VRT_DEFAULT_RUNTIME_DIR;
}

char *paths_absolute(const char *path) {
        if (path[0] == '/')
                return strdup(path);
        char *cwd = getcwd(NULL, 0);
        if (!cwd)
                return NULL;
        char *s = paths_join(cwd, path);
        free(cwd);
        return s;
}

char *paths_join(const char *a, const char *b) {
        char *s;
        size_t n = strlen(a);
        if (asprintf(&s, "%s%s%s", a, n && a[n - 1] == '/' ? "" : "/", b) < 0)
                return NULL;
        return s;
}

int vm_paths_init(struct vm_paths *p, const char *root, const char *runtime_dir, const char *name) {
        char *vm_rel = NULL;
        *p = (struct vm_paths){ 0 };
        if (asprintf(&vm_rel, "vm/%s", name) < 0)
                return -ENOMEM;
        p->vm_dir = paths_join(root, vm_rel);
        free(vm_rel);
        p->run_dir = paths_join(runtime_dir, name);
        if (!p->vm_dir || !p->run_dir)
                goto fail;
        struct { char **dst; char *const *dir; const char *file; } files[] = {
                { &p->instance, &p->vm_dir, "instance.properties" },
                { &p->overlay, &p->vm_dir, "hdd.ovl" },
                { &p->copy, &p->vm_dir, "hdd.img" },
                { &p->uefi_vars, &p->vm_dir, "OVMF_VARS.fd" },
                { &p->log_dir, &p->vm_dir, "log" },
                { &p->console_log, &p->vm_dir, "log/console.log" },
                { &p->init_log, &p->vm_dir, "init.log" },
                { &p->destroyed, &p->vm_dir, "DESTROYED" },
                { &p->qmp_sock, &p->run_dir, "qmp.sock" },
                { &p->monitor_sock, &p->run_dir, "monitor.sock" },
                { &p->console_sock, &p->run_dir, "console.sock" },
                { &p->agent_sock, &p->run_dir, "agent.sock" },
                { &p->pid_file, &p->run_dir, "pid" },
                { &p->lock_file, &p->run_dir, "lock" },
        };
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
                *files[i].dst = paths_join(*files[i].dir, files[i].file);
                if (!*files[i].dst)
                        goto fail;
        }
        return 0;
fail:
        vm_paths_done(p);
        return -ENOMEM;
}

void vm_paths_done(struct vm_paths *p) {
        char **all[] = { &p->vm_dir, &p->instance, &p->overlay, &p->copy, &p->uefi_vars, &p->log_dir,
                         &p->console_log, &p->init_log, &p->destroyed, &p->run_dir, &p->qmp_sock,
                         &p->monitor_sock, &p->console_sock, &p->agent_sock, &p->pid_file, &p->lock_file };
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
                free(*all[i]);
                *all[i] = NULL;
        }
}

char *paths_beside_self(const char *name) {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0)
                return NULL;
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (!slash)
                return NULL;
        *slash = '\0';
        char *cand = paths_join(self, name);
        if (cand && access(cand, X_OK) < 0) {
                free(cand);
                cand = NULL;
        }
        return cand;
}
