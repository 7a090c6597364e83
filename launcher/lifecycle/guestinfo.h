/* guestinfo: what the guest agent (qemu-ga on agent.sock) says about a
 * running VM, for vrt status, vrt list --json and vrt agent. Every call is
 * bounded by its timeout: a guest without an agent costs that long, no
 * more. Prints nothing. */
#pragma once

#include <json-c/json.h>

#include "launcher/core/config.h"
#include "launcher/core/paths.h"

/* vrt status: how long the agent gets to answer, connect included. */
#define GUESTINFO_TIMEOUT_MS 1500

/* Adds to o "agent" (true when the agent answered within timeout_ms),
 * "addresses" (per NIC of inst: {"nic", "mac", "interface", "addresses":
 * ["A/PREFIX", ...]}, matched by MAC from guest-network-get-interfaces;
 * [] without an agent) and, without an answer, "agent_error" (one line).
 * timeout_ms 0: adds "agent": false without asking (p, inst unused). */
void guestinfo_add_addresses(json_object *o, const struct vm_paths *p, const struct instance *inst, int timeout_ms);
