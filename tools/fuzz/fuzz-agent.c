/* The guest agent client's reply parser (qmp/agent.c): what a guest's
 * agent (or anything in the guest that opened the port) sends, fed
 * through agent_stream_feed() in chunks of fuzzed sizes. The first byte is
 * the mode:
 *   bits 0-3  chunk size: 1 << (bits) bytes (1 byte .. 32 KiB)
 *   bit 4     start by skipping to a 0xFF sentinel, as after
 *             guest-sync-delimited
 *   bit 5     the callback stops after each message (as a waiting call
 *             does), and feeding resumes after the bytes it used
 * A parse error resets the parser to await a sentinel, as the client does
 * while synchronising. Every message must be an object; nothing may leak. */
#include <errno.h>
#include <stdlib.h>

#include <json-c/json.h>

#include "qmp/agent.h"
#include "tools/fuzz/fuzz.h"

static int on_message(void *ud, struct json_object *msg) {
        size_t *n = ud;
        struct json_object *v = NULL;
        if (!json_object_is_type(msg, json_type_object))
                abort();
        (*n)++;
        /* What the client looks at in a reply. */
        if (json_object_object_get_ex(msg, "return", &v))
                (void)json_object_get_int64(v);
        if (json_object_object_get_ex(msg, "error", &v) && json_object_object_get_ex(v, "desc", &v))
                (void)json_object_get_string(v);
        return (*n & 1) ? 1 : 0;
}

static int on_message_all(void *ud, struct json_object *msg) {
        on_message(ud, msg);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        unsigned mode = data[0];
        size_t chunk = (size_t)1 << (mode & 0x0f), n_msgs = 0;
        struct agent_stream *s = agent_stream_new(mode & 0x10);
        if (!s)
                abort();
        const char *p = (const char *)data + 1;
        size_t len = size - 1, off = 0;
        while (off < len) {
                size_t n = len - off < chunk ? len - off : chunk, used = 0;
                int r = agent_stream_feed(s, p + off, n, &used, (mode & 0x20) ? on_message : on_message_all, &n_msgs);
                if (used > n)
                        abort();
                if (r < 0) {
                        if (r != -EPROTO)
                                abort();
                        agent_stream_await_sentinel(s);
                        off += n;
                } else if (r == 1) {
                        off += used;
                } else {
                        if (used != n)
                                abort();
                        off += n;
                }
        }
        agent_stream_free(s);
        return 0;
}
