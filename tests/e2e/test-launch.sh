#!/bin/bash
# vrt-launch end to end: boot, QMP, graceful and forced stops, crashes,
# locking, sd_notify, privilege drop. Real QEMU, TCG, the test guest.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=3
e2e_setup

# --- boot, QMP, privileges, sd_notify, graceful stop ---
make_vm alpha
notify_sock="$E2E_DIR/notify.sock"
socat -u "UNIX-RECV:$notify_sock" "OPEN:$E2E_DIR/notify.log,creat,append" &
E2E_PIDS+=($!)
disown $!
wait_for 5 test -S "$notify_sock"
NOTIFY_SOCKET="$notify_sock" launch alpha
check "alpha: ready marker on the console" wait_ready alpha
check "alpha: vrt qmp query-status says running" \
        bash -c '"$0" qmp alpha query-status | grep -q "\"status\":\"running\""' "$VRT"
check "alpha: sd_notify READY=1 received" wait_for 5 grep -q "READY=1" "$E2E_DIR/notify.log"
qpid=$(cat "$VRT_RUNTIME_DIR/alpha/qemu.pid")
check "alpha: QEMU runs as a non-root uid" \
        bash -c '[ "$(awk "/^Uid:/{print \$2}" /proc/'"$qpid"'/status)" = "$(id -u vrt)" ]'
check "alpha: QEMU has no effective capabilities" grep -q "^CapEff:[[:space:]]*0000000000000000" "/proc/$qpid/status"
check "alpha: QEMU has no capability bounding set" grep -q "^CapBnd:[[:space:]]*0000000000000000" "/proc/$qpid/status"
check "alpha: QEMU runs under seccomp filter mode" grep -q "^Seccomp:[[:space:]]*2" "/proc/$qpid/status"
check "alpha: QEMU has no supplementary groups" grep -qE "^Groups:[[:space:]]*$" "/proc/$qpid/status"
check "alpha: the running supervisor keeps only CAP_KILL" \
        grep -q "^CapEff:[[:space:]]*0000000000000020" "/proc/$LAUNCH_PID/status"
check "alpha: ... and an empty bounding set" grep -q "^CapBnd:[[:space:]]*0000000000000000" "/proc/$LAUNCH_PID/status"
check "alpha: runtime sockets are 0600" \
        bash -c '[ "$(stat -c %a "$VRT_RUNTIME_DIR/alpha/monitor.sock")" = 600 ] && [ "$(stat -c %a "$VRT_RUNTIME_DIR/alpha/qmp.sock")" = 600 ]'
"$VRT" qmp alpha no-such-command >"$E2E_DIR/qmp-err.out" 2>"$E2E_DIR/qmp-err.log"
check "alpha: a QMP error exits 1" [ $? = 1 ]
check "alpha: ... with QEMU's error.desc" grep -q "The command no-such-command has not been found" "$E2E_DIR/qmp-err.log"
"$VRT" qmp alpha query-status '{"bad json' >/dev/null 2>&1
check "alpha: malformed QMP arguments exit 2" [ $? = 2 ]
"$VRT_LAUNCH" alpha >"$E2E_DIR/second.log" 2>&1
second=$?
check "alpha: a second vrt-launch fails with exit 2" [ "$second" = 2 ]
check "alpha: ... saying the VM is already running" grep -q "already running" "$E2E_DIR/second.log"
echo "earlier output" > "$E2E_DIR/alpha-init.log"
"$VRT_LAUNCH" --seed-image /dev/null --init-log "$E2E_DIR/alpha-init.log" alpha >"$E2E_DIR/second-fb.log" 2>&1
second=$?
check "alpha: a second first-boot vrt-launch fails with exit 2" [ "$second" = 2 ]
check "alpha: ... without truncating the init log it names" grep -q "earlier output" "$E2E_DIR/alpha-init.log"
console_cmd alpha 'echo marker-$((6*7))'
check "alpha: console answers a command" wait_for 10 console_has alpha marker-42
# Piped input: vrt console shows the answer, then leaves on its own.
printf 'echo piped-$((6*7))\n' | timeout 10 "$VRT" console alpha >"$E2E_DIR/console-pipe.out" 2>&1
check "alpha: vrt console with piped input exits 0 after the input ends" [ $? = 0 ]
check "alpha: ... after printing the guest's answer" grep -q "^piped-42" "$E2E_DIR/console-pipe.out"
# A paused guest stops reading its serial port once the UART's 16-byte
# FIFO is full, so QEMU never sees the end of the input: no hang either.
"$VRT" qmp alpha stop >/dev/null
start_ms=$(( $(date +%s%N) / 1000000 ))
printf '# more than sixteen bytes for a paused guest\n' | timeout 10 "$VRT" console alpha >/dev/null 2>&1
st=$?
took=$(( $(date +%s%N) / 1000000 - start_ms ))
"$VRT" qmp alpha cont >/dev/null
check "alpha: vrt console on a paused guest exits 0 after piped input ends" [ "$st" = 0 ]
check "alpha: ... within about a second ($took ms)" [ "$took" -lt 5000 ]
# One client at a time: a second vrt console says busy at once, and the
# first one keeps working; a client holding monitor.sock makes vrt qmp say
# busy within its bound, and vrt qmp works again once it leaves.
mkfifo "$E2E_DIR/con-in"
"$VRT" console alpha <"$E2E_DIR/con-in" >"$E2E_DIR/con1.out" 2>&1 &
con1=$!
exec {con_w}>"$E2E_DIR/con-in"
sleep 0.5
start_ms=$(( $(date +%s%N) / 1000000 ))
timeout 10 "$VRT" console alpha </dev/null >"$E2E_DIR/con2.out" 2>&1
st=$?
took=$(( $(date +%s%N) / 1000000 - start_ms ))
check "alpha: a second vrt console exits 1 ($took ms)" [ "$st" = 1 ] && [ "$took" -lt 3000 ]
check "alpha: ... saying the console is busy" grep -q "^vrt: alpha: console busy: another vrt console is attached" "$E2E_DIR/con2.out"
# The guest's shell may be waiting for the answer to its cursor query
# (ESC [6n) and eat one line: repeat the command until it answers.
first_console_works() {
	local i
	for ((i = 0; i < 10; i++)); do
		printf 'echo first-$((40+2))\n' >&"$con_w"
		wait_for 1 grep -q "^first-42" "$E2E_DIR/con1.out" && return 0
	done
	return 1
}
check "alpha: ... the first console still works" first_console_works
exec {con_w}>&-
wait_exit "$con1" 10
check "alpha: the first console leaves when its input ends" [ "$EXIT_STATUS" = 0 ]
socat -u "UNIX-CONNECT:$VRT_RUNTIME_DIR/alpha/monitor.sock" - >/dev/null 2>&1 </dev/null &
hog=$!
sleep 0.5
start_ms=$(( $(date +%s%N) / 1000000 ))
timeout 30 "$VRT" qmp alpha query-status >/dev/null 2>"$E2E_DIR/qmp-busy.err"
st=$?
took=$(( $(date +%s%N) / 1000000 - start_ms ))
check "alpha: vrt qmp while another client holds monitor.sock: exit 1 within the bound ($took ms)" \
	[ "$st" = 1 ] && [ "$took" -lt 8000 ]
check "alpha: ... saying monitor.sock is busy" grep -q "monitor.sock is busy: another client is connected" "$E2E_DIR/qmp-busy.err"
kill "$hog" 2>/dev/null; wait "$hog" 2>/dev/null
check "alpha: vrt qmp works again once the other client left" wait_for 10 "$VRT" qmp alpha query-status
kill -TERM "$LAUNCH_PID"
check "alpha: SIGTERM ends vrt-launch" wait_exit "$LAUNCH_PID" 30
check "alpha: ... with status 0" [ "$EXIT_STATUS" = 0 ]
check "alpha: ... by an ACPI poweroff inside the guest" console_has alpha VRT-TESTGUEST-POWEROFF
check "alpha: ... no escalation" not grep -q "sending quit" "$E2E_DIR/alpha.launch.log"
check "alpha: sd_notify STOPPING=1 received" grep -q "STOPPING=1" "$E2E_DIR/notify.log"
check "alpha: runtime dir removed" runtime_empty alpha

# --- guest that ignores the power button: escalation ---
make_vm bravo
cp "$VRT_ROOT/images/testguest.properties" "$E2E_DIR/props.bak"
image_cmdline_append "vrt.ignore_acpi=1 vrt.noagent=1"
launch bravo
check "bravo: ready" wait_ready bravo
cp "$E2E_DIR/props.bak" "$VRT_ROOT/images/testguest.properties"
start=$(date +%s)
kill -TERM "$LAUNCH_PID"
check "bravo: escalation ends vrt-launch" wait_exit "$LAUNCH_PID" 30
took=$(( $(date +%s) - start ))
check "bravo: ... with status 3 (forced)" [ "$EXIT_STATUS" = 3 ]
check "bravo: ... after the 3 s shutdown timeout, not before" [ "$took" -ge 3 ]
check "bravo: ... logging the quit step" grep -q "sending quit" "$E2E_DIR/bravo.launch.log"
check "bravo: ... and the guest never powered off itself" not console_has bravo VRT-TESTGUEST-POWEROFF
check "bravo: runtime dir removed" runtime_empty bravo

# --- QEMU dies while being stopped: still a stop, not a crash to restart ---
make_vm hotel
image_cmdline_append "vrt.ignore_acpi=1 vrt.noagent=1"
launch hotel
check "hotel: ready" wait_ready hotel
cp "$E2E_DIR/props.bak" "$VRT_ROOT/images/testguest.properties"
kill -TERM "$LAUNCH_PID"
wait_for 5 grep -q "system_powerdown" "$E2E_DIR/hotel.launch.log"
kill -9 "$(cat "$VRT_RUNTIME_DIR/hotel/qemu.pid")"
check "hotel: QEMU killed during the stop ends vrt-launch" wait_exit "$LAUNCH_PID" 10
check "hotel: ... with status 3 (stopped), not 1" [ "$EXIT_STATUS" = 3 ]

# --- guest powers itself off ---
make_vm charlie
launch charlie
check "charlie: ready" wait_ready charlie
console_cmd charlie "poweroff -f"
check "charlie: guest poweroff ends vrt-launch" wait_exit "$LAUNCH_PID" 30
check "charlie: ... with status 0" [ "$EXIT_STATUS" = 0 ]

# --- kill -9 of QEMU ---
make_vm delta
launch delta
check "delta: ready" wait_ready delta
kill -9 "$(cat "$VRT_RUNTIME_DIR/delta/qemu.pid")"
check "delta: QEMU killed -> vrt-launch ends" wait_exit "$LAUNCH_PID" 10
check "delta: ... non-zero (1)" [ "$EXIT_STATUS" = 1 ]
check "delta: ... saying QEMU was killed" grep -q "killed by signal" "$E2E_DIR/delta.launch.log"
check "delta: nothing left in the runtime dir" runtime_empty delta

# --- SIGTERM to QEMU from outside: QEMU quits at once; vrt says so ---
launch delta
check "delta: second start" wait_for 30 test -s "$VRT_RUNTIME_DIR/delta/qemu.pid"
wait_for 10 test -S "$VRT_RUNTIME_DIR/delta/monitor.sock"
wait_for 10 bash -c '"$0" qmp delta query-status >/dev/null 2>&1' "$VRT"
kill -TERM "$(cat "$VRT_RUNTIME_DIR/delta/qemu.pid")"
check "delta: SIGTERM to QEMU ends vrt-launch" wait_exit "$LAUNCH_PID" 10
check "delta: ... with status 0, as a quit over QMP" [ "$EXIT_STATUS" = 0 ]
check "delta: ... saying the signal came from outside" grep -q "powered off (QEMU was sent a signal from outside vrt" "$E2E_DIR/delta.launch.log"
check "delta: ... nothing left in the runtime dir" runtime_empty delta

# --- kill -9 of vrt-launch: QEMU follows, the next start is not blocked ---
launch delta
check "delta: restart works" wait_for 30 test -S "$VRT_RUNTIME_DIR/delta/monitor.sock"
wait_for 10 test -s "$VRT_RUNTIME_DIR/delta/qemu.pid"
qpid=$(cat "$VRT_RUNTIME_DIR/delta/qemu.pid")
kill -9 "$LAUNCH_PID"
check "delta: QEMU gone within a second of kill -9 vrt-launch" wait_for 1 process_gone "$qpid"
check "delta: stale runtime files left by the killed supervisor" test -e "$VRT_RUNTIME_DIR/delta/pid"
launch delta
check "delta: a new start after the crash is not blocked" wait_for 30 \
        bash -c '"$0" qmp delta query-status >/dev/null' "$VRT"
"$VRT" qmp delta quit >/dev/null
check "delta: quit over the monitor ends vrt-launch" wait_exit "$LAUNCH_PID" 10
check "delta: ... with status 0" [ "$EXIT_STATUS" = 0 ]

# --- group=: its members may use the sockets, and vrt sees the VM run ---
make_vm hotel
echo "group=nogroup" >> "$VRT_ROOT/vrt.conf"
launch hotel
check "hotel: ready" wait_ready hotel
as_operator() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@" >/dev/null; }
check "hotel: an operator of group= can use vrt qmp" as_operator "$VRT" qmp hotel query-status
check "hotel: ... and vrt list shows the VM running" \
        bash -c 'setpriv --reuid=nobody --regid=nogroup --clear-groups "$0" list | grep -q "^hotel  *running"' "$VRT"
"$VRT" qmp hotel quit >/dev/null
check "hotel: quit ends vrt-launch" wait_exit "$LAUNCH_PID" 10
sed -i '/^group=/d' "$VRT_ROOT/vrt.conf"

# --- QEMU fails to start: its own words reach the operator ---
make_vm echo
echo "size.huge.cpus=1" >> "$VRT_ROOT/vrt.conf"
echo "size.huge.memory=64T" >> "$VRT_ROOT/vrt.conf"
sed -i 's/^size=tiny/size=huge/' "$VRT_ROOT/vm/echo/instance.properties"
"$VRT_LAUNCH" echo >"$E2E_DIR/echo.log" 2>&1
st=$?
check "echo: QEMU that cannot start -> exit 1" [ "$st" = 1 ]
check "echo: ... with QEMU's message" grep -qi "memory" "$E2E_DIR/echo.log"
check "echo: ... and nothing left in the runtime dir" runtime_empty echo

# --- the UEFI variable store cannot be written (disk full): exit 1, the real reason ---
make_vm juliet firmware=uefi
(trap '' XFSZ; ulimit -f 8; "$VRT_LAUNCH" juliet) >"$E2E_DIR/juliet.log" 2>&1
check "juliet: UEFI variables that cannot be written -> exit 1" [ $? = 1 ]
check "juliet: ... saying why" grep -q "cannot copy UEFI variables.*File too large" "$E2E_DIR/juliet.log"
check "juliet: ... no partial variable store left" not test -e "$VRT_ROOT/vm/juliet/OVMF_VARS.fd.tmp"

# --- bad input: clear error, exit 2, nothing created ---
make_vm foxtrot "colour=blue"
"$VRT_LAUNCH" foxtrot >"$E2E_DIR/foxtrot.log" 2>&1
st=$?
check "foxtrot: unknown key -> exit 2" [ "$st" = 2 ]
check "foxtrot: ... naming file, line and key" grep -q "instance.properties:4: unknown key colour" "$E2E_DIR/foxtrot.log"
check "foxtrot: ... nothing in the runtime dir" runtime_empty foxtrot
# A bridged NIC without a MAC of the registry (hand-written, not vrt create).
mkdir -p "$VRT_ROOT/vm/kilo"
printf 'image=testguest\nsize=tiny\nnet=user\nnet.1=bridge\n' >"$VRT_ROOT/vm/kilo/instance.properties"
"$VRT_LAUNCH" kilo >"$E2E_DIR/kilo.log" 2>&1
check "kilo: net.1=bridge without mac.1 -> exit 2" [ $? = 2 ]
check "kilo: ... naming file and line" grep -q "instance.properties:4: net.1=bridge needs mac.1=" "$E2E_DIR/kilo.log"
check "kilo: ... nothing in the runtime dir" runtime_empty kilo
make_vm golf
touch "$VRT_ROOT/vm/golf/DESTROYED"
"$VRT_LAUNCH" golf >"$E2E_DIR/golf.log" 2>&1
check "golf: a destroyed VM is refused with exit 2" [ $? = 2 ]
check "golf: ... saying so" grep -q "is destroyed" "$E2E_DIR/golf.log"
# Under systemd, stderr is the journal: lines carry <N> priority prefixes.
: > "$E2E_DIR/journal.log"
JOURNAL_STREAM="$(stat -c %d:%i "$E2E_DIR/journal.log")" "$VRT_LAUNCH" foxtrot 2>>"$E2E_DIR/journal.log"
check "journal stream: errors carry the <3> priority prefix" grep -q "^<3>.*unknown key colour" "$E2E_DIR/journal.log"
# A disk that is there but cannot be opened is no reason to boot without it.
make_vm india
ln -s "$E2E_DIR/not-mounted/hdd.ovl" "$VRT_ROOT/vm/india/hdd.ovl"
"$VRT" showcmd india >"$E2E_DIR/india.out" 2>"$E2E_DIR/india.log"
check "india: a dangling hdd.ovl symlink -> showcmd exits 2" [ $? = 2 ]
check "india: ... naming the disk" grep -q "vm/india/hdd.ovl" "$E2E_DIR/india.log"
timeout 30 "$VRT_LAUNCH" india >"$E2E_DIR/india-launch.log" 2>&1
check "india: ... and vrt-launch exits 2" [ $? = 2 ]
check "india: ... nothing in the runtime dir" runtime_empty india
"$VRT_LAUNCH" no-such-vm >"$E2E_DIR/nosuch.log" 2>&1
check "unknown VM -> exit 2" [ $? = 2 ]
"$VRT" qmp no-such-vm query-status >/dev/null 2>"$E2E_DIR/qmp-nosuch.log"
check "vrt qmp of an unknown VM -> exit 2" [ $? = 2 ]
check "... saying there is no such VM" grep -q "no such VM no-such-vm" "$E2E_DIR/qmp-nosuch.log"
"$VRT" console no-such-vm </dev/null >/dev/null 2>&1
check "vrt console of an unknown VM -> exit 2" [ $? = 2 ]
"$VRT" qmp alpha query-status >/dev/null 2>"$E2E_DIR/qmp-stopped.log"
check "vrt qmp of a stopped VM -> exit 1" [ $? = 1 ]
check "... saying it is not running" grep -q "VM alpha is not running" "$E2E_DIR/qmp-stopped.log"
"$VRT_LAUNCH" 'Bad_Name' >/dev/null 2>&1
check "invalid VM name -> exit 2" [ $? = 2 ]

e2e_finish
