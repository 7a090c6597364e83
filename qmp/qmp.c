/* SPDX-License-Identifier: MIT */
#include "qmp/qmp.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

/* json-c keeps a fixed stack of this many levels per tokener. QEMU's own
 * messages stay shallow, but query-block nests one level per backing file. */
#define QMP_MAX_DEPTH 512

/* One read() at most this large; qmp_process_input() does a bounded number
 * of them so one chatty peer cannot hold an event loop. */
#define QMP_READ_CHUNK 65536
#define QMP_READS_PER_CALL 16

/* Pause between connect() attempts while QEMU has not created its socket. */
#define QMP_CONNECT_RETRY_MS 10

enum qmp_state {
        QMP_STATE_GREETING,     /* waiting for {"QMP": ...} */
        QMP_STATE_CAPABILITIES, /* greeting seen, qmp_capabilities not done */
        QMP_STATE_RUNNING,
        QMP_STATE_DISCONNECTED,
};

struct qmp {
        int fd;
        enum qmp_state state;
        struct json_tokener *tok;
        size_t msg_len; /* bytes of the partial message inside tok */
        int64_t next_id;

        /* The command in flight, and its reply once it arrived. */
        bool waiting;
        int64_t wait_id;
        struct json_object *reply;

        /* The greeting's "version" member (query-version's shape), or NULL. */
        struct json_object *version;

        /* Ring of queued events, grown up to QMP_MAX_EVENTS. */
        struct json_object **events;
        size_t ev_cap, ev_head, ev_len, ev_dropped;

        char why[256]; /* why the connection went down */
        char buf[QMP_READ_CHUNK];       /* last: qmp_new_fd() zeroes what comes before */
};

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt, ...) {
        va_list ap;

        if (!err || errlen == 0)
                return;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
}

__attribute__((format(printf, 2, 3))) static void disconnect(struct qmp *q, const char *fmt, ...) {
        va_list ap;

        /* The first reason wins: later errors are consequences of it. */
        if (q->state == QMP_STATE_DISCONNECTED)
                return;
        q->state = QMP_STATE_DISCONNECTED;
        va_start(ap, fmt);
        vsnprintf(q->why, sizeof q->why, fmt, ap);
        va_end(ap);
}

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t deadline_after(int timeout_ms) {
        return now_ns() + (uint64_t)timeout_ms * 1000000u;
}

/* Milliseconds left until deadline, rounded up so poll() never wakes early. */
static int remaining_ms(uint64_t deadline) {
        uint64_t now = now_ns(), ms;

        if (now >= deadline)
                return 0;
        ms = (deadline - now + 999999u) / 1000000u;
        return ms > INT_MAX ? INT_MAX : (int)ms;
}

static int queue_event(struct qmp *q, struct json_object *ev) {
        if (q->ev_len == QMP_MAX_EVENTS) {
                json_object_put(q->events[q->ev_head]);
                q->ev_head = (q->ev_head + 1) % q->ev_cap;
                q->ev_len--;
                q->ev_dropped++;
        }
        if (q->ev_len == q->ev_cap) {
                size_t cap = q->ev_cap ? q->ev_cap * 2 : 16;
                struct json_object **ring;

                if (cap > QMP_MAX_EVENTS)
                        cap = QMP_MAX_EVENTS;
                ring = calloc(cap, sizeof *ring);
                if (!ring) {
                        json_object_put(ev);
                        return -ENOMEM;
                }
                for (size_t i = 0; i < q->ev_len; i++)
                        ring[i] = q->events[(q->ev_head + i) % q->ev_cap];
                free(q->events);
                q->events = ring;
                q->ev_cap = cap;
                q->ev_head = 0;
        }
        q->events[(q->ev_head + q->ev_len) % q->ev_cap] = ev;
        q->ev_len++;
        return 0;
}

static bool is_our_reply(const struct qmp *q, struct json_object *msg) {
        struct json_object *id;

        if (!q->waiting || q->reply)
                return false;
        if (!json_object_object_get_ex(msg, "id", &id) || !json_object_is_type(id, json_type_int))
                return false;
        return json_object_get_int64(id) == q->wait_id;
}

/* Takes ownership of msg (which may be NULL for a top-level JSON null). */
static int dispatch(struct qmp *q, struct json_object *msg) {
        if (!json_object_is_type(msg, json_type_object)) {
                json_object_put(msg);
                disconnect(q, "received a message that is not a JSON object");
                return -EPROTO;
        }

        if (q->state == QMP_STATE_GREETING) {
                struct json_object *v;

                if (!json_object_object_get_ex(msg, "QMP", &v) || !json_object_is_type(v, json_type_object)) {
                        json_object_put(msg);
                        disconnect(q, "first message is not a QMP greeting");
                        return -EPROTO;
                }
                struct json_object *version;
                if (json_object_object_get_ex(v, "version", &version) && json_object_is_type(version, json_type_object))
                        q->version = json_object_get(version);
                json_object_put(msg);
                q->state = QMP_STATE_CAPABILITIES;
                return 0;
        }

        if (json_object_object_get_ex(msg, "event", NULL)) {
                int r = queue_event(q, msg);
                if (r < 0)
                        disconnect(q, "out of memory queueing an event");
                return r;
        }

        if (json_object_object_get_ex(msg, "return", NULL) || json_object_object_get_ex(msg, "error", NULL)) {
                if (is_our_reply(q, msg)) {
                        q->reply = msg;
                        return 0;
                }
                /* A late reply to a command that timed out, or one without
                 * an id: never the answer to the command in flight. */
                json_object_put(msg);
                return 0;
        }

        /* Not a kind of message QMP defines today; ignore it. */
        json_object_put(msg);
        return 0;
}

static bool is_space(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Feeds bytes to the tokener, dispatching each complete message. */
static int feed(struct qmp *q, const char *p, size_t n) {
        while (n > 0) {
                struct json_object *msg;
                enum json_tokener_error jerr;
                size_t room, len, used;
                int r;

                /* Whitespace between messages is not part of any message. */
                if (q->msg_len == 0 && is_space(*p)) {
                        p++;
                        n--;
                        continue;
                }

                room = QMP_MAX_MESSAGE - q->msg_len;
                len = n < room ? n : room;
                msg = json_tokener_parse_ex(q->tok, p, (int)len);
                jerr = json_tokener_get_error(q->tok);

                if (!msg && jerr == json_tokener_continue) {
                        q->msg_len += len;
                        p += len;
                        n -= len;
                        if (q->msg_len == QMP_MAX_MESSAGE) {
                                disconnect(q, "message longer than %d bytes", QMP_MAX_MESSAGE);
                                return -EPROTO;
                        }
                        continue;
                }
                if (jerr != json_tokener_success) {
                        disconnect(q, "malformed JSON: %s", json_tokener_error_desc(jerr));
                        return -EPROTO;
                }

                used = json_tokener_get_parse_end(q->tok);
                json_tokener_reset(q->tok);
                q->msg_len = 0;
                if (used == 0 || used > len) { /* cannot happen; never loop forever */
                        json_object_put(msg);
                        disconnect(q, "JSON parser made no progress");
                        return -EPROTO;
                }
                p += used;
                n -= used;

                r = dispatch(q, msg);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* One non-blocking read, parsed. Returns 1 if bytes were read, 0 if none
 * were available, or a negative errno after which the client is
 * disconnected. */
static int read_and_parse(struct qmp *q) {
        ssize_t k;
        int r;

        do
                k = recv(q->fd, q->buf, sizeof q->buf, MSG_DONTWAIT);
        while (k < 0 && errno == EINTR);

        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return 0;
        if (k < 0 && errno == ECONNRESET) {
                disconnect(q, "connection reset by peer");
                return -ECONNRESET;
        }
        if (k < 0) {
                r = -errno;
                disconnect(q, "read: %s", strerror(-r));
                return r;
        }
        if (k == 0) {
                disconnect(q, "connection closed by peer");
                return -ECONNRESET;
        }
        r = feed(q, q->buf, (size_t)k);
        return r < 0 ? r : 1;
}

/* Reads and parses at least one chunk, waiting for it until deadline.
 * Returns 0, -ETIMEDOUT, or the error of read_and_parse(). */
static int wait_input(struct qmp *q, uint64_t deadline) {
        for (;;) {
                struct pollfd pfd = { .fd = q->fd, .events = POLLIN };
                int r, ms;

                r = read_and_parse(q);
                if (r != 0)
                        return r < 0 ? r : 0;

                ms = remaining_ms(deadline);
                if (ms == 0)
                        return -ETIMEDOUT;
                r = poll(&pfd, 1, ms);
                if (r < 0 && errno != EINTR) {
                        r = -errno;
                        disconnect(q, "poll: %s", strerror(-r));
                        return r;
                }
                /* Readable, hung up, timed out or interrupted: the next
                 * read and the deadline check sort it out. */
        }
}

static int send_all(struct qmp *q, const char *p, size_t n, uint64_t deadline) {
        size_t sent = 0;

        while (sent < n) {
                struct pollfd pfd = { .fd = q->fd, .events = POLLOUT };
                ssize_t k;
                int r, ms;

                k = send(q->fd, p + sent, n - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k >= 0) {
                        sent += (size_t)k;
                        continue;
                }
                if (errno == EINTR)
                        continue;
                if (errno == EPIPE || errno == ECONNRESET) {
                        disconnect(q, "connection closed by peer");
                        return -ECONNRESET;
                }
                if (errno != EAGAIN && errno != EWOULDBLOCK) {
                        r = -errno;
                        disconnect(q, "send: %s", strerror(-r));
                        return r;
                }

                ms = remaining_ms(deadline);
                if (ms == 0) {
                        /* Half a command on the wire leaves the stream
                         * unusable; an unsent one does not. */
                        if (sent > 0)
                                disconnect(q, "timed out sending a command");
                        return -ETIMEDOUT;
                }
                if (poll(&pfd, 1, ms) < 0 && errno != EINTR) {
                        r = -errno;
                        disconnect(q, "poll: %s", strerror(-r));
                        return r;
                }
        }
        return 0;
}

/* Describes a failed wait for the user. */
static int wait_failed(struct qmp *q, int r, const char *what, int timeout_ms, char *err, size_t errlen) {
        if (r == -ETIMEDOUT)
                set_err(err, errlen, "QMP %s: no reply within %d ms", what, timeout_ms);
        else
                set_err(err, errlen, "QMP %s: %s", what, q->why[0] ? q->why : strerror(-r));
        return r;
}

/* Formats {"execute":cmd,"arguments":args,"id":id} plus CRLF into a new
 * buffer. */
static int format_command(const char *cmd, struct json_object *args, int64_t id, char **ret_line,
                          size_t *ret_len) {
        struct json_object *msg = NULL;
        const char *s;
        char *line = NULL;
        size_t len;
        int r = -ENOMEM;

        msg = json_object_new_object();
        if (!msg)
                goto fail;
        if (json_object_object_add(msg, "execute", json_object_new_string(cmd)) < 0)
                goto fail;
        if (args && json_object_object_add(msg, "arguments", json_object_get(args)) < 0)
                goto fail;
        if (json_object_object_add(msg, "id", json_object_new_int64(id)) < 0)
                goto fail;
        s = json_object_to_json_string_length(msg, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        if (!s)
                goto fail;
        line = malloc(len + 2);
        if (!line)
                goto fail;
        memcpy(line, s, len);
        memcpy(line + len, "\r\n", 2);
        *ret_line = line;
        *ret_len = len + 2;
        r = 0;
fail:
        json_object_put(msg);
        return r;
}

/* Sends one command and waits for its reply until deadline; the state is
 * not checked. timeout_ms is only for messages. */
static int transact(struct qmp *q, const char *cmd, struct json_object *args, uint64_t deadline, int timeout_ms,
                    struct json_object **ret_return, char *err, size_t errlen) {
        struct json_object *reply = NULL, *e, *v;
        char *line = NULL;
        size_t len;
        int r;

        r = format_command(cmd, args, q->next_id, &line, &len);
        if (r < 0) {
                set_err(err, errlen, "QMP %s: %s", cmd, strerror(-r));
                goto fail;
        }
        q->waiting = true;
        q->wait_id = q->next_id++;

        r = send_all(q, line, len, deadline);
        if (r == -ETIMEDOUT) {
                set_err(err, errlen, "QMP %s: could not send within %d ms", cmd, timeout_ms);
                goto fail;
        }
        if (r < 0) {
                wait_failed(q, r, cmd, timeout_ms, err, errlen);
                goto fail;
        }

        while (!q->reply) {
                r = wait_input(q, deadline);
                /* A reply that arrived just before an error still counts:
                 * the command did run. */
                if (r < 0 && !q->reply) {
                        wait_failed(q, r, cmd, timeout_ms, err, errlen);
                        goto fail;
                }
        }
        reply = q->reply;
        q->reply = NULL;

        if (json_object_object_get_ex(reply, "error", &e)) {
                if (json_object_object_get_ex(e, "desc", &v) && json_object_is_type(v, json_type_string))
                        set_err(err, errlen, "%s", json_object_get_string(v));
                else
                        set_err(err, errlen, "QMP %s: error reply without a description", cmd);
                r = -EREMOTEIO;
                goto fail;
        }
        json_object_object_get_ex(reply, "return", &v);
        if (ret_return)
                *ret_return = json_object_get(v);
        r = 0;

fail:
        q->waiting = false;
        json_object_put(reply);
        free(line);
        return r;
}

int qmp_new_fd(int fd, struct qmp **ret) {
        struct qmp *q = NULL;
        int type, flags, r;
        socklen_t sl = sizeof type;

        if (fd < 0)
                return -EBADF;
        if (!ret)
                return -EINVAL;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) < 0)
                return -errno;
        if (type != SOCK_STREAM)
                return -EPROTOTYPE;

        /* Everything but the read buffer zeroed: recv() fills that, and
         * clearing 64 KiB per connection was most of the fuzz harness's time. */
        q = malloc(sizeof *q);
        if (!q)
                return -ENOMEM;
        memset(q, 0, offsetof(struct qmp, buf));
        q->fd = -1;
        q->next_id = 1;
        q->tok = json_tokener_new_ex(QMP_MAX_DEPTH);
        if (!q->tok) {
                r = -ENOMEM;
                goto fail;
        }
        /* Strict: the peer is a program, and trailing bytes are the next
         * message, not an error. */
        json_tokener_set_flags(q->tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS);

        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
                r = -errno;
                goto fail;
        }
        q->fd = fd;
        *ret = q;
        return 0;

fail:
        qmp_free(q);
        return r;
}

int qmp_connect_unix(const char *path, int timeout_ms, struct qmp **ret, char *err, size_t errlen) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct qmp *q = NULL;
        struct stat st;
        uint64_t deadline;
        int fd = -1, r;

        if (!path || !*path || timeout_ms < 0 || !ret) {
                set_err(err, errlen, "QMP connect: invalid arguments");
                return -EINVAL;
        }
        if (strlen(path) >= sizeof sa.sun_path) {
                set_err(err, errlen, "connect %s: path longer than %zu bytes", path, sizeof sa.sun_path - 1);
                return -ENAMETOOLONG;
        }
        memcpy(sa.sun_path, path, strlen(path) + 1);
        deadline = deadline_after(timeout_ms);

        for (;;) {
                int ms;

                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0) {
                        r = -errno;
                        set_err(err, errlen, "socket: %s", strerror(-r));
                        goto fail;
                }
                if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
                        break;
                r = -errno;
                close(fd);
                fd = -1;

                /* Linux says ECONNREFUSED for a path that is not a socket
                 * at all; that will not change by waiting. */
                if (r == -ECONNREFUSED && stat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
                        r = -ENOTSOCK;
                        set_err(err, errlen, "connect %s: not a socket", path);
                        goto fail;
                }
                /* Not there yet, not listening yet, or backlog full: QEMU
                 * is still starting. Anything else will not get better. */
                if (r != -ENOENT && r != -ECONNREFUSED && r != -EAGAIN && r != -EINTR) {
                        set_err(err, errlen, "connect %s: %s", path, strerror(-r));
                        goto fail;
                }
                ms = remaining_ms(deadline);
                if (ms == 0) {
                        if (timeout_ms > 0)
                                set_err(err, errlen, "connect %s: %s (still failing after %d ms)", path,
                                        strerror(-r), timeout_ms);
                        else
                                set_err(err, errlen, "connect %s: %s", path, strerror(-r));
                        goto fail;
                }
                poll(NULL, 0, ms < QMP_CONNECT_RETRY_MS ? ms : QMP_CONNECT_RETRY_MS);
        }

        r = qmp_new_fd(fd, &q);
        if (r < 0) {
                set_err(err, errlen, "connect %s: %s", path, strerror(-r));
                goto fail;
        }
        *ret = q;
        return 0;

fail:
        if (fd >= 0)
                close(fd);
        return r;
}

int qmp_handshake(struct qmp *q, int timeout_ms, char *err, size_t errlen) {
        uint64_t deadline;
        int r;

        if (!q || timeout_ms < 0) {
                set_err(err, errlen, "QMP handshake: invalid arguments");
                return -EINVAL;
        }
        if (q->state == QMP_STATE_RUNNING)
                return 0;
        if (q->state == QMP_STATE_DISCONNECTED) {
                set_err(err, errlen, "QMP handshake: not connected (%s)", q->why);
                return -ENOTCONN;
        }

        deadline = deadline_after(timeout_ms);
        while (q->state == QMP_STATE_GREETING) {
                r = wait_input(q, deadline);
                if (r == -ETIMEDOUT) {
                        set_err(err, errlen, "QMP handshake: no greeting within %d ms", timeout_ms);
                        return r;
                }
                if (r < 0) {
                        set_err(err, errlen, "QMP handshake: %s", q->why);
                        return r;
                }
        }
        if (q->state != QMP_STATE_CAPABILITIES) {
                set_err(err, errlen, "QMP handshake: %s", q->why);
                return -ENOTCONN;
        }

        /* One deadline for the whole handshake. */
        r = transact(q, "qmp_capabilities", NULL, deadline, timeout_ms, NULL, err, errlen);
        if (r < 0)
                return r;
        q->state = QMP_STATE_RUNNING;
        return 0;
}

int qmp_execute(struct qmp *q, const char *cmd, struct json_object *args, int timeout_ms,
                struct json_object **ret_return, char *err, size_t errlen) {
        if (!q || !cmd || !*cmd || timeout_ms < 0 || (args && !json_object_is_type(args, json_type_object))) {
                set_err(err, errlen, "QMP %s: invalid arguments", cmd && *cmd ? cmd : "execute");
                return -EINVAL;
        }
        if (q->state == QMP_STATE_DISCONNECTED) {
                set_err(err, errlen, "QMP %s: not connected (%s)", cmd, q->why);
                return -ENOTCONN;
        }
        if (q->state != QMP_STATE_RUNNING) {
                set_err(err, errlen, "QMP %s: handshake not done", cmd);
                return -EINVAL;
        }
        return transact(q, cmd, args, deadline_after(timeout_ms), timeout_ms, ret_return, err, errlen);
}

int qmp_execute_json(struct qmp *q, const char *json, int timeout_ms,
                     struct json_object **ret_return, char *err, size_t errlen) {
        struct json_tokener *tok = NULL;
        struct json_object *obj = NULL, *cmd = NULL, *args = NULL;
        enum json_tokener_error jerr;
        size_t len;
        int r;

        if (!json) {
                set_err(err, errlen, "QMP command: invalid arguments");
                return -EINVAL;
        }
        len = strlen(json);
        if (len > INT_MAX) {
                set_err(err, errlen, "QMP command: too long");
                return -EINVAL;
        }
        tok = json_tokener_new();
        if (!tok) {
                set_err(err, errlen, "QMP command: out of memory");
                return -ENOMEM;
        }
        /* Strict without trailing characters: the whole text is one value. */
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        obj = json_tokener_parse_ex(tok, json, (int)len);
        jerr = json_tokener_get_error(tok);
        if (jerr != json_tokener_success) {
                set_err(err, errlen, "QMP command: %s",
                        jerr == json_tokener_continue ? "incomplete JSON" : json_tokener_error_desc(jerr));
                r = -EINVAL;
                goto fail;
        }
        if (!json_object_is_type(obj, json_type_object)) {
                set_err(err, errlen, "QMP command: not a JSON object");
                r = -EINVAL;
                goto fail;
        }
        json_object_object_foreach(obj, key, val) {
                if (strcmp(key, "execute") == 0 && json_object_is_type(val, json_type_string))
                        cmd = val;
                else if (strcmp(key, "arguments") == 0 && json_object_is_type(val, json_type_object))
                        args = val;
                else {
                        set_err(err, errlen, "QMP command: unexpected member \"%s\" (only \"execute\" and \"arguments\")",
                                key);
                        r = -EINVAL;
                        goto fail;
                }
        }
        if (!cmd) {
                set_err(err, errlen, "QMP command: missing \"execute\"");
                r = -EINVAL;
                goto fail;
        }
        r = qmp_execute(q, json_object_get_string(cmd), args, timeout_ms, ret_return, err, errlen);

fail:
        json_object_put(obj);
        json_tokener_free(tok);
        return r;
}

int qmp_get_fd(const struct qmp *q) {
        return q ? q->fd : -1;
}

int qmp_feed(struct qmp *q, const void *buf, size_t n) {
        if (!q || (!buf && n))
                return -EINVAL;
        if (q->state == QMP_STATE_DISCONNECTED)
                return -ENOTCONN;
        int r = feed(q, buf, n);
        return r < 0 ? r : 0;
}

int qmp_process_input(struct qmp *q) {
        if (!q)
                return -EINVAL;
        if (q->state == QMP_STATE_DISCONNECTED)
                return -ENOTCONN;
        for (int i = 0; i < QMP_READS_PER_CALL; i++) {
                int r = read_and_parse(q);
                if (r <= 0)
                        return r;
        }
        return 0;
}

int qmp_next_event(struct qmp *q, struct json_object **ret_event) {
        if (!q || !ret_event || q->ev_len == 0)
                return 0;
        *ret_event = q->events[q->ev_head];
        q->events[q->ev_head] = NULL;
        q->ev_head = (q->ev_head + 1) % q->ev_cap;
        q->ev_len--;
        return 1;
}

size_t qmp_events_dropped(const struct qmp *q) {
        return q ? q->ev_dropped : 0;
}

const struct json_object *qmp_server_version(const struct qmp *q) {
        return q ? q->version : NULL;
}

struct qmp *qmp_free(struct qmp *q) {
        if (!q)
                return NULL;
        if (q->fd >= 0)
                close(q->fd);
        q->fd = -1;
        for (size_t i = 0; i < q->ev_len; i++)
                json_object_put(q->events[(q->ev_head + i) % q->ev_cap]);
        free(q->events);
        json_object_put(q->reply);
        json_object_put(q->version);
        if (q->tok)
                json_tokener_free(q->tok);
        free(q);
        return NULL;
}
