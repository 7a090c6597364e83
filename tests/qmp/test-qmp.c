/* SPDX-License-Identifier: MIT */
/*
 * QMP client tests. The peer is the other end of a socketpair: scripted
 * bytes are written into the socket buffer before the client reads them,
 * or by a thread when the script needs the client to have consumed a first
 * part (split messages) or is larger than a socket buffer. One test talks
 * to a real QEMU.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>

#include <json-c/json.h>

#include "qmp/qmp.h"

/* What QEMU 7.2 sends, byte for byte. */
static const char GREETING[] =
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
        "\"package\": \"Debian 1:7.2+dfsg-7\"}, \"capabilities\": [\"oob\"]}}\r\n";
static const char CAPS_OK[] = "{\"return\": {}, \"id\": 1}\r\n";
static const char CAPS_SENT[] = "{\"execute\":\"qmp_capabilities\",\"id\":1}\r\n";
static const char STATUS_REPLY[] =
        "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}, \"id\": 2}\r\n";
static const char STATUS_SENT[] = "{\"execute\":\"query-status\",\"id\":2}\r\n";
static const char EVENT_STOP[] =
        "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 5}, \"event\": \"STOP\"}\r\n";

static char errbuf[512];

/* ---- helpers ---- */

static uint64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void write_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
                if (k < 0 && errno == EINTR)
                        continue;
                assert_true(k > 0);
                p += k;
                n -= (size_t)k;
        }
}

static void peer_write(int fd, const char *s) {
        write_all(fd, s, strlen(s));
}

/* Everything the client has sent so far, as a string. */
static const char *peer_read(int fd) {
        static char buf[65536];
        size_t n = 0;

        for (;;) {
                ssize_t k = recv(fd, buf + n, sizeof buf - 1 - n, MSG_DONTWAIT);
                if (k <= 0)
                        break;
                n += (size_t)k;
        }
        buf[n] = '\0';
        return buf;
}

static void new_pair(struct qmp **q, int *peer) {
        int sv[2];

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(qmp_new_fd(sv[0], q), 0);
        *peer = sv[1];
}

/* A client that has completed the handshake; the next command gets id 2.
 * The greeting is consumed before the capabilities reply is written: the
 * client drops replies to commands it has not sent yet. */
static void new_running(struct qmp **q, int *peer) {
        new_pair(q, peer);
        peer_write(*peer, GREETING);
        assert_int_equal(qmp_process_input(*q), 0);
        peer_write(*peer, CAPS_OK);
        assert_int_equal(qmp_handshake(*q, 1000, errbuf, sizeof errbuf), 0);
        assert_string_equal(peer_read(*peer), CAPS_SENT);
}

static struct json_object *parse(const char *s) {
        struct json_object *o = json_tokener_parse(s);
        assert_non_null(o);
        return o;
}

static void assert_json_equal(struct json_object *got, const char *want) {
        struct json_object *w = parse(want);

        if (!json_object_equal(got, w))
                fail_msg("got %s\nwant %s", json_object_to_json_string(got), want);
        json_object_put(w);
}

static void assert_next_event(struct qmp *q, const char *name) {
        struct json_object *ev = NULL, *v;

        assert_int_equal(qmp_next_event(q, &ev), 1);
        assert_true(json_object_object_get_ex(ev, "event", &v));
        assert_string_equal(json_object_get_string(v), name);
        json_object_put(ev);
}

static void assert_no_event(struct qmp *q) {
        struct json_object *ev = NULL;

        assert_int_equal(qmp_next_event(q, &ev), 0);
        assert_null(ev);
}

/* A peer thread following a script of steps: write bytes, wait until the
 * client has read everything sent so far (so the next bytes reach it in a
 * read of their own), or read one command line from the client (so a reply
 * is only written once its command was sent, as QEMU does). */
enum step_kind { STEP_WRITE, STEP_WAIT_CONSUMED, STEP_READ_LINE };

struct step {
        enum step_kind kind;
        const char *p;
        size_t len;
};

struct script {
        int fd;        /* peer end */
        int client_fd; /* for FIONREAD */
        struct step steps[8];
        size_t n;
        char received[4096]; /* the command lines read */
        size_t received_len;
        bool failed;
        pthread_t thread;
};

static void script_add(struct script *s, enum step_kind kind, const char *p, size_t len) {
        assert_true(s->n < sizeof s->steps / sizeof s->steps[0]);
        s->steps[s->n++] = (struct step){ kind, p, len };
}

static void wait_consumed(int client_fd) {
        uint64_t deadline = now_ms() + 5000;
        int pending;

        while (now_ms() < deadline) {
                if (ioctl(client_fd, FIONREAD, &pending) < 0 || pending == 0)
                        return;
                usleep(20);
        }
}

static bool read_line(struct script *s) {
        for (;;) {
                struct pollfd pfd = { .fd = s->fd, .events = POLLIN };
                char c;

                if (poll(&pfd, 1, 5000) <= 0)
                        return false;
                if (recv(s->fd, &c, 1, 0) != 1)
                        return false;
                if (s->received_len + 1 >= sizeof s->received)
                        return false;
                s->received[s->received_len++] = c;
                s->received[s->received_len] = '\0';
                if (c == '\n')
                        return true;
        }
}

static bool write_bytes(int fd, const char *p, size_t left) {
        while (left > 0) {
                ssize_t k = send(fd, p, left, MSG_NOSIGNAL);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return false;
                p += k;
                left -= (size_t)k;
        }
        return true;
}

static void *script_run(void *arg) {
        struct script *s = arg;

        for (size_t i = 0; i < s->n && !s->failed; i++) {
                const struct step *st = &s->steps[i];

                switch (st->kind) {
                case STEP_WRITE:
                        s->failed = !write_bytes(s->fd, st->p, st->len);
                        break;
                case STEP_WAIT_CONSUMED:
                        wait_consumed(s->client_fd);
                        break;
                case STEP_READ_LINE:
                        s->failed = !read_line(s);
                        break;
                }
        }
        return NULL;
}

static void script_start(struct script *s) {
        assert_int_equal(pthread_create(&s->thread, NULL, script_run, s), 0);
}

static void script_join(struct script *s) {
        assert_int_equal(pthread_join(s->thread, NULL), 0);
}

/* ---- constructor and argument checks ---- */

static void test_new_fd_errors(void **state) {
        struct qmp *q = NULL;
        int p[2], sv[2];

        assert_int_equal(qmp_new_fd(-1, &q), -EBADF);

        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        assert_int_equal(qmp_new_fd(p[0], &q), -ENOTSOCK);
        assert_null(q);
        /* The caller still owns the fd after a failure. */
        assert_true(fcntl(p[0], F_GETFD) >= 0);
        close(p[0]);
        close(p[1]);

        assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(qmp_new_fd(sv[0], &q), -EPROTOTYPE);
        assert_null(q);
        close(sv[0]);
        close(sv[1]);
}

static void test_new_fd_flags(void **state) {
        struct qmp *q = NULL;
        int sv[2], fd;

        /* Deliberately without SOCK_CLOEXEC: the client adds it. */
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        assert_int_equal(qmp_new_fd(sv[0], &q), 0);
        fd = qmp_get_fd(q);
        assert_int_equal(fd, sv[0]);
        assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
        q = qmp_free(q);
        assert_null(q);
        /* qmp_free closed the fd. */
        assert_int_equal(fcntl(fd, F_GETFD), -1);
        assert_int_equal(errno, EBADF);
        close(sv[1]);
}

static void test_null_safety(void **state) {
        struct json_object *ev = NULL;

        assert_null(qmp_free(NULL));
        assert_int_equal(qmp_get_fd(NULL), -1);
        assert_int_equal(qmp_next_event(NULL, &ev), 0);
        assert_int_equal(qmp_process_input(NULL), -EINVAL);
        assert_int_equal(qmp_events_dropped(NULL), 0);
}

static void test_bad_arguments(void **state) {
        struct qmp *q = NULL;
        struct json_object *arr = json_object_new_array();
        int peer;

        new_pair(&q, &peer);
        assert_int_equal(qmp_handshake(q, -1, errbuf, sizeof errbuf), -EINVAL);
        assert_int_equal(qmp_execute(q, "query-status", NULL, 100, NULL, errbuf, sizeof errbuf), -EINVAL);
        assert_string_equal(errbuf, "QMP query-status: handshake not done");

        peer_write(peer, GREETING);
        assert_int_equal(qmp_process_input(q), 0);
        /* Greeting seen, capabilities not negotiated: still refused. */
        assert_int_equal(qmp_execute(q, "query-status", NULL, 100, NULL, errbuf, sizeof errbuf), -EINVAL);
        assert_string_equal(errbuf, "QMP query-status: handshake not done");
        peer_write(peer, CAPS_OK);
        assert_int_equal(qmp_handshake(q, 1000, errbuf, sizeof errbuf), 0);
        assert_int_equal(qmp_execute(q, "query-status", NULL, -1, NULL, errbuf, sizeof errbuf), -EINVAL);
        assert_int_equal(qmp_execute(q, "", NULL, 100, NULL, errbuf, sizeof errbuf), -EINVAL);
        assert_int_equal(qmp_execute(q, NULL, NULL, 100, NULL, errbuf, sizeof errbuf), -EINVAL);
        assert_int_equal(qmp_execute(q, "x", arr, 100, NULL, errbuf, sizeof errbuf), -EINVAL);
        assert_string_equal(errbuf, "QMP x: invalid arguments");
        /* Nothing beyond qmp_capabilities went out. */
        assert_string_equal(peer_read(peer), CAPS_SENT);

        json_object_put(arr);
        qmp_free(q);
        close(peer);
}

/* ---- handshake ---- */

static void test_handshake_ok(void **state) {
        struct script s = { 0 };
        struct qmp *q = NULL;
        int peer;

        new_pair(&q, &peer);
        s.fd = peer;
        s.client_fd = qmp_get_fd(q);
        script_add(&s, STEP_WRITE, GREETING, strlen(GREETING));
        script_add(&s, STEP_READ_LINE, NULL, 0);
        script_add(&s, STEP_WRITE, CAPS_OK, strlen(CAPS_OK));
        script_start(&s);
        assert_int_equal(qmp_handshake(q, 5000, errbuf, sizeof errbuf), 0);
        script_join(&s);
        assert_false(s.failed);
        assert_string_equal(s.received, CAPS_SENT);
        /* Already negotiated: nothing more is sent. */
        assert_int_equal(qmp_handshake(q, 0, errbuf, sizeof errbuf), 0);
        assert_string_equal(peer_read(peer), "");
        qmp_free(q);
        close(peer);
}

/* The greeting's version is kept, in query-version's shape; a greeting
 * without one leaves NULL. */
static void test_server_version(void **state) {
        struct qmp *q = NULL;
        struct json_object *qemu = NULL, *v = NULL;
        int peer;

        new_pair(&q, &peer);
        assert_null(qmp_server_version(q));
        peer_write(peer, GREETING);
        assert_int_equal(qmp_process_input(q), 0);
        const struct json_object *ver = qmp_server_version(q);
        assert_non_null(ver);
        assert_true(json_object_object_get_ex(ver, "qemu", &qemu));
        assert_true(json_object_object_get_ex(qemu, "minor", &v));
        assert_int_equal(json_object_get_int(v), 2);
        assert_true(json_object_object_get_ex(ver, "package", &v));
        assert_string_equal(json_object_get_string(v), "Debian 1:7.2+dfsg-7");
        qmp_free(q);
        close(peer);

        new_pair(&q, &peer);
        peer_write(peer, "{\"QMP\": {\"capabilities\": []}}\r\n");
        assert_int_equal(qmp_process_input(q), 0);
        assert_null(qmp_server_version(q));
        assert_null(qmp_server_version(NULL));
        qmp_free(q);
        close(peer);
}

static void test_handshake_greeting_seen_by_process_input(void **state) {
        struct qmp *q = NULL;
        int peer;

        new_pair(&q, &peer);
        peer_write(peer, GREETING);
        assert_int_equal(qmp_process_input(q), 0);
        assert_no_event(q);
        peer_write(peer, CAPS_OK);
        assert_int_equal(qmp_handshake(q, 1000, errbuf, sizeof errbuf), 0);
        assert_string_equal(peer_read(peer), CAPS_SENT);
        qmp_free(q);
        close(peer);
}

static void test_handshake_not_greeting(void **state) {
        struct qmp *q = NULL;
        int peer;

        new_pair(&q, &peer);
        peer_write(peer, EVENT_STOP);
        assert_int_equal(qmp_handshake(q, 1000, errbuf, sizeof errbuf), -EPROTO);
        assert_string_equal(errbuf, "QMP handshake: first message is not a QMP greeting");
        assert_int_equal(qmp_handshake(q, 1000, errbuf, sizeof errbuf), -ENOTCONN);
        assert_string_equal(errbuf, "QMP handshake: not connected (first message is not a QMP greeting)");
        assert_string_equal(peer_read(peer), "");
        qmp_free(q);
        close(peer);
}

static void test_handshake_capabilities_refused(void **state) {
        struct qmp *q = NULL;
        int peer;

        new_pair(&q, &peer);
        peer_write(peer, GREETING);
        assert_int_equal(qmp_process_input(q), 0);
        peer_write(peer, "{\"id\": 1, \"error\": {\"class\": \"GenericError\", \"desc\": \"Capabilities negotiation is "
                         "already complete, command ignored\"}}\r\n");
        assert_int_equal(qmp_handshake(q, 1000, errbuf, sizeof errbuf), -EREMOTEIO);
        assert_string_equal(errbuf, "Capabilities negotiation is already complete, command ignored");
        qmp_free(q);
        close(peer);
}

static void test_reply_before_command_dropped(void **state) {
        struct qmp *q = NULL;
        int peer;

        /* A reply that arrives before its command was sent cannot be for
         * it: the capabilities reply read together with the greeting is
         * dropped, so the handshake waits for one that never comes. */
        new_pair(&q, &peer);
        peer_write(peer, GREETING);
        peer_write(peer, CAPS_OK);
        assert_int_equal(qmp_handshake(q, 100, errbuf, sizeof errbuf), -ETIMEDOUT);
        assert_string_equal(errbuf, "QMP qmp_capabilities: no reply within 100 ms");
        assert_string_equal(peer_read(peer), CAPS_SENT);
        qmp_free(q);
        close(peer);
}

static void test_handshake_silent_peer(void **state) {
        struct qmp *q = NULL;
        uint64_t t0, dt;
        int peer;

        new_pair(&q, &peer);
        t0 = now_ms();
        assert_int_equal(qmp_handshake(q, 200, errbuf, sizeof errbuf), -ETIMEDOUT);
        dt = now_ms() - t0;
        assert_true(dt >= 199);
        assert_true(dt < 1500);
        assert_string_equal(errbuf, "QMP handshake: no greeting within 200 ms");
        qmp_free(q);
        close(peer);
}

static void test_handshake_silent_after_greeting(void **state) {
        struct qmp *q = NULL;
        uint64_t t0, dt;
        int peer;

        new_pair(&q, &peer);
        peer_write(peer, GREETING);
        t0 = now_ms();
        assert_int_equal(qmp_handshake(q, 200, errbuf, sizeof errbuf), -ETIMEDOUT);
        dt = now_ms() - t0;
        /* One deadline covers greeting and capabilities. */
        assert_true(dt >= 199);
        assert_true(dt < 1500);
        assert_string_equal(errbuf, "QMP qmp_capabilities: no reply within 200 ms");
        qmp_free(q);
        close(peer);
}

static void test_handshake_eof(void **state) {
        struct qmp *q = NULL;
        int peer;

        new_pair(&q, &peer);
        close(peer);
        assert_int_equal(qmp_handshake(q, 1000, errbuf, sizeof errbuf), -ECONNRESET);
        assert_string_equal(errbuf, "QMP handshake: connection closed by peer");
        qmp_free(q);
}

/* ---- execute ---- */

static void test_execute_ok(void **state) {
        struct qmp *q = NULL;
        struct json_object *ret = NULL;
        int peer;

        new_running(&q, &peer);
        peer_write(peer, STATUS_REPLY);
        assert_int_equal(qmp_execute(q, "query-status", NULL, 1000, &ret, errbuf, sizeof errbuf), 0);
        assert_string_equal(peer_read(peer), STATUS_SENT);
        assert_json_equal(ret, "{\"status\": \"running\", \"singlestep\": false, \"running\": true}");
        json_object_put(ret);
        qmp_free(q);
        close(peer);
}

static void test_execute_arguments(void **state) {
        struct qmp *q = NULL;
        struct json_object *args = json_object_new_object(), *ret = NULL;
        int peer;

        json_object_object_add(args, "command-line", json_object_new_string("info block /dev/x \"q\""));
        new_running(&q, &peer);
        peer_write(peer, "{\"return\": \"ok\\r\\n\", \"id\": 2}\r\n");
        assert_int_equal(qmp_execute(q, "human-monitor-command", args, 1000, &ret, errbuf, sizeof errbuf), 0);
        /* Slashes are not escaped; args are borrowed, not consumed. */
        assert_string_equal(peer_read(peer), "{\"execute\":\"human-monitor-command\",\"arguments\":"
                                             "{\"command-line\":\"info block /dev/x \\\"q\\\"\"},\"id\":2}\r\n");
        assert_string_equal(json_object_get_string(ret), "ok\r\n");
        json_object_put(ret);
        assert_int_equal(json_object_object_length(args), 1);

        /* A reply whose return is not needed. */
        peer_write(peer, "{\"return\": {}, \"id\": 3}\r\n");
        assert_int_equal(qmp_execute(q, "cont", NULL, 1000, NULL, errbuf, sizeof errbuf), 0);
        assert_string_equal(peer_read(peer), "{\"execute\":\"cont\",\"id\":3}\r\n");

        json_object_put(args);
        qmp_free(q);
        close(peer);
}

static void test_execute_error_reply(void **state) {
        struct qmp *q = NULL;
        struct json_object *sentinel = (struct json_object *)&errbuf, *ret = sentinel;
        int peer;

        new_running(&q, &peer);
        peer_write(peer, "{\"id\": 2, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nope has not "
                         "been found\"}}\r\n");
        assert_int_equal(qmp_execute(q, "nope", NULL, 1000, &ret, errbuf, sizeof errbuf), -EREMOTEIO);
        assert_string_equal(errbuf, "The command nope has not been found");
        assert_ptr_equal(ret, sentinel);

        /* Without a desc, the message still says what failed. */
        peer_write(peer, "{\"id\": 3, \"error\": {\"class\": \"GenericError\"}}\r\n");
        assert_int_equal(qmp_execute(q, "stop", NULL, 1000, &ret, errbuf, sizeof errbuf), -EREMOTEIO);
        assert_string_equal(errbuf, "QMP stop: error reply without a description");

        /* An error reply leaves the connection usable. */
        peer_write(peer, "{\"return\": 7, \"id\": 4}\r\n");
        assert_int_equal(qmp_execute(q, "x", NULL, 1000, &ret, errbuf, sizeof errbuf), 0);
        assert_int_equal(json_object_get_int(ret), 7);
        json_object_put(ret);
        qmp_free(q);
        close(peer);
}

static void test_error_desc_truncated(void **state) {
        struct qmp *q = NULL;
        char small[8];
        int peer;

        new_running(&q, &peer);
        peer_write(peer, "{\"id\": 2, \"error\": {\"class\": \"GenericError\", \"desc\": \"abcdefghijkl\"}}\r\n");
        assert_int_equal(qmp_execute(q, "x", NULL, 1000, NULL, small, sizeof small), -EREMOTEIO);
        assert_string_equal(small, "abcdefg");
        /* err may be NULL. */
        peer_write(peer, "{\"id\": 3, \"error\": {\"class\": \"GenericError\", \"desc\": \"d\"}}\r\n");
        assert_int_equal(qmp_execute(q, "x", NULL, 1000, NULL, NULL, 0), -EREMOTEIO);
        qmp_free(q);
        close(peer);
}

static void test_event_between_request_and_reply(void **state) {
        struct qmp *q = NULL;
        struct json_object *ret = NULL, *ev = NULL;
        int peer;

        new_running(&q, &peer);
        /* QEMU itself does this for "quit": SHUTDOWN comes before the reply. */
        peer_write(peer, EVENT_STOP);
        peer_write(peer, STATUS_REPLY);
        peer_write(peer, "{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n");
        assert_int_equal(qmp_execute(q, "query-status", NULL, 1000, &ret, errbuf, sizeof errbuf), 0);
        json_object_put(ret);

        assert_int_equal(qmp_next_event(q, &ev), 1);
        assert_json_equal(ev, EVENT_STOP);
        json_object_put(ev);
        assert_next_event(q, "RESUME");
        assert_no_event(q);
        qmp_free(q);
        close(peer);
}

static void test_unknown_ids_dropped(void **state) {
        struct qmp *q = NULL;
        struct json_object *ret = NULL;
        int peer;

        new_running(&q, &peer);
        peer_write(peer, "{\"return\": \"other\", \"id\": 99}\r\n"
                         "{\"return\": \"string id\", \"id\": \"2\"}\r\n"
                         "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\r\n"
                         "{\"return\": \"no id\"}\r\n"
                         "{\"return\": \"mine\", \"id\": 2}\r\n"
                         "{\"return\": \"duplicate\", \"id\": 2}\r\n");
        assert_int_equal(qmp_execute(q, "x", NULL, 1000, &ret, errbuf, sizeof errbuf), 0);
        assert_string_equal(json_object_get_string(ret), "mine");
        json_object_put(ret);
        assert_no_event(q);

        /* The duplicate was dropped too: the next command sees its own. */
        peer_write(peer, "{\"return\": \"three\", \"id\": 3}\r\n");
        assert_int_equal(qmp_execute(q, "x", NULL, 1000, &ret, errbuf, sizeof errbuf), 0);
        assert_string_equal(json_object_get_string(ret), "three");
        json_object_put(ret);

        /* Unknown messages are ignored, not fatal. */
        peer_write(peer, "{\"something\": \"new\"}\r\n{\"return\": 4, \"id\": 4}\r\n");
        assert_int_equal(qmp_execute(q, "x", NULL, 1000, &ret, errbuf, sizeof errbuf), 0);
        assert_int_equal(json_object_get_int(ret), 4);
        json_object_put(ret);
        qmp_free(q);
        close(peer);
}

static void test_late_reply_after_timeout(void **state) {
        struct qmp *q = NULL;
        struct json_object *ret = NULL;
        int peer;

        new_running(&q, &peer);
        assert_int_equal(qmp_execute(q, "slow", NULL, 50, &ret, errbuf, sizeof errbuf), -ETIMEDOUT);
        assert_string_equal(errbuf, "QMP slow: no reply within 50 ms");
        assert_null(ret);
        /* The reply to id 2 arrives late and must not answer id 3. */
        peer_write(peer, "{\"return\": \"late\", \"id\": 2}\r\n{\"return\": \"fast\", \"id\": 3}\r\n");
        assert_int_equal(qmp_execute(q, "fast", NULL, 1000, &ret, errbuf, sizeof errbuf), 0);
        assert_string_equal(json_object_get_string(ret), "fast");
        json_object_put(ret);
        assert_string_equal(peer_read(peer), "{\"execute\":\"slow\",\"id\":2}\r\n{\"execute\":\"fast\",\"id\":3}\r\n");
        qmp_free(q);
        close(peer);
}

static void test_silent_peer_timeout(void **state) {
        struct qmp *q = NULL;
        uint64_t t0, dt;
        int peer;

        new_running(&q, &peer);
        t0 = now_ms();
        assert_int_equal(qmp_execute(q, "query-status", NULL, 300, NULL, errbuf, sizeof errbuf), -ETIMEDOUT);
        dt = now_ms() - t0;
        assert_true(dt >= 299);
        assert_true(dt < 1500);
        assert_string_equal(errbuf, "QMP query-status: no reply within 300 ms");

        /* Zero means one look, no wait. */
        t0 = now_ms();
        assert_int_equal(qmp_execute(q, "query-status", NULL, 0, NULL, errbuf, sizeof errbuf), -ETIMEDOUT);
        assert_true(now_ms() - t0 < 100);
        qmp_free(q);
        close(peer);
}

static void on_alarm(int sig) {
        (void)sig;
}

static void test_timeout_survives_signals(void **state) {
        struct sigaction sa = { .sa_handler = on_alarm }, old;
        struct itimerval it = { .it_interval = { 0, 5000 }, .it_value = { 0, 5000 } }, off = { 0 };
        struct qmp *q = NULL;
        uint64_t t0, dt;
        int peer, r;

        new_running(&q, &peer);
        /* No SA_RESTART: poll() keeps failing with EINTR. */
        assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
        assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
        t0 = now_ms();
        r = qmp_execute(q, "query-status", NULL, 200, NULL, errbuf, sizeof errbuf);
        dt = now_ms() - t0;
        setitimer(ITIMER_REAL, &off, NULL);
        sigaction(SIGALRM, &old, NULL);
        assert_int_equal(r, -ETIMEDOUT);
        assert_true(dt >= 199);
        assert_true(dt < 1500);
        qmp_free(q);
        close(peer);
}

static void test_eof_mid_reply(void **state) {
        struct qmp *q = NULL;
        struct json_object *ret = NULL;
        int peer;

        new_running(&q, &peer);
        peer_write(peer, EVENT_STOP);
        peer_write(peer, "{\"return\": {\"status\": \"runn");
        shutdown(peer, SHUT_WR);
        assert_int_equal(qmp_execute(q, "query-status", NULL, 1000, &ret, errbuf, sizeof errbuf), -ECONNRESET);
        assert_string_equal(errbuf, "QMP query-status: connection closed by peer");
        assert_null(ret);
        /* The event before EOF is still there. */
        assert_next_event(q, "STOP");
        assert_int_equal(qmp_execute(q, "query-status", NULL, 1000, &ret, errbuf, sizeof errbuf), -ENOTCONN);
        assert_string_equal(errbuf, "QMP query-status: not connected (connection closed by peer)");
        assert_int_equal(qmp_process_input(q), -ENOTCONN);
        qmp_free(q);
        close(peer);
}

static void test_send_to_closed_peer(void **state) {
        struct qmp *q = NULL;
        int peer;

        new_running(&q, &peer);
        close(peer);
        /* EPIPE, not SIGPIPE: the test would die otherwise. */
        assert_int_equal(qmp_execute(q, "query-status", NULL, 1000, NULL, errbuf, sizeof errbuf), -ECONNRESET);
        assert_string_equal(errbuf, "QMP query-status: connection closed by peer");
        qmp_free(q);
}

static void test_send_timeout(void **state) {
        struct qmp *q = NULL;
        struct json_object *args = json_object_new_object();
        size_t big = 8 * 1024 * 1024;
        char *s = malloc(big + 1);
        uint64_t t0, dt;
        int peer;

        assert_non_null(s);
        memset(s, 'a', big);
        s[big] = '\0';
        json_object_object_add(args, "blob", json_object_new_string(s));
        free(s);

        new_running(&q, &peer);
        /* The peer never reads, so the command cannot all go out. */
        t0 = now_ms();
        assert_int_equal(qmp_execute(q, "x", args, 200, NULL, errbuf, sizeof errbuf), -ETIMEDOUT);
        dt = now_ms() - t0;
        assert_true(dt >= 199);
        assert_true(dt < 1500);
        assert_string_equal(errbuf, "QMP x: could not send within 200 ms");
        /* Half a command went out: the stream is unusable now. */
        assert_int_equal(qmp_execute(q, "y", NULL, 100, NULL, errbuf, sizeof errbuf), -ENOTCONN);
        assert_string_equal(errbuf, "QMP y: not connected (timed out sending a command)");
        json_object_put(args);
        qmp_free(q);
        close(peer);
}

/* ---- the stream parser ---- */

static void test_malformed_json(void **state) {
#define S(x) { x, sizeof(x) - 1 }
        static const struct {
                const char *s;
                size_t len;
        } bad[] = {
                S("{\"event\": nope}\r\n"),
                S("{\"return\": {}, \"id\": 2}}\r\n"), /* stray closing brace after a good message */
                S("{\"a\" 1}\r\n"),
                S("{\"a\": \"b\0\"}\r\n"), /* raw NUL inside a string */
        };
#undef S

        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                struct qmp *q = NULL;
                struct json_object *ret = NULL;
                int peer, r;

                new_running(&q, &peer);
                write_all(peer, bad[i].s, bad[i].len);
                r = qmp_execute(q, "query-status", NULL, 1000, &ret, errbuf, sizeof errbuf);
                if (i == 1) {
                        /* The reply came before the garbage: the command ran. */
                        assert_int_equal(r, 0);
                        json_object_put(ret);
                        r = qmp_execute(q, "query-status", NULL, 1000, &ret, errbuf, sizeof errbuf);
                        assert_int_equal(r, -ENOTCONN);
                        assert_non_null(strstr(errbuf, "(malformed JSON: "));
                } else {
                        assert_int_equal(r, -EPROTO);
                        assert_non_null(strstr(errbuf, "QMP query-status: malformed JSON: "));
                }
                assert_int_equal(qmp_process_input(q), -ENOTCONN);
                qmp_free(q);
                close(peer);
        }
}

static void test_not_an_object(void **state) {
        static const char *const bad[] = { "[1, 2]\r\n", "null\r\n", "\"str\"\r\n", "true\r\n" };

        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                struct qmp *q = NULL;
                int peer;

                new_running(&q, &peer);
                peer_write(peer, bad[i]);
                assert_int_equal(qmp_process_input(q), -EPROTO);
                assert_int_equal(qmp_execute(q, "x", NULL, 100, NULL, errbuf, sizeof errbuf), -ENOTCONN);
                assert_string_equal(errbuf, "QMP x: not connected (received a message that is not a JSON object)");
                qmp_free(q);
                close(peer);
        }
}

/* Events with strings that look like message boundaries, escapes, UTF-8
 * and an integer beyond double precision. */
static const char TRICKY_STREAM[] =
        "\r\n{\"event\": \"A\", \"data\": {\"s\": \"}\\r\\n{\\\"x\\\": \\\"\", \"n\": 9007199254740993}}\r\n"
        "{\"event\":\"B\",\"data\":{\"u\":\"caf\\u00e9 \xe2\x82\xac\",\"a\":[[],{},[{\"k\":-1.5e3}]]}}"
        "{\"event\": \"C\"}\n\n  \r\n";

static void check_tricky_events(struct qmp *q) {
        struct json_object *ev = NULL, *data, *v;

        assert_int_equal(qmp_next_event(q, &ev), 1);
        assert_true(json_object_object_get_ex(ev, "data", &data));
        assert_true(json_object_object_get_ex(data, "s", &v));
        assert_string_equal(json_object_get_string(v), "}\r\n{\"x\": \"");
        assert_true(json_object_object_get_ex(data, "n", &v));
        assert_true(json_object_get_int64(v) == INT64_C(9007199254740993));
        json_object_put(ev);

        assert_int_equal(qmp_next_event(q, &ev), 1);
        assert_true(json_object_object_get_ex(ev, "data", &data));
        assert_true(json_object_object_get_ex(data, "u", &v));
        assert_string_equal(json_object_get_string(v), "caf\xc3\xa9 \xe2\x82\xac");
        json_object_put(ev);

        assert_next_event(q, "C");
        assert_no_event(q);
}

static void test_split_events_every_byte(void **state) {
        size_t n = strlen(TRICKY_STREAM);

        for (size_t i = 0; i <= n; i++) {
                struct qmp *q = NULL;
                int peer;

                new_running(&q, &peer);
                write_all(peer, TRICKY_STREAM, i);
                assert_int_equal(qmp_process_input(q), 0);
                write_all(peer, TRICKY_STREAM + i, n - i);
                assert_int_equal(qmp_process_input(q), 0);
                check_tricky_events(q);
                qmp_free(q);
                close(peer);
        }
}

static void test_split_one_byte_at_a_time(void **state) {
        struct qmp *q = NULL;
        int peer;

        new_running(&q, &peer);
        for (size_t i = 0; TRICKY_STREAM[i]; i++) {
                write_all(peer, TRICKY_STREAM + i, 1);
                assert_int_equal(qmp_process_input(q), 0);
        }
        check_tricky_events(q);
        qmp_free(q);
        close(peer);
}

/* qmp_feed() parses like the reads it stands for: the same events from
 * the stream fed a byte at a time, malformed JSON disconnects, and
 * afterwards neither it nor the socket takes more. */
static void test_feed(void **state) {
        struct qmp *q = NULL;
        int peer;

        assert_int_equal(qmp_feed(NULL, "", 0), -EINVAL);
        new_running(&q, &peer);
        assert_int_equal(qmp_feed(q, NULL, 1), -EINVAL);
        assert_int_equal(qmp_feed(q, "", 0), 0);
        for (size_t i = 0; TRICKY_STREAM[i]; i++)
                assert_int_equal(qmp_feed(q, TRICKY_STREAM + i, 1), 0);
        check_tricky_events(q);
        assert_int_equal(qmp_feed(q, "{\"event\":}", 11), -EPROTO);
        assert_int_equal(qmp_feed(q, "{}", 2), -ENOTCONN);
        assert_int_equal(qmp_process_input(q), -ENOTCONN);
        qmp_free(q);
        close(peer);
}

/* The blocking paths (handshake, execute) with the whole conversation split
 * in two at every byte, each part arriving in a read of its own. Replies
 * are only written after their command arrived; the event sits between the
 * request and the reply. */
static void test_split_conversation_every_byte(void **state) {
        char stream[1024], sent[256];
        size_t n, gate1, gate2;

        n = (size_t)snprintf(stream, sizeof stream, "%s%s%s%s", GREETING, CAPS_OK, EVENT_STOP, STATUS_REPLY);
        assert_true(n < sizeof stream);
        gate1 = strlen(GREETING);
        gate2 = gate1 + strlen(CAPS_OK);
        snprintf(sent, sizeof sent, "%s%s", CAPS_SENT, STATUS_SENT);

        for (size_t i = 1; i < n; i++) {
                size_t cuts[3] = { gate1, gate2, i }, pos = 0;
                struct script s = { 0 };
                struct qmp *q = NULL;
                struct json_object *ret = NULL;
                int peer;

                /* Sort the three cut points. */
                for (int a = 0; a < 3; a++)
                        for (int b = a + 1; b < 3; b++)
                                if (cuts[b] < cuts[a]) {
                                        size_t t = cuts[a];
                                        cuts[a] = cuts[b];
                                        cuts[b] = t;
                                }

                new_pair(&q, &peer);
                s.fd = peer;
                s.client_fd = qmp_get_fd(q);
                for (int c = 0; c < 3; c++) {
                        if (cuts[c] > pos)
                                script_add(&s, STEP_WRITE, stream + pos, cuts[c] - pos);
                        pos = cuts[c];
                        if (c > 0 && cuts[c] == cuts[c - 1])
                                continue;
                        if (cuts[c] == gate1 || cuts[c] == gate2)
                                script_add(&s, STEP_READ_LINE, NULL, 0);
                        if (cuts[c] == i)
                                script_add(&s, STEP_WAIT_CONSUMED, NULL, 0);
                }
                script_add(&s, STEP_WRITE, stream + pos, n - pos);

                script_start(&s);
                assert_int_equal(qmp_handshake(q, 5000, errbuf, sizeof errbuf), 0);
                assert_int_equal(qmp_execute(q, "query-status", NULL, 5000, &ret, errbuf, sizeof errbuf), 0);
                assert_json_equal(ret, "{\"status\": \"running\", \"singlestep\": false, \"running\": true}");
                json_object_put(ret);
                script_join(&s);
                assert_false(s.failed);
                assert_string_equal(s.received, sent);
                assert_next_event(q, "STOP");
                assert_no_event(q);
                qmp_free(q);
                close(peer);
        }
}

/* {"event":"BIG","data":"aaa..."} of exactly len bytes, plus CRLF. */
static char *big_event(size_t len) {
        static const char head[] = "{\"event\":\"BIG\",\"data\":\"", tail[] = "\"}";
        char *s = malloc(len + 3);

        assert_non_null(s);
        memcpy(s, head, strlen(head));
        memset(s + strlen(head), 'a', len - strlen(head) - strlen(tail));
        memcpy(s + len - strlen(tail), tail, strlen(tail));
        memcpy(s + len, "\r\n", 3);
        return s;
}

static void test_message_at_limit(void **state) {
        char *ev = big_event(QMP_MAX_MESSAGE);
        struct script s = { 0 };
        struct qmp *q = NULL;
        struct json_object *ret = NULL, *e = NULL, *v;
        int peer;

        new_running(&q, &peer);
        s.fd = peer;
        s.client_fd = qmp_get_fd(q);
        script_add(&s, STEP_WRITE, ev, strlen(ev));
        script_add(&s, STEP_READ_LINE, NULL, 0);
        script_add(&s, STEP_WRITE, STATUS_REPLY, strlen(STATUS_REPLY));
        script_start(&s);
        assert_int_equal(qmp_execute(q, "query-status", NULL, 5000, &ret, errbuf, sizeof errbuf), 0);
        json_object_put(ret);
        script_join(&s);
        assert_false(s.failed);
        assert_string_equal(s.received, STATUS_SENT);
        assert_int_equal(qmp_next_event(q, &e), 1);
        assert_true(json_object_object_get_ex(e, "data", &v));
        assert_int_equal(json_object_get_string_len(v), QMP_MAX_MESSAGE - 25);
        json_object_put(e);
        free(ev);
        qmp_free(q);
        close(peer);
}

static void test_message_over_limit(void **state) {
        char *ev = big_event(QMP_MAX_MESSAGE + 1);
        struct script s = { 0 };
        struct qmp *q = NULL;
        int peer;

        new_running(&q, &peer);
        s.fd = peer;
        s.client_fd = qmp_get_fd(q);
        script_add(&s, STEP_WRITE, ev, strlen(ev));
        script_start(&s);
        assert_int_equal(qmp_execute(q, "query-status", NULL, 5000, NULL, errbuf, sizeof errbuf), -EPROTO);
        assert_string_equal(errbuf, "QMP query-status: message longer than 1048576 bytes");
        qmp_free(q); /* the writer, if still blocked, gets EPIPE */
        script_join(&s);
        free(ev);
        close(peer);
}

/* A peer that streams one endless string: the client must give up after
 * the cap instead of buffering it all. */
struct flood {
        int fd;
        size_t sent;
        pthread_t thread;
};

static void *flood_run(void *arg) {
        static char chunk[65536];
        struct flood *f = arg;
        static const char head[] = "{\"event\": \"FLOOD\", \"data\": \"";

        memset(chunk, 'x', sizeof chunk);
        if (send(f->fd, head, strlen(head), MSG_NOSIGNAL) < 0)
                return NULL;
        f->sent = strlen(head);
        /* Stops at EPIPE once the client closed, or at a sanity bound. */
        while (f->sent < (size_t)64 * 1024 * 1024) {
                ssize_t k = send(f->fd, chunk, sizeof chunk, MSG_NOSIGNAL);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                f->sent += (size_t)k;
        }
        return NULL;
}

static void test_endless_message(void **state) {
        struct flood f = { 0 };
        struct qmp *q = NULL;
        int peer;

        new_running(&q, &peer);
        f.fd = peer;
        assert_int_equal(pthread_create(&f.thread, NULL, flood_run, &f), 0);
        assert_int_equal(qmp_execute(q, "query-status", NULL, 10000, NULL, errbuf, sizeof errbuf), -EPROTO);
        assert_string_equal(errbuf, "QMP query-status: message longer than 1048576 bytes");
        qmp_free(q);
        assert_int_equal(pthread_join(f.thread, NULL), 0);
        /* Read: the cap, plus at most one chunk; the rest sat in socket
         * buffers until the close. */
        assert_true(f.sent >= QMP_MAX_MESSAGE);
        assert_true(f.sent < (size_t)4 * 1024 * 1024);
        close(peer);
}

static void test_event_queue_cap(void **state) {
        size_t total = QMP_MAX_EVENTS + 6, len = 0;
        char *buf = malloc(total * 64);
        struct qmp *q = NULL;
        struct json_object *ev = NULL, *data, *v;
        size_t popped = 0;
        int peer;

        assert_non_null(buf);
        for (size_t i = 0; i < total; i++)
                len += (size_t)sprintf(buf + len, "{\"event\":\"E\",\"data\":{\"n\":%zu}}\r\n", i);
        new_running(&q, &peer);
        write_all(peer, buf, len);
        assert_int_equal(qmp_process_input(q), 0);
        assert_int_equal(qmp_events_dropped(q), 6);
        /* The oldest were dropped; the rest come out in order. */
        while (qmp_next_event(q, &ev) == 1) {
                assert_true(json_object_object_get_ex(ev, "data", &data));
                assert_true(json_object_object_get_ex(data, "n", &v));
                assert_int_equal(json_object_get_int(v), 6 + popped);
                json_object_put(ev);
                popped++;
        }
        assert_int_equal(popped, QMP_MAX_EVENTS);
        free(buf);
        qmp_free(q);
        close(peer);
}

static void test_process_input_eof_keeps_events(void **state) {
        struct qmp *q = NULL;
        int peer;

        new_running(&q, &peer);
        /* Nothing there yet: no error, no event. */
        assert_int_equal(qmp_process_input(q), 0);
        assert_no_event(q);
        peer_write(peer, EVENT_STOP);
        peer_write(peer, "{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true, \"reason\": \"guest-shutdown\"}}\r\n");
        close(peer);
        assert_int_equal(qmp_process_input(q), -ECONNRESET);
        assert_next_event(q, "STOP");
        assert_next_event(q, "SHUTDOWN");
        assert_no_event(q);
        assert_int_equal(qmp_process_input(q), -ENOTCONN);
        qmp_free(q);
}

static void test_events_freed_with_client(void **state) {
        struct qmp *q = NULL;
        int peer;

        /* Queued events and a pending partial message are released by
         * qmp_free (checked by the sanitizer build). */
        new_running(&q, &peer);
        peer_write(peer, EVENT_STOP);
        peer_write(peer, EVENT_STOP);
        peer_write(peer, "{\"event\": \"HALF");
        assert_int_equal(qmp_process_input(q), 0);
        assert_null(qmp_free(q));
        close(peer);
}

/* ---- execute_json ---- */

static void test_execute_json(void **state) {
        struct qmp *q = NULL;
        struct json_object *ret = NULL;
        int peer;

        new_running(&q, &peer);
        peer_write(peer, STATUS_REPLY);
        assert_int_equal(qmp_execute_json(q, " {\"execute\": \"query-status\"}\n", 1000, &ret, errbuf, sizeof errbuf), 0);
        assert_string_equal(peer_read(peer), STATUS_SENT);
        json_object_put(ret);

        peer_write(peer, "{\"return\": {}, \"id\": 3}\r\n");
        assert_int_equal(qmp_execute_json(q, "{\"arguments\": {\"device\": \"d0\", \"force\": true}, \"execute\": \"eject\"}",
                                          1000, NULL, errbuf, sizeof errbuf),
                         0);
        assert_string_equal(peer_read(peer),
                            "{\"execute\":\"eject\",\"arguments\":{\"device\":\"d0\",\"force\":true},\"id\":3}\r\n");

        peer_write(peer, "{\"id\": 4, \"error\": {\"class\": \"GenericError\", \"desc\": \"Device 'd9' not found\"}}\r\n");
        assert_int_equal(qmp_execute_json(q, "{\"execute\":\"eject\",\"arguments\":{\"device\":\"d9\"}}", 1000, NULL,
                                          errbuf, sizeof errbuf),
                         -EREMOTEIO);
        assert_string_equal(errbuf, "Device 'd9' not found");
        qmp_free(q);
        close(peer);
}

static void test_execute_json_invalid(void **state) {
        static const struct {
                const char *in, *msg;
        } cases[] = {
                { "", "QMP command: incomplete JSON" },
                { "{\"execute\":", "QMP command: incomplete JSON" },
                { "nonsense", NULL },
                { "{\"execute\":\"x\"} {}", NULL },
                { "[\"execute\"]", "QMP command: not a JSON object" },
                { "{}", "QMP command: missing \"execute\"" },
                { "{\"execute\": 1}",
                  "QMP command: unexpected member \"execute\" (only \"execute\" and \"arguments\")" },
                { "{\"execute\": \"x\", \"arguments\": []}",
                  "QMP command: unexpected member \"arguments\" (only \"execute\" and \"arguments\")" },
                { "{\"execute\": \"x\", \"id\": 5}",
                  "QMP command: unexpected member \"id\" (only \"execute\" and \"arguments\")" },
                { "{\"exec-oob\": \"x\"}",
                  "QMP command: unexpected member \"exec-oob\" (only \"execute\" and \"arguments\")" },
        };
        struct qmp *q = NULL;
        int peer;

        new_running(&q, &peer);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                errbuf[0] = '\0';
                assert_int_equal(qmp_execute_json(q, cases[i].in, 100, NULL, errbuf, sizeof errbuf), -EINVAL);
                if (cases[i].msg)
                        assert_string_equal(errbuf, cases[i].msg);
                else
                        assert_true(strncmp(errbuf, "QMP command: ", 13) == 0 && strlen(errbuf) > 13);
        }
        assert_int_equal(qmp_execute_json(q, NULL, 100, NULL, errbuf, sizeof errbuf), -EINVAL);
        /* None of them reached the wire. */
        assert_string_equal(peer_read(peer), "");
        qmp_free(q);
        close(peer);
}

/* ---- connect ---- */

static char tmpdir[64];

static int make_tmpdir(void **state) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/test-qmp-XXXXXX");
        return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state) {
        char p[128];

        snprintf(p, sizeof p, "%s/qmp.sock", tmpdir);
        unlink(p);
        return rmdir(tmpdir);
}

static int bind_unix(const char *path, bool do_listen) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
        assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        if (do_listen)
                assert_int_equal(listen(fd, 1), 0);
        return fd;
}

static void test_connect_missing_path(void **state) {
        struct qmp *q = NULL;
        char path[128], want[256];
        uint64_t t0, dt;

        snprintf(path, sizeof path, "%s/qmp.sock", tmpdir);
        t0 = now_ms();
        assert_int_equal(qmp_connect_unix(path, 200, &q, errbuf, sizeof errbuf), -ENOENT);
        dt = now_ms() - t0;
        assert_null(q);
        assert_true(dt >= 199);
        assert_true(dt < 1500);
        snprintf(want, sizeof want, "connect %s: No such file or directory (still failing after 200 ms)", path);
        assert_string_equal(errbuf, want);

        assert_int_equal(qmp_connect_unix(path, 0, &q, errbuf, sizeof errbuf), -ENOENT);
        snprintf(want, sizeof want, "connect %s: No such file or directory", path);
        assert_string_equal(errbuf, want);
}

static void test_connect_refused(void **state) {
        struct qmp *q = NULL;
        char path[128], want[256];
        int fd;

        snprintf(path, sizeof path, "%s/qmp.sock", tmpdir);
        fd = bind_unix(path, false); /* a socket file nobody listens on */
        assert_int_equal(qmp_connect_unix(path, 50, &q, errbuf, sizeof errbuf), -ECONNREFUSED);
        snprintf(want, sizeof want, "connect %s: Connection refused (still failing after 50 ms)", path);
        assert_string_equal(errbuf, want);
        close(fd);
}

static void test_connect_not_retried(void **state) {
        struct qmp *q = NULL;
        char path[128], want[256];
        uint64_t t0;
        int fd;

        /* A regular file is not a socket: no point in retrying. */
        snprintf(path, sizeof path, "%s/qmp.sock", tmpdir);
        fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        close(fd);
        t0 = now_ms();
        assert_int_equal(qmp_connect_unix(path, 5000, &q, errbuf, sizeof errbuf), -ENOTSOCK);
        assert_true(now_ms() - t0 < 1000);
        snprintf(want, sizeof want, "connect %s: not a socket", path);
        assert_string_equal(errbuf, want);
        unlink(path);
}

static void test_connect_bad_path(void **state) {
        struct qmp *q = NULL;
        char path[200];

        memset(path, 'p', sizeof path - 1);
        path[sizeof path - 1] = '\0';
        assert_int_equal(qmp_connect_unix(path, 100, &q, errbuf, sizeof errbuf), -ENAMETOOLONG);
        assert_non_null(strstr(errbuf, ": path longer than 107 bytes"));
        assert_int_equal(qmp_connect_unix("", 100, &q, errbuf, sizeof errbuf), -EINVAL);
        assert_int_equal(qmp_connect_unix(NULL, 100, &q, errbuf, sizeof errbuf), -EINVAL);
        assert_int_equal(qmp_connect_unix("/x", -5, &q, errbuf, sizeof errbuf), -EINVAL);
        assert_null(q);
}

struct late_server {
        char path[128];
        pthread_t thread;
        bool ok;
};

static void *late_server_run(void *arg) {
        struct late_server *ls = arg;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd, c;

        usleep(150 * 1000);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return NULL;
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", ls->path);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 1) < 0) {
                close(fd);
                return NULL;
        }
        c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        close(fd);
        if (c < 0)
                return NULL;
        {
                struct script s = { .fd = c };

                script_add(&s, STEP_WRITE, GREETING, strlen(GREETING));
                script_add(&s, STEP_READ_LINE, NULL, 0);
                script_add(&s, STEP_WRITE, CAPS_OK, strlen(CAPS_OK));
                script_run(&s);
                ls->ok = !s.failed && strcmp(s.received, CAPS_SENT) == 0;
        }
        close(c);
        return NULL;
}

static void test_connect_waits_for_listener(void **state) {
        struct late_server ls = { 0 };
        struct qmp *q = NULL;
        uint64_t t0, dt;

        snprintf(ls.path, sizeof ls.path, "%s/qmp.sock", tmpdir);
        assert_int_equal(pthread_create(&ls.thread, NULL, late_server_run, &ls), 0);
        t0 = now_ms();
        assert_int_equal(qmp_connect_unix(ls.path, 5000, &q, errbuf, sizeof errbuf), 0);
        dt = now_ms() - t0;
        assert_true(dt >= 100);
        assert_true(dt < 3000);
        assert_true(fcntl(qmp_get_fd(q), F_GETFD) & FD_CLOEXEC);
        assert_int_equal(qmp_handshake(q, 5000, errbuf, sizeof errbuf), 0);
        qmp_free(q);
        assert_int_equal(pthread_join(ls.thread, NULL), 0);
        assert_true(ls.ok);
}

/* ---- a real QEMU ---- */

static pid_t qemu_pid = -1;

static bool in_path(const char *name) {
        const char *path = getenv("PATH");
        char buf[PATH_MAX];

        if (!path)
                path = "/usr/bin:/bin";
        while (*path) {
                size_t n = strcspn(path, ":");
                snprintf(buf, sizeof buf, "%.*s/%s", (int)n, path, name);
                if (access(buf, X_OK) == 0)
                        return true;
                path += n + (path[n] == ':');
        }
        return false;
}

static int qemu_teardown(void **state) {
        if (qemu_pid > 0) {
                kill(qemu_pid, SIGKILL);
                waitpid(qemu_pid, NULL, 0);
                qemu_pid = -1;
        }
        return remove_tmpdir(state);
}

/* Waits for the QEMU child to exit on its own, within timeout_ms. */
static int wait_qemu(int timeout_ms) {
        uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
        int status;

        while (now_ms() < deadline) {
                pid_t r = waitpid(qemu_pid, &status, WNOHANG);
                if (r == qemu_pid) {
                        qemu_pid = -1;
                        return status;
                }
                usleep(5000);
        }
        return -1;
}

static void test_real_qemu(void **state) {
        struct qmp *q = NULL;
        struct json_object *ret = NULL, *v, *ev = NULL;
        char path[128], qmparg[160];
        bool got_shutdown = false;
        uint64_t deadline;
        int r, status;

        if (!in_path("qemu-system-x86_64"))
                skip();

        snprintf(path, sizeof path, "%s/qmp.sock", tmpdir);
        snprintf(qmparg, sizeof qmparg, "unix:%s,server=on,wait=off", path);
        qemu_pid = fork();
        assert_true(qemu_pid >= 0);
        if (qemu_pid == 0) {
                char *argv[] = { "qemu-system-x86_64", "-machine", "none", "-accel", "tcg", "-nodefaults",
                                 "-display", "none", "-qmp", qmparg, NULL };
                int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);

                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (devnull >= 0) {
                        dup2(devnull, 0);
                        dup2(devnull, 1);
                }
                execvp(argv[0], argv);
                _exit(127);
        }

        assert_int_equal(qmp_connect_unix(path, 5000, &q, errbuf, sizeof errbuf), 0);
        assert_int_equal(qmp_handshake(q, 5000, errbuf, sizeof errbuf), 0);

        assert_int_equal(qmp_execute(q, "query-status", NULL, 5000, &ret, errbuf, sizeof errbuf), 0);
        assert_true(json_object_object_get_ex(ret, "status", &v));
        assert_true(json_object_is_type(v, json_type_string));
        assert_true(json_object_object_get_ex(ret, "running", &v));
        assert_true(json_object_is_type(v, json_type_boolean));
        json_object_put(ret);

        assert_int_equal(qmp_execute(q, "no-such-command", NULL, 5000, NULL, errbuf, sizeof errbuf), -EREMOTEIO);
        assert_string_equal(errbuf, "The command no-such-command has not been found");

        assert_int_equal(qmp_execute_json(q, "{\"execute\":\"query-version\"}", 5000, &ret, errbuf, sizeof errbuf), 0);
        assert_true(json_object_object_get_ex(ret, "qemu", &v));
        assert_true(json_object_object_get_ex(v, "major", &v));
        assert_true(json_object_get_int(v) >= 7);
        json_object_put(ret);

        /* QEMU sends SHUTDOWN before the reply to quit, then closes. */
        assert_int_equal(qmp_execute(q, "quit", NULL, 5000, &ret, errbuf, sizeof errbuf), 0);
        json_object_put(ret);
        deadline = now_ms() + 5000;
        do {
                struct pollfd pfd = { .fd = qmp_get_fd(q), .events = POLLIN };
                poll(&pfd, 1, 100);
                r = qmp_process_input(q);
        } while (r == 0 && now_ms() < deadline);
        assert_int_equal(r, -ECONNRESET);
        while (qmp_next_event(q, &ev) == 1) {
                if (json_object_object_get_ex(ev, "event", &v) && strcmp(json_object_get_string(v), "SHUTDOWN") == 0)
                        got_shutdown = true;
                json_object_put(ev);
        }
        assert_true(got_shutdown);
        qmp_free(q);

        status = wait_qemu(5000);
        assert_true(status != -1);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_new_fd_errors),
                cmocka_unit_test(test_new_fd_flags),
                cmocka_unit_test(test_null_safety),
                cmocka_unit_test(test_bad_arguments),
                cmocka_unit_test(test_handshake_ok),
                cmocka_unit_test(test_server_version),
                cmocka_unit_test(test_handshake_greeting_seen_by_process_input),
                cmocka_unit_test(test_handshake_not_greeting),
                cmocka_unit_test(test_handshake_capabilities_refused),
                cmocka_unit_test(test_reply_before_command_dropped),
                cmocka_unit_test(test_handshake_silent_peer),
                cmocka_unit_test(test_handshake_silent_after_greeting),
                cmocka_unit_test(test_handshake_eof),
                cmocka_unit_test(test_execute_ok),
                cmocka_unit_test(test_execute_arguments),
                cmocka_unit_test(test_execute_error_reply),
                cmocka_unit_test(test_error_desc_truncated),
                cmocka_unit_test(test_event_between_request_and_reply),
                cmocka_unit_test(test_unknown_ids_dropped),
                cmocka_unit_test(test_late_reply_after_timeout),
                cmocka_unit_test(test_silent_peer_timeout),
                cmocka_unit_test(test_timeout_survives_signals),
                cmocka_unit_test(test_eof_mid_reply),
                cmocka_unit_test(test_send_to_closed_peer),
                cmocka_unit_test(test_send_timeout),
                cmocka_unit_test(test_malformed_json),
                cmocka_unit_test(test_not_an_object),
                cmocka_unit_test(test_split_events_every_byte),
                cmocka_unit_test(test_split_one_byte_at_a_time),
                cmocka_unit_test(test_feed),
                cmocka_unit_test(test_split_conversation_every_byte),
                cmocka_unit_test(test_message_at_limit),
                cmocka_unit_test(test_message_over_limit),
                cmocka_unit_test(test_endless_message),
                cmocka_unit_test(test_event_queue_cap),
                cmocka_unit_test(test_process_input_eof_keeps_events),
                cmocka_unit_test(test_events_freed_with_client),
                cmocka_unit_test(test_execute_json),
                cmocka_unit_test(test_execute_json_invalid),
                cmocka_unit_test_setup_teardown(test_connect_missing_path, make_tmpdir, remove_tmpdir),
                cmocka_unit_test_setup_teardown(test_connect_refused, make_tmpdir, remove_tmpdir),
                cmocka_unit_test_setup_teardown(test_connect_not_retried, make_tmpdir, remove_tmpdir),
                cmocka_unit_test(test_connect_bad_path),
                cmocka_unit_test_setup_teardown(test_connect_waits_for_listener, make_tmpdir, remove_tmpdir),
                cmocka_unit_test_setup_teardown(test_real_qemu, make_tmpdir, qemu_teardown),
        };

        /* A peer that vanished must show up as an error, never kill us. */
        signal(SIGPIPE, SIG_DFL);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
