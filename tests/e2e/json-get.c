/* json-get PATH: the end-to-end tests' JSON reader. Parses stdin strictly
 * (one JSON value, nothing after it) and prints the value at PATH: strings
 * raw, anything else as JSON text. PATH is "." for the whole value or
 * components separated by '.': a member name, an array index, or
 * [key=value] for the first array element whose member key is the string
 * value — e.g. "[name=alpha].state" or "0.pid".
 * Exit status: 0 found, 1 not found (or null), 2 input is not valid JSON or
 * bad usage. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_object *step(json_object *cur, char *comp) {
        json_object *v = NULL;
        if (comp[0] == '[') {
                char *eq = strchr(comp, '='), *end = strrchr(comp, ']');
                if (!eq || !end || end < eq || !json_object_is_type(cur, json_type_array))
                        return NULL;
                *eq = *end = '\0';
                for (size_t i = 0; i < json_object_array_length(cur); i++) {
                        json_object *e = json_object_array_get_idx(cur, i), *k;
                        if (json_object_object_get_ex(e, comp + 1, &k) && json_object_is_type(k, json_type_string) &&
                            strcmp(json_object_get_string(k), eq + 1) == 0)
                                return e;
                }
                return NULL;
        }
        if (json_object_is_type(cur, json_type_array)) {
                char *endp;
                long i = strtol(comp, &endp, 10);
                if (*endp || i < 0 || (size_t)i >= json_object_array_length(cur))
                        return NULL;
                return json_object_array_get_idx(cur, (size_t)i);
        }
        if (json_object_is_type(cur, json_type_object) && json_object_object_get_ex(cur, comp, &v))
                return v;
        return NULL;
}

int main(int argc, char **argv) {
        static char buf[1 << 22];
        size_t n = fread(buf, 1, sizeof buf - 1, stdin);
        if (argc != 2) {
                fprintf(stderr, "usage: json-get PATH < JSON\n");
                return 2;
        }
        buf[n] = '\0';
        json_tokener *tok = json_tokener_new();
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        json_object *root = json_tokener_parse_ex(tok, buf, (int)n);
        enum json_tokener_error jerr = json_tokener_get_error(tok);
        size_t used = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        if (!root && jerr == json_tokener_success)
                jerr = json_tokener_continue;   /* the literal null parses to NULL */
        if (jerr != json_tokener_success || strspn(buf + used, " \t\r\n") != n - used) {
                fprintf(stderr, "json-get: invalid JSON: %s\n",
                        jerr != json_tokener_success ? json_tokener_error_desc(jerr) : "trailing text");
                json_object_put(root);
                return 2;
        }
        json_object *cur = root;
        char *path = strdup(argv[1]);
        for (char *save = NULL, *comp = strcmp(path, ".") ? strtok_r(path, ".", &save) : NULL; cur && comp;
             comp = strtok_r(NULL, ".", &save))
                cur = step(cur, comp);
        int status = 1;
        if (cur) {
                puts(json_object_is_type(cur, json_type_string) ? json_object_get_string(cur)
                                                                 : json_object_to_json_string_ext(cur, JSON_C_TO_STRING_PLAIN));
                status = 0;
        }
        free(path);
        json_object_put(root);
        return status;
}
