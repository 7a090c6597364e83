/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * QMP client: a small synchronous state machine
 * (greeting -> capabilities -> running -> disconnected).
 *
 * Messages are parsed incrementally from the byte stream with json-c's
 * tokener, so a message may be split at any byte and several may arrive in
 * one read. Events are queued until qmp_next_event() pops them. Replies are
 * matched by the integer "id" this client puts on every command; a reply
 * with any other id (or none, e.g. the late reply to a command that timed
 * out) is dropped silently and never taken for the answer to the current
 * command. Each message is capped at QMP_MAX_MESSAGE bytes; a longer one,
 * malformed JSON, or a top-level value that is not an object is a protocol
 * error, after which the client is disconnected. Every wait is bounded by a
 * timeout in milliseconds measured on CLOCK_MONOTONIC; negative timeouts are
 * rejected with -EINVAL. A client belongs to one thread at a time.
 */

#include <stddef.h>

struct json_object;

/* Longest single message accepted, in bytes (whitespace between messages
 * does not count). */
#define QMP_MAX_MESSAGE (1024 * 1024)

/* Events kept when nobody pops them; beyond this the oldest is dropped. */
#define QMP_MAX_EVENTS 1024

struct qmp;

/*
 * Wraps a connected stream socket (unix socket or socketpair). The fd is
 * made non-blocking and close-on-exec. Ownership passes to the client only
 * on success; on failure the caller still owns (and closes) fd.
 * Returns 0, -EBADF for a bad fd, -ENOTSOCK/-EPROTOTYPE if fd is not a
 * stream socket, -ENOMEM.
 */
int qmp_new_fd(int fd, struct qmp **ret);

/*
 * Connects to the unix socket at path, retrying while connect() fails with
 * ECONNREFUSED, ENOENT or EAGAIN (QEMU not listening yet) until timeout_ms
 * has passed; timeout_ms == 0 tries once. Returns 0, or the negative errno
 * of the last attempt (-ENOENT, -ECONNREFUSED, ...) with a message in err;
 * -ENOTSOCK at once if path exists but is not a socket; -ENAMETOOLONG if
 * path does not fit a sockaddr_un.
 */
int qmp_connect_unix(const char *path, int timeout_ms, struct qmp **ret, char *err, size_t errlen);

/*
 * Waits for the greeting (unless qmp_process_input() already saw it), sends
 * qmp_capabilities and waits for its reply, all within timeout_ms.
 * Returns 0 (also when already negotiated), -ETIMEDOUT, -ECONNRESET at EOF,
 * -EPROTO if the first message is not a greeting or the stream is
 * malformed, -EREMOTEIO if QEMU refuses qmp_capabilities (error.desc in
 * err), -ENOTCONN if already disconnected.
 */
int qmp_handshake(struct qmp *q, int timeout_ms, char *err, size_t errlen);

/*
 * Sends {"execute":cmd,"arguments":args,"id":N} and waits up to timeout_ms
 * for the reply carrying id N. args is borrowed, may be NULL (no
 * "arguments" member), otherwise must be an object. Events arriving
 * meanwhile are queued. On success *ret_return (if ret_return is not NULL)
 * gets a new reference to the "return" value.
 * Returns 0; -EREMOTEIO for an error reply, with error.desc verbatim in err;
 * -ETIMEDOUT (the connection stays usable, a late reply is dropped);
 * -ECONNRESET at EOF; -EPROTO on a malformed stream; -ENOTCONN if
 * disconnected; -EINVAL for bad arguments or before qmp_handshake().
 * A send that cannot complete (peer gone, or its buffer stays full until
 * the deadline) leaves the client disconnected.
 */
int qmp_execute(struct qmp *q, const char *cmd, struct json_object *args, int timeout_ms,
                struct json_object **ret_return, char *err, size_t errlen);

/*
 * Like qmp_execute(), for a command written by a user as JSON text:
 * {"execute":"NAME"} or {"execute":"NAME","arguments":{...}}. Other members
 * ("id", "exec-oob", ...) are refused: the client numbers its own commands.
 * Returns what qmp_execute() returns, or -EINVAL with a message for text
 * that is not such an object.
 */
int qmp_execute_json(struct qmp *q, const char *json, int timeout_ms,
                     struct json_object **ret_return, char *err, size_t errlen);

/* The socket, for poll() in an event loop; -1 once freed. Stop polling it
 * after qmp_process_input() returned an error. */
int qmp_get_fd(const struct qmp *q);

/*
 * Reads what is available without blocking (call when poll() says
 * readable; poll is level-triggered, so a very busy peer is read in
 * bounded slices), parses it and queues events. Replies nobody waits for
 * are dropped. Returns 0; -ECONNRESET at EOF; -EPROTO on malformed JSON or
 * an overlong message; -ENOTCONN if already disconnected. Events that
 * arrived before EOF or the error stay queued for qmp_next_event().
 */
int qmp_process_input(struct qmp *q);

/* Parses n bytes as if one read() had returned them: what
 * qmp_process_input() does with each chunk it reads (for the fuzz harness,
 * which feeds a stream without a syscall per chunk). Returns 0, -EPROTO as
 * qmp_process_input() does, -ENOTCONN if already disconnected. */
int qmp_feed(struct qmp *q, const void *buf, size_t n);

/* Pops the oldest queued event (a new reference to the whole message,
 * {"event":..., "data":..., "timestamp":...}) into *ret_event and returns
 * 1, or returns 0 when none is queued. */
int qmp_next_event(struct qmp *q, struct json_object **ret_event);

/* Number of events dropped because the queue was full. */
size_t qmp_events_dropped(const struct qmp *q);

/* The "version" object of the server's greeting ({"qemu": {"major", "minor",
 * "micro"}, "package"}, the shape query-version returns), borrowed; NULL
 * before the greeting or when it carried none. Saves a round trip. */
const struct json_object *qmp_server_version(const struct qmp *q);

/* Closes the socket and frees queued events. Accepts NULL; returns NULL. */
struct qmp *qmp_free(struct qmp *q);
