#include "launcher/core/snapstate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launcher/core/fileio.h"
#include "launcher/core/paths.h"
#include "launcher/core/props.h"

#define STATE_MAX_BYTES 16384

int snap_check_tag(const char *tag, char *err, size_t errlen) {
        size_t n = tag ? strlen(tag) : 0;
        if (n == 0) {
                snprintf(err, errlen, "empty snapshot tag");
                return -EINVAL;
        }
        if (n > SNAP_TAG_MAX) {
                snprintf(err, errlen, "snapshot tag \"%.80s\" longer than %d characters", tag, SNAP_TAG_MAX);
                return -EINVAL;
        }
        for (size_t i = 0; i < n; i++) {
                char c = tag[i];
                int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                         (c == '-' && i > 0);
                if (!ok) {
                        snprintf(err, errlen, "invalid snapshot tag \"%.80s\": use letters, digits and '-' (not first)", tag);
                        return -EINVAL;
                }
        }
        return 0;
}

bool snap_layer_name_valid(const char *name) {
        if (strcmp(name, "hdd.ovl") == 0 || strcmp(name, "hdd.img") == 0)
                return true;
        const char *p = name;
        if (strncmp(p, SNAP_DIR "/", sizeof SNAP_DIR) != 0)
                return false;
        p += sizeof SNAP_DIR;
        size_t digits = strspn(p, "0123456789");
        if (digits == 0 || digits > 10 || (p[0] == '0'))
                return false;
        return strcmp(p + digits, ".qcow2") == 0;
}

static int handle(const char *key, const char *value, unsigned line, void *userdata, char *err, size_t errlen) {
        struct snap_state *s = userdata;
        (void)line;
        if (strcmp(key, "active") == 0) {
                if (!snap_layer_name_valid(value)) {
                        snprintf(err, errlen, "active=%s: not a layer name (hdd.ovl, hdd.img or snapshots/N.qcow2)", value);
                        return -EINVAL;
                }
                snprintf(s->active, sizeof s->active, "%s", value);
                return 0;
        }
        if (strcmp(key, "next") == 0) {
                char *end;
                errno = 0;
                unsigned long v = strtoul(value, &end, 10);
                if (errno || *end || end == value || v == 0 || v > 4000000000UL) {
                        snprintf(err, errlen, "next=%s: not a number from 1", value);
                        return -EINVAL;
                }
                s->next = (unsigned)v;
                return 0;
        }
        if (strncmp(key, "snapshot.", 9) == 0 && key[9] && strspn(key + 9, "0123456789") == strlen(key + 9)) {
                char msg[256], tag[SNAP_TAG_MAX + 2], layer[SNAP_LAYER_MAX];
                long long t;
                int used = 0;
                if (s->n >= SNAP_MAX) {
                        snprintf(err, errlen, "more than %d snapshots", SNAP_MAX);
                        return -EINVAL;
                }
                if (sscanf(value, "%33s %31s %lld%n", tag, layer, &t, &used) != 3 || value[used] != '\0' ||
                    !snap_layer_name_valid(layer) || t < 0) {
                        snprintf(err, errlen, "%s=%s: not \"TAG LAYER TIME\"", key, value);
                        return -EINVAL;
                }
                if (snap_check_tag(tag, msg, sizeof msg) < 0) {
                        snprintf(err, errlen, "%s: %s", key, msg);
                        return -EINVAL;
                }
                if (snap_state_find(s, tag) >= 0) {
                        snprintf(err, errlen, "%s: snapshot %s appears twice", key, tag);
                        return -EINVAL;
                }
                struct snap_entry *e = &s->snaps[s->n++];
                snprintf(e->tag, sizeof e->tag, "%s", tag);
                snprintf(e->layer, sizeof e->layer, "%s", layer);
                e->time = t;
                return 0;
        }
        snprintf(err, errlen, "unknown key \"%s\"", key);
        return -EINVAL;
}

int snap_state_load(const char *vm_dir, struct snap_state *ret, char *err, size_t errlen) {
        char *path = paths_join(vm_dir, SNAP_STATE_FILE), *buf = NULL;
        size_t len = 0;
        int r;

        *ret = (struct snap_state){ .next = 1 };
        if (!path) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        r = fileio_read_regular(path, STATE_MAX_BYTES, &buf, &len, err, errlen);
        if (r == -ENOENT) {
                free(path);
                return 0;
        }
        if (r < 0)
                goto out;
        r = props_parse_buffer(path, buf, len, handle, ret, err, errlen);
        if (r < 0)
                goto out;
        if (!ret->active[0]) {
                snprintf(err, errlen, "%s: no active=", path);
                r = -EINVAL;
                goto out;
        }
        ret->present = true;
out:
        if (r < 0) {
                struct snap_state empty = { .next = 1 };
                *ret = empty;
        }
        free(buf);
        free(path);
        return r;
}

int snap_state_save(const char *vm_dir, const struct snap_state *s, char *err, size_t errlen) {
        char *dir = paths_join(vm_dir, SNAP_DIR), *path = paths_join(vm_dir, SNAP_STATE_FILE),
             *tmp = paths_join(vm_dir, SNAP_DIR "/.state.tmp");
        char buf[STATE_MAX_BYTES];
        size_t len = 0;
        int r = 0;

        if (!dir || !path || !tmp) {
                snprintf(err, errlen, "out of memory");
                r = -ENOMEM;
                goto out;
        }
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
                r = -errno;
                snprintf(err, errlen, "cannot create %s: %s", dir, strerror(-r));
                goto out;
        }
        len += (size_t)snprintf(buf + len, sizeof buf - len, "# vrt snapshots: the active layer and the tags\nactive=%s\nnext=%u\n",
                                s->active, s->next);
        for (size_t i = 0; i < s->n && len < sizeof buf; i++)
                len += (size_t)snprintf(buf + len, sizeof buf - len, "snapshot.%zu=%s %s %lld\n", i + 1,
                                        s->snaps[i].tag, s->snaps[i].layer, s->snaps[i].time);
        if (len >= sizeof buf) {
                snprintf(err, errlen, "%s: state too large", path);
                r = -E2BIG;
                goto out;
        }
        r = fileio_write_atomic(tmp, path, buf, len, 0644);
        if (r < 0) {
                snprintf(err, errlen, "cannot write %s: %s", path, strerror(-r));
                goto out;
        }
        fileio_fsync_dir(dir);
out:
        free(dir);
        free(path);
        free(tmp);
        return r;
}

int snap_state_find(const struct snap_state *s, const char *tag) {
        for (size_t i = 0; i < s->n; i++)
                if (strcmp(s->snaps[i].tag, tag) == 0)
                        return (int)i;
        return -1;
}

int snap_active_path(const char *vm_dir, char **ret, char *err, size_t errlen) {
        struct snap_state s;
        struct stat st;
        int r;

        *ret = NULL;
        r = snap_state_load(vm_dir, &s, err, errlen);
        if (r < 0)
                return r;
        if (s.present) {
                *ret = paths_join(vm_dir, s.active);
                if (!*ret) {
                        snprintf(err, errlen, "out of memory");
                        return -ENOMEM;
                }
                return 0;
        }
        const char *cand[] = { "hdd.ovl", "hdd.img" };
        for (size_t i = 0; i < 2; i++) {
                char *p = paths_join(vm_dir, cand[i]);
                if (!p) {
                        snprintf(err, errlen, "out of memory");
                        return -ENOMEM;
                }
                /* Only a disk that is not there at all makes a diskless VM. */
                if (lstat(p, &st) == 0) {
                        *ret = p;
                        return 0;
                }
                r = -errno;
                if (r != -ENOENT) {
                        snprintf(err, errlen, "%s: %s", p, strerror(-r));
                        free(p);
                        return r;
                }
                free(p);
        }
        return 0;
}
