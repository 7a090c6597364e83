/* The QMP client's stream parser: what QEMU (or anything that took over
 * its socket) sends, fed through qmp_process_input() on a socketpair in
 * chunks of fuzzed sizes (all but the last through qmp_feed(), the parser
 * each read feeds), then EOF. The first byte is the mode:
 *   bits 0-3  chunk size: 1 << (bits) bytes (1 byte .. 32 KiB)
 *   bit 4     after the stream: qmp_handshake() and qmp_execute_json()
 *             of a user command (the input up to the first "\n@@\n")
 *             with the rest as the peer's replies (ids 1 and 2)
 *   0x2f      alone (the whole input): one JSON string that grows past
 *             QMP_MAX_MESSAGE, which must be refused (a single slow case,
 *             kept out of the mutated inputs)
 * Afterwards all queued events are drained; nothing may leak. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <json-c/json.h>

#include "qmp/qmp.h"
#include "tools/fuzz/fuzz.h"

/* Writes what fits without blocking; returns how much. */
static size_t put(int fd, const uint8_t *p, size_t n) {
        ssize_t k = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        return k < 0 ? 0 : (size_t)k;
}

static void drain(struct qmp *q) {
        struct json_object *ev;
        while (qmp_next_event(q, &ev) == 1) {
                if (!json_object_is_type(ev, json_type_object))
                        abort();
                json_object_put(ev);
        }
}

/* Streams data to the client in chunks, processing as it goes: every
 * chunk but the last straight to the parser with qmp_feed() (what each
 * read hands it, without three syscalls per chunk), the last through the
 * socket, so that qmp_process_input() reads data too. Returns the last
 * result. */
static int stream(struct qmp *q, int peer, const uint8_t *data, size_t len, size_t chunk) {
        int r = 0;
        size_t off = 0;
        while (len - off > chunk && r == 0) {
                r = qmp_feed(q, data + off, chunk);
                off += chunk;
        }
        while (off < len && r == 0) {
                size_t k = put(peer, data + off, len - off);
                off += k;
                r = qmp_process_input(q);
                if (r == -EAGAIN)
                        abort();        /* not a documented result */
        }
        return r;
}

static int stream_oversized(struct qmp *q, int peer, const uint8_t *data, size_t len) {
        static const char head[] = "{\"event\":\"BIG\",\"data\":\"";
        int r = stream(q, peer, (const uint8_t *)head, sizeof head - 1, sizeof head);
        /* Only string-safe bytes, so the message stays one long string. */
        uint8_t block[4096];
        size_t bl = 0;
        for (size_t i = 0; bl < sizeof block; i++) {
                uint8_t c = len ? data[i % len] : 'x';
                block[bl++] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? c : 'x';
        }
        size_t sent = 0;
        while (r == 0 && sent <= QMP_MAX_MESSAGE + sizeof block) {
                r = stream(q, peer, block, sizeof block, sizeof block);
                sent += sizeof block;
        }
        if (r != -EPROTO)
                abort();        /* an overlong message must be refused */
        return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        uint8_t mode = data[0];
        data++;
        size--;
        size_t chunk = (size_t)1 << (mode & 0x0f);

        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                abort();
        struct qmp *q = NULL;
        if (qmp_new_fd(sv[0], &q) < 0)
                abort();

        if (mode == 0x2f && size == 0) {
                stream_oversized(q, sv[1], data, size);
        } else if (mode & 0x10) {
                const uint8_t *cmd, *rest;
                size_t cmd_len, rest_len;
                char err[512], *text;
                fuzz_split(data, size, "\n@@\n", &cmd, &cmd_len, &rest, &rest_len);
                /* Everything the peer says arrives before the client asks. */
                size_t k = put(sv[1], rest, rest_len);
                (void)k;
                shutdown(sv[1], SHUT_WR);
                int r = qmp_handshake(q, 0, err, sizeof err);
                text = strndup((const char *)cmd, cmd_len);
                if (!text)
                        abort();
                if (r == 0) {
                        struct json_object *ret = NULL;
                        if (qmp_execute_json(q, text, 0, &ret, err, sizeof err) == 0 && !ret)
                                abort();
                        json_object_put(ret);
                }
                free(text);
        } else {
                int r = stream(q, sv[1], data, size, chunk);
                if (r == 0) {
                        shutdown(sv[1], SHUT_WR);
                        r = qmp_process_input(q);
                        /* Drain what is still buffered, then EOF. */
                        for (int i = 0; r == 0 && i < 1000; i++)
                                r = qmp_process_input(q);
                        if (r == 0)
                                abort();        /* EOF must be reported */
                }
                if (qmp_process_input(q) != -ENOTCONN)
                        abort();        /* an error disconnects for good */
        }
        drain(q);
        qmp_free(q);
        close(sv[1]);
        return 0;
}
