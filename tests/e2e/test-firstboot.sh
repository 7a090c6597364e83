#!/bin/bash
# First boot with an init script, end to end: vrt create with init= builds a
# NoCloud seed, boots the test guest once (TCG) to run the script, collects
# its output in vm/NAME/init.log, and marks the VM CREATED, or INIT-FAILED;
# the next boot has no seed drive. Failing, hanging and interrupted scripts,
# a missing script, and vrt create --start.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=10
e2e_setup
JSON_GET="$VRT_BUILD_DIR/tests/e2e/json-get"
export VRT_SERVICE_MANAGER=detached

# `vrt create --start` leaves a supervisor that is not our child.
kill_supervisors() {
	local f
	for f in "$VRT_RUNTIME_DIR"/*/pid; do
		[ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
	done
}
trap 'kill_supervisors; e2e_cleanup' EXIT

vmdir() { echo "$VRT_ROOT/vm/$1"; }
has() { [ -e "$(vmdir "$1")/$2" ]; }
hasnt() { [ ! -e "$(vmdir "$1")/$2" ]; }
log_has() { grep -qF -- "$2" "$(vmdir "$1")/init.log"; }
contains() { grep -qF -- "$2" "$1"; }
registered() { grep -qx "$1" "$VRT_ROOT/install/installed.txt"; }
# No QEMU of this VM is left (its -name argument is guest=NAME,...).
no_qemu() { ! pgrep -f "guest=$1,debug-threads" >/dev/null; }
create() {      # create NAME SCRIPT [args]: vrt create from flags; sets ST
	local name=$1 script=$2; shift 2
	"$VRT" create --name "$name" --image testguest --size tiny --net none --init "$script" "$@" \
		>"$E2E_DIR/out" 2>"$E2E_DIR/err"
	ST=$?
}
template_sum() { sha256sum "$VRT_ROOT/images/testguest.qcow2" | cut -d' ' -f1; }
template_before=$(template_sum)

cat >"$VRT_ROOT/init/setup.sh" <<'EOF'
#!/bin/sh
# The seed's init script: hostname, packages, configuration.
echo "init: running on $(hostname) as $VRT_VM_NAME"
hostname fb-configured
echo "init: hostname now $(hostname)"
# apt-get install -y nginx   (on a real guest)
mkdir -p /mnt/disk/etc/vrt-test
echo "written by the init script" >/mnt/disk/etc/vrt-test/marker
echo "init: drives $(ls /dev/vd* | tr '\n' ' ')"
echo "init: to stderr" >&2
EOF

# --- success ------------------------------------------------------------------
t0=$(date +%s)
create fb-good setup.sh --json
check "good: vrt create exits 0" [ "$ST" = 0 ]
cat "$E2E_DIR/err"
check "good: --json says created, init status 0" \
	bash -c '[ "$("$0" state <"$1")" = created ] && [ "$("$0" init_status <"$1")" = 0 ]' "$JSON_GET" "$E2E_DIR/out"
check "good: --json names the init log" [ "$("$JSON_GET" init_log <"$E2E_DIR/out")" = "$(vmdir fb-good)/init.log" ]
check "good: init.log has the script's output" log_has fb-good "init: hostname now fb-configured"
check "good: the hostname came from meta-data local-hostname" log_has fb-good "init: running on fb-good as fb-good"
check "good: stderr reached init.log too" log_has fb-good "init: to stderr"
check "good: the seed was a second drive during the first boot" log_has fb-good "init: drives /dev/vda /dev/vdb"
check "good: init.log ends with status 0" [ "$(tail -n 1 "$(vmdir fb-good)/init.log")" = "VRT-INIT-STATUS: 0" ]
check "good: marked CREATED" has fb-good CREATED
check "good: CREATED names the script" grep -qx "init=setup.sh" "$(vmdir fb-good)/CREATED"
check "good: no INIT-FAILED" hasnt fb-good INIT-FAILED
check "good: the seed is deleted" hasnt fb-good seed.iso
check "good: the generated script is kept as init.sh" grep -q "echo \"written by the init script\"" "$(vmdir fb-good)/init.sh"
check "good: the guest powered itself off" console_has fb-good VRT-TESTGUEST-POWEROFF
check "good: nothing of the VM runs any more" no_qemu fb-good
check "good: its runtime dir is gone" runtime_empty fb-good
check "good: create.log records the first boot" grep -q "fb-good: first boot with init script setup.sh: status 0, VM created" "$VRT_ROOT/log/create.log"
echo "# first boot took $(( $(date +%s) - t0 )) s"

# The next boot: plain vrt-launch, no seed; the file is on the VM's disk.
console_off=$(stat -c %s "$(vmdir fb-good)/log/console.log")
second() { tail -c +"$((console_off + 1))" "$(vmdir fb-good)/log/console.log"; }
second_has() { second | grep -qF -- "$1"; }
launch fb-good
check "second boot: ready" wait_ready fb-good
console_cmd fb-good 'echo "DRIVES: $(ls /dev/vd* | tr "\n" " ")"; echo "MARKER: $(cat /mnt/disk/etc/vrt-test/marker)"'
check "second boot: the init script's file is on the disk" wait_for 20 second_has "MARKER: written by the init script"
check "second boot: only vda, no seed drive" second_has "DRIVES: /dev/vda "
check "second boot: the guest found no NoCloud seed" not second_has "NoCloud seed"
qpid=$(pgrep -f "guest=fb-good,debug-threads")
check "second boot: QEMU has no seed on its command line" \
	bash -c '[ -n "$0" ] && ! tr "\0" " " </proc/$0/cmdline | grep -q seed' "$qpid"
kill -TERM "$LAUNCH_PID"
wait_exit "$LAUNCH_PID" 60
check "second boot: stops cleanly" [ "$EXIT_STATUS" = 0 ]
check "second boot: still CREATED, still no INIT-FAILED" bash -c "[ -e '$(vmdir fb-good)/CREATED' ] && [ ! -e '$(vmdir fb-good)/INIT-FAILED' ]"

# --- a failing script ---------------------------------------------------------
cat >"$VRT_ROOT/init/fail.sh" <<'EOF'
echo "half-done before: $(test -e /mnt/disk/etc/vrt-test/half-done && echo yes || echo no)"
echo "configuring"
mkdir -p /mnt/disk/etc/vrt-test && touch /mnt/disk/etc/vrt-test/half-done
echo "about to fail"
echo "E: package not found" >&2
exit 3
echo "never printed"
EOF
create fb-fail fail.sh
check "fail: vrt create exits 1" [ "$ST" = 1 ]
cat "$E2E_DIR/err"
check "fail: the error names the script and its status" contains "$E2E_DIR/err" "vrt: fb-fail: init script fail.sh failed with status 3"
check "fail: the error ends with the script's last lines" \
	contains "$E2E_DIR/err" "init.log): configuring | about to fail | E: package not found"
errors() { grep -v '^vrt: note: ' "$E2E_DIR/err"; }
check "fail: a note, then the error in one line" [ "$(errors | wc -l)" = 1 ]
check "fail: the VM's name is still printed (it exists)" [ "$(cat "$E2E_DIR/out")" = fb-fail ]
check "fail: marked INIT-FAILED with that line" [ "vrt: fb-fail: $(cat "$(vmdir fb-fail)/INIT-FAILED")" = "$(errors)" ]
check "fail: not CREATED" hasnt fb-fail CREATED
check "fail: init.log kept, with status 3" log_has fb-fail "VRT-INIT-STATUS: 3"
check "fail: set -e stopped the script" not log_has fb-fail "never printed"
check "fail: the seed is deleted" hasnt fb-fail seed.iso
check "fail: the VM's disk and properties are kept" bash -c "[ -f '$(vmdir fb-fail)/hdd.ovl' ] && [ -f '$(vmdir fb-fail)/instance.properties' ]"
check "fail: the name stays registered (names are never reused)" registered fb-fail
check "fail: nothing of the VM runs" no_qemu fb-fail
check "fail: create.log records the failure" grep -q "fb-fail: first boot with init script fail.sh: init script fail.sh failed" "$VRT_ROOT/log/create.log"
create fb-fail fail.sh
check "fail: the name cannot be created again" [ "$ST" = 2 ]

# --- a missing init script: refused before anything exists -------------------
create fb-missing nosuch.sh
check "missing: vrt create exits 2" [ "$ST" = 2 ]
check "missing: the error names init=nosuch.sh" contains "$E2E_DIR/err" "init=nosuch.sh: init script $VRT_ROOT/init/nosuch.sh: No such file or directory"
check "missing: no VM directory" [ ! -e "$(vmdir fb-missing)" ]
check "missing: no staging directory" bash -c "! ls -A '$VRT_ROOT/vm' | grep -q '^\.'"
check "missing: the name is not registered" not registered fb-missing
mkdir "$VRT_ROOT/init/adir.sh"
create fb-dir adir.sh
check "a directory as init script: exit 2, nothing created" bash -c "[ $ST = 2 ] && [ ! -e '$(vmdir fb-dir)' ]"

# --- vrt create --start: first boot, then the real boot -----------------------
printf 'echo quick init\n' >"$VRT_ROOT/init/quick.sh"
create fb-start quick.sh --start
check "start: vrt create --start exits 0" [ "$ST" = 0 ]
cat "$E2E_DIR/err"
check "start: marked CREATED" has fb-start CREATED
check "start: init.log has the output" log_has fb-start "quick init"
check "start: the VM runs afterwards" test -e "$VRT_RUNTIME_DIR/fb-start/pid"
check "start: ready" wait_ready fb-start
check "start: the guest came up again after the first boot's poweroff" \
	bash -c 'sed -n "/VRT-TESTGUEST-POWEROFF/,\$p" "$0" | grep -q VRT-TESTGUEST-READY' "$(vmdir fb-start)/log/console.log"
check "start: the seed was used once only" [ "$(grep -c "NoCloud seed" "$(vmdir fb-start)/log/console.log")" = 1 ]
"$VRT" stop fb-start >/dev/null 2>&1
check "start: stops" wait_for 60 no_qemu fb-start

# --- interrupted: Ctrl-C during the first boot --------------------------------
cat >"$VRT_ROOT/init/hang.sh" <<'EOF'
echo "started, now hanging"
sleep 100000
EOF
"$VRT" create --name fb-int --image testguest --size tiny --net none --init hang.sh >"$E2E_DIR/out" 2>"$E2E_DIR/err" &
cpid=$!
E2E_PIDS+=("$cpid")
check "interrupt: the script runs" wait_for 90 log_has fb-int "started, now hanging"
seed_owner=$(stat -c '%U %a' "$(vmdir fb-int)/seed.iso" 2>&1)
check "interrupt: during the first boot the seed (it holds the script) is QEMU's user's alone ($seed_owner)" \
	[ "$seed_owner" = "vrt 600" ]
kill -INT "$cpid"
wait_exit "$cpid" 60
check "interrupt: vrt create exits 1" [ "$EXIT_STATUS" = 1 ]
cat "$E2E_DIR/err"
check "interrupt: says so" contains "$E2E_DIR/err" "first boot of fb-int interrupted; the VM was powered off"
check "interrupt: marked INIT-FAILED" has fb-int INIT-FAILED
check "interrupt: nothing of the VM runs" no_qemu fb-int
check "interrupt: the seed is deleted" hasnt fb-int seed.iso

# --- a script that never ends: the init timeout --------------------------------
echo "init_timeout=20" >>"$VRT_ROOT/vrt.conf"
t0=$(date +%s)
create fb-hang hang.sh
took=$(( $(date +%s) - t0 ))
check "timeout: vrt create exits 1" [ "$ST" = 1 ]
cat "$E2E_DIR/err"
check "timeout: a clear error" contains "$E2E_DIR/err" "vrt: fb-hang: init script hang.sh did not finish within 20 s; the VM was powered off"
check "timeout: with the last output" contains "$E2E_DIR/err" "init.log): started, now hanging"
check "timeout: after 20 s and not much more ($took s)" bash -c "[ $took -ge 20 ] && [ $took -lt 75 ]"
check "timeout: marked INIT-FAILED" has fb-hang INIT-FAILED
check "timeout: not CREATED" hasnt fb-hang CREATED
check "timeout: the VM is powered off" no_qemu fb-hang
check "timeout: its runtime dir is gone" runtime_empty fb-hang
check "timeout: the seed is deleted" hasnt fb-hang seed.iso
sed -i '/^init_timeout=/d' "$VRT_ROOT/vrt.conf"

# States in vrt list, and no start of a VM whose init never finished.
check "list: a failed first boot shows as init-failed" \
        bash -c '"$0" list | grep -qE "^fb-fail +init-failed"' "$VRT"
"$VRT" start fb-fail >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "start: an init-failed VM is refused with exit 2" [ $? = 2 ]
check "start: ... saying its first boot failed and how to go on" \
        contains "$E2E_DIR/err" "fb-fail: its first boot failed (init script fail.sh failed with status 3"
check "start: ... naming vrt init --reset" contains "$E2E_DIR/err" "run \`vrt init --reset fb-fail\`, or \`vrt destroy fb-fail\`"
check "start: ... and nothing was started" runtime_empty fb-fail
mv "$(vmdir fb-fail)/INIT-FAILED" "$E2E_DIR/init-failed.saved"
check "list: a first boot that never finished shows as init-pending" \
        bash -c '"$0" list | grep -qE "^fb-fail +init-pending"' "$VRT"
"$VRT" start fb-fail >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "start: an init-pending VM is refused with exit 2" [ $? = 2 ]
check "start: ... saying its first boot has not completed" grep -q "first boot (init=) has not completed" "$E2E_DIR/out" "$E2E_DIR/err"
mv "$E2E_DIR/init-failed.saved" "$(vmdir fb-fail)/INIT-FAILED"

# --- vrt init: the first boot again, once the script is fixed ---------------------
"$VRT" init fb-good >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "init: a created VM is refused with exit 2" [ $? = 2 ]
check "init: ... saying it is created" contains "$E2E_DIR/err" "fb-good is created already"
"$VRT" init no-such-vm >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "init: an unknown VM -> exit 2" [ $? = 2 ]
check "init: ... saying so" contains "$E2E_DIR/err" "no such VM no-such-vm"
"$VRT" init fb-fail >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "init: the still failing script -> exit 1" [ $? = 1 ]
check "init: ... with its status" contains "$E2E_DIR/err" "init script fail.sh failed with status 3"
check "init: ... on the same disk: the first run's file is there" log_has fb-fail "half-done before: yes"
check "init: ... still INIT-FAILED, not CREATED" bash -c "[ -e '$(vmdir fb-fail)/INIT-FAILED' ] && [ ! -e '$(vmdir fb-fail)/CREATED' ]"
check "init: ... create.log records the second run" grep -q "fb-fail: first boot again with init script fail.sh: init script fail.sh failed" "$VRT_ROOT/log/create.log"
cat >"$VRT_ROOT/init/fail.sh" <<'EOF'
echo "fixed; half-done before: $(test -e /mnt/disk/etc/vrt-test/half-done && echo yes || echo no)"
EOF
"$VRT" init fb-fail --reset >"$E2E_DIR/out" 2>"$E2E_DIR/err"
st=$?
cat "$E2E_DIR/err"
check "init --reset: the fixed script -> exit 0" [ "$st" = 0 ]
check "init --reset: ... says created" contains "$E2E_DIR/out" "fb-fail: created (init script fail.sh, status 0)"
check "init --reset: ... the disk was fresh: the failed runs' file is gone" log_has fb-fail "fixed; half-done before: no"
check "init --reset: ... init.log is the new run's, ending with status 0" \
	bash -c '[ "$(tail -n 1 "$0")" = "VRT-INIT-STATUS: 0" ] && ! grep -q "about to fail" "$0"' "$(vmdir fb-fail)/init.log"
check "init --reset: ... marked CREATED, INIT-FAILED gone" bash -c "[ -e '$(vmdir fb-fail)/CREATED' ] && [ ! -e '$(vmdir fb-fail)/INIT-FAILED' ]"
check "init --reset: ... no reset leftovers in the VM dir" not bash -c "ls -A '$(vmdir fb-fail)' | grep -q reset"
check "init --reset: ... the overlay still has the template as backing file" \
	bash -c 'qemu-img info --output=json "$0" | grep -q "\"backing-filename\": \"../../images/testguest.qcow2\""' "$(vmdir fb-fail)/hdd.ovl"
"$VRT" init fb-fail >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "init: once created, a further init is refused with exit 2" [ $? = 2 ]

# The spool's inst/ runs the first boot too, as vrt create does.
printf 'image=testguest\nsize=tiny\nnet=none\ninit=quick.sh\n' >"$VRT_ROOT/inst/fb-spool.properties"
"$VRT" spool inst >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "spool inst: a request with init= is instantiated" [ $? = 0 ]
check "spool inst: ... its first boot ran (status 0 in init.log)" log_has fb-spool "VRT-INIT-STATUS: 0"
check "spool inst: ... and it is marked CREATED" has fb-spool CREATED
check "spool inst: ... the request moved to inst/done" test -e "$VRT_ROOT/inst/done/fb-spool.properties"

check "the template is unchanged" [ "$(template_sum)" = "$template_before" ]
check "no QEMU left at all" not pgrep -f "guest=fb-[a-z]*,debug-threads"
e2e_finish
