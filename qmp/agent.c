/* SPDX-License-Identifier: MIT */
#include "qmp/agent.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct agent_stream {
        struct json_tokener *tok;
        bool await_sentinel;
        bool in_message;
        size_t msg_len;
};

struct agent_stream *agent_stream_new(bool await_sentinel) {
        struct agent_stream *s = calloc(1, sizeof *s);
        if (!s)
                return NULL;
        s->tok = json_tokener_new();
        if (!s->tok) {
                free(s);
                return NULL;
        }
        s->await_sentinel = await_sentinel;
        return s;
}

struct agent_stream *agent_stream_free(struct agent_stream *s) {
        if (s) {
                json_tokener_free(s->tok);
                free(s);
        }
        return NULL;
}

static void stream_reset(struct agent_stream *s) {
        json_tokener_reset(s->tok);
        s->in_message = false;
        s->msg_len = 0;
}

void agent_stream_await_sentinel(struct agent_stream *s) {
        stream_reset(s);
        s->await_sentinel = true;
}

static bool is_space(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int agent_stream_feed(struct agent_stream *s, const char *p, size_t n, size_t *used,
                      int (*cb)(void *ud, struct json_object *msg), void *ud) {
        size_t i = 0;
        int r = 0;
        while (i < n) {
                if ((unsigned char)p[i] == 0xFF) {
                        stream_reset(s);
                        s->await_sentinel = false;
                        i++;
                        continue;
                }
                if (s->await_sentinel) {
                        const char *ff = memchr(p + i, 0xFF, n - i);
                        i = ff ? (size_t)(ff - p) : n;
                        continue;
                }
                if (!s->in_message) {
                        if (is_space(p[i])) {
                                i++;
                                continue;
                        }
                        s->in_message = true;
                }
                /* Up to the next sentinel at most: it is never part of JSON. */
                const char *ff = memchr(p + i, 0xFF, n - i);
                size_t chunk = (ff ? (size_t)(ff - p) : n) - i;
                if (chunk > AGENT_MAX_MESSAGE - s->msg_len + 1)
                        chunk = AGENT_MAX_MESSAGE - s->msg_len + 1;
                if (chunk > INT32_MAX)
                        chunk = INT32_MAX;
                struct json_object *obj = json_tokener_parse_ex(s->tok, p + i, (int)chunk);
                enum json_tokener_error e = json_tokener_get_error(s->tok);
                if (e == json_tokener_continue) {
                        s->msg_len += chunk;
                        i += chunk;
                        if (s->msg_len > AGENT_MAX_MESSAGE) {
                                r = -EPROTO;
                                break;
                        }
                        continue;
                }
                if (e != json_tokener_success) {
                        r = -EPROTO;
                        break;
                }
                size_t took = json_tokener_get_parse_end(s->tok);
                if (took == 0 || took > chunk)
                        took = chunk;
                i += took;
                s->msg_len += took;
                bool too_long = s->msg_len > AGENT_MAX_MESSAGE;
                stream_reset(s);
                if (too_long || !json_object_is_type(obj, json_type_object)) {
                        json_object_put(obj);
                        r = -EPROTO;
                        break;
                }
                r = cb(ud, obj);
                json_object_put(obj);
                if (r != 0)
                        break;
        }
        if (used)
                *used = i;
        if (r < 0)
                stream_reset(s);
        return r;
}

struct agent {
        int fd;
        struct agent_stream *stream;
        bool broken;
        /* Bytes read past the reply that ended the last call: replies
         * come in order, so they belong to the next one. */
        char pending[4096];
        size_t n_pending;
};

static int64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left_ms(int64_t deadline) {
        int64_t l = deadline - now_ms();
        return l <= 0 ? 0 : l > 60000 ? 60000 : (int)l;
}

static int send_all(struct agent *a, const char *p, size_t n, int64_t deadline) {
        while (n > 0) {
                ssize_t w = send(a->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w > 0) {
                        p += w;
                        n -= (size_t)w;
                        continue;
                }
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                        return -errno;
                struct pollfd pfd = { .fd = a->fd, .events = POLLOUT };
                int t = left_ms(deadline);
                if (t == 0)
                        return -ETIMEDOUT;
                if (poll(&pfd, 1, t) < 0 && errno != EINTR)
                        return -errno;
        }
        return 0;
}

struct wait_ctx {
        int64_t sync_id;        /* sync: the id to wait for */
        bool sync;
        struct json_object *msg;        /* the reply (a reference), when not sync */
};

static int on_message(void *ud, struct json_object *msg) {
        struct wait_ctx *w = ud;
        if (w->sync) {
                struct json_object *ret = NULL;
                /* Another client's sync reply, or a stale answer: go on. */
                if (json_object_object_get_ex(msg, "return", &ret) && json_object_is_type(ret, json_type_int) &&
                    json_object_get_int64(ret) == w->sync_id)
                        return 1;
                return 0;
        }
        w->msg = json_object_get(msg);
        return 1;
}

/* Reads and parses until on_message stops or the deadline passes. */
static int wait_reply(struct agent *a, struct wait_ctx *w, int64_t deadline) {
        char buf[4096];
        for (;;) {
                size_t n = 0, used = 0;
                if (a->n_pending) {
                        n = a->n_pending;
                        memcpy(buf, a->pending, n);
                        a->n_pending = 0;
                } else {
                        struct pollfd pfd = { .fd = a->fd, .events = POLLIN };
                        int t = left_ms(deadline);
                        if (t == 0)
                                return -ETIMEDOUT;
                        int k = poll(&pfd, 1, t);
                        if (k < 0 && errno != EINTR)
                                return -errno;
                        if (k <= 0)
                                continue;
                        ssize_t got = recv(a->fd, buf, sizeof buf, MSG_DONTWAIT);
                        if (got == 0)
                                return -ECONNRESET;
                        if (got < 0) {
                                if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                                        continue;
                                return -errno;
                        }
                        n = (size_t)got;
                }
                int r = agent_stream_feed(a->stream, buf, n, &used, on_message, w);
                if (r < 0) {
                        /* While synchronising, junk before our sentinel is
                         * a previous client's: skip to the next one. */
                        if (w->sync && r == -EPROTO) {
                                agent_stream_await_sentinel(a->stream);
                                continue;
                        }
                        return r;
                }
                if (r == 1) {
                        a->n_pending = n - used;
                        memcpy(a->pending, buf + used, a->n_pending);
                        return 0;
                }
        }
}

static int fail(struct agent *a, int r, const char *what, char *err, size_t errlen) {
        if (a)
                a->broken = true;
        if (r == -ETIMEDOUT)
                snprintf(err, errlen, "%s: no answer from the guest agent", what);
        else if (r == -ECONNRESET)
                snprintf(err, errlen, "%s: the guest agent channel closed", what);
        else if (r == -EPROTO)
                snprintf(err, errlen, "%s: malformed reply from the guest agent", what);
        else
                snprintf(err, errlen, "%s: %s", what, strerror(-r));
        return r;
}

int agent_connect(const char *path, int timeout_ms, struct agent **ret, char *err, size_t errlen) {
        int64_t deadline = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof sa.sun_path) {
                snprintf(err, errlen, "%s: path too long for a unix socket", path);
                return -ENAMETOOLONG;
        }
        memcpy(sa.sun_path, path, strlen(path) + 1);
        struct agent *a = calloc(1, sizeof *a);
        if (!a || !(a->stream = agent_stream_new(true))) {
                free(a);
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        a->fd = -1;
        a->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (a->fd < 0) {
                int r = -errno;
                snprintf(err, errlen, "socket: %s", strerror(-r));
                agent_free(a);
                return r;
        }
        /* A unix socket connects at once or not at all; QEMU's listening
         * socket exists for as long as the VM runs. */
        if (connect(a->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS && errno != EAGAIN) {
                int r = -errno;
                snprintf(err, errlen, "%s: %s", path, strerror(-r));
                agent_free(a);
                return r;
        }
        int64_t id = 0;
        if (getrandom(&id, sizeof id, GRND_NONBLOCK) != sizeof id)
                id = now_ms() ^ ((int64_t)getpid() << 20);
        id &= 0x3fffffff;
        char line[128];
        int n = snprintf(line, sizeof line, "\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":%lld}}\n",
                         (long long)id);
        int r = send_all(a, line, (size_t)n, deadline);
        struct wait_ctx w = { .sync = true, .sync_id = id };
        if (r == 0)
                r = wait_reply(a, &w, deadline);
        if (r < 0) {
                fail(NULL, r, "guest-sync-delimited", err, errlen);
                agent_free(a);
                return r;
        }
        *ret = a;
        return 0;
}

static int send_command(struct agent *a, const char *cmd, struct json_object *args, int64_t deadline,
                        char *err, size_t errlen) {
        if (!a || a->broken || !cmd || !*cmd || (args && !json_object_is_type(args, json_type_object))) {
                snprintf(err, errlen, "%s: bad arguments or unusable agent client", cmd ? cmd : "(null)");
                return -EINVAL;
        }
        struct json_object *o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "execute", json_object_new_string(cmd));
        if (args)
                json_object_object_add(o, "arguments", json_object_get(args));
        const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        size_t len = strlen(text);
        char *line = malloc(len + 2);
        int r = -ENOMEM;
        if (line) {
                memcpy(line, text, len);
                line[len] = '\n';
                r = send_all(a, line, len + 1, deadline);
                free(line);
        }
        json_object_put(o);
        if (r < 0)
                return fail(a, r, cmd, err, errlen);
        return 0;
}

/* 0 for a "return", -EREMOTEIO with the description for an "error". */
static int check_reply(struct json_object *msg, const char *cmd, struct json_object **ret_return,
                       char *err, size_t errlen) {
        struct json_object *ret = NULL, *e = NULL, *desc = NULL;
        if (json_object_object_get_ex(msg, "return", &ret)) {
                if (ret_return)
                        *ret_return = json_object_get(ret);
                return 0;
        }
        if (json_object_object_get_ex(msg, "error", &e)) {
                json_object_object_get_ex(e, "desc", &desc);
                snprintf(err, errlen, "%s: %s", cmd, desc ? json_object_get_string(desc) : "error without a description");
                return -EREMOTEIO;
        }
        snprintf(err, errlen, "%s: reply without return or error", cmd);
        return -EPROTO;
}

int agent_execute(struct agent *a, const char *cmd, struct json_object *args, int timeout_ms,
                  struct json_object **ret_return, char *err, size_t errlen) {
        int64_t deadline = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
        int r = send_command(a, cmd, args, deadline, err, errlen);
        if (r < 0)
                return r;
        struct wait_ctx w = { 0 };
        r = wait_reply(a, &w, deadline);
        if (r < 0)
                return fail(a, r, cmd, err, errlen);
        r = check_reply(w.msg, cmd, ret_return, err, errlen);
        json_object_put(w.msg);
        if (r == -EPROTO)
                a->broken = true;
        return r;
}

int agent_execute_noreply(struct agent *a, const char *cmd, struct json_object *args, int wait_ms,
                          char *err, size_t errlen) {
        int64_t deadline = now_ms() + (wait_ms < 0 ? 0 : wait_ms);
        int r = send_command(a, cmd, args, deadline, err, errlen);
        if (r < 0)
                return r;
        struct wait_ctx w = { 0 };
        r = wait_reply(a, &w, deadline);
        a->broken = true;
        if (r == -ETIMEDOUT || r == -ECONNRESET)
                return 0;
        if (r < 0)
                return fail(a, r, cmd, err, errlen);
        r = check_reply(w.msg, cmd, NULL, err, errlen);
        json_object_put(w.msg);
        return r;
}

struct agent *agent_free(struct agent *a) {
        if (a) {
                if (a->fd >= 0)
                        close(a->fd);
                agent_stream_free(a->stream);
                free(a);
        }
        return NULL;
}
