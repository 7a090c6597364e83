/* Spool requests: entries an operator (or anyone who can write the
 * request directories) drops into inst/ start/ stop/ destroy/, run through
 * spool_run() with fake actions. Each input line is one entry: a byte
 * choosing the queue (and for inst/ whether the name gets ".properties"),
 * the entry's name up to a TAB, and the file's content after it (for
 * inst/, an instance.properties that the fake action loads with the real
 * instance_load()). A line starting with 'L' makes the entry a symlink to
 * vm/alpha/instance.properties instead, 'D' a directory. Lines past the
 * 32nd entry are ignored.
 *
 * Checks: an action only ever gets a valid name of an existing VM (and a
 * start never a destroyed one); every request is gone afterwards, except
 * hidden entries, which are left alone, in inst/ what is not a request
 * (no .properties suffix, or a directory), and a start of the one
 * startable VM that names another host (this one is VRT_HOST=fuzz-host);
 * the VMs stay. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>

#include "launcher/core/config.h"
#include "launcher/lifecycle/placement.h"
#include "launcher/lifecycle/spool.h"
#include "tools/fuzz/fuzz.h"

#define RUNTIME "/run/vrt"
#define MAX_ENTRIES 32

static char root[512];

static bool vm_exists(const char *name, const char *file) {
        char p[1024];
        struct stat st;
        snprintf(p, sizeof p, "%s/vm/%s/%s", root, name, file);
        return stat(p, &st) == 0;
}

static void check_name(const char *name, bool start) {
        char err[256];
        if (config_check_vm_name(name, RUNTIME, err, sizeof err) < 0 || !vm_exists(name, "instance.properties") ||
            (start && vm_exists(name, "DESTROYED"))) {
                fprintf(stderr, "spool acted on \"%s\"\n", name);
                abort();
        }
}

static int fake_instantiate(void *u, const char *path, char **ret_name, char *err, size_t errlen) {
        struct stat st;
        if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
                abort();        /* only a claimed regular file is handed on */
        struct instance *inst = NULL;
        int r = instance_load(path, "fuzz-vm", RUNTIME, &inst, err, errlen);
        if (r == 0) {
                *ret_name = strdup(inst->name);
                instance_free(inst);
        }
        return r;
}

static int fake_start(void *u, char *const *names, size_t n, struct service_result *res) {
        for (size_t i = 0; i < n; i++) {
                check_name(names[i], true);
                res[i].outcome = SERVICE_DONE;
                snprintf(res[i].message, sizeof res[i].message, "started");
        }
        return 0;
}

static int fake_stop(void *u, char *const *names, size_t n, bool force, struct service_result *res) {
        (void)force;
        for (size_t i = 0; i < n; i++) {
                check_name(names[i], false);
                res[i].outcome = SERVICE_DONE;
                snprintf(res[i].message, sizeof res[i].message, "stopped");
        }
        return 0;
}

static int fake_destroy(void *u, const char *name, struct service_result *res) {
        check_name(name, false);
        snprintf(res->message, sizeof res->message, "destroyed");
        return 0;
}

static const struct spool_handlers handlers = {
        .instantiate = fake_instantiate,
        .start = fake_start,
        .stop = fake_stop,
        .destroy = fake_destroy,
};

static void setup_root(void) {
        static const char *const dirs[] = { "vm", "vm/alpha", "vm/gone", "log" };
        snprintf(root, sizeof root, "%s/root", fuzz_dir());
        mkdir(root, 0755);
        for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
                char p[1024];
                snprintf(p, sizeof p, "%s/%s", root, dirs[i]);
                mkdir(p, 0755);
        }
        static const char props[] = "image=debian-12\nsize=small\n";
        fuzz_write("root/vm/alpha/instance.properties", props, sizeof props - 1);
        fuzz_write("root/vm/gone/instance.properties", props, sizeof props - 1);
        fuzz_write("root/vm/gone/DESTROYED", "", 0);
        fuzz_write("root/vrt.conf", "", 0);
        /* This host's name, and no host.conf limits (placement.h). */
        setenv("VRT_HOST", "fuzz-host", 1);
        char hc[1024];
        snprintf(hc, sizeof hc, "%s/no-host.conf", fuzz_dir());
        setenv("VRT_HOST_CONF", hc, 1);
}

/* start/alpha naming another host stays for that host. */
static bool left_for_other_host(const char *q, const char *n) {
        char rel[512], path[1024], err[256];
        struct spool_request req;
        if (strcmp(q, "start") != 0 || strcmp(n, "alpha") != 0)
                return false;
        snprintf(rel, sizeof rel, "%s/%s", q, n);
        snprintf(path, sizeof path, "%s/%s", root, rel);
        char text[4096];
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return false;
        ssize_t len = read(fd, text, sizeof text);
        close(fd);
        return len >= 0 && spool_request_parse(rel, text, (size_t)len, &req, err, sizeof err) == 0 && req.host[0] &&
               strcmp(req.host, "fuzz-host") != 0;
}

/* Every entry left in a queue must be hidden (or inst/'s own done/ and
 * failed/ with what was moved there). Returns whether the queue holds
 * anything at all (the next input starts from a fresh one then). */
static bool check_queue_empty(const char *q) {
        bool any = false;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", root, q);
        DIR *d = opendir(p);
        if (!d)
                abort();
        struct dirent *de;
        while ((de = readdir(d))) {
                const char *n = de->d_name;
                if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
                        continue;
                any = true;
                if (n[0] == '.' || (strcmp(q, "inst") == 0 && (strcmp(n, "done") == 0 || strcmp(n, "failed") == 0)))
                        continue;
                if (strcmp(q, "inst") == 0 && de->d_type == DT_DIR)
                        continue;       /* inst/ ignores directories, whatever their name */
                if (strcmp(q, "inst") == 0 && strlen(n) <= strlen(".properties"))
                        continue;
                if (strcmp(q, "inst") == 0 && strcmp(n + strlen(n) - strlen(".properties"), ".properties") != 0)
                        continue;       /* not a request: ignored */
                if (left_for_other_host(q, n))
                        continue;
                fprintf(stderr, "%s/%s left behind\n", q, n);
                abort();
        }
        closedir(d);
        return any;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const char *const queues[] = { "inst", "start", "stop", "destroy" };
        /* Queues the last run left empty are reused as they are: removing
         * and recreating them every time was a fifth of the harness's time. */
        static bool dirty[4] = { true, true, true, true };
        static unsigned runs;
        if (!root[0])
                setup_root();
        for (size_t i = 0; i < 4; i++) {
                char p[1024];
                if (!dirty[i])
                        continue;
                snprintf(p, sizeof p, "root/%s", queues[i]);
                fuzz_remove(p);
                snprintf(p, sizeof p, "%s/%s", root, queues[i]);
                if (mkdir(p, 0755) < 0)
                        abort();
        }
        /* Logs would grow with every run: start them afresh now and then
         * (appending to a log that has lines is what the spool does). */
        if (runs++ % 1000 == 0) {
                fuzz_remove("root/log");
                char logdir[1024];
                snprintf(logdir, sizeof logdir, "%s/log", root);
                if (mkdir(logdir, 0755) < 0)
                        abort();
        }
        const uint8_t *p = data, *end = data + size;
        /* At most MAX_ENTRIES entries: each costs the spool some 30
         * syscalls, and long runs grow inputs to hundreds of lines that
         * find nothing a few dozen do not. */
        unsigned entries = 0;
        while (p < end && entries < MAX_ENTRIES) {
                const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
                size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
                const uint8_t *line = p;
                p += n + 1;
                if (n < 2)
                        continue;
                char kind = (char)line[0];
                unsigned q = (unsigned)line[1] % 4;
                const uint8_t *tab = memchr(line + 2, '\t', n - 2);
                size_t name_len = tab ? (size_t)(tab - line - 2) : n - 2;
                char name[300];
                if (name_len == 0 || name_len > 200 || memchr(line + 2, '/', name_len) ||
                    memchr(line + 2, '\0', name_len))
                        continue;
                snprintf(name, sizeof name, "%.*s%s", (int)name_len, (const char *)line + 2,
                         q == 0 && (line[1] & 4) ? ".properties" : "");
                if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
                        continue;
                char rel[512], full[1024];
                snprintf(rel, sizeof rel, "root/%s/%s", queues[q], name);
                snprintf(full, sizeof full, "%s/%s/%s", root, queues[q], name);
                /* A second line naming the same file: the first one stands
                 * (a write would otherwise meet its symlink or directory). */
                struct stat ex;
                if (lstat(full, &ex) == 0)
                        continue;
                entries++;
                if (kind == 'L') {
                        char target[1024];
                        snprintf(target, sizeof target, "%s/vm/alpha/instance.properties", root);
                        symlink(target, full);
                } else if (kind == 'D') {
                        mkdir(full, 0755);
                } else {
                        const uint8_t *content = tab ? tab + 1 : line + n;
                        fuzz_write(rel, content, (size_t)(line + n - content));
                }
        }

        struct spool s = { .root = root, .runtime_dir = RUNTIME, .h = &handlers };
        struct spool_stats st = { 0 };
        if (spool_run(&s, &st) < 0)
                abort();
        for (size_t i = 0; i < 4; i++)
                dirty[i] = check_queue_empty(queues[i]);
        /* The VMs the requests name are still there, untouched. */
        if (!vm_exists("alpha", "instance.properties") || !vm_exists("gone", "DESTROYED"))
                abort();
        return 0;
}
