/* vrt destroy (stop, delete the disk, mark DESTROYED) and vrt cleanup
 * (remove destroyed VMs' directories). */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "launcher/core/actionlog.h"
#include "launcher/cli/cli.h"
#include "launcher/lifecycle/destroy.h"

static void describe(const struct destroy_result *res, char *buf, size_t len) {
        char removed[32] = "";
        for (size_t i = 0; i < 2; i++)
                if (res->removed[i][0])
                        snprintf(removed + strlen(removed), sizeof removed - strlen(removed), "%s%s",
                                 removed[0] ? ", " : "", res->removed[i]);
        if (res->gone)
                snprintf(buf, len, "already destroyed and cleaned up");
        else if (res->already_destroyed && !res->was_running && !removed[0])
                snprintf(buf, len, "already destroyed");
        else
                snprintf(buf, len, "destroyed (%s%s%s)", res->was_running ? "stopped, " : "",
                         removed[0] ? "deleted " : "no disk to delete", removed);
}

int cmd_destroy(struct cli *cli, int argc, char **argv) {
        static const struct option opts[] = {
                { "force", no_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        static const char usage_text[] =
                "usage: vrt destroy [--force] NAME...\n"
                "Stops NAME if it runs (--force: power off at once), deletes its disk and marks it DESTROYED.";
        struct json_object *out = NULL;
        bool force = false;
        int c, status = CLI_OK;

        while ((c = getopt_long(argc, argv, "fh", opts, NULL)) >= 0)
                switch (c) {
                case 'f':
                        force = true;
                        break;
                case 'h':
                        printf("%s\n", usage_text);
                        return CLI_OK;
                default:
                        fprintf(stderr, "%s\n", usage_text);
                        return CLI_INVALID;
                }
        if (optind >= argc) {
                fprintf(stderr, "%s\n", usage_text);
                return CLI_INVALID;
        }
        if (cli->json)
                out = json_object_new_array();
        for (int i = optind; i < argc; i++) {
                struct destroy_result res = { 0 };
                char err[2048] = "", what[128];
                const char *name = argv[i];
                int r = destroy_vm(cli->root, cli->runtime_dir, name, force, &res, err, sizeof err);
                if (r < 0) {
                        cli_error("%s: %s", name, err);
                        if (r != -EINVAL && r != -ENOENT)
                                actionlog_append(cli->root, "destroy", "%s: destroy failed: %s", name, err);
                        int s = r == -EINVAL || r == -ENOENT ? CLI_INVALID : r == -EREMOTE ? CLI_ELSEWHERE : CLI_FAILED;
                        /* The worst wins: failed, then bad input, then elsewhere. */
                        if (status == CLI_OK || s == CLI_FAILED || (s == CLI_INVALID && status == CLI_ELSEWHERE))
                                status = s;
                } else {
                        describe(&res, what, sizeof what);
                        actionlog_append(cli->root, "destroy", "%s: %s", name, what);
                        if (!cli->json)
                                printf("%s: %s\n", name, what);
                }
                if (out) {
                        struct json_object *o = json_object_new_object(), *removed = json_object_new_array();
                        json_object_object_add(o, "name", json_object_new_string(name));
                        json_object_object_add(o, "ok", json_object_new_boolean(r == 0));
                        if (r < 0) {
                                json_object_object_add(o, "error", json_object_new_string(err));
                        } else {
                                json_object_object_add(o, "was_running", json_object_new_boolean(res.was_running));
                                json_object_object_add(o, "already_destroyed", json_object_new_boolean(res.already_destroyed));
                                json_object_object_add(o, "cleaned_up", json_object_new_boolean(res.gone));
                        }
                        for (size_t k = 0; k < 2; k++)
                                if (res.removed[k][0])
                                        json_object_array_add(removed, json_object_new_string(res.removed[k]));
                        json_object_object_add(o, "removed", removed);
                        json_object_array_add(out, o);
                }
        }
        if (out) {
                printf("%s\n", json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(out);
        }
        return status;
}

int cmd_cleanup(struct cli *cli, int argc, char **argv) {
        struct cleanup_result res = { 0 };
        char err[2048] = "";
        int r;

        (void)argv;
        if (argc != 1) {
                cli_error("usage: vrt cleanup   (removes the directories of destroyed VMs that do not run)");
                return CLI_INVALID;
        }
        r = destroy_cleanup(cli->root, cli->runtime_dir, &res, err, sizeof err);
        if (r < 0) {
                cli_error("%s", err);
                return CLI_FAILED;
        }
        if (cli->json) {
                struct json_object *o = json_object_new_object(), *removed = json_object_new_array(),
                                   *skipped = json_object_new_array();
                for (size_t i = 0; i < res.n; i++) {
                        if (res.entries[i].removed) {
                                json_object_array_add(removed, json_object_new_string(res.entries[i].name));
                        } else {
                                struct json_object *s = json_object_new_object();
                                json_object_object_add(s, "name", json_object_new_string(res.entries[i].name));
                                json_object_object_add(s, "reason", json_object_new_string(res.entries[i].reason));
                                json_object_array_add(skipped, s);
                        }
                }
                json_object_object_add(o, "removed", removed);
                json_object_object_add(o, "skipped", skipped);
                json_object_object_add(o, "swept", json_object_new_int((int)res.swept));
                printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(o);
        } else {
                for (size_t i = 0; i < res.n; i++) {
                        if (res.entries[i].removed)
                                printf("removed %s\n", res.entries[i].name);
                        else
                                cli_error("%s: not removed: %s", res.entries[i].name, res.entries[i].reason);
                }
        }
        cleanup_result_done(&res);
        return r > 0 ? CLI_FAILED : CLI_OK;
}
