/* vrt snapshot: external snapshots of a VM's disk. */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "launcher/cli/cli.h"
#include "launcher/core/actionlog.h"
#include "launcher/lifecycle/snapshot.h"

static const char usage_text[] =
        "usage: vrt snapshot [--quiesce] NAME [TAG]  take a snapshot (live while NAME runs;\n"
        "                                        --quiesce: guest file systems frozen by its agent)\n"
        "       vrt snapshot list NAME [--json]  tags, times, sizes and the disk chain\n"
        "       vrt snapshot revert NAME TAG     continue from TAG on a fresh layer (NAME stopped)\n"
        "       vrt snapshot delete NAME TAG     forget TAG, merging layers no longer needed (live too)";

static int status_for(int r) {
        switch (r) {
        case 0:
                return CLI_OK;
        case -EINVAL:
        case -ENOENT:
        case -EEXIST:
        case -ENAMETOOLONG:
                return CLI_INVALID;
        case -EREMOTE:
                return CLI_ELSEWHERE;
        default:
                return CLI_FAILED;
        }
}

static void human_size(long long b, char *buf, size_t len) {
        const char *u = "KMGT";
        double v = (double)b;
        if (b < 1024) {
                snprintf(buf, len, "%lldB", b);
                return;
        }
        int i = -1;
        while (v >= 1024 && i < 3) {
                v /= 1024;
                i++;
        }
        snprintf(buf, len, "%.1f%c", v, u[i]);
}

/* A duration in ms as a JSON number with 3 decimals; null when not measured (< 0). */
static struct json_object *json_ms(double ms) {
        char buf[32];
        if (ms < 0)
                return NULL;
        snprintf(buf, sizeof buf, "%.3f", ms);
        return json_object_new_double_s(ms, buf);
}

static int list(struct cli *cli, const char *name) {
        struct json_object *o = NULL, *snaps, *chain, *active;
        char err[2048] = "";
        int r = snapshot_list(cli->root, cli->runtime_dir, name, &o, err, sizeof err);
        if (r < 0) {
                cli_error("%s: %s", name, err);
                return status_for(r);
        }
        if (cli->json) {
                printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(o);
                return CLI_OK;
        }
        json_object_object_get_ex(o, "snapshots", &snaps);
        json_object_object_get_ex(o, "chain", &chain);
        json_object_object_get_ex(o, "active", &active);
        printf("%-32s  %-19s  %8s  %s\n", "TAG", "TIME", "SIZE", "LAYER");
        for (size_t i = 0; i < json_object_array_length(snaps); i++) {
                struct json_object *s = json_object_array_get_idx(snaps, i), *t, *tm, *sz, *l;
                json_object_object_get_ex(s, "tag", &t);
                json_object_object_get_ex(s, "time", &tm);
                json_object_object_get_ex(s, "size", &sz);
                json_object_object_get_ex(s, "layer", &l);
                time_t when = (time_t)json_object_get_int64(tm);
                struct tm lt;
                char ts[32], size[16];
                strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", localtime_r(&when, &lt));
                human_size(json_object_get_int64(sz), size, sizeof size);
                printf("%-32s  %-19s  %8s  %s\n", json_object_get_string(t), ts, size, json_object_get_string(l));
        }
        printf("active: %s\nchain:", json_object_get_string(active));
        for (size_t i = 0; i < json_object_array_length(chain); i++) {
                struct json_object *p;
                json_object_object_get_ex(json_object_array_get_idx(chain, i), "path", &p);
                printf("%s %s", i ? " ->" : "", json_object_get_string(p));
        }
        printf("\n");
        json_object_put(o);
        return CLI_OK;
}

int cmd_snapshot(struct cli *cli, int argc, char **argv) {
        struct snapshot_result res;
        char err[2048] = "", tagbuf[32];
        const char *verb = "create", *name, *tag;
        int r;

        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
                printf("%s\n", usage_text);
                return CLI_OK;
        }
        bool quiesce = false;
        if (argc >= 2 && strcmp(argv[1], "--quiesce") == 0) {
                quiesce = true;
                argv++;
                argc--;
        }
        if (argc >= 2 && (strcmp(argv[1], "list") == 0 || strcmp(argv[1], "revert") == 0 ||
                          strcmp(argv[1], "delete") == 0)) {
                verb = argv[1];
                argv++;
                argc--;
        }
        if (quiesce && strcmp(verb, "create") != 0) {
                cli_error("--quiesce is for taking a snapshot, not for snapshot %s", verb);
                return CLI_INVALID;
        }
        if (strcmp(verb, "list") == 0) {
                if (argc != 2) {
                        fprintf(stderr, "%s\n", usage_text);
                        return CLI_INVALID;
                }
                return list(cli, argv[1]);
        }
        bool need_tag = strcmp(verb, "create") != 0;
        if (argc < 2 || argc > 3 || (need_tag && argc != 3)) {
                fprintf(stderr, "%s\n", usage_text);
                return CLI_INVALID;
        }
        name = argv[1];
        if (argc == 3) {
                tag = argv[2];
        } else {
                /* Without a tag: the time, to the second. */
                time_t now = time(NULL);
                struct tm lt;
                strftime(tagbuf, sizeof tagbuf, "%Y%m%d-%H%M%S", localtime_r(&now, &lt));
                tag = tagbuf;
        }
        if (strcmp(verb, "create") == 0)
                r = snapshot_create(cli->root, cli->runtime_dir, name, tag, quiesce, &res, err, sizeof err);
        else if (strcmp(verb, "revert") == 0)
                r = snapshot_revert(cli->root, cli->runtime_dir, name, tag, &res, err, sizeof err);
        else
                r = snapshot_delete(cli->root, cli->runtime_dir, name, tag, &res, err, sizeof err);
        int status = status_for(r);
        if (r < 0) {
                cli_error("%s: snapshot %s %s: %s", name, verb, tag, err);
                if (status == CLI_FAILED)
                        actionlog_append(cli->root, "snapshot", "%s: snapshot %s %s failed: %s", name, verb, tag, err);
                return status;
        }
        char what[256];
        if (strcmp(verb, "create") == 0)
                snprintf(what, sizeof what, "snapshot %s taken%s%s; active layer %s", tag, res.live ? " live" : "",
                         quiesce ? ", guest file systems frozen" : "", res.layer);
        else if (strcmp(verb, "revert") == 0)
                snprintf(what, sizeof what, "reverted to snapshot %s; active layer %s", tag, res.layer);
        else
                snprintf(what, sizeof what, "snapshot %s deleted (%u layers merged, %u removed)", tag, res.merged, res.removed);
        actionlog_append(cli->root, "snapshot", "%s: %s", name, what);
        if (cli->json) {
                struct json_object *o = json_object_new_object();
                json_object_object_add(o, "name", json_object_new_string(name));
                json_object_object_add(o, "tag", json_object_new_string(tag));
                json_object_object_add(o, "action", json_object_new_string(verb));
                json_object_object_add(o, "live", json_object_new_boolean(res.live));
                json_object_object_add(o, "active", json_object_new_string(res.layer));
                json_object_object_add(o, "merged", json_object_new_int((int)res.merged));
                json_object_object_add(o, "removed", json_object_new_int((int)res.removed));
                if (strcmp(verb, "create") == 0) {
                        /* Live only: the QMP transaction's round trip (the guest's I/O drain), the freeze window. */
                        json_object_object_add(o, "transaction_ms", json_ms(res.transaction_ms));
                        json_object_object_add(o, "frozen_ms", json_ms(res.frozen_ms));
                }
                printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(o);
        } else {
                printf("%s: %s\n", name, what);
        }
        return CLI_OK;
}
