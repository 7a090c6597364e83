/* config: the host configuration (vrt.conf), image sidecars
 * (images/NAME.properties) and instances (vm/NAME/instance.properties),
 * all read through props. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VM_NAME_MAX 63
/* NIC 0 has the seed's keys (net=, bridge=, mac=, hostfwd=); NIC N the same
 * keys with a suffix, net.N= and so on, for N in 1..VM_NICS_MAX-1. */
#define VM_NICS_MAX 8
/* vrt.conf's shutdown_timeout when it sets none (or is missing). */
#define CONFIG_DEFAULT_SHUTDOWN_TIMEOUT_S 120
#define UNIX_PATH_MAX_BYTES 108

enum disk_mode { DISK_OVERLAY, DISK_COPY, _DISK_MODE_MAX, _DISK_MODE_INVALID = -1 };
enum net_mode { NET_BRIDGE, NET_USER, NET_NONE, _NET_MODE_MAX, _NET_MODE_INVALID = -1 };
enum firmware { FIRMWARE_BIOS, FIRMWARE_UEFI, _FIRMWARE_MAX, _FIRMWARE_INVALID = -1 };

const char *disk_mode_to_string(enum disk_mode m);
enum disk_mode disk_mode_from_string(const char *s);
const char *net_mode_to_string(enum net_mode m);
enum net_mode net_mode_from_string(const char *s);
const char *firmware_to_string(enum firmware f);
enum firmware firmware_from_string(const char *s);

struct size_class {
        char *name;
        unsigned cpus;
        uint64_t memory;        /* bytes */
        uint64_t disk;          /* bytes; 0 = the template's size */
        unsigned line;          /* where it was defined in vrt.conf, 0 = built in */
};

struct host_config {
        char *path;             /* for messages */
        char *bridge;
        char *accel;
        char *machine;
        char *qemu;
        char *user;             /* QEMU runs as this user */
        char *group;            /* optional operator group for runtime sockets */
        char *ovmf_code;
        char *ovmf_vars;
        char *cpu;              /* -cpu model: NULL = CONFIG_DEFAULT_CPU */
        unsigned shutdown_timeout;
        unsigned init_timeout;
        bool shared_root;       /* yes (default): leases must work across hosts */
        struct size_class *sizes;
        size_t n_sizes;
        unsigned line_accel, line_machine, line_qemu;   /* for messages; 0 = default */
        unsigned line_user, line_group, line_ovmf_code, line_ovmf_vars;
};

/* The default -cpu model: a named model that migrates between hosts with
 * the same QEMU ("max" and "host" expose whatever the host has, so a
 * guest may use a feature the destination lacks). */
#define CONFIG_DEFAULT_CPU "qemu64"

/* Whether s is a usable cpu= value: a model name of [A-Za-z0-9._-], at
 * most 64 characters (no options: commas would reach QEMU's parser). */
bool config_cpu_valid(const char *s);

/* One port forward of user networking, "[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport",
 * parsed and checked once; the argv builder writes it back in that form. */
#define HOSTFWD_MAX 16
struct hostfwd {
        bool udp;
        char host_addr[16];     /* dotted IPv4, "" = every address */
        char guest_addr[16];    /* dotted IPv4, "" = the guest's DHCP address */
        uint16_t host_port, guest_port; /* 1..65535 */
};

struct nic {
        enum net_mode net;      /* NET_NONE only for NIC 0: the VM has no NIC */
        char *bridge;           /* NULL = host default */
        char *mac;              /* NULL = none assigned yet */
        char *hostfwd;          /* net=user only: the rules as written, ';'-separated */
        struct hostfwd fwd[HOSTFWD_MAX];        /* the same, parsed */
        unsigned n_fwd;
        unsigned line_net, line_mac, line_hostfwd;
        unsigned line_first;    /* its first key, 0 = none */
};

struct instance {
        char *path;             /* for messages */
        char *name;
        char *image;
        char *size;
        char *comment;
        char *init;
        struct nic nics[VM_NICS_MAX];
        unsigned n_nics;        /* 1 + the extra NICs; nics[0].net == NET_NONE: no NIC at all */
        enum disk_mode disk;
        enum firmware firmware;
        bool firmware_set;
        bool autostart;
        bool cluster_managed;   /* managed_by=pacemaker: the spool and autostart leave it alone */
        unsigned shutdown_timeout;      /* 0 = host default */
        unsigned line_image, line_size, line_init, line_name, line_managed_by;
};

struct image_meta {
        char *path;
        char *kernel;           /* absolute after loading */
        char *initrd;
        char *cmdline;
        enum firmware firmware;
        bool firmware_set;
        unsigned line_kernel, line_initrd;      /* for messages */
};

/* Parses "512M", "1G", "10240" (bytes) into bytes. Units K M G T are binary.
 * Returns 0 or -EINVAL / -ERANGE. */
int config_parse_size(const char *s, uint64_t *ret);

/* Parses a decimal unsigned in [min, max]. */
int config_parse_uint(const char *s, unsigned min, unsigned max, unsigned *ret);

/* Checks a VM name: RFC 1123 label, lowercase, at most 63 bytes, and short
 * enough that runtime_dir/NAME/monitor.sock fits a sockaddr_un. */
int config_check_vm_name(const char *name, const char *runtime_dir, char *err, size_t errlen);

/* Loads vrt.conf; a missing file yields the built-in defaults. */
int host_config_load(const char *path, struct host_config **ret, char *err, size_t errlen);
struct host_config *host_config_free(struct host_config *c);
const struct size_class *host_config_find_size(const struct host_config *c, const char *name);

/* Loads an instance.properties. default_name (may be NULL) is used when the
 * file has no name= key. Checks everything that needs no other file. */
int instance_load(const char *path, const char *default_name, const char *runtime_dir,
                  struct instance **ret, char *err, size_t errlen);
/* Cross-checks an instance against the host config (size exists, ...). */
int instance_check(const struct instance *inst, const struct host_config *host,
                   char *err, size_t errlen);
struct instance *instance_free(struct instance *inst);
/* Serialises an instance back to key=value text (new string). */
char *instance_to_string(const struct instance *inst);

/* Loads an image sidecar; relative kernel/initrd paths are made absolute
 * against the sidecar's directory. A missing file gives an empty meta. */
int image_meta_load(const char *path, struct image_meta **ret, char *err, size_t errlen);
struct image_meta *image_meta_free(struct image_meta *m);

/* Checks an image name (file name stem in images/): [A-Za-z0-9._-], no leading dot. */
int config_check_image_name(const char *name);
