/* The guest agent client (qmp/agent.c): the reply stream parser, and
 * agent_connect/agent_execute against a fake agent on a unix socket, with
 * the failures: no socket, an agent that never answers (bounded), error
 * replies, stale replies a previous client left behind. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "qmp/agent.h"

static int count_cb(void *ud, struct json_object *msg) {
        (void)msg;
        (*(int *)ud)++;
        return 0;
}

static void test_stream(void **state) {
        (void)state;
        int n = 0;
        size_t used;
        struct agent_stream *s = agent_stream_new(true);
        const char junk[] = "{\"return\": 1}\n{\"half\": ";
        assert_int_equal(agent_stream_feed(s, junk, sizeof junk - 1, &used, count_cb, &n), 0);
        assert_int_equal(n, 0);         /* all before the sentinel is stale */
        const char good[] = "\xff{\"return\": 7}\n {\"return\": {}}";
        for (size_t i = 0; i < sizeof good - 1; i++)    /* byte by byte */
                assert_int_equal(agent_stream_feed(s, good + i, 1, &used, count_cb, &n), 0);
        assert_int_equal(n, 2);
        /* A sentinel in the middle of a message drops the half message. */
        const char reset[] = "{\"return\": \xff{\"return\": 3}";
        assert_int_equal(agent_stream_feed(s, reset, sizeof reset - 1, &used, count_cb, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(agent_stream_feed(s, "[1]", 3, &used, count_cb, &n), -EPROTO);
        agent_stream_await_sentinel(s);
        assert_int_equal(agent_stream_feed(s, "\xff{bad", 5, &used, count_cb, &n), -EPROTO);
        agent_stream_free(s);

        /* Longer than AGENT_MAX_MESSAGE: refused. */
        s = agent_stream_new(false);
        size_t big = AGENT_MAX_MESSAGE + 16;
        char *b = malloc(big);
        memset(b, 'a', big);
        b[0] = '"';
        assert_int_equal(agent_stream_feed(s, b, big, &used, count_cb, &n), -EPROTO);
        free(b);
        agent_stream_free(s);
}

static char sock_path[108];
static int listen_fd = -1;

/* The fake agent: one connection; answers the sync after stale output,
 * then answers each command line with the next scripted reply. */
static const char *script[4];
static void *fake_agent(void *arg) {
        (void)arg;
        int c = accept(listen_fd, NULL, NULL);
        if (c < 0)
                return NULL;
        char buf[4096];
        size_t len = 0;
        int step = -1;
        for (;;) {
                ssize_t k = read(c, buf + len, sizeof buf - 1 - len);
                if (k <= 0)
                        break;
                len += (size_t)k;
                buf[len] = '\0';
                char *nl;
                while ((nl = strchr(buf, '\n'))) {
                        *nl = '\0';
                        char out[512];
                        if (step < 0) {
                                const char *id = strstr(buf, "\"id\":");
                                long long v = id ? atoll(id + 5) : -1;
                                snprintf(out, sizeof out, "{\"return\": {}}\n{\"return\": 99}\xff{\"return\": %lld}\n", v);
                        } else {
                                snprintf(out, sizeof out, "%s", script[step] ? script[step] : "");
                        }
                        if (write(c, out, strlen(out)) < 0)
                                break;
                        step++;
                        memmove(buf, nl + 1, len - (size_t)(nl + 1 - buf) + 1);
                        len = strlen(buf);
                }
        }
        close(c);
        return NULL;
}

static void listen_at(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sock_path, sizeof sock_path, "/tmp/vrt-test-agent-%d.sock", (int)getpid());
        unlink(sock_path);
        memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
        listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(listen_fd >= 0);
        assert_int_equal(bind(listen_fd, (struct sockaddr *)&sa, sizeof sa), 0);
        assert_int_equal(listen(listen_fd, 4), 0);
}

static void test_connect_execute(void **state) {
        (void)state;
        char err[512];
        struct agent *a = NULL;
        struct json_object *ret = NULL;
        pthread_t t;
        listen_at();
        script[0] = "{\"return\": {\"version\": \"7.2.0\"}}\n";
        script[1] = "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"no such command\"}}\n";
        script[2] = NULL;
        assert_int_equal(pthread_create(&t, NULL, fake_agent, NULL), 0);
        assert_int_equal(agent_connect(sock_path, 2000, &a, err, sizeof err), 0);
        assert_int_equal(agent_execute(a, "guest-info", NULL, 2000, &ret, err, sizeof err), 0);
        assert_string_equal(json_object_get_string(json_object_object_get(ret, "version")), "7.2.0");
        json_object_put(ret);
        assert_int_equal(agent_execute(a, "guest-nope", NULL, 2000, NULL, err, sizeof err), -EREMOTEIO);
        assert_string_equal(err, "guest-nope: no such command");
        struct json_object *bad = json_object_new_array();
        assert_int_equal(agent_execute(a, "guest-info", bad, 2000, NULL, err, sizeof err), -EINVAL);
        json_object_put(bad);
        agent_free(a);
        pthread_join(t, NULL);
        close(listen_fd);
        unlink(sock_path);
}

static long long mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void test_no_answer_is_bounded(void **state) {
        (void)state;
        char err[512];
        struct agent *a = NULL;
        listen_at();    /* listens, never accepts: like QEMU with no qemu-ga */
        long long t0 = mono_ms();
        assert_int_equal(agent_connect(sock_path, 300, &a, err, sizeof err), -ETIMEDOUT);
        long long dt = mono_ms() - t0;
        assert_true(dt >= 250 && dt < 1500);
        assert_null(a);
        assert_non_null(strstr(err, "no answer from the guest agent"));
        close(listen_fd);
        unlink(sock_path);
        assert_int_equal(agent_connect(sock_path, 300, &a, err, sizeof err), -ENOENT);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_stream),
                cmocka_unit_test(test_connect_execute),
                cmocka_unit_test(test_no_answer_is_bounded),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
