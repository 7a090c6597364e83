/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Guest agent client: QEMU's guest agent protocol (qemu-ga) on the host end
 * of the VM's virtio-serial port org.qemu.guest_agent.0 (agent.sock).
 *
 * The protocol is QMP's JSON without a greeting, without capabilities
 * negotiation and without command ids: replies come in order. A previous
 * client may have left a command's reply unread, or half a command in the
 * guest's parser, so every connection starts with guest-sync-delimited: a
 * 0xFF byte (the guest resets its parser on it), then the command with a
 * random id; the guest answers with 0xFF followed by {"return": id}, and
 * everything before that sentinel is stale. Every call is bounded by a
 * timeout in milliseconds; a guest without a running agent never answers,
 * and a timed-out call leaves the client unusable (its late reply would be
 * taken for the next one's), so callers connect afresh.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;

/* Longest single message accepted, in bytes. */
#define AGENT_MAX_MESSAGE (1024 * 1024)
/* Default bound of one call, connect + sync included. */
#define AGENT_TIMEOUT_MS 1500

/* The incremental reply parser, separate from the socket for the fuzzer. */
struct agent_stream;

/* A parser that skips everything up to the first 0xFF when
 * await_sentinel, else takes JSON objects from the first byte. NULL when
 * out of memory. */
struct agent_stream *agent_stream_new(bool await_sentinel);
struct agent_stream *agent_stream_free(struct agent_stream *s);
/* From now on, skip everything up to the next 0xFF. */
void agent_stream_await_sentinel(struct agent_stream *s);

/* Feeds n bytes. Each complete top-level object goes to cb (borrowed
 * reference; cb returns 0 to go on, 1 to stop after it, <0 to fail), and a
 * 0xFF byte always resets the parser. Returns 0, 1 when cb stopped (*used
 * bytes consumed), the negative value of cb, or -EPROTO for malformed JSON,
 * a top-level value that is not an object, or a message longer than
 * AGENT_MAX_MESSAGE (skipping to a sentinel never fails). */
int agent_stream_feed(struct agent_stream *s, const char *p, size_t n, size_t *used,
                      int (*cb)(void *ud, struct json_object *msg), void *ud);

struct agent;

/* Connects to the unix socket at path and synchronises the stream
 * (guest-sync-delimited), all within timeout_ms. Returns 0; -ENOENT or
 * -ECONNREFUSED (no socket: the VM does not run); -ETIMEDOUT (no agent
 * answered: none installed or running in the guest, or another client
 * holds the channel); -ECONNRESET; -EPROTO; one line in err. */
int agent_connect(const char *path, int timeout_ms, struct agent **ret, char *err, size_t errlen);

/* Sends {"execute":cmd,"arguments":args} (args borrowed, NULL: none, else
 * an object) and waits up to timeout_ms for the reply. On success
 * *ret_return (if not NULL) gets a new reference to "return". Returns 0;
 * -EREMOTEIO for an error reply (error.desc verbatim in err); -ETIMEDOUT;
 * -ECONNRESET; -EPROTO; -EINVAL for bad arguments or an unusable client. */
int agent_execute(struct agent *a, const char *cmd, struct json_object *args, int timeout_ms,
                  struct json_object **ret_return, char *err, size_t errlen);

/* For commands that answer nothing on success (guest-shutdown): sends and
 * waits up to wait_ms for an error reply. Returns 0 when none came (or the
 * channel closed), -EREMOTEIO with the error, or a send failure. */
int agent_execute_noreply(struct agent *a, const char *cmd, struct json_object *args, int wait_ms,
                          char *err, size_t errlen);

struct agent *agent_free(struct agent *a);
