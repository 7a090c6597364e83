#include "launcher/core/vmstate.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "launcher/core/paths.h"
#include "launcher/core/util.h"

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

enum firstboot_state firstboot_state_of(const char *vm_dir, bool has_init) {
        /* INIT-FAILED first: only a successful run removes it. */
        if (vmstate_has_marker(vm_dir, FIRSTBOOT_FAILED_FILE))
                return FIRSTBOOT_INIT_FAILED;
        if (vmstate_has_marker(vm_dir, FIRSTBOOT_CREATED_FILE) || !has_init)
                return FIRSTBOOT_CREATED;
        return FIRSTBOOT_PENDING;
}

