/* migreq: the files a live migration passes through the shared root.
 *
 *   ROOT/migrate/NAME         the request, written by `vrt migrate` on the
 *                             source: host=DEST, from=SRC, timeout=S. While
 *                             it exists the migration goes on; the source
 *                             removes it when it gives up, and the
 *                             destination supervisor then quits.
 *   ROOT/migrate/NAME.answer  the destination's answer: state=starting
 *                             (claimed by its spool), state=listening with
 *                             address=tcp:IP:PORT, qemu=VERSION, cpu=MODEL,
 *                             state=running (it holds the lease and the
 *                             guest runs there; resumed_us= the wall clock
 *                             at its cont), or state=refused with
 *                             error=ONE LINE.
 *   ROOT/hosts/HOST           what a host runs VMs with: qemu=VERSION and
 *                             cpu=MODEL, rewritten by each supervisor that
 *                             starts QEMU there; `vrt migrate` compares it
 *                             with its own before it starts anything.
 *
 *   RUNTIME/NAME.incoming     on the destination host, in the runtime
 *                             directory: the spool's word to the
 *                             vrt-launch NAME that systemd starts as
 *                             vrt@NAME.service (ExecStart has no
 *                             --incoming) that it is the target of a live
 *                             migration: timeout=S, since=EPOCH. Taken
 *                             (removed) by that vrt-launch; one older than
 *                             MIGREQ_INCOMING_MAX_AGE_S is ignored.
 *
 * Every file is written to a temporary name and renamed, so a reader sees
 * an old or a new one, never half of one. Values are one line each. */
#pragma once

#include <stddef.h>

#define MIGREQ_DIR "migrate"
#define MIGREQ_HOSTS_DIR "hosts"
#define MIGREQ_TEXT_MAX 2048

#define MIGREQ_INCOMING_SUFFIX ".incoming"
#define MIGREQ_INCOMING_MAX_AGE_S 120

/* Writes RUNTIME/NAME.incoming (the runtime directory created if need be).
 * Returns 0 or a negative errno. */
int migreq_incoming_mark(const char *runtime_dir, const char *name, unsigned timeout_s);

/* Takes RUNTIME/NAME.incoming: removes it and returns 1 with its timeout
 * when it is a regular file of this user written within the last
 * MIGREQ_INCOMING_MAX_AGE_S seconds; 0 when there is none (a stale or
 * foreign one is removed, resp. left, and ignored); or a negative errno. */
int migreq_incoming_take(const char *runtime_dir, const char *name, unsigned *ret_timeout_s);

/* Removes RUNTIME/NAME.incoming (a start that did not happen). */
void migreq_incoming_remove(const char *runtime_dir, const char *name);

/* Writes text as ROOT/DIR/FILE (DIR created). Returns 0 or a negative errno. */
int migreq_write(const char *root, const char *dir, const char *file, const char *text);

/* Reads ROOT/DIR/FILE into buf (NUL-terminated). 0, -ENOENT, or another
 * negative errno (-EFBIG: longer than len-1). */
int migreq_read(const char *root, const char *dir, const char *file, char *buf, size_t len);

/* Removes ROOT/DIR/FILE; a missing one is fine. */
void migreq_remove(const char *root, const char *dir, const char *file);

/* Slack after a request's timeout= during which it still counts as going
 * on: the handover and the destination's cleanup (migrate.c waits 30 s). */
#define MIGREQ_LIVE_SLACK_S 60

/* Whether ROOT/migrate/NAME asks for a migration that may still be going on
 * (written less than its timeout= plus MIGREQ_LIVE_SLACK_S ago). While one
 * is, the lease passes from source to destination and may be free for a
 * moment: nobody else may take it then (a start, destroy or snapshot on a
 * third host, or the source's own). Returns -EAGAIN (temporary: exit 1)
 * with err "NAME is being migrated from host A to host B; WHAT", 0 when
 * there is none (or only a stale one, or a file no vrt migrate wrote: not
 * regular, too long), another negative errno with err when it cannot be
 * read. */
int migreq_check_migrating(const char *root, const char *name, const char *what, char *err, size_t errlen);

/* Copies the value of key= (first line that has it) from text into buf.
 * Returns 0 or -ENOENT. Control characters in the value become '?'. */
int migreq_get(const char *text, const char *key, char *buf, size_t len);
