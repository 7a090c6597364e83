#!/bin/bash
# Live migration: two "hosts" (two runtime directories, two VRT_HOSTs, host B
# in its own network namespace, a veth pair between them for the migration
# stream) share one root. A guest that counts on its serial console is
# migrated A -> B -> A; the counter never goes backwards and stalls no longer
# than the downtime plus slack; the lease follows the guest; nothing is left
# on the host it left. Failures (destination QEMU killed mid-way, the
# destination refusing, a timeout, QEMU versions that differ) leave the
# guest running on the source with its lease and nothing on the destination;
# bad input exits 2 and creates nothing. Real QEMU, TCG, the test guest.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=10
e2e_setup
JSON_GET="$VRT_BUILD_DIR/tests/e2e/json-get"
NETNS="vrt-e2e-migB-$$"
RUN_A="$E2E_DIR/runA"
RUN_B="$E2E_DIR/runB"
NET=$(( $$ % 200 + 20 ))
ADDR_A=10.231.$NET.1
ADDR_B=10.231.$NET.2
VETH_A="vmA$$"
mkdir -p "$RUN_A" "$RUN_B"
ip netns add "$NETNS" || skip_all "cannot create a network namespace"
ip -n "$NETNS" link set lo up
ip link add "$VETH_A" type veth peer name vmB netns "$NETNS" || skip_all "cannot create a veth pair"
ip addr add "$ADDR_A/24" dev "$VETH_A" && ip link set "$VETH_A" up
ip -n "$NETNS" addr add "$ADDR_B/24" dev vmB && ip -n "$NETNS" link set vmB up
printf 'migration_address=%s\n' "$ADDR_A" > "$E2E_DIR/hostA.conf"
printf 'migration_address=%s\n' "$ADDR_B" > "$E2E_DIR/hostB.conf"
: > "$E2E_DIR/hostB-noaddr.conf"
SPOOLS=()

cleanup_all() {
        local f p
        for p in "${SPOOLS[@]}" "${SAMPLER:-}" "${HOLDER:-}" "${SAVER:-}"; do
                [ -n "$p" ] && kill "$p" 2>/dev/null
        done
        for f in "$RUN_A"/*/pid "$RUN_B"/*/pid; do
                [ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
        done
        ip link del "$VETH_A" 2>/dev/null
        ip netns del "$NETNS" 2>/dev/null
}
trap 'cleanup_all; e2e_cleanup' EXIT

envs() {        # envs A|B[-noaddr]: the environment of that host
        case $1 in
        A) echo VRT_HOST=hostA VRT_RUNTIME_DIR="$RUN_A" VRT_HOST_CONF="$E2E_DIR/hostA.conf" VRT_SERVICE_MANAGER=detached ;;
        B) echo VRT_HOST=hostB VRT_RUNTIME_DIR="$RUN_B" VRT_HOST_CONF="$E2E_DIR/hostB.conf" VRT_SERVICE_MANAGER=detached ;;
        B-noaddr) echo VRT_HOST=hostB VRT_RUNTIME_DIR="$RUN_B" VRT_HOST_CONF="$E2E_DIR/hostB-noaddr.conf" VRT_SERVICE_MANAGER=detached ;;
        esac
}
on() {          # on A|B COMMAND...
        local h=$1; shift
        # shellcheck disable=SC2046
        if [ "${h:0:1}" = A ]; then env $(envs "$h") "$@"
        else ip netns exec "$NETNS" env $(envs "$h") "$@"; fi
}
run_as() {      # run_as A|B OUT COMMAND...: output in $E2E_DIR/OUT, status in RC
        local h=$1 out=$2; shift 2
        on "$h" "$@" >"$E2E_DIR/$out" 2>&1
        RC=$?
}
said() { grep -qF -- "$2" "$E2E_DIR/$1" || { echo "# $1: $(cat "$E2E_DIR/$1")"; false; }; }
lines() { wc -l < "$E2E_DIR/$1"; }
spool_on() {    # spool_on A|B[-noaddr]: a watching spool for that host
        ( exec_on "$1" "$VRT" spool --watch --rescan 1 >>"$E2E_DIR/spool-$1.log" 2>&1 ) &
        SPOOLS+=("$!")
}
exec_on() {
        local h=$1; shift
        # shellcheck disable=SC2046
        if [ "${h:0:1}" = A ]; then exec env $(envs "$h") "$@"
        else exec ip netns exec "$NETNS" env $(envs "$h") "$@"; fi
}
stop_spools() {
        local p
        for p in "${SPOOLS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
        SPOOLS=()
}
field() { on "$1" "$VRT" list --all --json | "$JSON_GET" "[name=$2].$3"; }
runs_on() { [ "$(field "$1" "$2" state)" = running ] && [ "$(field "$1" "$2" host)" = "$3" ]; }
lease_host() { sed -n 's/^host=//p' "$VRT_ROOT/vm/$1/lease" 2>/dev/null; }
qemu_procs() {  # qemu_procs RUNDIR NAME: QEMU processes of NAME on that host (B: in its namespace)
        local want=""
        [ "$1" = "$RUN_B" ] && want=$NETNS
        pgrep -f -- "guest=$2,debug-threads" | while read -r p; do
                [ "$(ip netns identify "$p" 2>/dev/null)" = "$want" ] && echo "$p"
        done
}
left_nothing() {        # left_nothing RUNDIR NAME: no runtime dir, no QEMU
        [ ! -e "$1/$2" ] && [ -z "$(qemu_procs "$1" "$2")" ]
}
console_to() {  # console_to RUNDIR NAME LINE
        printf '%s\n' "$3" | socat -t 1 - "UNIX-CONNECT:$1/$2/console.sock" >/dev/null 2>&1
}
last_count() { grep -ao 'C[0-9][0-9]*' "$VRT_ROOT/vm/$1/log/console.log" | tail -1 | tr -d C; }
counting() {    # counting NAME: the counter moves
        local a b; a=$(last_count "$1"); sleep 0.5; b=$(last_count "$1")
        [ -n "$a" ] && [ -n "$b" ] && [ "$b" -gt "$a" ]
}
no_request() { [ ! -e "$VRT_ROOT/migrate/$1" ] && [ ! -e "$VRT_ROOT/migrate/$1.answer" ]; }
counter_monotonic() {   # every C<n> on the console is larger than the one before
        grep -ao 'C[0-9][0-9]*' "$VRT_ROOT/vm/$1/log/console.log" | tr -d C |
                awk 'NR > 1 && $1 <= prev { bad = 1; print "backwards: " prev " then " $1 } { prev = $1 } END { exit bad }'
}

runs_here() {   # runs_here A|B HOST: that host lists mm1 running on HOST, here; the lease says so; it counts
        runs_on "$1" mm1 "$2" && [ "$(field "$1" mm1 here)" = true ] && [ "$(lease_host mm1)" = "$2" ] && counting mm1
}
nothing_started() { [ ! -e "$1/mm1" ] && no_request mm1; }

make_vm mm1
make_vm mm2
chmod -R a+rX "$VRT_ROOT"

# ---- the guest runs on A and counts
run_as A start-mm1 "$VRT" start mm1
check "host A starts mm1" [ "$RC" = 0 ]
check "mm1 boots" wait_ready mm1 90
console_to "$RUN_A" mm1 'i=0; while :; do echo C$i; i=$((i+1)); usleep 100000; done &'
check "the guest counts on its console" wait_for 20 counting mm1
check "the lease names hostA" [ "$(lease_host mm1)" = hostA ]

# ---- bad input: exit 2, one line, nothing created
badinput() {    # badinput OUT ARGS...
        run_as A "$1" "$VRT" migrate "${@:2}"
        [ "$RC" = 2 ] && [ "$(lines "$1")" = 1 ] && no_request mm1 && no_request nosuch && no_request mm2
}
check "unknown VM: exit 2" badinput bad-unknown nosuch hostB
check "... naming it" said bad-unknown "no such VM: nosuch"
check "VM not running: exit 2" badinput bad-stopped mm2 hostB
check "... saying so" said bad-stopped "mm2 is not running"
check "HOST = this host: exit 2" badinput bad-self mm1 hostA
check "... saying so" said bad-self "host hostA is this host"
check "a bad host name: exit 2" badinput bad-host mm1 'host/B'
check "... naming it" said bad-host 'invalid host name "host/B"'
check "--bandwidth 0: exit 2" badinput bad-bw --bandwidth 0 mm1 hostB
check "--timeout abc: exit 2" badinput bad-timeout --timeout abc mm1 hostB
check "--downtime -1: exit 2" badinput bad-dt --downtime -1 mm1 hostB
check "one argument: exit 2" badinput bad-args mm1
run_as B wrong-host "$VRT" migrate mm1 hostC
check "from a host that does not run it: exit 2" [ "$RC" = 2 ]
check "... naming where it runs" said wrong-host "mm1 runs on host hostA"
check "after all that: mm1 still runs on A" runs_on A mm1 hostA

# ---- a host that does not answer (no spool, or not on this root)
run_as A noanswer "$VRT" migrate --timeout 3 mm1 hostC
check "no answer from hostC: exit 1" [ "$RC" = 1 ]
check "... saying so in one line" bash -c "[ $(lines noanswer) = 1 ] && grep -q 'host hostC did not answer within 3s' '$E2E_DIR/noanswer'"
check "... the request is withdrawn" no_request mm1
check "... mm1 still runs on A, counting" runs_here A hostA

# ---- the destination refuses: no migration_address, or the VM "runs" there
spool_on B-noaddr
run_as A refuse-noaddr "$VRT" migrate --timeout 60 mm1 hostB
check "host B without migration_address refuses: exit 1" [ "$RC" = 1 ]
check "... with its reason" said refuse-noaddr "host hostB refused: hostB: "
check "... naming migration_address" said refuse-noaddr "no migration_address="
stop_spools
check "... nothing left on B" wait_for 10 left_nothing "$RUN_B" mm1
check "... the request is gone" no_request mm1
check "... mm1 runs on A with its lease, counting" runs_here A hostA

spool_on B
mkdir -p "$RUN_B/mm1"
flock "$RUN_B/mm1/lock" sleep 120 &
HOLDER=$!
sleep 0.3
run_as A refuse-busy "$VRT" migrate --timeout 60 mm1 hostB
check "a supervisor of mm1 already on B: refused, exit 1" [ "$RC" = 1 ]
check "... saying why" said refuse-busy "host hostB refused"
kill "$HOLDER"; wait "$HOLDER" 2>/dev/null; HOLDER=
rm -rf "${RUN_B:?}/mm1"
check "... mm1 runs on A, counting" runs_here A hostA

# ---- A -> B
SAMPLES="$E2E_DIR/samples"
( while :; do echo "$(date +%s%3N) $(last_count mm1)"; sleep 0.02; done ) > "$SAMPLES" &
SAMPLER=$!
run_as A mig-ab "$VRT" migrate --json mm1 hostB
check "vrt migrate mm1 hostB: exit 0" [ "$RC" = 0 ]
kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null; SAMPLER=
DOWNTIME=$("$JSON_GET" downtime_ms < "$E2E_DIR/mig-ab")
echo "# A->B: $(cat "$E2E_DIR/mig-ab")"
check "host A's vrt list: mm1 runs on hostB" runs_on A mm1 hostB
check "host B's vrt list: mm1 runs on hostB, here" runs_here B hostB
check "the lease names hostB" [ "$(lease_host mm1)" = hostB ]
run_as B status-b "$VRT" status mm1
check "vrt status on B: this host, running" grep -q '^host: *hostB (this host)' "$E2E_DIR/status-b"
check "the guest keeps counting on B" wait_for 10 counting mm1
check "the counter never went backwards" counter_monotonic mm1
stall=$(awk 'BEGIN { worst = 0 } $2 != last { if (t && $1 - t > worst) worst = $1 - t; t = $1; last = $2 } END { print worst }' "$SAMPLES")
echo "# longest counter stall ${stall} ms (QEMU downtime ${DOWNTIME} ms)"
check "the counter stalled at most downtime + 1500 ms (TCG, 100 ms ticks)" [ "$stall" -le $(( DOWNTIME + 1500 )) ]
check "nothing left on A (runtime dir, QEMU)" wait_for 10 left_nothing "$RUN_A" mm1
check "the request files are gone" no_request mm1
check "migrate.log has the steps" bash -c "grep -q 'mm1: host hostB listens on tcp:$ADDR_B:' '$VRT_ROOT/log/migrate.log' && grep -q 'mm1: runs on host hostB now' '$VRT_ROOT/log/migrate.log'"
check "host B wrote hosts/hostB (qemu=, cpu=qemu64)" grep -qx 'cpu=qemu64' "$VRT_ROOT/hosts/hostB"
check "the destination runs with -cpu qemu64" bash -c "tr '\0' '\n' < /proc/$(qemu_procs "$RUN_B" mm1 | head -1)/cmdline | grep -qx qemu64"

# ---- QEMU versions differ: refused before anything starts
cp "$VRT_ROOT/hosts/hostA" "$E2E_DIR/hostA.saved" 2>/dev/null
spool_on A
sed -i 's/^qemu=.*/qemu=0.0.1 (elsewhere)/' "$VRT_ROOT/hosts/hostA"
run_as B versions "$VRT" migrate mm1 hostA
check "different QEMU versions: refused, exit 1" [ "$RC" = 1 ]
check "... naming both" said versions "host hostA QEMU 0.0.1 (elsewhere)"
check "... nothing started on A" nothing_started "$RUN_A"
cp "$E2E_DIR/hostA.saved" "$VRT_ROOT/hosts/hostA"

# ---- the destination's QEMU dies mid-migration (bandwidth-limited: seconds;
# random bytes in the guest's RAM, as zero pages cost nothing to send)
console_to "$RUN_B" mm1 'dd if=/dev/urandom of=/fill bs=1M count=48 2>/dev/null; echo FIL""LED'
check "the guest fills 48 MiB of its memory" wait_for 60 console_has mm1 FILLED
( ( exec_on B "$VRT" migrate --bandwidth 2 mm1 hostA ) > "$E2E_DIR/mig-kill" 2>&1; echo "rc=$?" >> "$E2E_DIR/mig-kill" ) &
MIG=$!
dest_qemu_up() { [ -n "$(qemu_procs "$RUN_A" mm1)" ] && grep -q 'state=listening' "$VRT_ROOT/migrate/mm1.answer" 2>/dev/null; }
check "the destination QEMU on A comes up" wait_for 60 dest_qemu_up
sleep 2
kill -9 $(qemu_procs "$RUN_A" mm1)
wait "$MIG"
check "destination killed: vrt migrate exits 1" said mig-kill "rc=1"
check "... one line of error" [ "$(grep -vc '^rc=' "$E2E_DIR/mig-kill")" = 1 ]
check "... mm1 still runs on B with its lease" runs_here B hostB
check "... and counts" wait_for 10 counting mm1
check "... nothing left on A" wait_for 15 left_nothing "$RUN_A" mm1
check "... the request is gone" no_request mm1

# ---- timeout
run_as B mig-timeout "$VRT" migrate --timeout 12 --bandwidth 1 mm1 hostA
check "timeout: exit 1" [ "$RC" = 1 ]
check "... saying so" said mig-timeout "did not complete within 12s"
check "... mm1 runs on B with its lease, counting" runs_here B hostB
check "... nothing left on A" wait_for 15 left_nothing "$RUN_A" mm1

# ---- B -> A
run_as B mig-ba "$VRT" migrate mm1 hostA
check "vrt migrate mm1 hostA (from B): exit 0" [ "$RC" = 0 ]
echo "# B->A: $(cat "$E2E_DIR/mig-ba")"
check "the lease names hostA again" [ "$(lease_host mm1)" = hostA ]
check "host B's vrt list: mm1 runs on hostA" runs_on B mm1 hostA
check "the guest keeps counting on A" wait_for 10 counting mm1
check "the counter never went backwards" counter_monotonic mm1
check "nothing left on B" wait_for 10 left_nothing "$RUN_B" mm1
stop_spools

# ---- a migration that no `vrt migrate` asked for (a script saving the
# guest's state to a socket): the guest stays A's, paused, with its lease
SAVE_SOCK=/tmp/vrt-e2e-save-$$.sock
socat -u "UNIX-LISTEN:$SAVE_SOCK,mode=666" OPEN:/dev/null &
SAVER=$!
wait_for 5 test -S "$SAVE_SOCK"
qmp_a() { on A "$VRT" qmp mm1 "$@"; }
qmp_a migrate-set-capabilities '{"capabilities":[{"capability":"events","state":true}]}' >/dev/null
check "a script's migrate to a socket starts" qmp_a migrate "{\"uri\":\"unix:$SAVE_SOCK\"}"
saved() { qmp_a query-migrate | grep -q '"status": *"completed"'; }
check "... and completes" wait_for 30 saved
check "... the supervisor keeps the lease" bash -c 'sleep 1; grep -q "keeping the lease" "$0"' "$VRT_ROOT/vm/mm1/log/launch.log"
check "... the lease still names hostA, the supervisor runs" bash -c '[ "$(sed -n "s/^host=//p" "$0")" = hostA ] && [ -e "$1/mm1/pid" ] && kill -0 "$(cat "$1/mm1/pid")"' \
	"$VRT_ROOT/vm/mm1/lease" "$RUN_A"
check "... vrt list on A: running here" bash -c '[ "$0" = running ] && [ "$1" = true ]' "$(field A mm1 state)" "$(field A mm1 here)"
check "... cont resumes the guest" qmp_a cont
check "... it counts again" wait_for 10 counting mm1
kill "$SAVER" 2>/dev/null
rm -f "$SAVE_SOCK"

# ---- it stops cleanly where it runs now
run_as A stop-a "$VRT" stop mm1
check "vrt stop mm1 on A" [ "$RC" = 0 ]
check "the lease is released" [ -z "$(lease_host mm1)" ]
e2e_finish
