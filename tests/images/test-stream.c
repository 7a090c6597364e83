/* Unit tests for image_flatten_write()'s stream (images/flatten.c over
 * images/worker.c): the bytes are those image_flatten_to_file() writes, a
 * buffer stays unchanged until the next write call has returned (export
 * hashes it meanwhile), the last call has len 0 whatever happened, and a
 * failing sink or a cancel stops the stream with its error. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"
#include "images/flatten.h"
#include "images/worker.h"

struct sink {
        uint8_t *out;
        size_t len, cap;
        const uint8_t *prev;    /* the buffer of the previous call ... */
        size_t prev_len;
        uint64_t prev_sum;      /* ... and its checksum then */
        unsigned calls, zero_calls, fail_at;
        int fail_with;
        unsigned progress_calls, cancel_at;
};

static uint64_t sum(const uint8_t *p, size_t n) {
        uint64_t h = 1469598103934665603u;
        for (size_t i = 0; i < n; i++)
                h = (h ^ p[i]) * 1099511628211u;
        return h;
}

static int on_write(const void *buf, size_t len, void *userdata) {
        struct sink *s = userdata;
        /* The previous buffer must not have been refilled yet. */
        if (s->prev)
                assert_true(sum(s->prev, s->prev_len) == s->prev_sum);
        s->calls++;
        if (len == 0) {
                s->zero_calls++;
                s->prev = NULL;
                return 0;
        }
        assert_int_equal(s->zero_calls, 0);     /* len 0 comes last */
        if (s->fail_at && s->calls == s->fail_at)
                return s->fail_with;
        if (s->len + len > s->cap) {
                s->cap = (s->len + len) * 2;
                s->out = realloc(s->out, s->cap);
                assert_non_null(s->out);
        }
        memcpy(s->out + s->len, buf, len);
        s->len += len;
        s->prev = buf;
        s->prev_len = len;
        s->prev_sum = sum(buf, len);
        return 0;
}

static int on_progress(uint64_t done, uint64_t total, void *userdata) {
        struct sink *s = userdata;
        assert_true(done <= total);
        s->progress_calls++;
        return s->cancel_at && s->progress_calls == s->cancel_at ? 1 : 0;
}

/* A 64 MiB template with three data ranges and an overlay over it. */
static int setup(void **state) {
        char *dir = test_tmpdir();
        char *tpl = test_path(dir, "tpl.qcow2"), *ovl = test_path(dir, "ovl.qcow2");
        const char *create[] = { "qemu-img", "create", "-q", "-f", "qcow2", tpl, "64M", NULL };
        const char *io[] = { "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 12M", "-c", "write -P 0x22 30M 9M",
                             "-c", "write -P 0x33 60M 4M", tpl, NULL };
        const char *over[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-b", "tpl.qcow2", "-F", "qcow2", ovl, NULL };
        const char *io2[] = { "qemu-io", "-f", "qcow2", "-c", "write -P 0x44 8M 10M", ovl, NULL };
        assert_int_equal(test_run(create, NULL), 0);
        assert_int_equal(test_run(io, NULL), 0);
        assert_int_equal(test_run(over, NULL), 0);
        assert_int_equal(test_run(io2, NULL), 0);
        free(tpl);
        free(ovl);
        *state = dir;
        return 0;
}

static int teardown(void **state) {
        test_rmtree(*state);
        free(*state);
        return 0;
}

static struct image_flatten *open_chain(const char *dir) {
        char *ovl = test_path(dir, "ovl.qcow2");
        char err[512];
        struct image_flatten *f = NULL;
        assert_int_equal(image_flatten_open(ovl, &f, err, sizeof err), 0);
        free(ovl);
        return f;
}

static void test_stream_equals_file(void **state) {
        const char *dir = *state;
        struct image_flatten *f = open_chain(dir);
        struct sink s = { 0 };
        char err[512];
        uint64_t want = image_flatten_size(f);

        assert_int_equal(image_flatten_write(f, on_write, on_progress, &s, err, sizeof err), 0);
        image_flatten_free(f);
        assert_int_equal(s.len, want);
        assert_int_equal(s.zero_calls, 1);
        assert_true(s.calls > 3);       /* several buffers: the rotation was exercised */
        assert_int_equal(s.progress_calls, s.calls);    /* 0 first, then after each data buffer */

        char *ovl = test_path(dir, "ovl.qcow2"), *file = test_path(dir, "flat.qcow2"), *mem = test_path(dir, "mem.qcow2");
        assert_int_equal(image_flatten_to_file(ovl, file, err, sizeof err), 0);
        test_write_file(mem, s.out, s.len);
        assert_true(test_files_equal(file, mem));
        const char *cmp[] = { "qemu-img", "compare", "-q", ovl, mem, NULL };
        assert_int_equal(test_run(cmp, NULL), 0);
        free(ovl);
        free(file);
        free(mem);
        free(s.out);
}

static void test_sink_error_stops(void **state) {
        struct image_flatten *f = open_chain(*state);
        struct sink s = { .fail_at = 3, .fail_with = -ENOSPC };
        char err[512] = "";

        assert_int_equal(image_flatten_write(f, on_write, NULL, &s, err, sizeof err), -ENOSPC);
        image_flatten_free(f);
        assert_true(test_contains(err, "ovl.qcow2"));
        assert_true(test_contains(err, strerror(ENOSPC)));
        assert_int_equal(s.calls, 4);   /* two buffers, the failing one, the final len 0 */
        assert_int_equal(s.zero_calls, 1);
        free(s.out);
}

static void test_cancel_stops(void **state) {
        struct image_flatten *f = open_chain(*state);
        struct sink s = { .cancel_at = 3 };
        char err[512] = "";

        assert_int_equal(image_flatten_write(f, on_write, on_progress, &s, err, sizeof err), -ECANCELED);
        image_flatten_free(f);
        assert_true(test_contains(err, "cancelled"));
        assert_int_equal(s.zero_calls, 1);
        assert_int_equal(s.calls, 3);   /* progress 0, two buffers (cancelled after the second), len 0 */
        free(s.out);
}

static void test_cancel_before_start(void **state) {
        struct image_flatten *f = open_chain(*state);
        struct sink s = { .cancel_at = 1 };
        char err[512] = "";

        assert_int_equal(image_flatten_write(f, on_write, on_progress, &s, err, sizeof err), -ECANCELED);
        image_flatten_free(f);
        assert_int_equal(s.calls, 0);   /* nothing was handed out */
}

static int count_fn(const void *buf, size_t len, void *userdata) {
        unsigned *n = userdata;
        (*n)++;
        return len == 7 ? -EPIPE : 0;
}

static void test_worker_error(void **state) {
        struct worker w;
        unsigned n = 0;
        static const char buf[8] = "abcdefg";

        assert_int_equal(worker_start(&w, count_fn, &n), 0);
        assert_int_equal(worker_hand(&w, buf, 3), 0);
        assert_int_equal(worker_wait(&w), 0);
        assert_int_equal(worker_hand(&w, buf, 7), 0);
        /* The failure surfaces at the next call and stops the worker. */
        assert_int_equal(worker_hand(&w, buf, 2), -EPIPE);
        assert_int_equal(worker_wait(&w), -EPIPE);
        assert_int_equal(worker_stop(&w), -EPIPE);
        assert_int_equal(n, 2);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_stream_equals_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sink_error_stops, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cancel_stops, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cancel_before_start, setup, teardown),
                cmocka_unit_test(test_worker_error),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
