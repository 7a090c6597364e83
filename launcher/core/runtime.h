/* runtime: a VM's runtime directory on local tmpfs — its lock, pid files
 * and listening sockets. The lock is what "the VM is running" means: a
 * supervisor holds it for its whole life, so stale files of a crashed run
 * are recognised (no lock holder) and removed by the next start. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "launcher/core/paths.h"

/* Creates the runtime dir and takes the VM's lock. Returns the lock fd
 * (keep it open while running), -EBUSY with the holder's pid in err when
 * another supervisor runs the VM, or another negative errno. */
int runtime_lock(const struct vm_paths *p, char *err, size_t errlen);

/* True when a supervisor holds the VM's lock. */
bool runtime_is_running(const struct vm_paths *p);

/* Removes stale sockets and pid files (call with the lock held). */
void runtime_clean(const struct vm_paths *p);

/* Removes everything including the lock file and the directory itself;
 * call last, with the lock still held, then close the lock fd. */
void runtime_remove(const struct vm_paths *p);

/* Creates a listening unix socket at path with the given mode and group
 * (gid -1: unchanged). Returns the fd or a negative errno. */
int runtime_listen(const char *path, mode_t mode, gid_t gid, char *err, size_t errlen);

/* Writes/reads "pid\n" files atomically. */
int runtime_write_pid(const char *path, pid_t pid);
int runtime_read_pid(const char *path, pid_t *ret);
