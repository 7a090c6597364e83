#!/bin/bash
# Several hosts on one root: two "hosts" (two runtime directories, two
# VRT_HOSTs, host B in its own network namespace) share one root. A VM runs
# on exactly one of them; both say where; a start on the other host is
# refused with the host's name and exit 5 (which vrt@.service does not
# restart); a stop there is handed over through stop/NAME; spool starts go
# to the named host or one with room; a supervisor killed with SIGKILL
# leaves a stale lease that the other host takes over, and kill -9 at any
# moment of a start never leaves a lease that blocks the next start.
# Real QEMU, TCG, the test guest.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=10
e2e_setup
JSON_GET="$VRT_BUILD_DIR/tests/e2e/json-get"
NETNS="vrt-e2e-hostB-$$"
RUN_A="$E2E_DIR/runA"
RUN_B="$E2E_DIR/runB"
mkdir -p "$RUN_A" "$RUN_B"
ip netns add "$NETNS" || skip_all "cannot create a network namespace"
ip -n "$NETNS" link set lo up

kill_supervisors() {
        local f
        for f in "$RUN_A"/*/pid "$RUN_B"/*/pid; do
                [ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
        done
        [ -n "${SPOOL_PID:-}" ] && kill "$SPOOL_PID" 2>/dev/null
        ip netns del "$NETNS" 2>/dev/null
}
trap 'kill_supervisors; e2e_cleanup' EXIT

# on A|B COMMAND...: runs COMMAND as that host.
on() {
        local h=$1; shift
        if [ "$h" = A ]; then
                env VRT_HOST=hostA VRT_RUNTIME_DIR="$RUN_A" VRT_SERVICE_MANAGER=detached "$@"
        else
                ip netns exec "$NETNS" env VRT_HOST=hostB VRT_RUNTIME_DIR="$RUN_B" VRT_SERVICE_MANAGER=detached "$@"
        fi
}
# bg A|B COMMAND...: the same in the background, $! being COMMAND itself
# (exec all the way down), so that kill -9 $! hits it and nothing else.
bg() {
        ( exec_on "$@" ) &
}
exec_on() {
        local h=$1; shift
        if [ "$h" = A ]; then
                exec env VRT_HOST=hostA VRT_RUNTIME_DIR="$RUN_A" VRT_SERVICE_MANAGER=detached "$@"
        else
                exec ip netns exec "$NETNS" env VRT_HOST=hostB VRT_RUNTIME_DIR="$RUN_B" VRT_SERVICE_MANAGER=detached "$@"
        fi
}
field() {       # field A|B NAME KEY: one field of `vrt list --json` on that host
        on "$1" "$VRT" list --all --json | "$JSON_GET" "[name=$2].$3"
}
runs_on() {     # runs_on A|B NAME HOST: that host's vrt list says NAME runs on HOST
        [ "$(field "$1" "$2" state)" = running ] && [ "$(field "$1" "$2" host)" = "$3" ]
}
stopped_for() { # stopped_for A|B NAME
        [ "$(field "$1" "$2" state)" = stopped ]
}
# run_as A|B OUT COMMAND...: runs it as that host, output in $E2E_DIR/OUT; sets RC.
run_as() {
        local h=$1 out=$2; shift 2
        on "$h" "$@" >"$E2E_DIR/$out" 2>&1
        RC=$?
}
said() {        # said OUT TEXT
        grep -qF -- "$2" "$E2E_DIR/$1"
}
both_stopped() {
        stopped_for A "$1" && stopped_for B "$1"
}
lease_host() {  # lease_host NAME: the host the lease file names ("" when released)
        sed -n 's/^host=//p' "$VRT_ROOT/vm/$1/lease" 2>/dev/null
}

make_vm mh1
make_vm mh2
make_vm mh3
make_vm mh4
chmod -R a+rX "$VRT_ROOT"

# ---- one VM, one host, both know where
run_as A start-mh1 "$VRT" start mh1
check "host A starts mh1" [ "$RC" = 0 ]
check "mh1: the guest boots" wait_ready mh1
check "host A's vrt list: mh1 runs on hostA" runs_on A mh1 hostA
check "host A's vrt list: ... here" [ "$(field A mh1 here)" = true ]
check "host B's vrt list: mh1 runs on hostA" runs_on B mh1 hostA
check "host B's vrt list: ... not here" [ "$(field B mh1 here)" = false ]
list_text() {   # list_text A|B: vrt list as text
        on "$1" "$VRT" list
}
check "host B's vrt list (text) has a HOST column" bash -c 'grep -q "^mh1  *running  *hostA " <<<"$0"' "$(list_text B)"
check "the lease names hostA" [ "$(lease_host mh1)" = hostA ]

# ---- a second start anywhere is refused with the host's name, exit 5
console_before=$(wc -c < "$VRT_ROOT/vm/mh1/log/console.log")
run_as B start-mh1-b "$VRT" start mh1
check "host B: vrt start mh1 exits 5" [ "$RC" = 5 ]
check "host B: ... naming host A" said start-mh1-b "mh1: runs on host hostA (pid "
check "host B: ... and not started" said start-mh1-b "; not started"
run_as B launch-mh1-b "$VRT_LAUNCH" mh1
check "host B: vrt-launch mh1 exits 5 (RestartPreventExitStatus)" [ "$RC" = 5 ]
check "host B: ... saying where it runs" said launch-mh1-b "mh1 runs on host hostA (pid "
check "host B: ... and touched nothing: no runtime dir" [ ! -e "$RUN_B/mh1" ]
check "host B: ... the console log is intact" [ "$(wc -c < "$VRT_ROOT/vm/mh1/log/console.log")" -ge "$console_before" ]
check "host A: mh1 still runs" runs_on A mh1 hostA
check "vrt@.service does not restart exit 5" \
        grep -qx "RestartPreventExitStatus=2 5" "$VRT_BUILD_DIR/tools/systemd/vrt@.service"
run_as B qmp-mh1-b "$VRT" qmp mh1 query-status
check "host B: vrt qmp mh1 exits 5 naming host A" \
        bash -c "[ $RC = 5 ] && grep -q 'mh1: runs on host hostA (pid .*run this there' '$E2E_DIR/qmp-mh1-b'"
run_as B console-mh1-b "$VRT" console mh1
check "host B: vrt console mh1 exits 5 naming host A" bash -c "[ $RC = 5 ] && grep -q 'runs on host hostA' '$E2E_DIR/console-mh1-b'"
run_as B status-mh1-b "$VRT" status mh1
check "host B: vrt status mh1 names the host" bash -c "[ $RC = 0 ] && grep -q '^host: *hostA$' '$E2E_DIR/status-mh1-b'"
run_as A status-mh1-a "$VRT" status mh1
check "host A: vrt status mh1: this host, QEMU running" \
        bash -c "grep -q '^host: *hostA (this host)' '$E2E_DIR/status-mh1-a' && grep -q 'QEMU: running' '$E2E_DIR/status-mh1-a'"
run_as B destroy-mh1-b "$VRT" destroy mh1
check "host B: vrt destroy mh1 exits 5, not destroyed" \
        bash -c "[ $RC = 5 ] && grep -q 'runs on host hostA.*not destroyed' '$E2E_DIR/destroy-mh1-b'"
check "host B: ... no DESTROYED marker" [ ! -e "$VRT_ROOT/vm/mh1/DESTROYED" ]
check "host A: mh1 still runs after all that" runs_on A mh1 hostA

# ---- and from the other side
run_as B start-mh2-b "$VRT" start mh2
check "host B starts mh2" [ "$RC" = 0 ]
run_as A start-mh2-a "$VRT" start mh2
check "host A: vrt start mh2 exits 5 naming host B" bash -c "[ $RC = 5 ] && grep -q 'mh2: runs on host hostB' '$E2E_DIR/start-mh2-a'"
run_as A launch-mh2-a "$VRT_LAUNCH" mh2
check "host A: vrt-launch mh2 exits 5" [ "$RC" = 5 ]
check "host A's vrt list: mh2 runs on hostB" runs_on A mh2 hostB

# ---- a stop on the other host is handed over through stop/NAME
bg A "$VRT" spool --watch --rescan 2 >"$E2E_DIR/spool-a.log" 2>&1
SPOOL_PID=$!
E2E_PIDS+=("$SPOOL_PID")
run_as B stop-mh1-b "$VRT" stop mh1
check "host B: vrt stop mh1 succeeds" [ "$RC" = 0 ]
check "host B: ... saying it was handed to host A" said stop-mh1-b "mh1: stopped on host hostA (handed over through stop/mh1)"
check "both hosts: mh1 stopped" both_stopped mh1
check "host A's stop.log records the stop" grep -q " mh1: stopped" "$VRT_ROOT/log/stop.log"
check "the lease is released (emptied)" [ -z "$(lease_host mh1)" ]
# A forced stop handed over.
run_as A stop-mh2-a "$VRT" stop --force --wait 60 mh2
check "host A: vrt stop --force mh2 (on host B) without a spool there times out" \
        bash -c "[ $RC = 1 ] && grep -q 'stop/mh2 was written for it' '$E2E_DIR/stop-mh2-a'"
check "... the request says force=yes" grep -qx "force=yes" "$VRT_ROOT/stop/mh2"
check "... host A's own spool left it for host B" \
        wait_for 10 grep -q "stop/mh2: left for its host: mh2 runs on host hostB" "$VRT_ROOT/log/stop.log"
run_as B spool-b-stop "$VRT" spool stop
check "host B's spool carries out the forced stop" stopped_for A mh2
check "... and logs it" grep -q " mh2: stopped" "$VRT_ROOT/log/stop.log"
kill "$SPOOL_PID"; wait "$SPOOL_PID" 2>/dev/null; SPOOL_PID=
check "host A's spool has ended" wait_for 10 not pgrep -f -- "$VRT spool --watch --rescan 2"

# ---- spool placement: host= names the host; no room leaves it for another
echo "host=hostB" > "$VRT_ROOT/start/mh1"
run_as A spool-a-start "$VRT" spool start
check "host A's spool leaves start/mh1 (host=hostB)" [ -e "$VRT_ROOT/start/mh1" ]
check "... and says so" grep -q "start/mh1: left for another host: for host hostB" "$VRT_ROOT/log/start.log"
run_as B spool-b-start "$VRT" spool start
check "host B's spool starts mh1" wait_for 30 runs_on A mh1 hostB
check "... the request is gone" [ ! -e "$VRT_ROOT/start/mh1" ]
printf 'max_vms=1\n' > "$E2E_DIR/hostB.conf"
touch "$VRT_ROOT/start/mh4"
run_as B spool-b-room env VRT_HOST_CONF="$E2E_DIR/hostB.conf" "$VRT" spool start
check "host B (max_vms=1, running mh1) leaves start/mh4" [ -e "$VRT_ROOT/start/mh4" ]
check "... saying why" grep -q "start/mh4: left for another host: no room on host hostB: max_vms=1 reached (1 running)" "$VRT_ROOT/log/start.log"
run_as A spool-a-room "$VRT" spool start
check "host A (no limits) takes it" wait_for 30 runs_on B mh4 hostA
on A "$VRT" stop mh4 >/dev/null 2>&1

# ---- a supervisor killed with SIGKILL: its stale lease is taken over
pid_b=$(cat "$RUN_B/mh1/pid")
kill -9 "$pid_b"
check "host B's supervisor of mh1 is gone" wait_for 10 process_gone "$pid_b"
check "the stale lease still names hostB" [ "$(lease_host mh1)" = hostB ]
check "both hosts: mh1 stopped (the lock went with the process)" wait_for 10 both_stopped mh1
run_as A start-mh1-a2 "$VRT" start mh1
check "host A starts mh1 over the stale lease" [ "$RC" = 0 ]
check "... and logs the takeover" \
        grep -q "mh1: took over the stale lease of host hostB (pid $pid_b, since" "$VRT_ROOT/vm/mh1/log/launch.log"
check "... the lease names hostA" [ "$(lease_host mh1)" = hostA ]
on A "$VRT" stop mh1 >/dev/null 2>&1

# ---- kill -9 at random points of a start never blocks the next start
ok=0
for i in 1 2 3 4 5 6; do
        ms=$(( (RANDOM % 1500) ))
        bg B "$VRT_LAUNCH" mh3 >"$E2E_DIR/mh3-kill-$i.log" 2>&1
        lp=$!
        sleep "$(printf '0.%03d' "$ms")"
        kill -9 "$lp" 2>/dev/null
        wait "$lp" 2>/dev/null
        # QEMU dies with its supervisor (PR_SET_PDEATHSIG).
        if on A "$VRT" start --wait 30 mh3 >"$E2E_DIR/mh3-start-$i.log" 2>&1 && runs_on B mh3 hostA; then
                ok=$((ok + 1))
        else
                echo "round $i (kill after ${ms} ms):"; cat "$E2E_DIR/mh3-start-$i.log"
        fi
        on A "$VRT" stop --force mh3 >/dev/null 2>&1
done
check "6 starts after kill -9 at random points: all succeed on the other host" [ "$ok" = 6 ]

# ---- while ROOT/migrate/NAME asks for a migration (the lease may be free
# for a moment at the handover), no other start, destroy or snapshot takes it
qemu-img create -q -f qcow2 "$VRT_ROOT/vm/mh2/hdd.img" 16M     # something to snapshot
mkdir -p "$VRT_ROOT/migrate"
printf 'host=hostB\nfrom=hostC\ntimeout=60\n' >"$VRT_ROOT/migrate/mh2"
run_as A mig-start "$VRT_LAUNCH" mh2
check "migrating: vrt-launch refused, exit 1 (temporary: systemd tries again)" [ "$RC" = 1 ]
check "... saying so" said mig-start "mh2 is being migrated from host hostC to host hostB; not started"
run_as A mig-destroy "$VRT" destroy mh2
check "migrating: destroy refused, exit 1, one line" bash -c '[ "$0" = 1 ] && [ "$(wc -l <"$1")" = 1 ]' "$RC" "$E2E_DIR/mig-destroy"
check "... saying so" said mig-destroy "mh2 is being migrated from host hostC to host hostB; not destroyed"
run_as A mig-snap "$VRT" snapshot mh2 s1
check "migrating: snapshot refused, exit 1" [ "$RC" = 1 ]
check "... saying so" said mig-snap "mh2 is being migrated from host hostC to host hostB"
check "... nothing changed: no lease taken, mh2 stopped, no snapshot" \
        bash -c '[ -z "$(sed -n "s/^host=//p" "$0/lease" 2>/dev/null)" ] && [ ! -e "$0/DESTROYED" ] && [ ! -e "$0/snapshots" ]' "$VRT_ROOT/vm/mh2"
touch -d '-5 minutes' "$VRT_ROOT/migrate/mh2"
run_as A mig-stale "$VRT" snapshot mh2 s1
check "a request older than its timeout + 60 s is stale: the snapshot is taken" [ "$RC" = 0 ]
rm -f "$VRT_ROOT/migrate/mh2"

e2e_finish
