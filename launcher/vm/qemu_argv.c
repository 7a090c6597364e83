#include "launcher/vm/qemu_argv.h"
#include "launcher/core/strv.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *qemu_escape_commas(const char *s) {
        size_t n = 0;
        for (const char *p = s; *p; p++)
                n += *p == ',' ? 2 : 1;
        char *out = malloc(n + 1), *o = out;
        if (!out)
                return NULL;
        for (const char *p = s; *p; p++) {
                *o++ = *p;
                if (*p == ',')
                        *o++ = ',';
        }
        *o = '\0';
        return out;
}

void qemu_launch_for_instance(struct qemu_launch *l, const struct host_config *host, const struct instance *inst,
                              const struct size_class *size, const struct image_meta *image) {
        l->qemu = host->qemu;
        l->machine = host->machine;
        l->accel = host->accel;
        l->cpu = host->cpu;
        l->ovmf_code = host->ovmf_code;
        l->name = inst->name;
        l->cpus = size->cpus;
        l->memory_mib = size->memory >> 20;
        l->firmware = inst->firmware_set ? inst->firmware
                      : image && image->firmware_set ? image->firmware
                      : FIRMWARE_BIOS;
        l->kernel = image ? image->kernel : NULL;
        l->initrd = image ? image->initrd : NULL;
        l->cmdline = image ? image->cmdline : NULL;
        l->nics = inst->nics;
        l->n_nics = inst->nics[0].net == NET_NONE ? 0 : inst->n_nics;
}

/* Appends an option whose value is a JSON object; takes the object. */
static void add_json(struct strv *v, const char *opt, struct json_object *o) {
        strv_add(v, opt);
        if (!o) {
                strv_take(v, NULL);
                return;
        }
        strv_add(v, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
}

/* A small builder so that objects read in argument order. */
static struct json_object *obj(void) {
        return json_object_new_object();
}
static struct json_object *put_str(struct json_object *o, const char *k, const char *s) {
        if (o)
                json_object_object_add(o, k, json_object_new_string(s));
        return o;
}
static struct json_object *put_bool(struct json_object *o, const char *k, int b) {
        if (o)
                json_object_object_add(o, k, json_object_new_boolean(b));
        return o;
}
static struct json_object *put_int(struct json_object *o, const char *k, int i) {
        if (o)
                json_object_object_add(o, k, json_object_new_int(i));
        return o;
}
static struct json_object *put_fd(struct json_object *o, const char *k, int fd) {
        char buf[16];
        snprintf(buf, sizeof buf, "%d", fd);
        return put_str(o, k, buf);
}

/* -chardev has no JSON syntax in QEMU 7.2: a socket chardev on an
 * inherited listening fd, with only integers in the option string. */
static void add_socket_chardev(struct strv *v, const char *id, int fd, int log_fd_set) {
        strv_add(v, "-chardev");
        if (log_fd_set > 0)
                strv_addf(v, "socket,id=%s,fd=%d,server=on,wait=off,logfile=/dev/fdset/%d,logappend=on", id, fd, log_fd_set);
        else
                strv_addf(v, "socket,id=%s,fd=%d,server=on,wait=off", id, fd);
}

/* Raw read-only image (ISO) as a file + raw node pair. */
static void add_readonly_raw(struct strv *v, const char *node, const char *path) {
        char file_node[64];
        snprintf(file_node, sizeof file_node, "%s-file", node);
        add_json(v, "-blockdev", put_bool(put_str(put_str(put_str(obj(), "driver", "file"), "filename", path), "node-name", file_node), "read-only", 1));
        add_json(v, "-blockdev", put_bool(put_str(put_str(put_str(obj(), "node-name", node), "driver", "raw"), "file", file_node), "read-only", 1));
}

static int check_path(const char *what, const char *path, char *err, size_t errlen) {
        if (!path || path[0] != '/') {
                snprintf(err, errlen, "%s path \"%s\" is not absolute", what, path ? path : "");
                return -EINVAL;
        }
        for (const char *p = path; *p; p++)
                if ((unsigned char)*p < 0x20) {
                        snprintf(err, errlen, "%s path contains a control character", what);
                        return -EINVAL;
                }
        return 0;
}

static void add_disk(struct strv *v, const struct qemu_launch *l) {
        /* Bottom-up, one file node and one format node per layer, each
         * naming its backing node explicitly: QEMU never guesses a format
         * or follows a backing name from an image header. Every layer but
         * the VM's own is read-only, so templates are never written. */
        for (size_t i = l->n_disk; i-- > 0;) {
                char file_node[48], fmt_node[48], backing_node[48];
                int ro = i > 0;
                snprintf(file_node, sizeof file_node, "disk0-l%zu-file", i);
                snprintf(fmt_node, sizeof fmt_node, i == 0 ? "disk0" : "disk0-l%zu", i);
                snprintf(backing_node, sizeof backing_node, "disk0-l%zu", i + 1);

                struct json_object *f = put_str(put_str(put_str(obj(), "driver", "file"), "filename", l->disk[i].path), "node-name", file_node);
                put_bool(f, "read-only", ro);
                if (!ro)
                        put_str(f, "discard", "unmap");
                add_json(v, "-blockdev", f);

                struct json_object *fmt = put_str(put_str(put_str(obj(), "node-name", fmt_node), "driver", l->disk[i].format), "file", file_node);
                put_bool(fmt, "read-only", ro);
                if (!ro)
                        put_str(fmt, "discard", "unmap");
                if (strcmp(l->disk[i].format, "qcow2") == 0) {
                        if (i + 1 < l->n_disk)
                                put_str(fmt, "backing", backing_node);
                        else if (fmt)
                                json_object_object_add(fmt, "backing", NULL);
                }
                add_json(v, "-blockdev", fmt);
        }
        add_json(v, "-device", put_int(put_str(put_str(put_str(obj(), "driver", "virtio-blk-pci"), "id", QEMU_DISK_DEVICE), "drive", "disk0"), "bootindex", 1));
}

/* NIC i: its -netdev (tap by fd, or user networking with its port
 * forwards) and its virtio-net device with the NIC's MAC. */
static void add_nic(struct strv *v, const struct nic *nic, unsigned i, int fd_tap, int fd_vhost) {
        char netdev[8], dev[8];
        snprintf(netdev, sizeof netdev, "net%u", i);
        snprintf(dev, sizeof dev, "nic%u", i);
        struct json_object *n = put_str(put_str(obj(), "type", nic->net == NET_BRIDGE ? "tap" : "user"), "id", netdev);
        if (nic->net == NET_BRIDGE) {
                put_fd(n, "fd", fd_tap);
                if (fd_vhost >= 0)
                        put_fd(put_bool(n, "vhost", 1), "vhostfd", fd_vhost);
        } else {
                if (nic->n_fwd && n) {
                        struct json_object *list = json_object_new_array();
                        for (unsigned k = 0; k < nic->n_fwd && list; k++) {
                                const struct hostfwd *f = &nic->fwd[k];
                                char rule[64];
                                snprintf(rule, sizeof rule, "%s:%s:%u-%s:%u", f->udp ? "udp" : "tcp", f->host_addr,
                                         f->host_port, f->guest_addr, f->guest_port);
                                json_object_array_add(list, put_str(obj(), "str", rule));
                        }
                        json_object_object_add(n, "hostfwd", list);
                }
        }
        add_json(v, "-netdev", n);
        struct json_object *d = put_str(put_str(put_str(obj(), "driver", "virtio-net-pci"), "id", dev), "netdev", netdev);
        if (nic->mac)
                put_str(d, "mac", nic->mac);
        add_json(v, "-device", d);
}

int qemu_argv_build(const struct qemu_launch *l, char ***ret, char *err, size_t errlen) {
        struct strv v = { 0 };
        int r;

        if (!l->qemu || !l->machine || !l->accel || !l->name || (l->n_nics && !l->nics)) {
                snprintf(err, errlen, "incomplete launch description");
                return -EINVAL;
        }
        /* Configuration values were checked when they were parsed; what is
         * checked here comes from elsewhere: disk chains and descriptors. */
        for (size_t i = 0; i < l->n_disk; i++) {
                r = check_path("disk", l->disk[i].path, err, errlen);
                if (r < 0)
                        return r;
                if (strcmp(l->disk[i].format, "qcow2") && strcmp(l->disk[i].format, "raw")) {
                        snprintf(err, errlen, "disk %s: unsupported format \"%s\"", l->disk[i].path, l->disk[i].format);
                        return -EINVAL;
                }
        }
        enum firmware fw = l->firmware;
        if (fw == FIRMWARE_UEFI && (r = check_path("UEFI variable store", l->uefi_vars, err, errlen)) < 0)
                return r;
        for (unsigned i = 0; i < l->n_nics; i++)
                if (l->nics[i].net == NET_BRIDGE && l->fd_tap[i] < 0) {
                        char key[8] = "net";
                        if (i)
                                snprintf(key, sizeof key, "net.%u", i);
                        snprintf(err, errlen, "%s=bridge needs a tap descriptor", key);
                        return -EINVAL;
                }

        if (l->cpu && !config_cpu_valid(l->cpu)) {
                snprintf(err, errlen, "invalid CPU model \"%.80s\"", l->cpu);
                return -EINVAL;
        }
        if (l->incoming && strcmp(l->incoming, "defer") != 0) {
                snprintf(err, errlen, "unsupported -incoming \"%.80s\"", l->incoming);
                return -EINVAL;
        }

        strv_add(&v, l->qemu);
        strv_add(&v, "-name");
        strv_addf(&v, "guest=%s,debug-threads=on", l->name);          /* validated: no comma */
        strv_add(&v, "-nodefaults");
        strv_add(&v, "-no-user-config");

        /* The machine string carries only validated tokens and fixed node names. */
        strv_add(&v, "-machine");
        if (fw == FIRMWARE_UEFI)
                strv_addf(&v, "%s,pflash0=fw-code,pflash1=fw-vars", l->machine);
        else
                strv_add(&v, l->machine);
        /* accel=kvm:tcg becomes one -accel per choice, tried in order. */
        {
                const char *a = l->accel;
                while (*a) {
                        size_t n = strcspn(a, ":");
                        strv_add(&v, "-accel");
                        strv_take(&v, strndup(a, n));
                        a += n;
                        if (*a == ':')
                                a++;
                }
        }
        strv_add(&v, "-cpu");
        strv_add(&v, l->cpu ? l->cpu : CONFIG_DEFAULT_CPU);
        strv_add(&v, "-smp");
        strv_addf(&v, "%u", l->cpus);
        strv_add(&v, "-m");
        strv_addf(&v, "%lluM", (unsigned long long)l->memory_mib);
        strv_add(&v, "-display");
        strv_add(&v, "none");
        if (l->vnc_socket) {
                /* An operator display for OS installs: VNC on a unix socket only. */
                char *esc = qemu_escape_commas(l->vnc_socket);
                strv_add(&v, "-vnc");
                if (esc)
                        strv_addf(&v, "unix:%s", esc);
                else
                        strv_take(&v, NULL);
                free(esc);
                add_json(&v, "-device", put_str(put_str(obj(), "driver", "VGA"), "id", "vga0"));
        }

        if (fw == FIRMWARE_UEFI) {
                add_json(&v, "-blockdev", put_bool(put_str(put_str(put_str(obj(), "driver", "file"), "filename", l->ovmf_code), "node-name", "fw-code"), "read-only", 1));
                add_json(&v, "-blockdev", put_bool(put_str(put_str(put_str(obj(), "driver", "file"), "filename", l->uefi_vars), "node-name", "fw-vars"), "read-only", 0));
        }

        if (l->kernel) {
                /* -kernel, -initrd and -append take their argument verbatim. */
                strv_add(&v, "-kernel");
                strv_add(&v, l->kernel);
                if (l->initrd) {
                        strv_add(&v, "-initrd");
                        strv_add(&v, l->initrd);
                }
                if (l->cmdline) {
                        strv_add(&v, "-append");
                        strv_add(&v, l->cmdline);
                }
        }

        if (l->n_disk > 0)
                add_disk(&v, l);
        if (l->install_iso) {
                add_readonly_raw(&v, "install-cd", l->install_iso);
                add_json(&v, "-device", put_int(put_str(put_str(put_str(obj(), "driver", "ide-cd"), "id", "cd0"), "drive", "install-cd"), "bootindex", 0));
        }
        if (l->seed_image) {
                add_readonly_raw(&v, "seed", l->seed_image);
                add_json(&v, "-device", put_str(put_str(put_str(obj(), "driver", "virtio-blk-pci"), "id", "seed0"), "drive", "seed"));
        }

        for (unsigned i = 0; i < l->n_nics; i++)
                add_nic(&v, &l->nics[i], i, l->fd_tap[i], l->fd_vhost[i]);

        /* Entropy for the guest; a fresh VM otherwise starves at first boot. */
        add_json(&v, "-object", put_str(put_str(put_str(obj(), "qom-type", "rng-random"), "id", "rng0"), "filename", "/dev/urandom"));
        add_json(&v, "-device", put_str(put_str(put_str(obj(), "driver", "virtio-rng-pci"), "id", "rng0-dev"), "rng", "rng0"));

        if (l->fd_console >= 0) {
                if (l->fd_console_log >= 0) {
                        strv_add(&v, "-add-fd");
                        strv_addf(&v, "fd=%d,set=1", l->fd_console_log);
                }
                add_socket_chardev(&v, "serial0", l->fd_console, l->fd_console_log >= 0 ? 1 : 0);
                strv_add(&v, "-serial");
                strv_add(&v, "chardev:serial0");
        }
        if (l->fd_init_log >= 0 || l->fd_agent >= 0)
                add_json(&v, "-device", put_str(put_str(obj(), "driver", "virtio-serial-pci"), "id", "vser0"));
        if (l->fd_init_log >= 0) {
                strv_add(&v, "-add-fd");
                strv_addf(&v, "fd=%d,set=2", l->fd_init_log);
                strv_add(&v, "-chardev");
                strv_add(&v, "file,id=initlog,path=/dev/fdset/2");
                add_json(&v, "-device", put_str(put_str(put_str(put_str(obj(), "driver", "virtserialport"), "id", "initport"), "chardev", "initlog"), "name", "org.vrt.init"));
        }
        if (l->fd_agent >= 0) {
                /* The name qemu-ga looks for: /dev/virtio-ports/org.qemu.guest_agent.0. */
                add_socket_chardev(&v, "agent", l->fd_agent, 0);
                add_json(&v, "-device", put_str(put_str(put_str(put_str(obj(), "driver", "virtserialport"), "id", "agentport"), "chardev", "agent"), "name", "org.qemu.guest_agent.0"));
        }
        if (l->fd_qmp >= 0) {
                add_socket_chardev(&v, "qmp", l->fd_qmp, 0);
                strv_add(&v, "-mon");
                strv_add(&v, "chardev=qmp,mode=control");
        }
        if (l->fd_monitor >= 0) {
                add_socket_chardev(&v, "monitor", l->fd_monitor, 0);
                strv_add(&v, "-mon");
                strv_add(&v, "chardev=monitor,mode=control");
        }

        strv_add(&v, "-sandbox");
        strv_add(&v, "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
        strv_add(&v, "-msg");
        strv_add(&v, "timestamp=on");
        strv_add(&v, "-S");
        if (l->incoming) {
                /* Live migration target: the same argv, waiting for migrate-incoming. */
                strv_add(&v, "-incoming");
                strv_add(&v, l->incoming);
        }

        if (v.error) {
                r = v.error;
                strv_done(&v);
                return r;
        }
        *ret = v.items;
        return 0;
}

void qemu_launch_no_nic_fds(struct qemu_launch *l) {
        for (unsigned i = 0; i < VM_NICS_MAX; i++)
                l->fd_tap[i] = l->fd_vhost[i] = -1;
}
