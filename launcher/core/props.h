/* props: the one strict key=value parser for vrt.conf, image sidecars and
 * instance.properties. Lines are "key=value", "# comment" or blank; no
 * sections. Keys may repeat nowhere. */
#pragma once

#include <stddef.h>

#define PROPS_MAX_LINE 4096
#define PROPS_MAX_VALUE 1024
#define PROPS_MAX_KEYS 256

/* Called once per key=value line. Returns 0, or a negative errno after
 * writing the reason (without the file:line prefix) into err. */
typedef int (*props_handler)(const char *key, const char *value, unsigned line,
                             void *userdata, char *err, size_t errlen);

/* Parses the file at path. Errors are "path:line: message". Returns 0,
 * -ENOENT when the file is missing (err says so), -EINVAL on bad content,
 * or another negative errno from reading. */
int props_parse_file(const char *path, props_handler handler, void *userdata,
                     char *err, size_t errlen);

/* Same, for text already in memory; name is used in messages. */
int props_parse_buffer(const char *name, const char *text, size_t len,
                       props_handler handler, void *userdata,
                       char *err, size_t errlen);
