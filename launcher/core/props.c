#include "launcher/core/props.h"
#include "launcher/core/fileio.h"
#include "launcher/core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROPS_MAX_FILE (1024 * 1024)

static int key_is_valid(const char *key) {
        if (!*key)
                return 0;
        for (const char *p = key; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                      *p == '_' || *p == '.' || *p == '-'))
                        return 0;
        return 1;
}

int props_parse_buffer(const char *name, const char *text, size_t len,
                       props_handler handler, void *userdata,
                       char *err, size_t errlen) {
        char *seen[PROPS_MAX_KEYS];
        size_t n_seen = 0;
        char line[PROPS_MAX_LINE + 2];
        unsigned lineno = 0;
        size_t pos = 0;
        int r = 0;

        while (pos < len) {
                const char *nl = memchr(text + pos, '\n', len - pos);
                size_t l = nl ? (size_t)(nl - (text + pos)) : len - pos;
                lineno++;
                if (l > PROPS_MAX_LINE) {
                        snprintf(err, errlen, "%s:%u: line longer than %d bytes", name, lineno, PROPS_MAX_LINE);
                        r = -EINVAL;
                        goto done;
                }
                memcpy(line, text + pos, l);
                line[l] = '\0';
                pos += l + (nl ? 1 : 0);
                if (memchr(line, '\0', l)) {
                        snprintf(err, errlen, "%s:%u: NUL byte in line", name, lineno);
                        r = -EINVAL;
                        goto done;
                }

                char *s = str_trim(line);
                if (*s == '\0' || *s == '#')
                        continue;
                char *eq = strchr(s, '=');
                if (!eq) {
                        snprintf(err, errlen, "%s:%u: expected key=value, got \"%.64s\"", name, lineno, s);
                        r = -EINVAL;
                        goto done;
                }
                *eq = '\0';
                char *key = str_trim(s);
                char *value = str_trim(eq + 1);
                if (!key_is_valid(key)) {
                        snprintf(err, errlen, "%s:%u: invalid key \"%.64s\"", name, lineno, key);
                        r = -EINVAL;
                        goto done;
                }
                if (strlen(value) > PROPS_MAX_VALUE) {
                        snprintf(err, errlen, "%s:%u: value of %s longer than %d bytes", name, lineno, key, PROPS_MAX_VALUE);
                        r = -EINVAL;
                        goto done;
                }
                for (size_t i = 0; i < n_seen; i++)
                        if (strcmp(seen[i], key) == 0) {
                                snprintf(err, errlen, "%s:%u: duplicate key %s", name, lineno, key);
                                r = -EINVAL;
                                goto done;
                        }
                if (n_seen == PROPS_MAX_KEYS) {
                        snprintf(err, errlen, "%s:%u: more than %d keys", name, lineno, PROPS_MAX_KEYS);
                        r = -EINVAL;
                        goto done;
                }
                seen[n_seen] = strdup(key);
                if (!seen[n_seen]) {
                        r = -ENOMEM;
                        goto done;
                }
                n_seen++;

                char msg[512] = "";
                r = handler(key, value, lineno, userdata, msg, sizeof msg);
                if (r < 0) {
                        snprintf(err, errlen, "%s:%u: %s", name, lineno, msg[0] ? msg : strerror(-r));
                        goto done;
                }
        }
done:
        for (size_t i = 0; i < n_seen; i++)
                free(seen[i]);
        return r;
}

int props_parse_file(const char *path, props_handler handler, void *userdata,
                     char *err, size_t errlen) {
        char *buf = NULL;
        size_t len = 0;
        int r = fileio_read_regular(path, PROPS_MAX_FILE, &buf, &len, err, errlen);
        if (r < 0)
                return r;
        r = props_parse_buffer(path, buf, len, handler, userdata, err, errlen);
        free(buf);
        return r;
}
