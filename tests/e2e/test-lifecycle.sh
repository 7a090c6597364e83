#!/bin/bash
# vrt start / stop / list / status end to end: detached supervisors (systemd
# is not PID 1 here), graceful and forced stops, several VMs in parallel,
# the shutdown timeout sent with SIGTERM, JSON that parses and matches the
# processes, and the refusals. Real QEMU, TCG, the test guest.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=10
e2e_setup
JSON_GET="$VRT_BUILD_DIR/tests/e2e/json-get"
export VRT_SERVICE_MANAGER=auto

# Supervisors started by `vrt start` are not our children: stop them on exit.
kill_supervisors() {
        local f
        for f in "$VRT_RUNTIME_DIR"/*/pid; do
                [ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
        done
}
trap 'kill_supervisors; e2e_cleanup' EXIT

jget() {        # jget PATH: reads JSON on stdin
        "$JSON_GET" "$1"
}
list_state() {  # list_state NAME: the state `vrt list --all --json` reports
        "$VRT" list --all --json | jget "[name=$1].state"
}
now_ms() {
        echo $(( $(date +%s%N) / 1000000 ))
}
gone() {        # gone PID: exited (a zombie awaiting PID 1's reaper counts)
        [ ! -d "/proc/$1" ] || grep -q "^State:.*Z" "/proc/$1/status" 2>/dev/null
}
no_console() {  # no_console NAME TEXT
        ! console_has "$1" "$2"
}
powered_off() { # powered_off NAME OUTPUT: the guest did it, and vrt stop said so
        console_has "$1" VRT-TESTGUEST-POWEROFF && grep -q "^$1: stopped: VM $1 powered off$" "$2"
}
parses() {      # parses FILE: valid JSON
        jget . <"$1" >/dev/null
}
out="$E2E_DIR/out"

make_vm alpha "comment=the first one"
make_vm bravo
make_vm charlie
make_vm delta
make_vm echo
make_vm foxtrot

# --- start: detached vrt-launch ---
"$VRT" start alpha >"$out" 2>&1
st=$?
check "start alpha: exit 0" [ "$st" = 0 ]
check "start alpha: says started with the supervisor pid" grep -q "^alpha: started (supervisor pid [0-9]*)$" "$out"
check "start alpha: running as soon as vrt start returns" [ "$(list_state alpha)" = running ]
spid=$(cat "$VRT_RUNTIME_DIR/alpha/pid")
check "start alpha: the pid it printed is the supervisor's" grep -q "pid $spid)" "$out"
check "start alpha: supervisor leads its own session" [ "$(ps -o sid= -p "$spid" | tr -d ' ')" = "$spid" ]
check "start alpha: supervisor's stdin is /dev/null" [ "$(readlink "/proc/$spid/fd/0")" = /dev/null ]
check "start alpha: supervisor's stderr is vm/alpha/log/launch.log" \
        [ "$(readlink "/proc/$spid/fd/2")" = "$VRT_ROOT/vm/alpha/log/launch.log" ]
check "start alpha: launch.log says running" grep -q "vrt-launch\[$spid\]: VM alpha running" "$VRT_ROOT/vm/alpha/log/launch.log"
check "start alpha: the guest boots" wait_ready alpha

"$VRT" start alpha >"$out" 2>&1
st=$?
check "start alpha again: exit 0" [ "$st" = 0 ]
check "start alpha again: says already running" grep -q "^alpha: already running (supervisor pid $spid)$" "$out"

# --- list and status ---
"$VRT" list --json >"$out"
check "list --json parses" parses "$out"
check "list --json: alpha running" [ "$(jget "[name=alpha].state" <"$out")" = running ]
check "list --json: alpha's pid is the lock holder's" [ "$(jget "[name=alpha].pid" <"$out")" = "$spid" ]
check "list --json: alpha's image and size" \
        bash -c '[ "$("$0" "[name=alpha].image" <"$1")" = testguest ] && [ "$("$0" "[name=alpha].size" <"$1")" = tiny ]' "$JSON_GET" "$out"
check "list --json: alpha's comment" [ "$(jget "[name=alpha].comment" <"$out")" = "the first one" ]
up=$(jget "[name=alpha].uptime_seconds" <"$out")
check "list --json: alpha's uptime is a small number ($up s)" bash -c '[ "$0" -ge 0 ] && [ "$0" -lt 120 ]' "$up"
check "list --json: bravo stopped, no pid" \
        bash -c '[ "$("$0" "[name=bravo].state" <"$1")" = stopped ] && ! "$0" "[name=bravo].pid" <"$1" >/dev/null' "$JSON_GET" "$out"
check "list --json: one entry per VM" [ "$(grep -c '"name":' "$out")" = 6 ]
"$VRT" list >"$out"
check "list: a table with a header" grep -q "^NAME  *STATE  *HOST  *IMAGE  *SIZE  *MAC  *PID  *UPTIME  *COMMENT" "$out"
check "list: alpha's row" grep -q "^alpha  *running  *${VRT_HOST:-$(uname -n)}  *testguest  *tiny  *-  *$spid  .*the first one$" "$out"

"$VRT" status alpha --json >"$out"
check "status --json parses" parses "$out"
check "status --json: QEMU says running" [ "$(jget status.status <"$out")" = running ]
check "status --json: one vCPU" [ "$(jget vcpus.0.cpu-index <"$out")" = 0 ] 
check "status --json: one vCPU only" bash -c '! "$0" vcpus.1 <"$1" >/dev/null' "$JSON_GET" "$out"
check "status --json: 128 MiB of memory" [ "$(jget memory.base-memory <"$out")" = 134217728 ]
check "status --json: no QMP errors" bash -c '! "$0" errors <"$1" >/dev/null' "$JSON_GET" "$out"
"$VRT" status alpha >"$out"
check "status: text shows the QEMU state" grep -q "^state: *running (QEMU: running)$" "$out"
check "status: text shows vCPUs and memory" bash -c 'grep -q "^vcpus: *1 " "$0" && grep -q "^memory: *128 MiB$" "$0"' "$out"
"$VRT" status bravo >"$out"
st=$?
check "status of a stopped VM: exit 0, state stopped" bash -c '[ "$0" = 0 ] && grep -q "^state: *stopped$" "$1"' "$st" "$out"

# --- graceful stop ---
"$VRT" stop alpha >"$out" 2>&1
st=$?
check "stop alpha: exit 0" [ "$st" = 0 ]
check "stop alpha: the guest powered itself off (ACPI)" console_has alpha VRT-TESTGUEST-POWEROFF
check "stop alpha: says powered off" grep -q "^alpha: stopped: VM alpha powered off$" "$out"
check "stop alpha: supervisor gone when vrt stop returns" gone "$spid"
check "stop alpha: runtime dir removed" runtime_empty alpha
check "stop alpha: list says stopped" [ "$(list_state alpha)" = stopped ]
"$VRT" stop alpha >"$out" 2>&1
st=$?
check "stop alpha again: exit 0, says not running" bash -c '[ "$0" = 0 ] && grep -q "^alpha: not running$" "$1"' "$st" "$out"

# --- forced stop ---
"$VRT" start bravo >/dev/null
check "bravo: ready" wait_ready bravo
t0=$(now_ms)
"$VRT" stop --force bravo >"$out" 2>&1
st=$?
took=$(( $(now_ms) - t0 ))
check "stop --force bravo: exit 0" [ "$st" = 0 ]
check "stop --force bravo: quit over QMP" grep -q "^bravo: stopped: VM bravo powered off (quit over QMP)$" "$out"
check "stop --force bravo: no ACPI shutdown in the guest" no_console bravo VRT-TESTGUEST-POWEROFF
check "stop --force bravo: at once (${took} ms)" [ "$took" -lt 5000 ]
check "stop --force bravo: runtime dir removed" runtime_empty bravo

# --- three VMs at once ---
"$VRT" start charlie delta echo >"$out" 2>&1
st=$?
check "start charlie delta echo: exit 0" [ "$st" = 0 ]
check "start charlie delta echo: one result line each" [ "$(grep -c ": started (supervisor pid" "$out")" = 3 ]
for v in charlie delta echo; do
        check "$v: ready" wait_ready "$v" 90
done
t0=$(now_ms)
"$VRT" stop charlie delta echo >"$out" 2>&1
st=$?
took=$(( $(now_ms) - t0 ))
echo "# stop of 3 VMs in parallel took ${took} ms"
check "stop charlie delta echo: exit 0" [ "$st" = 0 ]
for v in charlie delta echo; do
        check "stop $v: powered off by the guest" powered_off "$v" "$out"
        check "stop $v: runtime dir removed" runtime_empty "$v"
done

# --- the stop timeout travels with SIGTERM (guests ignore the power button,
# so each stop waits the full timeout; no need to wait for the boot) ---
cp "$VRT_ROOT/images/testguest.properties" "$E2E_DIR/props.bak"
image_cmdline_append "vrt.ignore_acpi=1 vrt.noagent=1"
"$VRT" start foxtrot charlie delta >"$out" 2>&1
check "foxtrot, charlie, delta: started (their guests ignore ACPI)" [ "$(grep -c ": started" "$out")" = 3 ]
cp "$E2E_DIR/props.bak" "$VRT_ROOT/images/testguest.properties"
t0=$(now_ms)
"$VRT" stop --timeout 2 foxtrot charlie delta >"$out" 2>&1
st=$?
took=$(( $(now_ms) - t0 ))
check "stop --timeout 2: exit 0" [ "$st" = 0 ]
check "stop --timeout 2: forced after the timeout" [ "$(grep -c "stopped forcibly after the shutdown timeout" "$out")" = 3 ]
check "stop --timeout 2: took at least 2 s, not the configured 10 s (${took} ms)" \
        bash -c '[ "$0" -ge 2000 ] && [ "$0" -lt 10000 ]' "$took"
check "stop --timeout 2: three VMs stopped in parallel, not one after another (${took} ms < 6000)" [ "$took" -lt 6000 ]
check "stop --timeout 2: launch.log names the 2 s timeout" \
        grep -q "waiting up to 2s for the guest" "$VRT_ROOT/vm/foxtrot/log/launch.log"

# --- refusals and failures ---
touch "$VRT_ROOT/vm/echo/DESTROYED"
"$VRT" start echo >"$out" 2>&1
st=$?
check "start of a destroyed VM: refused (exit 2)" [ "$st" = 2 ]
check "start of a destroyed VM: says why" grep -q "echo: destroyed, not started" "$out"
check "start of a destroyed VM: nothing started" runtime_empty echo
check "list hides destroyed VMs" bash -c '! "$0" list --json | "$1" "[name=echo]" >/dev/null' "$VRT" "$JSON_GET"
check "list --all shows them as destroyed" [ "$(list_state echo)" = destroyed ]
"$VRT" start ghost >"$out" 2>&1
st=$?
check "start of an unknown VM: exit 2, no such VM" bash -c '[ "$0" = 2 ] && grep -q "ghost: no such VM" "$1"' "$st" "$out"
"$VRT" stop ghost >"$out" 2>&1
st=$?
check "stop of an unknown VM: exit 2, no such VM" bash -c '[ "$0" = 2 ] && grep -q "ghost: no such VM" "$1"' "$st" "$out"
"$VRT" start 'Bad_Name' >"$out" 2>&1
check "start of an invalid name: exit 2" [ $? = 2 ]
make_vm golf "colour=blue"
"$VRT" start golf bravo >"$out" 2>&1
st=$?
check "start golf (bad config) and bravo: exit 2 (bad input)" [ "$st" = 2 ]
check "start golf: refused before spawning, with file:line as vrt check says it" \
        grep -q "golf: .*instance.properties:4: unknown key colour" "$out"
check "start golf: nothing created (no log/, no runtime dir)" \
        bash -c '[ ! -e "$0/vm/golf/log" ] && [ ! -e "$1/golf" ]' "$VRT_ROOT" "$VRT_RUNTIME_DIR"
check "start golf bravo: bravo still started" grep -q "^bravo: started" "$out"
"$VRT" stop --force bravo >/dev/null
check "bravo stopped" runtime_empty bravo
"$VRT" stop --timeout 0 bravo >"$out" 2>&1
check "stop --timeout 0: bad usage (exit 2)" [ $? = 2 ]
"$VRT" start >"$out" 2>&1
check "start without a name: bad usage (exit 2)" [ $? = 2 ]
VRT_SERVICE_MANAGER=upstart "$VRT" start bravo >"$out" 2>&1
st=$?
check "start with a bad VRT_SERVICE_MANAGER: exit 2, says so" \
        bash -c '[ "$0" = 2 ] && grep -q "VRT_SERVICE_MANAGER=upstart" "$1"' "$st" "$out"
check "start with a bad VRT_SERVICE_MANAGER: nothing started" runtime_empty bravo

e2e_finish
