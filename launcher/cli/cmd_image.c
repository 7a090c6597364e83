/* vrt image: disk images and templates — info (the backing chain), overlay,
 * list (templates with their sidecars and users), protect, install. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images/chain.h"
#include "images/qcow2.h"
#include "images/template.h"
#include "launcher/cli/cli.h"
#include "launcher/core/config.h"
#include "launcher/lifecycle/install.h"
#include "launcher/core/paths.h"
#include "launcher/core/props.h"
#include "launcher/core/strv.h"
#include "launcher/core/vmstate.h"
#include "launcher/core/util.h"

#define DEFAULT_INSTALL_MEMORY (UINT64_C(2) << 30)
#define DEFAULT_INSTALL_CPUS 2
#define DEFAULT_INSTALL_TIMEOUT (4 * 3600)

static void print_json(struct json_object *o) {
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* FILE, or a template NAME meaning ROOT/images/NAME.qcow2 when no file of
 * that name exists here. New string or NULL. */
static char *image_arg(const struct cli *cli, const char *arg) {
        struct stat st;
        char *rel = NULL, *p;
        if (strchr(arg, '/') || stat(arg, &st) == 0 || config_check_image_name(arg) < 0)
                return strdup(arg);
        if (asprintf(&rel, "images/%s.qcow2", arg) < 0)
                return NULL;
        p = paths_join(cli->root, rel);
        free(rel);
        if (p && stat(p, &st) < 0) {
                free(p);
                return strdup(arg);     /* neither exists: report the name as given */
        }
        return p;
}

/* Chain errors are about the input (missing, looping, truncated,
 * mislabelled files): exit 2, except running out of memory. */
static int chain_status(int r) {
        return r == -ENOMEM ? CLI_FAILED : CLI_INVALID;
}

/* ---- info ---------------------------------------------------------------- */

static int image_info(struct cli *cli, int argc, char **argv) {
        struct image_chain *chain = NULL;
        char err[2048];
        char *path;
        int r;

        if (argc != 2) {
                cli_error("usage: vrt image info FILE|NAME [--json]");
                return CLI_INVALID;
        }
        path = image_arg(cli, argv[1]);
        if (!path) {
                cli_error("out of memory");
                return CLI_FAILED;
        }
        r = image_chain_inspect(path, &chain, err, sizeof err);
        free(path);
        if (r < 0) {
                cli_error("%s", err);
                return chain_status(r);
        }
        if (cli->json) {
                struct json_object *o = NULL;
                if (image_chain_to_json(chain, &o) < 0) {
                        image_chain_free(chain);
                        cli_error("out of memory");
                        return CLI_FAILED;
                }
                print_json(o);
                json_object_put(o);
        } else {
                printf("%-5s %-6s %8s %9s %-4s %s\n", "LAYER", "FORMAT", "VIRTUAL", "ALLOCATED", "MODE", "PATH");
                for (size_t i = 0; i < chain->n_layers; i++) {
                        const struct image_layer *l = &chain->layers[i];
                        char vs[16], as[16];
                        format_size(l->virtual_size, FORMAT_SIZE_HUMAN, vs, sizeof vs);
                        format_size(l->allocated_size, FORMAT_SIZE_HUMAN, as, sizeof as);
                        printf("%-5zu %-6s %8s %9s %-4s %s\n", i, l->format, vs, as, l->writable ? "rw" : "ro", l->path);
                        if (l->backing_file)
                                printf("%-5s %-6s %8s %9s %-4s  backing file %s (%s)\n", "", "", "", "", "", l->backing_file,
                                       l->backing_format);
                }
        }
        image_chain_free(chain);
        return CLI_OK;
}

/* ---- overlay ------------------------------------------------------------- */

/* Where QEMU will look for a backing name: relative to the overlay's directory. */
static char *resolve_backing(const char *overlay, const char *backing) {
        const char *slash = strrchr(overlay, '/');
        char *p = NULL;
        if (backing[0] == '/' || !slash)
                return strdup(backing);
        if (asprintf(&p, "%.*s/%s", (int)(slash - overlay), overlay, backing) < 0)
                return NULL;
        return p;
}

/* True if path is a file in ROOT/images: a template, which must stay read-only. */
static bool is_template(const struct cli *cli, const char *path) {
        char *images = paths_join(cli->root, "images");
        char *real_images = images ? realpath(images, NULL) : NULL;
        char *real = realpath(path, NULL);
        char *slash = real ? strrchr(real, '/') : NULL;
        bool r = false;
        if (slash && real_images) {
                *slash = '\0';
                r = strcmp(real, real_images) == 0;
        }
        free(images);
        free(real_images);
        free(real);
        return r;
}

static int image_overlay(struct cli *cli, int argc, char **argv) {
        static const struct option opts[] = {
                { "size", required_argument, NULL, 's' },
                { 0 },
        };
        struct image_chain *chain = NULL;
        uint64_t size = 0;
        char err[2048];
        char *base_path = NULL;
        int c, r, status = CLI_FAILED;

        while ((c = getopt_long(argc, argv, "s:", opts, NULL)) >= 0)
                switch (c) {
                case 's':
                        if (config_parse_size(optarg, &size) < 0 || size == 0) {
                                cli_error("--size %s: not a size (e.g. 20G, 512M, or bytes)", optarg);
                                return CLI_INVALID;
                        }
                        break;
                default:
                        cli_error("usage: vrt image overlay BASE NEW [--size S]");
                        return CLI_INVALID;
                }
        if (argc - optind != 2) {
                cli_error("usage: vrt image overlay BASE NEW [--size S]");
                return CLI_INVALID;
        }
        const char *base = argv[optind], *new = argv[optind + 1];
        if (!*base || !*new) {
                cli_error("usage: vrt image overlay BASE NEW [--size S]");
                return CLI_INVALID;
        }
        base_path = resolve_backing(new, base);
        if (!base_path) {
                cli_error("out of memory");
                return CLI_FAILED;
        }
        /* The whole chain under BASE must be sound before anything refers to it. */
        r = image_chain_inspect(base_path, &chain, err, sizeof err);
        if (r < 0) {
                if (r == -ENOENT && base[0] != '/' && strchr(new, '/'))
                        cli_error("%s (a relative BASE is taken from NEW's directory, as QEMU does)", err);
                else
                        cli_error("%s", err);
                status = chain_status(r);
                goto out;
        }
        const struct image_layer *top = &chain->layers[0];
        r = qcow2_overlay_create(new, base, top->format, size, err, sizeof err);
        if (r < 0) {
                cli_error("%s", err);
                status = r == -EEXIST || r == -ENOENT || r == -EINVAL || r == -ENOTDIR || r == -EISDIR ||
                         r == -ENAMETOOLONG ? CLI_INVALID : CLI_FAILED;
                goto out;
        }
        if (top->writable && is_template(cli, base_path))
                fprintf(stderr, "vrt: warning: template %s is writable; writing to it would corrupt %s (vrt image protect)\n",
                        base_path, new);
        status = CLI_OK;
out:
        image_chain_free(chain);
        free(base_path);
        return status;
}

/* ---- list ---------------------------------------------------------------- */

struct image_users {
        char **images;          /* image= of every live VM */
        size_t n;
};

static int grab_image(const char *key, const char *value, unsigned line, void *userdata, char *err, size_t errlen) {
        char **image = userdata;
        if (strcmp(key, "image") == 0 && !*image) {
                *image = strdup(value);
                if (!*image)
                        return -ENOMEM;
        }
        return 0;
}

/* The image= of every VM under ROOT/vm that is not destroyed. A VM whose
 * instance.properties does not parse counts for nobody. */
static int collect_users(const char *root, struct image_users *u) {
        char *dir = paths_join(root, "vm");
        DIR *d = NULL;
        struct dirent *de;
        int r = 0;

        *u = (struct image_users){ 0 };
        if (!dir)
                return -ENOMEM;
        d = opendir(dir);
        if (!d) {
                free(dir);
                return 0;
        }
        while ((de = readdir(d))) {
                char *vm = NULL, *props = NULL, *image = NULL, err[512];
                if (de->d_name[0] == '.')
                        continue;
                if (!(vm = paths_join(dir, de->d_name)) || !(props = paths_join(vm, "instance.properties"))) {
                        r = -ENOMEM;
                } else if (!vmstate_is_destroyed(vm) && props_parse_file(props, grab_image, &image, err, sizeof err) == 0 && image) {
                        char **n = realloc(u->images, (u->n + 1) * sizeof *n);
                        if (n) {
                                u->images = n;
                                u->images[u->n++] = image;
                                image = NULL;
                        } else {
                                r = -ENOMEM;
                        }
                }
                free(image);
                free(vm);
                free(props);
                if (r < 0)
                        break;
        }
        closedir(d);
        free(dir);
        return r;
}

static void users_done(struct image_users *u) {
        for (size_t i = 0; i < u->n; i++)
                free(u->images[i]);
        free(u->images);
}

static unsigned count_users(const struct image_users *u, const char *name) {
        unsigned n = 0;
        for (size_t i = 0; i < u->n; i++)
                n += strcmp(u->images[i], name) == 0;
        return n;
}

struct template_info {
        char *path;
        struct image_chain *chain;      /* NULL: see error */
        struct image_meta *meta;        /* NULL: see error */
        char error[1024];
        unsigned users;
};

static void template_info_load(const char *root, const char *name, const struct image_users *u, struct template_info *t) {
        char *rel = NULL, *sidecar = NULL;
        *t = (struct template_info){ .users = count_users(u, name) };
        if (asprintf(&rel, "images/%s.qcow2", name) < 0 || !(t->path = paths_join(root, rel))) {
                snprintf(t->error, sizeof t->error, "out of memory");
                goto out;
        }
        free(rel);
        rel = NULL;
        if (asprintf(&rel, "images/%s.properties", name) < 0 || !(sidecar = paths_join(root, rel))) {
                snprintf(t->error, sizeof t->error, "out of memory");
                goto out;
        }
        if (image_meta_load(sidecar, &t->meta, t->error, sizeof t->error) < 0)
                goto out;
        image_chain_inspect(t->path, &t->chain, t->error, sizeof t->error);
out:
        free(rel);
        free(sidecar);
}

static void template_info_done(struct template_info *t) {
        free(t->path);
        image_chain_free(t->chain);
        image_meta_free(t->meta);
}

static const char *template_firmware(const struct template_info *t) {
        return firmware_to_string(t->meta && t->meta->firmware_set ? t->meta->firmware : FIRMWARE_BIOS);
}

static struct json_object *template_to_json(const char *name, const struct template_info *t) {
        struct json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        json_object_object_add(o, "name", json_object_new_string(name));
        json_object_object_add(o, "path", json_object_new_string(t->path ? t->path : ""));
        if (t->chain) {
                const struct image_layer *l = &t->chain->layers[0];
                json_object_object_add(o, "format", json_object_new_string(l->format));
                json_object_object_add(o, "virtual-size", json_object_new_int64((int64_t)l->virtual_size));
                json_object_object_add(o, "allocated-size", json_object_new_int64((int64_t)l->allocated_size));
                json_object_object_add(o, "read-only", json_object_new_boolean(!l->writable));
                json_object_object_add(o, "layers", json_object_new_int64((int64_t)t->chain->n_layers));
        }
        if (t->meta) {
                json_object_object_add(o, "kernel", t->meta->kernel ? json_object_new_string(t->meta->kernel) : NULL);
                json_object_object_add(o, "initrd", t->meta->initrd ? json_object_new_string(t->meta->initrd) : NULL);
                json_object_object_add(o, "cmdline", t->meta->cmdline ? json_object_new_string(t->meta->cmdline) : NULL);
                json_object_object_add(o, "firmware", json_object_new_string(template_firmware(t)));
        }
        json_object_object_add(o, "vms", json_object_new_int64(t->users));
        if (t->error[0])
                json_object_object_add(o, "error", json_object_new_string(t->error));
        return o;
}

static int image_list(struct cli *cli, int argc, char **argv) {
        struct image_users users;
        struct json_object *arr = NULL;
        struct strv names = { 0 };
        char *images_dir = NULL;
        int r, status = CLI_OK;

        if (argc != 1) {
                cli_error("usage: vrt image list [--json]");
                return CLI_INVALID;
        }
        /* Templates are ROOT/images/NAME.qcow2; an install's hidden
         * staging file is not one yet. */
        images_dir = paths_join(cli->root, "images");
        r = images_dir ? strv_add_dir(&names, images_dir, ".qcow2", false) : -ENOMEM;
        free(images_dir);
        if (r < 0) {
                cli_error("cannot read %s/images: %s", cli->root, strerror(-r));
                strv_done(&names);
                return CLI_FAILED;
        }
        r = collect_users(cli->root, &users);
        if (r < 0) {
                cli_error("cannot read %s/vm: %s", cli->root, strerror(-r));
                status = CLI_FAILED;
                goto out;
        }
        if (cli->json) {
                arr = json_object_new_array();
                if (!arr) {
                        cli_error("out of memory");
                        status = CLI_FAILED;
                        goto out;
                }
        } else {
                printf("%-24s %-6s %8s %9s %-4s %-8s %-6s %4s\n", "NAME", "FORMAT", "VIRTUAL", "ALLOCATED", "MODE", "FIRMWARE",
                       "BOOT", "VMS");
        }
        for (size_t i = 0; i < names.n; i++) {
                const char *name = names.items[i];
                struct template_info t;
                template_info_load(cli->root, name, &users, &t);
                if (arr) {
                        json_object_array_add(arr, template_to_json(name, &t));
                } else if (t.chain && t.meta) {
                        const struct image_layer *l = &t.chain->layers[0];
                        char vs[16], as[16];
                        format_size(l->virtual_size, FORMAT_SIZE_HUMAN, vs, sizeof vs);
                        format_size(l->allocated_size, FORMAT_SIZE_HUMAN, as, sizeof as);
                        printf("%-24s %-6s %8s %9s %-4s %-8s %-6s %4u\n", name, l->format, vs, as,
                               l->writable ? "rw" : "ro", template_firmware(&t), t.meta->kernel ? "kernel" : "disk", t.users);
                } else {
                        printf("%-24s %-6s %8s %9s %-4s %-8s %-6s %4u  error: %s\n", name, "-", "-", "-", "-", "-", "-",
                               t.users, t.error);
                }
                template_info_done(&t);
        }
        if (arr)
                print_json(arr);
out:
        json_object_put(arr);
        users_done(&users);
        strv_done(&names);
        return status;
}

/* ---- protect --------------------------------------------------------------- */

static int image_protect(struct cli *cli, int argc, char **argv) {
        int status = CLI_OK;
        if (argc < 2) {
                cli_error("usage: vrt image protect NAME|FILE...");
                return CLI_INVALID;
        }
        for (int i = 1; i < argc; i++) {
                char *path = image_arg(cli, argv[i]);
                if (!path) {
                        cli_error("out of memory");
                        return CLI_FAILED;
                }
                int r = image_template_protect(path);
                if (r < 0) {
                        cli_error("%s: %s", path, r == -EINVAL ? "not a regular file" :
                                  r == -ELOOP ? "a symbolic link (not followed)" :
                                  r == -EMLINK ? "a hard link (more than one name): not changed" : strerror(-r));
                        if (status == CLI_OK)
                                status = r == -EINVAL || r == -ENOENT || r == -ELOOP || r == -EMLINK ? CLI_INVALID : CLI_FAILED;
                }
                free(path);
        }
        return status;
}

/* ---- install --------------------------------------------------------------- */

/* "90", "90s", "30m", "4h" -> seconds. */
static int parse_duration(const char *s, unsigned *ret) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        unsigned long long mult = 1;
        if (errno || end == s || *s == '-')
                return -EINVAL;
        if (*end == 's')
                end++;
        else if (*end == 'm')
                mult = 60, end++;
        else if (*end == 'h')
                mult = 3600, end++;
        if (*end || v == 0 || v > 30ULL * 24 * 3600 / mult)
                return -EINVAL;
        *ret = (unsigned)(v * mult);
        return 0;
}

/* A relative ISO path is looked up in the root first (iso/FILE.iso), then
 * in the working directory; when neither has it, the root's path is the one
 * reported. New absolute string, or NULL (ENOMEM). */
static char *iso_path(const struct cli *cli, const char *arg) {
        char *p, *here;
        if (arg[0] == '/')
                return strdup(arg);
        p = paths_join(cli->root, arg);
        if (!p || access(p, F_OK) == 0)
                return p;
        here = paths_absolute(arg);
        if (here && access(here, F_OK) == 0) {
                free(p);
                return here;
        }
        free(here);
        return p;
}

static void usage_install(void) {
        cli_error("usage: vrt image install NAME --iso FILE.iso --disk-size SIZE [--memory SIZE] [--cpus N] "
                  "[--firmware bios|uefi] [--timeout SECONDS|Nm|Nh]");
}

static int image_install(struct cli *cli, int argc, char **argv) {
        static const struct option opts[] = {
                { "iso", required_argument, NULL, 'i' },
                { "disk-size", required_argument, NULL, 'd' },
                { "memory", required_argument, NULL, 'm' },
                { "cpus", required_argument, NULL, 'c' },
                { "firmware", required_argument, NULL, 'f' },
                { "timeout", required_argument, NULL, 't' },
                { 0 },
        };
        struct install_options o = {
                .root = cli->root,
                .runtime_dir = cli->runtime_dir,
                .memory = DEFAULT_INSTALL_MEMORY,
                .cpus = DEFAULT_INSTALL_CPUS,
                .firmware = FIRMWARE_BIOS,
                .timeout = DEFAULT_INSTALL_TIMEOUT,
        };
        const char *iso = NULL;
        struct install *in = NULL;
        char err[2048], *iso_abs = NULL;
        int c, r;

        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0)
                switch (c) {
                case 'i':
                        iso = optarg;
                        break;
                case 'd':
                        if (config_parse_size(optarg, &o.disk_size) < 0 || o.disk_size == 0) {
                                cli_error("--disk-size %s: not a size (e.g. 20G)", optarg);
                                return CLI_INVALID;
                        }
                        break;
                case 'm':
                        if (config_parse_size(optarg, &o.memory) < 0) {
                                cli_error("--memory %s: not a size (e.g. 2G, 512M)", optarg);
                                return CLI_INVALID;
                        }
                        break;
                case 'c':
                        if (config_parse_uint(optarg, 1, 255, &o.cpus) < 0) {
                                cli_error("--cpus %s: not a number from 1 to 255", optarg);
                                return CLI_INVALID;
                        }
                        break;
                case 'f':
                        o.firmware = firmware_from_string(optarg);
                        if (o.firmware == _FIRMWARE_INVALID) {
                                cli_error("--firmware %s: use bios or uefi", optarg);
                                return CLI_INVALID;
                        }
                        break;
                case 't':
                        if (parse_duration(optarg, &o.timeout) < 0) {
                                cli_error("--timeout %s: not a duration (seconds, or e.g. 30m, 4h)", optarg);
                                return CLI_INVALID;
                        }
                        break;
                default:
                        usage_install();
                        return CLI_INVALID;
                }
        if (argc - optind != 1 || !iso || !o.disk_size) {
                usage_install();
                return CLI_INVALID;
        }
        o.name = argv[optind];
        iso_abs = iso_path(cli, iso);
        if (!iso_abs) {
                cli_error("out of memory");
                return CLI_FAILED;
        }
        o.iso = iso_abs;

        r = install_start(&o, &in, err, sizeof err);
        if (r < 0) {
                cli_error("%s", err);
                free(iso_abs);
                return cli_status_for(r);
        }
        printf("installing %s from %s: QEMU pid %d, disk staged as %s\n", o.name, o.iso, (int)in->qemu_pid, in->staging);
        printf("  display  VNC on the unix socket %s\n", in->vnc_socket);
        printf("           (a viewer that speaks unix sockets, e.g. TigerVNC: vncviewer %s; or bridge it to TCP:\n", in->vnc_socket);
        printf("            socat TCP-LISTEN:5901,bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:%s)\n", in->vnc_socket);
        printf("  console  socat -,rawer,escape=0x1d UNIX-CONNECT:%s   (Ctrl-] leaves; log %s)\n", in->paths.console_sock,
               in->console_log);
        printf("  monitor  QMP on %s\n", in->paths.monitor_sock);
        printf("waiting up to %us for the guest to power off; Ctrl-C aborts and discards the disk\n", o.timeout);
        fflush(stdout);

        r = install_wait(in, err, sizeof err);
        if (r == 0) {
                char vs[16], as[16];
                format_size(in->virtual_size, FORMAT_SIZE_HUMAN, vs, sizeof vs);
                format_size(in->allocated_size, FORMAT_SIZE_HUMAN, as, sizeof as);
                printf("installed %s (virtual %s, allocated %s, read-only), sidecar %s\n", in->template_path, vs, as,
                       in->sidecar);
        }
        in = install_free(in);
        free(iso_abs);
        if (r < 0) {
                cli_error("%s", err);
                return CLI_FAILED;
        }
        return CLI_OK;
}

/* ---- dispatch -------------------------------------------------------------- */

int cmd_image(struct cli *cli, int argc, char **argv) {
        static const struct {
                const char *name;
                int (*run)(struct cli *cli, int argc, char **argv);
        } subs[] = {
                { "info", image_info },
                { "overlay", image_overlay },
                { "list", image_list },
                { "protect", image_protect },
                { "install", image_install },
        };
        if (argc < 2) {
                cli_error("usage: vrt image info|overlay|list|protect|install ...");
                return CLI_INVALID;
        }
        for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
                if (strcmp(argv[1], subs[i].name) == 0) {
                        optind = 0;
                        return subs[i].run(cli, argc - 1, argv + 1);
                }
        cli_error("unknown image command \"%s\" (info, overlay, list, protect, install)", argv[1]);
        return CLI_INVALID;
}
