#!/bin/bash
# vrt spool, vrt spool --watch and vrt autostart end to end: requests in
# start/ stop/ destroy/ inst/ carried out and logged, malformed and unknown
# requests dropped, overlapping runs acting once, the watch's reaction time,
# autostart entries in the seed's style and a root that appears late.
# Real QEMU, TCG, the test guest.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=10
e2e_setup
JSON_GET="$VRT_BUILD_DIR/tests/e2e/json-get"
export VRT_SERVICE_MANAGER=auto

kill_supervisors() {
        local f
        for f in "$VRT_RUNTIME_DIR"/*/pid; do
                [ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
        done
}
trap 'kill_supervisors; e2e_cleanup' EXIT

list_state() {  # list_state NAME
        "$VRT" list --all --json | "$JSON_GET" "[name=$1].state"
}
is_running() {
        [ "$(list_state "$1")" = running ]
}
now_ms() {
        echo $(( $(date +%s%N) / 1000000 ))
}
logged() {      # logged LOG TEXT: ROOT/log/LOG.log has a timestamped line ending in TEXT
        grep -q "^[0-9]\{4\}-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9] $2\$" "$VRT_ROOT/log/$1.log"
}
logged_count() {        # logged_count LOG REGEX
        grep -c "$2" "$VRT_ROOT/log/$1.log"
}
gone() {
        [ ! -e "$VRT_ROOT/$1" ]
}
no_console() {
        ! console_has "$1" "$2"
}
wait_fine() {   # wait_fine SECONDS COMMAND...: polls every 10 ms, for timings
        local deadline=$(( $(now_ms) + $1 * 1000 )); shift
        until "$@" 2>/dev/null; do
                [ "$(now_ms)" -lt "$deadline" ] || return 1
                sleep 0.01
        done
}
out="$E2E_DIR/out"
S=$VRT_ROOT

make_vm alpha
make_vm bravo
make_vm charlie
"$VRT" create --image testguest --size tiny --net none --name delta >"$out" 2>&1
check "delta created with a disk (vrt create)" test -f "$S/vm/delta/hdd.ovl"

# --- start/NAME ---
touch "$S/start/alpha"
"$VRT" spool >"$out" 2>&1
st=$?
check "spool: exit 0" [ "$st" = 0 ]
check "spool: start/alpha -> alpha running" is_running alpha
check "spool: the request is gone" gone start/alpha
spid=$(cat "$VRT_RUNTIME_DIR/alpha/pid")
check "spool: start.log says started" logged start "alpha: started (supervisor pid $spid)"
check "spool: and so does its output" grep -q "^start: alpha: started (supervisor pid $spid)$" "$out"
check "alpha: ready" wait_ready alpha

# --- malformed and unknown requests: logged, removed, never run ---
touch "$S/start/ghost" "$S/start/Bad_Name" "$S/stop/phantom" "$S/destroy/nobody" "$S/start/.keep"
mkdir "$S/start/subdir"
touch "$S/start/subdir/file"
"$VRT" spool >"$out" 2>&1
st=$?
check "spool with bad requests: exit 0 (they are the requester's problem)" [ "$st" = 0 ]
check "unknown VM: logged" logged start "ghost: no such VM ($S/vm/ghost/instance.properties: No such file or directory): request removed"
check "unknown VM: removed" gone start/ghost
check "unknown VM: nothing started" runtime_empty ghost
check "invalid name: logged" grep -q " start/Bad_Name: invalid VM name" "$S/log/start.log"
check "invalid name: removed" gone start/Bad_Name
check "directory: logged" logged start "start/subdir: a directory, not a request: removed"
check "directory: removed" gone start/subdir
check "unknown VM in stop/: logged" logged stop "phantom: no such VM ($S/vm/phantom/instance.properties: No such file or directory): request removed"
check "unknown VM in destroy/: logged" logged destroy "nobody: no such VM ($S/vm/nobody/instance.properties: No such file or directory): request removed"
check "hidden entries are left alone" test -e "$S/start/.keep"
check "alpha was not touched" is_running alpha

# --- overlapping runs start each VM once ---
touch "$S/start/bravo" "$S/start/charlie"
"$VRT" spool start >"$E2E_DIR/run1" 2>&1 &
p1=$!
"$VRT" spool start >"$E2E_DIR/run2" 2>&1 &
p2=$!
wait "$p1"; s1=$?
wait "$p2"; s2=$?
check "two overlapping runs: both exit 0" [ "$s1$s2" = 00 ]
check "two overlapping runs: bravo and charlie run" bash -c '[ "$("$0" list --json | "$1" "[name=bravo].state")" = running ] && [ "$("$0" list --json | "$1" "[name=charlie].state")" = running ]' "$VRT" "$JSON_GET"
check "two overlapping runs: bravo started once (start.log)" [ "$(logged_count start " bravo: ")" = 1 ]
check "two overlapping runs: charlie started once (start.log)" [ "$(logged_count start " charlie: ")" = 1 ]
check "two overlapping runs: one vrt-launch for bravo" [ "$(grep -c "started QEMU" "$S/vm/bravo/log/launch.log")" = 1 ]
check "two overlapping runs: one vrt-launch for charlie" [ "$(grep -c "started QEMU" "$S/vm/charlie/log/launch.log")" = 1 ]
echo "# start.log during the overlap:"; tail -n 3 "$S/log/start.log" | sed 's/^/#   /'

# --- stop/NAME: graceful ---
touch "$S/stop/alpha"
"$VRT" spool >"$out" 2>&1
check "spool: stop/alpha -> alpha stopped" bash -c '[ "$("$0" list --json | "$1" "[name=alpha].state")" = stopped ]' "$VRT" "$JSON_GET"
check "spool: alpha's guest powered off (ACPI)" console_has alpha VRT-TESTGUEST-POWEROFF
check "spool: stop.log says so" logged stop "alpha: stopped: VM alpha powered off"
check "spool: the stop request is gone" gone stop/alpha

# --- destroy/NAME: stop, delete the disk, DESTROYED ---
"$VRT" start delta >/dev/null
check "delta: ready" wait_ready delta
touch "$S/destroy/delta"
"$VRT" spool >"$out" 2>&1
st=$?
check "spool destroy: exit 0" [ "$st" = 0 ]
check "spool destroy: delta's disk is gone" gone vm/delta/hdd.ovl
check "spool destroy: DESTROYED marker" test -e "$S/vm/delta/DESTROYED"
check "spool destroy: delta does not run" runtime_empty delta
check "spool destroy: destroy.log says so" logged destroy "delta: destroyed (stopped, deleted hdd.ovl)"
check "spool destroy: list --all says destroyed" [ "$(list_state delta)" = destroyed ]
touch "$S/start/delta"
"$VRT" spool >"$out" 2>&1
check "spool: a destroyed VM is not started" runtime_empty delta
check "spool: ... and that is logged" logged start "delta: destroyed, not started ($S/vm/delta/DESTROYED exists; \`vrt cleanup\` removes the VM): request removed"

# --- inst/*.properties ---
printf 'image=testguest\nsize=tiny\nnet=none\ncomment=from the spool\n' > "$S/inst/hotel.properties"
printf 'image=testguest\nsize=tiny\ncolour=blue\n' > "$S/inst/india.properties"
"$VRT" spool inst >"$out" 2>&1
st=$?
check "spool inst with one bad request: exit 1" [ "$st" = 1 ]
check "inst/hotel.properties -> VM hotel" test -f "$S/vm/hotel/instance.properties"
check "inst/hotel.properties moved to inst/done" bash -c '[ -f "$0/inst/done/hotel.properties" ] && [ ! -e "$0/inst/hotel.properties" ]' "$S"
check "create.log says created" logged create "inst/hotel.properties: created VM hotel"
check "inst/india.properties moved to inst/failed" test -f "$S/inst/failed/india.properties"
check "inst/failed/india.properties.error names the problem" grep -q "unknown key colour" "$S/inst/failed/india.properties.error"
check "create.log says why india failed" grep -q " inst/india.properties: failed: .*unknown key colour" "$S/log/create.log"
check "no VM india" gone vm/india

# --- spool --watch: reaction time ---
"$VRT" spool --watch >"$E2E_DIR/watch.log" 2>&1 &
W=$!
E2E_PIDS+=("$W")
sleep 0.5       # its first pass over the queues
t0=$(now_ms)
touch "$S/start/hotel"
wait_fine 10 logged start "hotel: started (supervisor pid [0-9]*)"
t1=$(now_ms)
check "watch: touch start/hotel -> running" is_running hotel
start_ms=$((t1 - t0))
check "watch: reacted within 5 s (${start_ms} ms)" [ "$start_ms" -lt 5000 ]
check "hotel: ready" wait_ready hotel
t0=$(now_ms)
touch "$S/stop/hotel"
wait_fine 20 logged stop "hotel: stopped: VM hotel powered off"
t1=$(now_ms)
stop_ms=$((t1 - t0))
check "watch: touch stop/hotel -> powered off" bash -c '[ ! -e "$0/hotel" ]' "$VRT_RUNTIME_DIR"
touch "$S/start/ghost2"
wait_for 5 logged start "ghost2: no such VM ($S/vm/ghost2/instance.properties: No such file or directory): request removed"
check "watch: an unknown VM's request is dropped and logged" gone start/ghost2
kill -TERM "$W"
wait_exit "$W" 10
check "watch: SIGTERM ends it with status 0" [ "$EXIT_STATUS" = 0 ]
# The baseline, same VM, same run: vrt start without the spool.
t0=$(now_ms)
"$VRT" start hotel >/dev/null
direct_ms=$(( $(now_ms) - t0 ))
"$VRT" stop --force hotel >/dev/null
echo "benchmark: vrt start NAME -> running (baseline):                      ${direct_ms} ms"
echo "benchmark: vrt spool --watch, touch start/NAME -> running (logged):   ${start_ms} ms" \
     "($(awk -v a="$start_ms" -v b="$direct_ms" 'BEGIN { printf "%.2f", a / (b > 0 ? b : 1) }')x the baseline)"
echo "benchmark: vrt spool --watch, touch stop/NAME -> guest powered off:   ${stop_ms} ms"

# --- autostart ---
ln -s ../vm/alpha/start.sh "$S/autostart/alpha.sh"      # the seed's start-script link
echo "autostart=yes" >> "$S/vm/bravo/instance.properties"
echo "autostart=yes" >> "$S/vm/delta/instance.properties"
touch "$S/autostart/nosuchvm"
"$VRT" autostart --wait 5 >"$out" 2>&1
st=$?
check "autostart: exit 0" [ "$st" = 0 ]
check "autostart: autostart/alpha.sh -> alpha started" is_running alpha
check "autostart: logged" bash -c 'grep -q " autostart: alpha: started (supervisor pid [0-9]*)$" "$0"' "$S/log/start.log"
check "autostart: bravo (autostart=yes) already runs, logged" \
        bash -c 'grep -q " autostart: bravo: already running (supervisor pid [0-9]*)$" "$0"' "$S/log/start.log"
check "autostart: destroyed delta stays down" runtime_empty delta
check "autostart: ... logged" logged start "autostart: delta: destroyed, not started ($S/vm/delta/DESTROYED exists; \`vrt cleanup\` removes the VM)"
check "autostart: an entry for an unknown VM is logged" grep -q " autostart: nosuchvm: no such VM" "$S/log/start.log"
check "autostart: entries are kept" test -L "$S/autostart/alpha.sh"

late="$E2E_DIR/late"
t0=$(now_ms)
VRT_ROOT=$late "$VRT" autostart --wait 20 >"$out" 2>&1 &
A=$!
sleep 1
mkdir -p "$late/vm"     # the NFS mount arrives
wait "$A"
st=$?
took=$(( $(now_ms) - t0 ))
check "autostart waits for a late root, then succeeds" [ "$st" = 0 ]
check "autostart: ... it did wait (${took} ms)" [ "$took" -ge 1000 ]
VRT_ROOT="$E2E_DIR/never" "$VRT" autostart --wait 1 >"$out" 2>&1
st=$?
check "autostart gives up on a root that never appears (exit 1)" [ "$st" = 1 ]
check "autostart: ... saying so" grep -q "is not a vrt root" "$out"

"$VRT" stop --force alpha bravo charlie >/dev/null 2>&1
check "all stopped" bash -c 'for v in alpha bravo charlie hotel; do [ ! -e "$0/$v" ] || exit 1; done' "$VRT_RUNTIME_DIR"
e2e_finish
