#include "launcher/core/config.h"
#include "launcher/core/props.h"
#include "launcher/core/util.h"
#include "net/mac.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const disk_mode_table[_DISK_MODE_MAX] = {
        [DISK_OVERLAY] = "overlay",
        [DISK_COPY] = "copy",
};
static const char *const net_mode_table[_NET_MODE_MAX] = {
        [NET_BRIDGE] = "bridge",
        [NET_USER] = "user",
        [NET_NONE] = "none",
};
static const char *const firmware_table[_FIRMWARE_MAX] = {
        [FIRMWARE_BIOS] = "bios",
        [FIRMWARE_UEFI] = "uefi",
};

const char *disk_mode_to_string(enum disk_mode m) {
        return m >= 0 && m < _DISK_MODE_MAX ? disk_mode_table[m] : NULL;
}
enum disk_mode disk_mode_from_string(const char *s) {
        return (enum disk_mode)table_lookup(disk_mode_table, _DISK_MODE_MAX, s);
}
const char *net_mode_to_string(enum net_mode m) {
        return m >= 0 && m < _NET_MODE_MAX ? net_mode_table[m] : NULL;
}
enum net_mode net_mode_from_string(const char *s) {
        return (enum net_mode)table_lookup(net_mode_table, _NET_MODE_MAX, s);
}
const char *firmware_to_string(enum firmware f) {
        return f >= 0 && f < _FIRMWARE_MAX ? firmware_table[f] : NULL;
}
enum firmware firmware_from_string(const char *s) {
        return (enum firmware)table_lookup(firmware_table, _FIRMWARE_MAX, s);
}

int config_parse_uint(const char *s, unsigned min, unsigned max, unsigned *ret) {
        if (!s || !isdigit((unsigned char)*s))
                return -EINVAL;
        errno = 0;
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (*end)
                return -EINVAL;
        if (errno == ERANGE || v < min || v > max)
                return -ERANGE;
        *ret = (unsigned)v;
        return 0;
}

int config_parse_size(const char *s, uint64_t *ret) {
        if (!s || !isdigit((unsigned char)*s))
                return -EINVAL;
        errno = 0;
        char *end;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        unsigned shift = 0;
        switch (*end) {
        case '\0': break;
        case 'K': case 'k': shift = 10; break;
        case 'M': case 'm': shift = 20; break;
        case 'G': case 'g': shift = 30; break;
        case 'T': case 't': shift = 40; break;
        default: return -EINVAL;
        }
        if (*end) {
                end++;
                /* Accept "G", "GB" and "GiB" alike: all binary. */
                if (*end == 'i')
                        end++;
                if (*end == 'B')
                        end++;
                if (*end)
                        return -EINVAL;
        }
        if (shift && v > (UINT64_MAX >> shift))
                return -ERANGE;
        *ret = (uint64_t)v << shift;
        return 0;
}

int config_check_vm_name(const char *name, const char *runtime_dir, char *err, size_t errlen) {
        size_t n = name ? strlen(name) : 0;
        if (n == 0) {
                snprintf(err, errlen, "empty VM name");
                return -EINVAL;
        }
        if (n > VM_NAME_MAX) {
                snprintf(err, errlen, "VM name \"%.80s\" longer than %d characters", name, VM_NAME_MAX);
                return -EINVAL;
        }
        for (size_t i = 0; i < n; i++) {
                char c = name[i];
                int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0 && i < n - 1);
                if (!ok) {
                        snprintf(err, errlen, "invalid VM name \"%.80s\": use lowercase letters, digits and inner '-' (RFC 1123 label)", name);
                        return -EINVAL;
                }
        }
        if (runtime_dir) {
                /* The longest runtime socket name is "monitor.sock". */
                size_t len = strlen(runtime_dir) + 1 + n + sizeof "/monitor.sock";
                if (len > UNIX_PATH_MAX_BYTES) {
                        snprintf(err, errlen, "VM name \"%s\" too long for the runtime directory %s: socket paths must fit in %d bytes",
                                 name, runtime_dir, UNIX_PATH_MAX_BYTES);
                        return -ENAMETOOLONG;
                }
        }
        return 0;
}

int config_check_image_name(const char *name) {
        if (!name || !*name || name[0] == '.' || strlen(name) > 128)
                return -EINVAL;
        for (const char *p = name; *p; p++)
                if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '_' || *p == '-'))
                        return -EINVAL;
        return 0;
}

/* Replaces *dst with a copy of value. */
static int set_string(char **dst, const char *value) {
        char *s = strdup(value);
        if (!s)
                return -ENOMEM;
        free(*dst);
        *dst = s;
        return 0;
}

static int check_plain_value(const char *key, const char *value, char *err, size_t errlen) {
        for (const char *p = value; *p; p++)
                if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f) {
                        snprintf(err, errlen, "%s: control character in value", key);
                        return -EINVAL;
                }
        return 0;
}

/* --- vrt.conf --- */

static const struct size_class builtin_sizes[] = {
        { (char *)"small", 1, 1ULL << 30, 10ULL << 30, 0 },
        { (char *)"medium", 2, 4ULL << 30, 40ULL << 30, 0 },
        { (char *)"large", 4, 8ULL << 30, 100ULL << 30, 0 },
};

static struct size_class *host_size_get(struct host_config *c, const char *name, size_t namelen, unsigned line) {
        for (size_t i = 0; i < c->n_sizes; i++)
                if (strlen(c->sizes[i].name) == namelen && strncmp(c->sizes[i].name, name, namelen) == 0) {
                        if (c->sizes[i].line == 0)
                                c->sizes[i].line = line; /* site config overrides a built-in size */
                        return &c->sizes[i];
                }
        struct size_class *n = realloc(c->sizes, (c->n_sizes + 1) * sizeof *n);
        if (!n)
                return NULL;
        c->sizes = n;
        struct size_class *s = &c->sizes[c->n_sizes];
        *s = (struct size_class){ .name = strndup(name, namelen), .cpus = 1, .memory = 1ULL << 30, .line = line };
        if (!s->name)
                return NULL;
        c->n_sizes++;
        return s;
}

static int host_config_set(const char *key, const char *value, unsigned line, void *userdata, char *err, size_t errlen) {
        struct host_config *c = userdata;
        int r = check_plain_value(key, value, err, errlen);
        if (r < 0)
                return r;

        if (strncmp(key, "size.", 5) == 0) {
                const char *name = key + 5;
                const char *dot = strrchr(name, '.');
                if (!dot || dot == name) {
                        snprintf(err, errlen, "invalid size key %s (expected size.NAME.cpus|memory|disk)", key);
                        return -EINVAL;
                }
                for (const char *p = name; p < dot; p++)
                        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_')) {
                                snprintf(err, errlen, "invalid size name in %s", key);
                                return -EINVAL;
                        }
                struct size_class *s = host_size_get(c, name, (size_t)(dot - name), line);
                if (!s)
                        return -ENOMEM;
                const char *field = dot + 1;
                if (strcmp(field, "cpus") == 0) {
                        if (config_parse_uint(value, 1, 288, &s->cpus) < 0) {
                                snprintf(err, errlen, "%s: invalid CPU count \"%s\" (1..288)", key, value);
                                return -EINVAL;
                        }
                } else if (strcmp(field, "memory") == 0) {
                        if (config_parse_size(value, &s->memory) < 0 || s->memory < (16ULL << 20)) {
                                snprintf(err, errlen, "%s: invalid memory size \"%s\" (e.g. 512M, 2G; at least 16M)", key, value);
                                return -EINVAL;
                        }
                        /* QEMU's -m takes MiB here; rounding would give the guest another size. */
                        if (s->memory % (1ULL << 20)) {
                                snprintf(err, errlen, "%s=%s: memory must be a whole number of MiB (e.g. 512M, 2G)", key, value);
                                return -EINVAL;
                        }
                } else if (strcmp(field, "disk") == 0) {
                        if (config_parse_size(value, &s->disk) < 0) {
                                snprintf(err, errlen, "%s: invalid disk size \"%s\" (e.g. 10G)", key, value);
                                return -EINVAL;
                        }
                } else {
                        snprintf(err, errlen, "unknown key %s (sizes have cpus, memory, disk)", key);
                        return -EINVAL;
                }
                return 0;
        }

        struct { const char *key; char **dst; } strings[] = {
                { "bridge", &c->bridge }, { "accel", &c->accel }, { "machine", &c->machine },
                { "qemu", &c->qemu }, { "user", &c->user }, { "group", &c->group },
                { "ovmf_code", &c->ovmf_code }, { "ovmf_vars", &c->ovmf_vars },
        };
        for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
                if (strcmp(key, strings[i].key) == 0) {
                        if (!*value) {
                                snprintf(err, errlen, "%s: empty value", key);
                                return -EINVAL;
                        }
                        if (strcmp(key, "accel") == 0)
                                c->line_accel = line;
                        else if (strcmp(key, "machine") == 0)
                                c->line_machine = line;
                        else if (strcmp(key, "qemu") == 0)
                                c->line_qemu = line;
                        else if (strcmp(key, "user") == 0)
                                c->line_user = line;
                        else if (strcmp(key, "group") == 0)
                                c->line_group = line;
                        else if (strcmp(key, "ovmf_code") == 0)
                                c->line_ovmf_code = line;
                        else if (strcmp(key, "ovmf_vars") == 0)
                                c->line_ovmf_vars = line;
                        return set_string(strings[i].dst, value);
                }
        if (strcmp(key, "shutdown_timeout") == 0 || strcmp(key, "init_timeout") == 0) {
                unsigned *dst = key[0] == 's' ? &c->shutdown_timeout : &c->init_timeout;
                if (config_parse_uint(value, 1, 86400, dst) < 0) {
                        snprintf(err, errlen, "%s: invalid number of seconds \"%s\" (1..86400)", key, value);
                        return -EINVAL;
                }
                return 0;
        }
        if (strcmp(key, "cpu") == 0) {
                if (!config_cpu_valid(value)) {
                        snprintf(err, errlen, "cpu: \"%.80s\" is not a CPU model name (letters, digits, '.', '_', '-'; e.g. qemu64, Haswell-v4, max)", value);
                        return -EINVAL;
                }
                free(c->cpu);
                c->cpu = strdup(value);
                return c->cpu ? 0 : -ENOMEM;
        }
        if (strcmp(key, "shared_root") == 0) {
                /* yes: other hosts may use this root, so its locks must work across hosts. */
                if (strcmp(value, "yes") && strcmp(value, "no")) {
                        snprintf(err, errlen, "shared_root: \"%s\" is not yes or no", value);
                        return -EINVAL;
                }
                c->shared_root = strcmp(value, "yes") == 0;
                return 0;
        }
        snprintf(err, errlen, "unknown key %s", key);
        return -EINVAL;
}

static int host_config_check(struct host_config *c, char *err, size_t errlen) {
        if (c->accel) {
                /* accel is "a:b:c" of known accelerators; it lands in -accel options. */
                char *copy = strdup(c->accel), *save = NULL;
                if (!copy)
                        return -ENOMEM;
                int bad = 0;
                for (char *t = strtok_r(copy, ":", &save); t; t = strtok_r(NULL, ":", &save))
                        if (strcmp(t, "kvm") && strcmp(t, "tcg"))
                                bad = 1;
                free(copy);
                if (bad || c->accel[0] == ':' || strstr(c->accel, "::")) {
                        snprintf(err, errlen, "%s:%u: invalid accel \"%s\" (kvm, tcg or kvm:tcg)", c->path, c->line_accel, c->accel);
                        return -EINVAL;
                }
        }
        if (strspn(c->machine, "abcdefghijklmnopqrstuvwxyz0123456789-._") != strlen(c->machine)) {
                snprintf(err, errlen, "%s:%u: invalid machine \"%s\"", c->path, c->line_machine, c->machine);
                return -EINVAL;
        }
        if (c->qemu[0] != '/') {
                snprintf(err, errlen, "%s:%u: qemu must be an absolute path, got \"%s\"", c->path, c->line_qemu, c->qemu);
                return -EINVAL;
        }
        /* Firmware files are opened by QEMU, whose working directory is not ours. */
        if (c->ovmf_code[0] != '/') {
                snprintf(err, errlen, "%s:%u: ovmf_code=%s: not an absolute path", c->path, c->line_ovmf_code, c->ovmf_code);
                return -EINVAL;
        }
        if (c->ovmf_vars[0] != '/') {
                snprintf(err, errlen, "%s:%u: ovmf_vars=%s: not an absolute path", c->path, c->line_ovmf_vars, c->ovmf_vars);
                return -EINVAL;
        }
        return 0;
}

bool config_cpu_valid(const char *s) {
        size_t n = strlen(s);
        return n > 0 && n <= 64 &&
               strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n && s[0] != '-';
}

int host_config_load(const char *path, struct host_config **ret, char *err, size_t errlen) {
        struct host_config *c = calloc(1, sizeof *c);
        int r;
        if (!c)
                return -ENOMEM;
        c->path = strdup(path);
        c->shutdown_timeout = CONFIG_DEFAULT_SHUTDOWN_TIMEOUT_S;
        c->init_timeout = 600;
        c->shared_root = true;
        r = -ENOMEM;
        if (!c->path)
                goto fail;
        c->sizes = calloc(sizeof builtin_sizes / sizeof builtin_sizes[0], sizeof *c->sizes);
        if (!c->sizes)
                goto fail;
        for (size_t i = 0; i < sizeof builtin_sizes / sizeof builtin_sizes[0]; i++) {
                c->sizes[i] = builtin_sizes[i];
                c->sizes[i].name = strdup(builtin_sizes[i].name);
                if (!c->sizes[i].name)
                        goto fail;
                c->n_sizes++;
        }

        r = props_parse_file(path, host_config_set, c, err, errlen);
        if (r == -ENOENT)
                r = 0;
        if (r < 0)
                goto fail;

        struct { char **dst; const char *def; } defaults[] = {
                { &c->bridge, "br0" }, { &c->accel, "kvm:tcg" }, { &c->machine, "q35" },
                { &c->qemu, "/usr/bin/qemu-system-x86_64" }, { &c->user, "vrt" },
                { &c->ovmf_code, "/usr/share/OVMF/OVMF_CODE_4M.fd" },
                { &c->ovmf_vars, "/usr/share/OVMF/OVMF_VARS_4M.fd" },
        };
        r = -ENOMEM;
        for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
                if (!*defaults[i].dst && set_string(defaults[i].dst, defaults[i].def) < 0)
                        goto fail;
        r = host_config_check(c, err, errlen);
        if (r < 0)
                goto fail;
        *ret = c;
        return 0;
fail:
        host_config_free(c);
        return r;
}

struct host_config *host_config_free(struct host_config *c) {
        if (!c)
                return NULL;
        free(c->path);
        free(c->bridge);
        free(c->accel);
        free(c->machine);
        free(c->qemu);
        free(c->user);
        free(c->group);
        free(c->ovmf_code);
        free(c->ovmf_vars);
        free(c->cpu);
        for (size_t i = 0; i < c->n_sizes; i++)
                free(c->sizes[i].name);
        free(c->sizes);
        free(c);
        return NULL;
}

const struct size_class *host_config_find_size(const struct host_config *c, const char *name) {
        for (size_t i = 0; name && i < c->n_sizes; i++)
                if (strcmp(c->sizes[i].name, name) == 0)
                        return &c->sizes[i];
        return NULL;
}

/* --- instance.properties --- */

struct instance_parse {
        struct instance *inst;
        const char *runtime_dir;
};

static int parse_yes_no(const char *value, bool *ret) {
        if (strcmp(value, "yes") == 0 || strcmp(value, "true") == 0 || strcmp(value, "1") == 0)
                *ret = true;
        else if (strcmp(value, "no") == 0 || strcmp(value, "false") == 0 || strcmp(value, "0") == 0)
                *ret = false;
        else
                return -EINVAL;
        return 0;
}

/* "net", "bridge", "mac", "hostfwd" (NIC 0) or the same with ".N", N in
 * 1..VM_NICS_MAX-1 written without leading zeros: returns the base key and
 * sets *ret_index, or NULL for any other key. */
static const char *nic_key(const char *key, unsigned *ret_index) {
        static const char *const bases[] = { "net", "bridge", "mac", "hostfwd" };
        for (size_t i = 0; i < sizeof bases / sizeof *bases; i++) {
                size_t n = strlen(bases[i]);
                if (strncmp(key, bases[i], n) != 0)
                        continue;
                if (key[n] == '\0') {
                        *ret_index = 0;
                        return bases[i];
                }
                if (key[n] == '.' && key[n + 1] >= '1' && key[n + 1] < '0' + VM_NICS_MAX && key[n + 2] == '\0') {
                        *ret_index = (unsigned)(key[n + 1] - '0');
                        return bases[i];
                }
        }
        return NULL;
}

/* A port: decimal 1..65535, nothing else (no range, no sign). */
static bool port_parse(const char *s, size_t len, uint16_t *ret) {
        unsigned v = 0;
        if (len == 0 || len > 5)
                return false;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (unsigned)(s[i] - '0');
        }
        if (v < 1 || v > 65535)
                return false;
        *ret = (uint16_t)v;
        return true;
}

/* An empty address or a dotted IPv4 address, as slirp takes it. */
static bool addr_parse(const char *s, size_t len, char *ret, size_t retlen) {
        struct in_addr a;
        char buf[INET_ADDRSTRLEN];
        if (len == 0) {
                ret[0] = '\0';
                return true;
        }
        if (len >= sizeof buf)
                return false;
        snprintf(buf, sizeof buf, "%.*s", (int)len, s);
        if (inet_pton(AF_INET, buf, &a) != 1)
                return false;
        snprintf(ret, retlen, "%s", buf);
        return true;
}

/* Parses one rule "[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport".
 * Returns NULL, or why the rule is refused. */
static const char *hostfwd_parse(const char *rule, struct hostfwd *ret) {
        struct hostfwd f = { 0 };
        const char *c1 = strchr(rule, ':');
        if (!c1)
                return "no ':' after the protocol";
        size_t plen = (size_t)(c1 - rule);
        if (plen == 3 && strncmp(rule, "udp", 3) == 0)
                f.udp = true;
        else if (plen && !(plen == 3 && strncmp(rule, "tcp", 3) == 0))
                return "unknown protocol (tcp or udp)";
        const char *dash = strchr(c1 + 1, '-');
        if (!dash)
                return "no '-' between the host and the guest side";
        const char *c2 = memchr(c1 + 1, ':', (size_t)(dash - c1 - 1));
        if (!c2)
                return "the host side needs [ADDRESS]:PORT";
        if (!addr_parse(c1 + 1, (size_t)(c2 - c1 - 1), f.host_addr, sizeof f.host_addr))
                return "invalid host address (an IPv4 address or empty)";
        if (!port_parse(c2 + 1, (size_t)(dash - c2 - 1), &f.host_port))
                return dash == c2 + 1 ? "no host port" : "host port must be a number 1..65535";
        const char *guest = dash + 1;
        const char *c3 = strchr(guest, ':');
        if (!c3)
                return "the guest side needs [ADDRESS]:PORT";
        if (!addr_parse(guest, (size_t)(c3 - guest), f.guest_addr, sizeof f.guest_addr))
                return "invalid guest address (an IPv4 address or empty)";
        if (strchr(c3 + 1, '-'))
                return "port ranges are not supported";
        if (!port_parse(c3 + 1, strlen(c3 + 1), &f.guest_port))
                return c3[1] ? "guest port must be a number 1..65535" : "no guest port";
        *ret = f;
        return NULL;
}

static int nic_set(struct nic *nic, const char *base, unsigned idx, const char *value, unsigned line,
                   char *err, size_t errlen) {
        char key[16];
        if (idx)
                snprintf(key, sizeof key, "%s.%u", base, idx);
        else
                snprintf(key, sizeof key, "%s", base);
        if (!nic->line_first)
                nic->line_first = line;
        if (strcmp(base, "net") == 0) {
                nic->net = net_mode_from_string(value);
                if (nic->net < 0 || (idx && nic->net == NET_NONE)) {
                        snprintf(err, errlen, "invalid %s \"%s\" (%s)", key, value, idx ? "bridge or user" : "bridge, user or none");
                        return -EINVAL;
                }
                nic->line_net = line;
                return 0;
        }
        if (strcmp(base, "bridge") == 0) {
                if (!*value || strlen(value) > 15 || strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != strlen(value)) {
                        snprintf(err, errlen, "invalid %s name \"%s\" (at most 15 characters)", key, value);
                        return -EINVAL;
                }
                return set_string(&nic->bridge, value);
        }
        if (strcmp(base, "mac") == 0) {
                uint8_t mac[MAC_LEN];
                char canon[MAC_STRLEN], why[256];
                if (mac_parse(value, mac) < 0) {
                        snprintf(err, errlen, "invalid %s \"%s\" (six hex pairs like 52:54:00:12:34:56)", key, value);
                        return -EINVAL;
                }
                if (mac_validate(mac, why, sizeof why) < 0) {
                        snprintf(err, errlen, "invalid %s \"%s\": %s", key, value, why);
                        return -EINVAL;
                }
                /* Stored lowercase, as the registry compares and writes it. */
                mac_format(mac, canon);
                nic->line_mac = line;
                return set_string(&nic->mac, canon);
        }
        /* hostfwd: tcp:[hostaddr]:hostport-[guestaddr]:guestport;... — only
         * characters of that grammar, so nothing else reaches QEMU. */
        if (!*value) {
                snprintf(err, errlen, "invalid %s \"%s\" (e.g. tcp::2222-:22;udp::5353-:53)", key, value);
                return -EINVAL;
        }
        nic->n_fwd = 0;
        for (const char *p = value; *p;) {
                size_t len = strcspn(p, ";");
                char rule[PROPS_MAX_VALUE + 1];
                const char *why = NULL;
                snprintf(rule, sizeof rule, "%.*s", (int)len, p);
                size_t plen = strcspn(rule, ":");
                if (rule[plen] && plen && !((plen == 3 && strncmp(rule, "tcp", 3) == 0) || (plen == 3 && strncmp(rule, "udp", 3) == 0)))
                        why = "unknown protocol (tcp or udp)";
                else if (strspn(rule, "tcpud0123456789.:-") != len) {
                        snprintf(err, errlen, "invalid %s \"%s\" (e.g. tcp::2222-:22;udp::5353-:53)", key, value);
                        return -EINVAL;
                } else if (len && nic->n_fwd == HOSTFWD_MAX)
                        why = "too many rules (at most 16 per NIC)";
                else if (len)
                        why = hostfwd_parse(rule, &nic->fwd[nic->n_fwd]);
                if (why) {
                        snprintf(err, errlen, "%s: invalid rule \"%s\": %s (e.g. tcp::2222-:22)", key, rule, why);
                        return -EINVAL;
                }
                nic->n_fwd += len > 0;
                p += len;
                p += *p == ';';
        }
        nic->line_hostfwd = line;
        return set_string(&nic->hostfwd, value);
}

/* Every NIC's port forwards together: a host port (per protocol and
 * address, an empty address or 0.0.0.0 meaning all) is forwarded once, or
 * QEMU fails when it starts. */
static bool hostfwd_addr_any(const char *a) {
        return !a[0] || strcmp(a, "0.0.0.0") == 0;
}

static int hostfwd_check(const struct instance *inst, char *err, size_t errlen) {
        for (unsigned i = 0; i < inst->n_nics; i++)
                for (unsigned j = 0; j < inst->nics[i].n_fwd; j++) {
                        const struct hostfwd *f = &inst->nics[i].fwd[j];
                        for (unsigned k = 0; k <= i; k++)
                                for (unsigned m = 0; m < (k == i ? j : inst->nics[k].n_fwd); m++) {
                                        const struct hostfwd *g = &inst->nics[k].fwd[m];
                                        if (f->udp != g->udp || f->host_port != g->host_port ||
                                            !(hostfwd_addr_any(f->host_addr) || hostfwd_addr_any(g->host_addr) ||
                                              strcmp(f->host_addr, g->host_addr) == 0))
                                                continue;
                                        char sfx[4] = "";
                                        if (i)
                                                snprintf(sfx, sizeof sfx, ".%u", i);
                                        snprintf(err, errlen, "%s:%u: hostfwd%s: host port %s %u is forwarded twice "
                                                 "(also by NIC %u)", inst->path, inst->nics[i].line_hostfwd, sfx,
                                                 f->udp ? "udp" : "tcp", f->host_port, k);
                                        return -EINVAL;
                                }
                }
        return 0;
}

/* The NICs as a whole: numbered without gaps, each extra one with its net.N,
 * hostfwd only on user networking, no MAC twice, no host port twice. */
static int nics_check(struct instance *inst, char *err, size_t errlen) {
        inst->n_nics = 1;
        for (unsigned i = 1; i < VM_NICS_MAX; i++)
                if (inst->nics[i].line_first)
                        inst->n_nics = i + 1;
        for (unsigned i = 0; i < inst->n_nics; i++) {
                const struct nic *n = &inst->nics[i];
                char sfx[4] = "";
                if (i)
                        snprintf(sfx, sizeof sfx, ".%u", i);
                if (i && !n->line_first) {
                        snprintf(err, errlen, "%s:%u: NIC %u has keys but NIC %u has no net.%u= (NICs are numbered from 1 without gaps)",
                                 inst->path, inst->nics[inst->n_nics - 1].line_first, inst->n_nics - 1, i, i);
                        return -EINVAL;
                }
                if (i && !n->line_net) {
                        snprintf(err, errlen, "%s:%u: NIC %u needs net.%u= (bridge or user)", inst->path, n->line_first, i, i);
                        return -EINVAL;
                }
                if (i && inst->nics[0].net == NET_NONE) {
                        snprintf(err, errlen, "%s:%u: net.%u= with net=none (line %u): the first NIC is net=",
                                 inst->path, n->line_net, i, inst->nics[0].line_net);
                        return -EINVAL;
                }
                if (n->hostfwd && n->net != NET_USER) {
                        snprintf(err, errlen, "%s:%u: hostfwd%s needs net%s=user", inst->path, n->line_hostfwd, sfx, sfx);
                        return -EINVAL;
                }
                for (unsigned k = 0; n->mac && k < i; k++)
                        if (inst->nics[k].mac && strcmp(inst->nics[k].mac, n->mac) == 0) {
                                snprintf(err, errlen, "%s:%u: mac%s=%s is the MAC of NIC %u too", inst->path, n->line_mac, sfx, n->mac, k);
                                return -EINVAL;
                        }
        }
        return hostfwd_check(inst, err, errlen);
}

static int instance_set(const char *key, const char *value, unsigned line, void *userdata, char *err, size_t errlen) {
        struct instance_parse *p = userdata;
        struct instance *inst = p->inst;
        int r = check_plain_value(key, value, err, errlen);
        if (r < 0)
                return r;

        if (strcmp(key, "name") == 0) {
                r = config_check_vm_name(value, p->runtime_dir, err, errlen);
                if (r < 0)
                        return r;
                inst->line_name = line;
                return set_string(&inst->name, value);
        }
        if (strcmp(key, "image") == 0) {
                if (config_check_image_name(value) < 0) {
                        snprintf(err, errlen, "invalid image name \"%s\" (a file name in images/ without .qcow2)", value);
                        return -EINVAL;
                }
                inst->line_image = line;
                return set_string(&inst->image, value);
        }
        if (strcmp(key, "size") == 0) {
                if (config_check_image_name(value) < 0) {
                        snprintf(err, errlen, "invalid size name \"%s\"", value);
                        return -EINVAL;
                }
                inst->line_size = line;
                return set_string(&inst->size, value);
        }
        if (strcmp(key, "comment") == 0)
                return set_string(&inst->comment, value);
        if (strcmp(key, "init") == 0) {
                if (config_check_image_name(value) < 0) {
                        snprintf(err, errlen, "invalid init script name \"%s\" (a file name in init/)", value);
                        return -EINVAL;
                }
                inst->line_init = line;
                return set_string(&inst->init, value);
        }
        unsigned idx;
        const char *base = nic_key(key, &idx);
        if (base)
                return nic_set(&inst->nics[idx], base, idx, value, line, err, errlen);
        if (strcmp(key, "disk") == 0) {
                inst->disk = disk_mode_from_string(value);
                if (inst->disk < 0) {
                        snprintf(err, errlen, "invalid disk \"%s\" (overlay or copy)", value);
                        return -EINVAL;
                }
                return 0;
        }
        if (strcmp(key, "firmware") == 0) {
                inst->firmware = firmware_from_string(value);
                if (inst->firmware < 0) {
                        snprintf(err, errlen, "invalid firmware \"%s\" (bios or uefi)", value);
                        return -EINVAL;
                }
                inst->firmware_set = true;
                return 0;
        }
        if (strcmp(key, "autostart") == 0) {
                if (parse_yes_no(value, &inst->autostart) < 0) {
                        snprintf(err, errlen, "invalid autostart \"%s\" (yes or no)", value);
                        return -EINVAL;
                }
                return 0;
        }
        if (strcmp(key, "managed_by") == 0) {
                if (strcmp(value, "vrt") != 0 && strcmp(value, "pacemaker") != 0) {
                        snprintf(err, errlen, "invalid managed_by \"%s\" (vrt or pacemaker)", value);
                        return -EINVAL;
                }
                inst->cluster_managed = value[0] == 'p';
                inst->line_managed_by = line;
                return 0;
        }
        if (strcmp(key, "shutdown_timeout") == 0) {
                if (config_parse_uint(value, 1, 86400, &inst->shutdown_timeout) < 0) {
                        snprintf(err, errlen, "invalid shutdown_timeout \"%s\" (1..86400 seconds)", value);
                        return -EINVAL;
                }
                return 0;
        }
        snprintf(err, errlen, "unknown key %s", key);
        return -EINVAL;
}

int instance_load(const char *path, const char *default_name, const char *runtime_dir,
                  struct instance **ret, char *err, size_t errlen) {
        struct instance *inst = calloc(1, sizeof *inst);
        int r = -ENOMEM;
        if (!inst)
                return -ENOMEM;
        inst->path = strdup(path);
        if (!inst->path)
                goto fail;
        inst->disk = DISK_OVERLAY;
        for (unsigned i = 0; i < VM_NICS_MAX; i++)
                inst->nics[i].net = NET_BRIDGE;
        inst->firmware = FIRMWARE_BIOS;

        struct instance_parse p = { inst, runtime_dir };
        r = props_parse_file(path, instance_set, &p, err, errlen);
        if (r < 0)
                goto fail;

        if (!inst->name) {
                if (!default_name) {
                        snprintf(err, errlen, "%s: no name= and no name given", path);
                        r = -EINVAL;
                        goto fail;
                }
                char msg[512];
                r = config_check_vm_name(default_name, runtime_dir, msg, sizeof msg);
                if (r < 0) {
                        snprintf(err, errlen, "%s: %s", path, msg);
                        goto fail;
                }
                r = set_string(&inst->name, default_name);
                if (r < 0)
                        goto fail;
        }
        if (!inst->image) {
                snprintf(err, errlen, "%s: missing required key image", path);
                r = -EINVAL;
                goto fail;
        }
        if (!inst->size) {
                snprintf(err, errlen, "%s: missing required key size", path);
                r = -EINVAL;
                goto fail;
        }
        r = nics_check(inst, err, errlen);
        if (r < 0)
                goto fail;
        if (inst->cluster_managed && inst->autostart) {
                snprintf(err, errlen, "%s:%u: managed_by=pacemaker and autostart=yes exclude each other (the cluster starts it)",
                         path, inst->line_managed_by);
                r = -EINVAL;
                goto fail;
        }
        *ret = inst;
        return 0;
fail:
        instance_free(inst);
        return r;
}

int instance_check(const struct instance *inst, const struct host_config *host, char *err, size_t errlen) {
        if (!host_config_find_size(host, inst->size)) {
                snprintf(err, errlen, "%s:%u: unknown size \"%s\" (define size.%s.* in %s)",
                         inst->path, inst->line_size, inst->size, inst->size, host->path);
                return -EINVAL;
        }
        return 0;
}

struct instance *instance_free(struct instance *inst) {
        if (!inst)
                return NULL;
        free(inst->path);
        free(inst->name);
        free(inst->image);
        free(inst->size);
        free(inst->comment);
        free(inst->init);
        for (unsigned i = 0; i < VM_NICS_MAX; i++) {
                free(inst->nics[i].bridge);
                free(inst->nics[i].mac);
                free(inst->nics[i].hostfwd);
        }
        free(inst);
        return NULL;
}

char *instance_to_string(const struct instance *inst) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return NULL;
        /* Seed keys first, as the seed's instance.properties has them. */
        fprintf(f, "image=%s\nsize=%s\ncomment=%s\nname=%s\n", inst->image, inst->size,
                inst->comment ? inst->comment : "", inst->name);
        fprintf(f, "disk=%s\n", disk_mode_to_string(inst->disk));
        for (unsigned i = 0; i < inst->n_nics; i++) {
                const struct nic *n = &inst->nics[i];
                char sfx[4] = "";
                if (i)
                        snprintf(sfx, sizeof sfx, ".%u", i);
                fprintf(f, "net%s=%s\n", sfx, net_mode_to_string(n->net));
                if (n->bridge)
                        fprintf(f, "bridge%s=%s\n", sfx, n->bridge);
                if (n->mac)
                        fprintf(f, "mac%s=%s\n", sfx, n->mac);
                if (n->hostfwd)
                        fprintf(f, "hostfwd%s=%s\n", sfx, n->hostfwd);
        }
        if (inst->firmware_set)
                fprintf(f, "firmware=%s\n", firmware_to_string(inst->firmware));
        if (inst->init)
                fprintf(f, "init=%s\n", inst->init);
        if (inst->autostart)
                fprintf(f, "autostart=yes\n");
        if (inst->cluster_managed)
                fprintf(f, "managed_by=pacemaker\n");
        if (inst->shutdown_timeout)
                fprintf(f, "shutdown_timeout=%u\n", inst->shutdown_timeout);
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

/* --- image sidecar --- */

struct meta_parse {
        struct image_meta *meta;
        const char *dir;
};

static int meta_path(const char *dir, const char *value, char **dst) {
        if (value[0] == '/')
                return set_string(dst, value);
        char *s;
        if (asprintf(&s, "%s/%s", dir, value) < 0)
                return -ENOMEM;
        free(*dst);
        *dst = s;
        return 0;
}

static int image_meta_set(const char *key, const char *value, unsigned line, void *userdata, char *err, size_t errlen) {
        struct meta_parse *p = userdata;
        int r = check_plain_value(key, value, err, errlen);
        if (r < 0)
                return r;
        if (strcmp(key, "kernel") == 0 || strcmp(key, "initrd") == 0) {
                if (!*value) {
                        snprintf(err, errlen, "%s: empty path", key);
                        return -EINVAL;
                }
                if (key[0] == 'k')
                        p->meta->line_kernel = line;
                else
                        p->meta->line_initrd = line;
                return meta_path(p->dir, value, key[0] == 'k' ? &p->meta->kernel : &p->meta->initrd);
        }
        if (strcmp(key, "cmdline") == 0)
                return set_string(&p->meta->cmdline, value);
        if (strcmp(key, "firmware") == 0) {
                p->meta->firmware = firmware_from_string(value);
                if (p->meta->firmware < 0) {
                        snprintf(err, errlen, "invalid firmware \"%s\" (bios or uefi)", value);
                        return -EINVAL;
                }
                p->meta->firmware_set = true;
                return 0;
        }
        snprintf(err, errlen, "unknown key %s", key);
        return -EINVAL;
}

int image_meta_load(const char *path, struct image_meta **ret, char *err, size_t errlen) {
        struct image_meta *m = calloc(1, sizeof *m);
        char *dir = NULL;
        int r = -ENOMEM;
        if (!m)
                return -ENOMEM;
        m->path = strdup(path);
        dir = strdup(path);
        if (!m->path || !dir)
                goto fail;
        char *slash = strrchr(dir, '/');
        if (slash)
                *slash = '\0';
        else
                strcpy(dir, ".");
        struct meta_parse p = { m, dir };
        r = props_parse_file(path, image_meta_set, &p, err, errlen);
        if (r == -ENOENT)
                r = 0;
        if (r < 0)
                goto fail;
        if (m->initrd && !m->kernel) {
                snprintf(err, errlen, "%s: initrd= without kernel=", path);
                r = -EINVAL;
                goto fail;
        }
        if (m->cmdline && !m->kernel) {
                snprintf(err, errlen, "%s: cmdline= without kernel=", path);
                r = -EINVAL;
                goto fail;
        }
        free(dir);
        *ret = m;
        return 0;
fail:
        free(dir);
        image_meta_free(m);
        return r;
}

struct image_meta *image_meta_free(struct image_meta *m) {
        if (!m)
                return NULL;
        free(m->path);
        free(m->kernel);
        free(m->initrd);
        free(m->cmdline);
        free(m);
        return NULL;
}
