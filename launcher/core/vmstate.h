/* The state a VM's directory records across runs: the markers its first
 * boot leaves (CREATED, INIT-FAILED) and what they mean together.
 *
 * A VM without init= is created as soon as its files exist; one with
 * init= is created once its init script reported success, and has failed
 * while INIT-FAILED exists. With init= and neither marker, the first boot
 * has not finished (it runs right now, or the run was interrupted). */
#pragma once

#include <stdbool.h>

#define FIRSTBOOT_CREATED_FILE "CREATED"
#define FIRSTBOOT_FAILED_FILE "INIT-FAILED"

enum firstboot_state {
        FIRSTBOOT_CREATED,      /* "created" */
        FIRSTBOOT_INIT_FAILED,  /* "init-failed" */
        FIRSTBOOT_PENDING,      /* "init-pending": init= set, no marker yet */
        _FIRSTBOOT_STATE_MAX,
        _FIRSTBOOT_STATE_INVALID = -1,
};

const char *firstboot_state_to_string(enum firstboot_state s);
enum firstboot_state firstboot_state_from_string(const char *s);

/* The state of the VM in vm_dir, from its markers; has_init: its
 * instance.properties has init=. Never fails: a marker that cannot be
 * stat()ed counts as absent. */
enum firstboot_state firstboot_state_of(const char *vm_dir, bool has_init);

/* Whether vm_dir/FILE exists (lstat: a symlink counts, never followed). */
bool vmstate_has_marker(const char *vm_dir, const char *file);
