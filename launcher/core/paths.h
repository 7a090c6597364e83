/* paths: where a VM's files live, under the vrt root (shared, maybe NFS)
 * and the runtime directory (local tmpfs). Computed, never read. */
#pragma once

#define VRT_DEFAULT_ROOT "/var/lib/vrt"
#define VRT_DEFAULT_RUNTIME_DIR "/run/vrt"

struct vm_paths {
        char *vm_dir;           /* ROOT/vm/NAME */
        char *instance;         /* ROOT/vm/NAME/instance.properties */
        char *overlay;          /* ROOT/vm/NAME/hdd.ovl */
        char *copy;             /* ROOT/vm/NAME/hdd.img */
        char *uefi_vars;        /* ROOT/vm/NAME/OVMF_VARS.fd */
        char *log_dir;          /* ROOT/vm/NAME/log */
        char *console_log;      /* ROOT/vm/NAME/log/console.log */
        char *init_log;         /* ROOT/vm/NAME/init.log */
        char *destroyed;        /* ROOT/vm/NAME/DESTROYED */
        char *run_dir;          /* RUNTIME/NAME */
        char *qmp_sock;         /* RUNTIME/NAME/qmp.sock (the supervisor's) */
        char *monitor_sock;     /* RUNTIME/NAME/monitor.sock (scripts') */
        char *agent_sock;       /* RUNTIME/NAME/agent.sock (guest agent channel) */
        char *console_sock;     /* RUNTIME/NAME/console.sock */
        char *pid_file;         /* RUNTIME/NAME/pid */
        char *lock_file;        /* RUNTIME/NAME/lock */
};

/* The root: $VRT_ROOT, else /var/lib/vrt. The runtime dir: $VRT_RUNTIME_DIR,
 * else /run/vrt. Only the CLI and vrt-launch mains call these. */
const char *paths_root_from_env(void);
const char *paths_runtime_from_env(void);

/* Makes a root given on the command line or in the environment absolute,
 * since it ends up in QEMU's arguments. New string or NULL. */
char *paths_absolute(const char *path);

/* Returns 0 or -ENOMEM. */
int vm_paths_init(struct vm_paths *p, const char *root, const char *runtime_dir, const char *name);
void vm_paths_done(struct vm_paths *p);

/* ROOT/REL as a new string, or NULL. */
char *paths_join(const char *a, const char *b);

/* The program NAME in the directory of the running program, as a new
 * string, when it is there and executable; else NULL. */
char *paths_beside_self(const char *name);
