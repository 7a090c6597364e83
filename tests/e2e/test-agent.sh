#!/bin/bash
# The guest agent channel end to end: a guest running the real qemu-ga on a
# bridged NIC (in a network namespace this script creates and deletes)
# shows its address in vrt status and vrt list --json; vrt agent runs one
# command; vrt stop falls back to guest-shutdown for a guest that ignores
# the ACPI button (and logs it); a guest without an agent (vrt.noagent=1)
# is reported as such within the bound; bad input gives one line and a
# non-zero exit. Skips the agent checks when the test guest has no qemu-ga.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=4
e2e_setup
JSON_GET="$VRT_BUILD_DIR/tests/e2e/json-get"

[ -c /dev/net/tun ] || skip_all "no /dev/net/tun"
if ! gzip -dc "$TESTGUEST_DIR/testguest.initrd" | cpio -t --quiet 2>/dev/null | grep -qx 'usr/sbin/qemu-ga'; then
        skip_all "the test guest in $TESTGUEST_DIR has no qemu-ga (rebuild it with tools/testguest/build)"
fi
NS="vrt-e2e-agent-$$"
ip netns add "$NS" 2>/dev/null || skip_all "cannot create a network namespace"
agent_cleanup() {
        local p
        e2e_cleanup
        for p in $(ip netns pids "$NS" 2>/dev/null); do
                kill -9 "$p" 2>/dev/null
        done
        ip netns del "$NS" 2>/dev/null
}
trap agent_cleanup EXIT
nsx() { ip netns exec "$NS" "$@"; }
nsx ip link set lo up
nsx ip link add br0 type bridge
nsx ip addr add 10.78.0.1/24 dev br0
nsx ip link set br0 up

image_variant() {       # image_variant NAME KERNEL-ARGS
        sed "s|^cmdline=.*|& $2|" "$VRT_ROOT/images/testguest.properties" >"$VRT_ROOT/images/$1.properties"
        chmod a+r "$VRT_ROOT/images/$1.properties"
}
net_vm() {              # net_vm NAME IMAGE [instance.properties lines...]
        local name=$1 image=$2 l; shift 2
        mkdir -p "$VRT_ROOT/vm/$name"
        { echo "image=$image"; echo "size=tiny"; for l in "$@"; do echo "$l"; done; } \
                >"$VRT_ROOT/vm/$name/instance.properties"
}
launch_ns() {
        ip netns exec "$NS" "$VRT_LAUNCH" "$1" >>"$E2E_DIR/$1.launch.log" 2>&1 &
        LAUNCH_PID=$!
        E2E_PIDS+=("$LAUNCH_PID")
}
ms() { echo $(( $(date +%s%N) / 1000000 )); }
agent_up() { "$VRT" agent "$1" guest-ping >/dev/null 2>&1; }

image_variant tga "vrt.ip=10.78.0.2/24 vrt.ignore_acpi=1"
image_variant tgn "vrt.ip=10.78.0.3/24 vrt.noagent=1"
net_vm ga tga net=bridge bridge=br0 mac=52:54:00:78:00:02
net_vm na tgn net=bridge bridge=br0 mac=52:54:00:78:00:03

# --- refusals before any VM runs ---
out=$("$VRT" agent nosuchvm guest-ping 2>&1); rc=$?
check "agent: unknown VM exits 2 with one line" bash -c '[ "$0" = 2 ] && [ "$(printf "%s\n" "$1" | wc -l)" = 1 ]' "$rc" "$out"
out=$("$VRT" agent ga guest-ping 2>&1); rc=$?
check "agent: stopped VM exits 1 with one line naming it" bash -c '[ "$0" = 1 ] && [ "$(printf "%s\n" "$1" | wc -l)" = 1 ] && [[ "$1" == *"not running"* ]]' "$rc" "$out"
out=$("$VRT" agent ga guest-ping '{bad' 2>&1); rc=$?
check "agent: bad JSON arguments exit 2 with one line" bash -c '[ "$0" = 2 ] && [ "$(printf "%s\n" "$1" | wc -l)" = 1 ]' "$rc" "$out"
out=$("$VRT" agent ga 2>&1); rc=$?
check "agent: missing command is a usage error (2)" [ "$rc" = 2 ]

launch_ns ga
GA_PID=$LAUNCH_PID
launch_ns na
NA_PID=$LAUNCH_PID
check "ga: agent.sock exists, mode of monitor.sock" wait_for 30 bash -c '[ -S "$0/ga/agent.sock" ] && [ "$(stat -c %a "$0/ga/agent.sock")" = "$(stat -c %a "$0/ga/monitor.sock")" ]' "$VRT_RUNTIME_DIR"
check "ga boots" wait_ready ga 150
check "na boots" wait_ready na 150 || tail -n 20 "$VRT_ROOT/vm/na/log/console.log" | sed 's/^/# na console: /' 
check "ga: qemu-ga answers within 30 s of the ready marker" wait_for 30 agent_up ga
check "na: the guest did not start qemu-ga" console_has na "not starting qemu-ga"

# --- vrt agent ---
out=$("$VRT" agent ga guest-info 2>&1); rc=$?
check "agent guest-info: exit 0, a version" bash -c '[ "$0" = 0 ] && [ -n "$(printf "%s" "$1" | "$2" version)" ]' "$rc" "$out" "$JSON_GET"
echo "# guest-info version: $(printf '%s' "$out" | "$JSON_GET" version 2>/dev/null)"
out=$("$VRT" agent ga guest-no-such-command 2>&1); rc=$?
check "agent: unknown command exits 1 with one line" bash -c '[ "$0" = 1 ] && [ "$(printf "%s\n" "$1" | wc -l)" = 1 ]' "$rc" "$out"
echo "# $out"
out=$("$VRT" agent ga guest-ping '{"nosuch":1}' 2>&1); rc=$?
check "agent: arguments the command does not take exit 1 with one line" bash -c '[ "$0" = 1 ] && [ "$(printf "%s\n" "$1" | wc -l)" = 1 ]' "$rc" "$out"
check "agent: the channel still works after errors" agent_up ga
# A client that leaves a reply unread: the next one resynchronises.
printf '{"execute":"guest-info"}\n{"execute":"guest-ping"}\n{"execute":' | timeout 2 socat -t 1 - "UNIX-CONNECT:$VRT_RUNTIME_DIR/ga/agent.sock" >/dev/null 2>&1
check "agent: after a client left replies and half a command behind, guest-info works" \
        bash -c '"$0" agent ga guest-info | "$1" version >/dev/null' "$VRT" "$JSON_GET"
t0=$(ms); out=$("$VRT" agent na guest-ping 2>&1); rc=$?; t1=$(ms)
check "agent: VM without agent exits 3 with one line" bash -c '[ "$0" = 3 ] && [ "$(printf "%s\n" "$1" | wc -l)" = 1 ] && [[ "$1" == *"no guest agent"* ]]' "$rc" "$out"
check "agent: no agent within 3 s ($((t1 - t0)) ms)" [ $((t1 - t0)) -lt 3000 ]

# --- vrt status, vrt list --json ---
out=$("$VRT" status ga 2>&1)
echo "$out" | sed 's/^/# /' | grep -E 'agent|ip\.'
check "status ga: the guest's address on NIC 0" bash -c '[[ "$0" == *"ip.0:"*"52:54:00:78:00:02 (eth0)"*"10.78.0.2/24"* ]]' "$out"
out=$("$VRT" --json status ga)
check "status --json ga: agent true" [ "$(printf '%s' "$out" | "$JSON_GET" agent)" = true ]
check "status --json ga: addresses.0.addresses.0 is 10.78.0.2/24" [ "$(printf '%s' "$out" | "$JSON_GET" addresses.0.addresses.0)" = 10.78.0.2/24 ]
t0=$(ms); out=$("$VRT" status na 2>&1); rc=$?; t1=$(ms)
check "status na: no agent, in $((t1 - t0)) ms (< 3 s)" bash -c '[ "$0" = 0 ] && [[ "$1" == *"agent:     no agent"* ]] && [ "$2" -lt 3000 ]' "$rc" "$out" $((t1 - t0))
out=$("$VRT" --json status na)
check "status --json na: agent false, addresses []" bash -c '[ "$(printf "%s" "$0" | "$1" agent)" = false ] && [ "$(printf "%s" "$0" | "$1" addresses | tr -d " ")" = "[]" ]' "$out" "$JSON_GET"
t0=$(ms); out=$("$VRT" --json list); t1=$(ms)
check "list --json: ga agent true with its address" [ "$(printf '%s' "$out" | "$JSON_GET" "[name=ga].addresses.0.addresses.0")" = 10.78.0.2/24 ]
check "list --json: na agent false" [ "$(printf '%s' "$out" | "$JSON_GET" "[name=na].agent")" = false ]
check "list --json: agents asked in parallel, bounded ($((t1 - t0)) ms < 3 s)" [ $((t1 - t0)) -lt 3000 ]
t0=$(ms); out=$("$VRT" list); t1=$(ms)
check "list (table) asks no agent: $((t1 - t0)) ms < 1 s" [ $((t1 - t0)) -lt 1000 ]

# --- vrt stop: guest-shutdown for a guest that ignores ACPI ---
check "ga ignores ACPI" console_has ga "ignoring the ACPI power button"
out=$("$VRT" stop ga 2>&1); rc=$?
echo "$out" | sed 's/^/# stop: /'
check "stop ga: exit 0" [ "$rc" = 0 ]
check "stop ga: the guest powered itself off" console_has ga VRT-TESTGUEST-POWEROFF
check "stop ga: log says the agent was tried" grep -q "trying the guest agent (guest-shutdown)" "$E2E_DIR/ga.launch.log"
check "stop ga: log says the agent accepted guest-shutdown" grep -q "guest agent accepted guest-shutdown" "$E2E_DIR/ga.launch.log"
check "stop ga: no quit needed" not grep -q "sending quit" "$E2E_DIR/ga.launch.log"
check "ga: supervisor exited" wait_exit "$GA_PID" 30
grep -E 'stopping' "$E2E_DIR/ga.launch.log" | sed 's/^/# ga: /'
check "ga: runtime dir gone (agent.sock too)" runtime_empty ga
out=$("$VRT" agent ga guest-ping 2>&1); rc=$?
check "agent: stopped VM again exits 1" [ "$rc" = 1 ]

# na has acpid: the power button works, the agent is never needed.
out=$("$VRT" stop na 2>&1); rc=$?
check "stop na: exit 0" [ "$rc" = 0 ]
check "stop na: no agent step" not grep -q "trying the guest agent" "$E2E_DIR/na.launch.log" ||
        grep stopping "$E2E_DIR/na.launch.log" | sed 's/^/# na: /' 
wait_exit "$NA_PID" 30

e2e_finish
