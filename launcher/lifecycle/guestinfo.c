#include "launcher/lifecycle/guestinfo.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "launcher/core/util.h"
#include "qmp/agent.h"

static const char *member_str(json_object *o, const char *key) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

/* The guest's interface with this MAC (case-insensitive), or NULL. */
static json_object *interface_for(json_object *ifaces, const char *mac) {
        for (size_t k = 0; k < json_object_array_length(ifaces); k++) {
                json_object *i = json_object_array_get_idx(ifaces, k);
                const char *hw = member_str(i, "hardware-address");
                if (hw && strcasecmp(hw, mac) == 0)
                        return i;
        }
        return NULL;
}

static json_object *addresses_of(json_object *iface) {
        json_object *out = json_object_new_array(), *ips = NULL;
        if (!iface || !json_object_object_get_ex(iface, "ip-addresses", &ips) ||
            !json_object_is_type(ips, json_type_array))
                return out;
        for (size_t k = 0; k < json_object_array_length(ips); k++) {
                json_object *a = json_object_array_get_idx(ips, k), *pre = NULL;
                const char *ip = member_str(a, "ip-address");
                if (!ip)
                        continue;
                char buf[128];
                if (json_object_object_get_ex(a, "prefix", &pre) && json_object_is_type(pre, json_type_int))
                        snprintf(buf, sizeof buf, "%s/%d", ip, json_object_get_int(pre));
                else
                        snprintf(buf, sizeof buf, "%s", ip);
                json_object_array_add(out, json_object_new_string(buf));
        }
        return out;
}

void guestinfo_add_addresses(json_object *o, const struct vm_paths *p, const struct instance *inst, int timeout_ms) {
        struct agent *a = NULL;
        json_object *ifaces = NULL, *list = json_object_new_array();
        char err[512] = "";
        int64_t start = now_ms();
        int r = timeout_ms > 0 ? agent_connect(p->agent_sock, timeout_ms, &a, err, sizeof err) : -ETIMEDOUT;
        if (timeout_ms <= 0)
                snprintf(err, sizeof err, "not asked: more running VMs than list asks at once");
        /* One bound for the whole exchange: the rest of it after connecting. */
        int left = timeout_ms - (int)(now_ms() - start);
        if (r == 0)
                r = agent_execute(a, "guest-network-get-interfaces", NULL, left > 0 ? left : 0, &ifaces, err, sizeof err);
        if (r == 0 && !json_object_is_type(ifaces, json_type_array)) {
                snprintf(err, sizeof err, "guest-network-get-interfaces: not an array");
                r = -EPROTO;
        }
        agent_free(a);
        json_object_object_add(o, "agent", json_object_new_boolean(r == 0));
        if (r == 0 && inst) {
                for (unsigned k = 0; k < inst->n_nics; k++) {
                        const struct nic *n = &inst->nics[k];
                        if (n->net == NET_NONE || !n->mac)
                                continue;
                        json_object *iface = interface_for(ifaces, n->mac), *x = json_object_new_object();
                        const char *ifname = iface ? member_str(iface, "name") : NULL;
                        json_object_object_add(x, "nic", json_object_new_int((int)k));
                        json_object_object_add(x, "mac", json_object_new_string(n->mac));
                        json_object_object_add(x, "interface", ifname ? json_object_new_string(ifname) : NULL);
                        json_object_object_add(x, "addresses", addresses_of(iface));
                        json_object_array_add(list, x);
                }
        }
        json_object_object_add(o, "addresses", list);
        if (r < 0)
                json_object_object_add(o, "agent_error", json_object_new_string(err));
        json_object_put(ifaces);
}
