#!/bin/bash
# Live migration of a bridged VM between two "hosts": two network
# namespaces, each with its own bridge br0 (the same name, as vrt.conf's
# bridge= says for every host), one shared root. Two veth pairs join them:
# one is the migration network (host.conf's migration_address= is each
# namespace's veth address), the other joins the two bridges into one LAN,
# as a physical NIC in br0 does on real hosts. A guest with a static IP on
# br0 counts on its console and is migrated A -> B -> A: the destination
# makes its own tap (same name, same MAC) on its own br0, the source's tap
# is gone, the counter goes on, and the guest answers pings from both hosts
# after each move. Each host's `vrt spool --watch` (the default 60 s rescan)
# sees the request in ROOT/migrate/ by inotify: a move takes seconds.
# Real QEMU, TCG, the test guest.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=10
e2e_setup
[ -c /dev/net/tun ] || skip_all "no /dev/net/tun"
JSON_GET="$VRT_BUILD_DIR/tests/e2e/json-get"
NS_A="vrt-e2e-mnA-$$"
NS_B="vrt-e2e-mnB-$$"
RUN_A="$E2E_DIR/runA"
RUN_B="$E2E_DIR/runB"
NET=$(( $$ % 200 + 20 ))
MIG_A=10.232.$NET.1             # migration network (veth mig0)
MIG_B=10.232.$NET.2
LAN_A=10.233.$NET.1             # br0 on each host
LAN_B=10.233.$NET.2
GUEST_IP=10.233.$NET.10
MAC=52:54:00:23:$(printf '%02x' "$NET"):10
SPOOLS=()

netns_cleanup() {       # everything this script made goes, also after a failure
        local p ns
        for p in "${SPOOLS[@]}" "${SAMPLER:-}"; do
                [ -n "$p" ] && kill "$p" 2>/dev/null
        done
        for ns in "$NS_A" "$NS_B"; do
                # Whatever still runs in our namespaces was started by this script.
                for p in $(ip netns pids "$ns" 2>/dev/null); do
                        kill -9 "$p" 2>/dev/null
                done
        done
        sleep 0.2
        # Deleting a namespace deletes its bridge, taps and veth ends (and so
        # the veth pairs' other ends).
        ip netns del "$NS_A" 2>/dev/null
        ip netns del "$NS_B" 2>/dev/null
        e2e_cleanup
}
trap netns_cleanup EXIT

ip netns add "$NS_A" || skip_all "cannot create a network namespace"
ip netns add "$NS_B" || skip_all "cannot create a network namespace"
for ns in "$NS_A" "$NS_B"; do
        ip -n "$ns" link set lo up
        ip -n "$ns" link add br0 type bridge
        ip -n "$ns" link set br0 up
done
ip -n "$NS_A" link add mig0 type veth peer name mig0 netns "$NS_B" || skip_all "cannot create a veth pair"
ip -n "$NS_A" link add lan0 type veth peer name lan0 netns "$NS_B" || skip_all "cannot create a veth pair"
ip -n "$NS_A" addr add "$MIG_A/24" dev mig0
ip -n "$NS_B" addr add "$MIG_B/24" dev mig0
ip -n "$NS_A" addr add "$LAN_A/24" dev br0
ip -n "$NS_B" addr add "$LAN_B/24" dev br0
for ns in "$NS_A" "$NS_B"; do
        ip -n "$ns" link set mig0 up
        ip -n "$ns" link set lan0 master br0
        ip -n "$ns" link set lan0 up
done
mkdir -p "$RUN_A" "$RUN_B"
printf 'migration_address=%s\n' "$MIG_A" > "$E2E_DIR/hostA.conf"
printf 'migration_address=%s\n' "$MIG_B" > "$E2E_DIR/hostB.conf"
echo "bridge=br0" >> "$VRT_ROOT/vrt.conf"

ns_of() { if [ "$1" = A ]; then echo "$NS_A"; else echo "$NS_B"; fi; }
run_of() { if [ "$1" = A ]; then echo "$RUN_A"; else echo "$RUN_B"; fi; }
on() {          # on A|B COMMAND...: COMMAND as that host, in its namespace
        local h=$1; shift
        ip netns exec "$(ns_of "$h")" env VRT_HOST="host$h" VRT_RUNTIME_DIR="$(run_of "$h")" \
                VRT_HOST_CONF="$E2E_DIR/host$h.conf" VRT_SERVICE_MANAGER="${MANAGER:-detached}" "$@"
}
run_as() {      # run_as A|B OUT COMMAND...: output in $E2E_DIR/OUT, status in RC
        local h=$1 out=$2; shift 2
        on "$h" "$@" >"$E2E_DIR/$out" 2>&1
        RC=$?
}
spool_on() {    # spool_on A|B: a watching spool for that host (rescan: every 60 s)
        # exec: $! is the spool itself (ip netns exec and env exec too).
        ( exec ip netns exec "$(ns_of "$1")" env VRT_HOST="host$1" VRT_RUNTIME_DIR="$(run_of "$1")" \
                VRT_HOST_CONF="$E2E_DIR/host$1.conf" VRT_SERVICE_MANAGER="${MANAGER:-detached}" \
                "$VRT" spool --watch >>"$E2E_DIR/spool-$1.log" 2>&1 ) &
        SPOOLS+=("$!")
}
field() { on "$1" "$VRT" list --all --json | "$JSON_GET" "[name=$2].$3"; }
lease_host() { sed -n 's/^host=//p' "$VRT_ROOT/vm/$1/lease" 2>/dev/null; }
last_count() { grep -ao 'C[0-9][0-9]*' "$VRT_ROOT/vm/$1/log/console.log" | tail -1 | tr -d C; }
counting() {    # counting NAME: the counter moves
        local a b; a=$(last_count "$1"); sleep 0.5; b=$(last_count "$1")
        [ -n "$a" ] && [ -n "$b" ] && [ "$b" -gt "$a" ]
}
counter_monotonic() {
        grep -ao 'C[0-9][0-9]*' "$VRT_ROOT/vm/$1/log/console.log" | tr -d C |
                awk 'NR > 1 && $1 <= prev { bad = 1; print "backwards: " prev " then " $1 } { prev = $1 } END { exit bad }'
}
console_to() {  # console_to A|B NAME LINE
        printf '%s\n' "$3" | socat -t 1 - "UNIX-CONNECT:$(run_of "$1")/$2/console.sock" >/dev/null 2>&1
}
console_result() {      # console_result NAME TAG [SECONDS]: the status after "TAG="
        wait_for "${3:-30}" console_has "$1" "$2=[0-9]" || { echo timeout; return; }
        grep -ao -- "$2=[0-9]*" "$VRT_ROOT/vm/$1/log/console.log" | tail -n 1 | cut -d= -f2
}
tap_of() {      # tap_of A|B NAME: the interface in that namespace whose alias is NAME
        ip -n "$(ns_of "$1")" -d -o link show 2>/dev/null |
                awk -v n="$2" '{ for (i = 1; i < NF; i++) if ($i == "alias" && $(i + 1) == n) { sub(/:$/, "", $2); sub(/@.*/, "", $2); print $2 } }'
}
no_vrt_links() {        # no_vrt_links A|B: no interface named vrt* in that namespace
        ! ip -n "$(ns_of "$1")" -o link show | awk -F': ' '{print $2}' | grep -q '^vrt'
}
tap_on_bridge() {       # tap_on_bridge A|B TAP: a tap, up, a port of br0, the guest's MAC behind it
        local l
        l=$(ip -n "$(ns_of "$1")" -d link show dev "$2") || return 1
        grep -q "tun type tap" <<<"$l" && grep -q "master br0" <<<"$l" && grep -qE "<([A-Z_]+,)*UP[,>]" <<<"$l"
}
mac_behind() {  # mac_behind A|B TAP: br0's forwarding table has the guest's MAC on TAP
        ip netns exec "$(ns_of "$1")" bridge fdb show br br0 | grep -q "^$MAC dev $2 "
}
host_pings_guest() {    # host_pings_guest A|B
        ip netns exec "$(ns_of "$1")" busybox ping -q -c 1 -W 2 "$GUEST_IP" >/dev/null 2>&1
}
qemu_in() {     # qemu_in A|B NAME: QEMU processes of NAME in that host's namespace
        local p
        for p in $(ip netns pids "$(ns_of "$1")" 2>/dev/null); do
                tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q -- "guest=$2,debug-threads" && echo "$p"
        done
}
left_nothing() {        # left_nothing A|B NAME: no runtime dir, no QEMU, no tap
        [ ! -e "$(run_of "$1")/$2" ] && [ -z "$(qemu_in "$1" "$2")" ] && no_vrt_links "$1"
}
no_request() { [ ! -e "$VRT_ROOT/migrate/$1" ] && [ ! -e "$VRT_ROOT/migrate/$1.answer" ]; }
PINGS=0
guest_pings() {         # guest_pings ADDR: the guest pings ADDR from its console
        PINGS=$((PINGS + 1))
        console_to "$WHERE" mn1 "ping -c 2 -W 3 $1 >/dev/null 2>&1; echo PING$PINGS-RC=\$?"
        [ "$(console_result mn1 "PING$PINGS-RC" 30)" = 0 ]
}

sed "s|^cmdline=.*|& vrt.ip=$GUEST_IP/24|" "$VRT_ROOT/images/testguest.properties" > "$VRT_ROOT/images/tgnet.properties"
mkdir -p "$VRT_ROOT/vm/mn1"
printf 'image=tgnet\nsize=tiny\nnet=bridge\nmac=%s\n' "$MAC" > "$VRT_ROOT/vm/mn1/instance.properties"
chmod -R a+rX "$VRT_ROOT"

# Started long before the requests: their startup scan does not see them.
spool_on A
spool_on B
paused() {      # paused OUT: pause_ms is a number, not below QEMU's downtime_ms
        local p d
        p=$("$JSON_GET" pause_ms < "$E2E_DIR/$1") d=$("$JSON_GET" downtime_ms < "$E2E_DIR/$1")
        awk -v p="$p" -v d="$d" 'BEGIN { exit !(p ~ /^[0-9]+(\.[0-9]+)?$/ && p + 0 >= d + 0) }'
}
quick() {       # quick OUT: vrt migrate --json took under 5 s (not a 60 s rescan)
        local t; t=$("$JSON_GET" total_ms < "$E2E_DIR/$1")
        [ -n "$t" ] && [ "$t" -lt 5000 ]
}

# ---- the guest runs on A, on A's br0, and counts
WHERE=A
run_as A start "$VRT" start mn1
check "host A starts mn1" [ "$RC" = 0 ]
check "mn1 boots" wait_ready mn1 90
TAP=$(tap_of A mn1)
echo "# tap of mn1 on host A: ${TAP:-none}"
check "host A: mn1's tap is a port of A's br0, up" tap_on_bridge A "$TAP"
check "host A: ... the guest's MAC is behind it" wait_for 15 mac_behind A "$TAP"
check "host A pings the guest ($GUEST_IP)" wait_for 20 host_pings_guest A
check "host B pings the guest over the LAN link" wait_for 20 host_pings_guest B
console_to A mn1 'i=0; while :; do echo C$i; i=$((i+1)); usleep 100000; done &'
check "the guest counts on its console" wait_for 20 counting mn1
check "the lease names hostA" [ "$(lease_host mn1)" = hostA ]

# ---- A -> B
run_as A mig-ab "$VRT" migrate --json mn1 hostB
check "vrt migrate mn1 hostB: exit 0" [ "$RC" = 0 ]
check "... within 5 s: host B's spool --watch saw the request at once" quick mig-ab
echo "# A->B: $(cat "$E2E_DIR/mig-ab")"
WHERE=B
check "vrt migrate --json: the guest's pause (pause_ms) at least QEMU's downtime" paused mig-ab
check "the migration stream ran between the veth addresses" \
        grep -q "mn1: host hostB listens on tcp:$MIG_B:" "$VRT_ROOT/log/migrate.log"
check "the lease names hostB" [ "$(lease_host mn1)" = hostB ]
check "host B's vrt list: mn1 runs here" [ "$(field B mn1 here)" = true ]
TAP_B=$(tap_of B mn1)
echo "# tap of mn1 on host B: ${TAP_B:-none}"
check "host B: mn1 has its own tap, named as on A" bash -c '[ -n "$1" ] && [ "$1" = "$2" ]' _ "$TAP_B" "$TAP"
check "host B: ... a port of B's br0, up" tap_on_bridge B "$TAP_B"
check "host B: ... the guest's MAC is behind it" wait_for 15 mac_behind B "$TAP_B"
check "host A: the source's tap, QEMU and runtime dir are gone" wait_for 15 left_nothing A mn1
check "the guest keeps counting on B" wait_for 10 counting mn1
check "the counter never went backwards" counter_monotonic mn1
check "host B pings the guest after the move" wait_for 20 host_pings_guest B
check "host A pings the guest (over the LAN link) after the move" wait_for 20 host_pings_guest A
check "the guest pings host B's br0 address" guest_pings "$LAN_B"
check "the guest pings host A's br0 address" guest_pings "$LAN_A"
check "the request files are gone" no_request mn1

# ---- B -> A
run_as B mig-ba "$VRT" migrate --json mn1 hostA
check "vrt migrate mn1 hostA (from B): exit 0" [ "$RC" = 0 ]
check "... within 5 s: host A's spool --watch saw the request at once" quick mig-ba
echo "# B->A: $(cat "$E2E_DIR/mig-ba")"
WHERE=A
check "vrt migrate --json: pause_ms at least QEMU's downtime" paused mig-ba
check "the migration stream ran to A's veth address" \
        grep -q "mn1: host hostA listens on tcp:$MIG_A:" "$VRT_ROOT/log/migrate.log"
check "the lease names hostA again" [ "$(lease_host mn1)" = hostA ]
TAP_A2=$(tap_of A mn1)
check "host A: a new tap on A's br0" bash -c '[ -n "$1" ] && [ "$1" = "$2" ]' _ "$TAP_A2" "$TAP"
check "host A: ... a port of br0, up" tap_on_bridge A "$TAP_A2"
check "host A: ... the guest's MAC is behind it" wait_for 15 mac_behind A "$TAP_A2"
check "host B: its tap, QEMU and runtime dir are gone" wait_for 15 left_nothing B mn1
check "the guest keeps counting on A" wait_for 10 counting mn1
check "the counter never went backwards" counter_monotonic mn1
check "host A pings the guest after the move back" wait_for 20 host_pings_guest A
check "host B pings the guest after the move back" wait_for 20 host_pings_guest B
check "the guest pings host A's br0 address" guest_pings "$LAN_A"

# ---- A -> B where systemd runs VMs: host B's spool starts vrt@mn1.service
# (--no-block), whose vrt-launch mn1 (no --incoming) finds the spool's marker
# in the runtime dir. systemd is not PID 1 here: a stand-in systemctl logs
# what it was asked and runs the unit's ExecStart, vrt-launch %i.
kill "${SPOOLS[1]}"; wait "${SPOOLS[1]}" 2>/dev/null
mkdir -p "$E2E_DIR/fakebin"
cat > "$E2E_DIR/fakebin/systemctl" <<FAKE
#!/bin/sh
echo "\$*" >> "$E2E_DIR/systemctl.log"
[ -e "$E2E_DIR/systemctl-fails" ] && { echo "Failed to start vrt@mn1.service: stand-in says no" >&2; exit 1; }
case "\$*" in
*"start vrt@"*.service)
        unit=\${*##*vrt@}
        ls "$RUN_B" > "$E2E_DIR/runB-at-unit-start"
        setsid "$VRT_LAUNCH" "\${unit%.service}" >> "$E2E_DIR/unit.log" 2>&1 < /dev/null & ;;
esac
FAKE
chmod +x "$E2E_DIR/fakebin/systemctl"
PATH="$E2E_DIR/fakebin:$PATH" MANAGER=systemd spool_on B
sleep 1
touch "$E2E_DIR/systemctl-fails"
run_as A mig-unit-fails "$VRT" migrate --timeout 20 mn1 hostB
rm -f "$E2E_DIR/systemctl-fails"
check "systemctl start fails on B: vrt migrate exits 1" [ "$RC" = 1 ]
check "... host B refused" grep -q "host hostB refused" "$E2E_DIR/mig-unit-fails"
check "... migrate.log has systemctl's reason" grep -q "mn1: incoming: systemctl start vrt@mn1.service: Failed to start" "$VRT_ROOT/log/migrate.log"
check "... no marker left on B" [ ! -e "$RUN_B/mn1.incoming" ]
check "... mn1 runs on A with its lease, counting" bash -c '[ "$1" = hostA ]' _ "$(lease_host mn1)"
check "... and counts" counting mn1
: > "$E2E_DIR/systemctl.log"
run_as A mig-unit "$VRT" migrate --json mn1 hostB
check "vrt migrate mn1 hostB (B under systemd): exit 0" [ "$RC" = 0 ]
echo "# A->B (unit): $(cat "$E2E_DIR/mig-unit")"
WHERE=B
check "host B's spool ran systemctl --no-block start vrt@mn1.service" \
        grep -qx -- "--no-ask-password --no-block start vrt@mn1.service" "$E2E_DIR/systemctl.log"
check "... with the incoming marker in place (runtime dir)" grep -qx "mn1.incoming" "$E2E_DIR/runB-at-unit-start"
check "... which the unit's vrt-launch took" [ ! -e "$RUN_B/mn1.incoming" ]
check "... and ran as the migration's target" grep -q "incoming migration: listening on tcp:$MIG_B:" "$E2E_DIR/unit.log"
check "the lease names hostB" [ "$(lease_host mn1)" = hostB ]
check "host B: mn1's tap on B's br0" tap_on_bridge B "$(tap_of B mn1)"
check "host A: nothing left" wait_for 15 left_nothing A mn1
check "the guest keeps counting on B" wait_for 10 counting mn1
check "host B pings the guest" wait_for 20 host_pings_guest B
check "migrate.log names the unit" grep -q "mn1: incoming: started vrt@mn1.service (systemd" "$VRT_ROOT/log/migrate.log"

# ---- it stops cleanly where it runs now; nothing is left anywhere
run_as B stop "$VRT" stop mn1
check "vrt stop mn1 on B" [ "$RC" = 0 ]
check "the lease is released" [ -z "$(lease_host mn1)" ]
check "nothing left on B (tap, QEMU, runtime dir)" wait_for 15 left_nothing B mn1
check "nothing left on A" left_nothing A mn1
e2e_finish
