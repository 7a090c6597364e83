#!/bin/bash
# External snapshots end to end with the real guest: it writes marker A,
# `vrt snapshot` s1 (live), writes B, s2 (live), writes C; stopped, a
# revert to s1 boots with A only, a revert to s2 with A and B, and deleting
# s1 and then s2 (a merge) keeps A and B; while running, deleting a middle
# and then the last snapshot (block-stream) keeps everything. After every step each layer
# passes qemu-img check, qemu-img info --backing-chain agrees with
# `vrt snapshot list --json`, and the template is unchanged. Refusals (bad
# tag, unknown VM or tag, duplicate tag, revert of a running VM)
# exit 2 or 1 and change nothing.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=10
e2e_setup
[ -f "$VRT_ROOT/images/testguest.qcow2" ] || skip_all "the test guest has no template disk"
command -v qemu-img >/dev/null || skip_all "qemu-img (qemu-utils) not installed"
command -v python3 >/dev/null || skip_all "python3 not installed"
TEMPLATE="$VRT_ROOT/images/testguest.qcow2"
VMDIR="$VRT_ROOT/vm/snap"
sum_before=$(sha256sum <"$TEMPLATE")

make_vm snap
"$VRT" image overlay ../../images/testguest.qcow2 "$VMDIR/hdd.ovl" || exit 1

# chain_ok: every layer of the active chain passes qemu-img check, and
# qemu-img's backing chain is the one vrt snapshot list --json reports.
chain_ok() {
	"$VRT" snapshot list --json snap >"$E2E_DIR/list.json" || return 1
	local active
	active=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["active"])' "$E2E_DIR/list.json") || return 1
	qemu-img info --backing-chain --output=json -U "$active" >"$E2E_DIR/info.json" || return 1
	python3 - "$E2E_DIR/list.json" "$E2E_DIR/info.json" <<'PY' || return 1
import json, os, sys
vrt = json.load(open(sys.argv[1]))
qemu = json.load(open(sys.argv[2]))
a = [os.path.realpath(l["path"]) for l in vrt["chain"]]
b = [os.path.realpath(l["filename"]) for l in qemu]
if a != b:
    print("  vrt chain", a, "\n  qemu-img chain", b)
    sys.exit(1)
fmts = [l.get("backing-format") for l in vrt["chain"][:-1]]
if any(f != "qcow2" for f in fmts):
    print("  backing formats", fmts)
    sys.exit(1)
PY
	local l
	for l in $(python3 -c 'import json,sys; [print(l["path"]) for l in json.load(open(sys.argv[1]))["chain"]]' "$E2E_DIR/list.json"); do
		qemu-img check -q -U "$l" || { echo "  qemu-img check $l failed"; return 1; }
	done
}

# chain_ok_live: chain_ok of a running VM. QEMU keeps qcow2 metadata in
# its caches until a flush, so a reader outside sees leaked clusters in
# the active layer; QMP "stop" drains and flushes every block device.
chain_ok_live() {
	"$VRT" qmp snap stop >/dev/null || return 1
	local rc=0
	chain_ok || rc=1
	"$VRT" qmp snap cont >/dev/null || return 1
	return $rc
}

# markers: the guest prints which markers its disk holds.
markers() {	# markers WANT, e.g. "HAVE-AAA-BBB--END"
	console_cmd snap 'echo "HAVE-$(cat /mnt/disk/ma 2>/dev/null)-$(cat /mnt/disk/mb 2>/dev/null)-$(cat /mnt/disk/mc 2>/dev/null)-END"'
	wait_for 20 console_has snap "$1"
}

boot() {
	[ ! -d "$VMDIR/log" ] || : >"$VMDIR/log/console.log"
	launch snap
	wait_ready snap 90 && wait_for 20 console_has snap "/dev/vda mounted on /mnt/disk"
}

stop_vm() {
	kill -TERM "$LAUNCH_PID"
	wait_exit "$LAUNCH_PID" 60 && [ "$EXIT_STATUS" = 0 ]
}

# The state's content and the layers' names: not sizes or times, which the
# running guest's writes to its active layer (and a rewrite of the same
# state) change without any snapshot being taken.
state_sum() {
	{ cat "$VMDIR/snapshots/state" 2>/dev/null; ls -1 "$VMDIR/snapshots" 2>/dev/null; } | sha256sum
}

# refused STATUS DESCRIPTION ARGS...: vrt snapshot ARGS exits STATUS with
# one line on stderr and changes nothing.
refused() {
	local want=$1 what=$2 before st; shift 2
	before=$(state_sum)
	"$VRT" snapshot "$@" >"$E2E_DIR/out" 2>"$E2E_DIR/err"
	st=$?
	check "$what: exit $want" [ "$st" = "$want" ]
	check "$what: ... one line" [ "$(wc -l <"$E2E_DIR/err")" = 1 ]
	check "$what: ... nothing changed" [ "$(state_sum)" = "$before" ]
}

# --json: transaction_ms, the QMP transaction's round trip (the guest's I/O
# drain), a number > 0 and well under the bound; frozen_ms null without --quiesce.
json_times() {	# json_times FILE LIVE QUIESCE
	python3 - "$@" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
live, quiesce = sys.argv[2] == "1", sys.argv[3] == "1"
t, f = o.get("transaction_ms", "missing"), o.get("frozen_ms", "missing")
ok = ("transaction_ms" in o and "frozen_ms" in o and o["live"] == live and
      (isinstance(t, (int, float)) and 0 < t < 10000 if live else t is None) and
      (isinstance(f, (int, float)) and f >= t if quiesce else f is None))
print("#", o)
sys.exit(0 if ok else 1)
PY
}

# --- live snapshots while the guest writes -------------------------------------
check "boots" boot
console_cmd snap 'echo AAA > /mnt/disk/ma; sync; echo WROTE-A$((1+1))'
check "guest wrote A" wait_for 20 console_has snap WROTE-A2
check "snapshot s1 (live)" bash -c '"$0" snapshot snap s1 | grep -q "snapshot s1 taken live"' "$VRT"
console_cmd snap 'echo BBB > /mnt/disk/mb; sync; echo WROTE-B$((1+1))'
check "guest wrote B" wait_for 20 console_has snap WROTE-B2
check "snapshot s2 (live)" bash -c '"$0" snapshot snap s2 | grep -q "snapshot s2 taken live"' "$VRT"
console_cmd snap 'echo CCC > /mnt/disk/mc; sync; echo WROTE-C$((1+1))'
check "guest wrote C" wait_for 20 console_has snap WROTE-C2
check "the running guest sees A, B and C" markers HAVE-AAA-BBB-CCC-END
check "list while running: chain agrees with qemu-img" chain_ok_live
check "list: two snapshots" bash -c '"$0" snapshot list snap | grep -cE "^s[12] " | grep -qx 2' "$VRT"
refused 1 "revert of a running VM" revert snap s1
refused 2 "duplicate tag (running)" snap s1
check "stops" stop_vm

# --- refusals ---------------------------------------------------------------------
refused 2 "bad tag" snap 'bad/tag'
refused 2 "bad tag (leading -)" snap -x
refused 2 "tag too long" snap "$(printf 'a%.0s' {1..33})"
refused 2 "duplicate tag" snap s2
refused 2 "unknown VM" nosuch s3
refused 2 "unknown VM (list)" list nosuch
refused 2 "unknown tag (revert)" revert snap nope
refused 2 "unknown tag (delete)" delete snap nope
refused 2 "bad tag (revert)" revert snap 'a b'
make_vm plain
"$VRT" image overlay ../../images/testguest.qcow2 "$VRT_ROOT/vm/plain/hdd.ovl" || exit 1
for args in "revert plain s1" "delete plain s1" "plain -bad"; do
	"$VRT" snapshot $args 2>/dev/null
	st=$?
	check "no snapshots yet: vrt snapshot $args exits 2" [ "$st" = 2 ]
	check "... and creates nothing" [ ! -e "$VRT_ROOT/vm/plain/snapshots" ] && [ ! -e "$VRT_ROOT/vm/plain/lease" ]
done

# --- revert ------------------------------------------------------------------------
check "revert to s1" "$VRT" snapshot revert snap s1
check "after revert s1: chain agrees, qemu-img check clean" chain_ok
check "boots from s1" boot
check "s1 holds A only" markers HAVE-AAA---END
check "stops" stop_vm
check "revert to s2" "$VRT" snapshot revert snap s2
check "after revert s2: chain agrees, qemu-img check clean" chain_ok
check "boots from s2" boot
check "s2 holds A and B" markers HAVE-AAA-BBB--END
console_cmd snap 'echo DDD > /mnt/disk/mc; sync; echo WROTE-D$((1+1))'
check "guest wrote D after the revert" wait_for 20 console_has snap WROTE-D2
check "stops" stop_vm

# --- delete ------------------------------------------------------------------------
check "delete s1" "$VRT" snapshot delete snap s1
check "after delete s1: chain agrees, qemu-img check clean" chain_ok
check "... s1 gone from the list" not bash -c '"$0" snapshot list snap | grep -q "^s1 "' "$VRT"
check "delete s2 (merges its layer)" bash -c '"$0" snapshot delete snap s2 | grep -q "1 layers merged"' "$VRT"
check "after delete s2: chain agrees, qemu-img check clean" chain_ok
check "... chain is active layer, hdd.ovl, template" \
	[ "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["chain"]))' "$E2E_DIR/list.json")" = 3 ]
check "boots after the deletes" boot
check "A, B and D kept" markers HAVE-AAA-BBB-DDD-END
check "stops" stop_vm
check "the template's sha256 is unchanged" [ "$(sha256sum <"$TEMPLATE")" = "$sum_before" ]
check "the template is still 0444" [ "$(stat -c %a "$TEMPLATE")" = 444 ]

# --- offline snapshot and destroy --------------------------------------------------
check "offline snapshot Pre-Upgrade3 (capitals)" bash -c '"$0" snapshot snap Pre-Upgrade3 | grep -q "snapshot Pre-Upgrade3 taken;" && "$0" snapshot list snap | grep -q "^Pre-Upgrade3 "' "$VRT"
check "after Pre-Upgrade3: chain agrees" chain_ok
# --- live delete: block-stream of a layer QEMU has open -----------------------------
all_markers() {	# all_markers WANT: markers A, B, C/D, E, F
	console_cmd snap 'echo "ALL-$(cat /mnt/disk/ma 2>/dev/null)-$(cat /mnt/disk/mb 2>/dev/null)-$(cat /mnt/disk/mc 2>/dev/null)-$(cat /mnt/disk/me 2>/dev/null)-$(cat /mnt/disk/mf 2>/dev/null)-END"'
	wait_for 20 console_has snap "$1"
}
check "boots for the live deletes" boot
console_cmd snap 'echo EEE > /mnt/disk/me; sync; echo WROTE-E$((1+1))'
check "guest wrote E" wait_for 20 console_has snap WROTE-E2
check "live snapshot L1 (--json: transaction_ms measured, frozen_ms null)" \
	bash -c '"$0" --json snapshot snap L1 >"$1/l1.json"' "$VRT" "$E2E_DIR"
check "... transaction_ms > 0, frozen_ms null" json_times "$E2E_DIR/l1.json" 1 0
console_cmd snap 'echo FFF > /mnt/disk/mf; sync; echo WROTE-F$((1+1))'
check "guest wrote F" wait_for 20 console_has snap WROTE-F2
check "live delete Pre-Upgrade3 (a middle layer streamed into the one above)" \
	bash -c '"$0" snapshot delete snap Pre-Upgrade3 | grep -q "1 layers merged"' "$VRT"
check "... chain agrees, qemu-img check clean" chain_ok_live
check "... the guest still sees everything" all_markers ALL-AAA-BBB-DDD-EEE-FFF-END
check "live delete L1 (streamed into the active layer)" \
	bash -c '"$0" snapshot delete snap L1 | grep -q "1 layers merged"' "$VRT"
check "... chain agrees, qemu-img check clean" chain_ok_live
check "... chain is active layer, hdd.ovl, template" \
	[ "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["chain"]))' "$E2E_DIR/list.json")" = 3 ]
: >"$VMDIR/log/console.log"
check "... the guest still sees everything" all_markers ALL-AAA-BBB-DDD-EEE-FFF-END
check "stops" stop_vm
check "after the live deletes: chain agrees, qemu-img check clean" chain_ok
check "boots after the live deletes" boot
check "A, B, D, E and F kept" all_markers ALL-AAA-BBB-DDD-EEE-FFF-END
check "stops" stop_vm
check "the template's sha256 is still unchanged" [ "$(sha256sum <"$TEMPLATE")" = "$sum_before" ]
# --- --quiesce: the guest agent freezes the file systems around it --------------------
refused 2 "--quiesce of a stopped VM" --quiesce snap Q0
refused 2 "--quiesce with revert" --quiesce revert snap L1
refused 2 "--quiesce with list" --quiesce list snap
check "boots for --quiesce" boot
if wait_for 20 "$VRT" agent snap guest-ping >/dev/null 2>&1; then
	check "--quiesce snapshot Q1 (live, frozen by the agent)" \
		bash -c '"$0" snapshot --quiesce snap Q1 | grep -q "snapshot Q1 taken live, guest file systems frozen"' "$VRT"
	check "... the guest's file systems are thawed again" \
		bash -c '"$0" agent snap guest-fsfreeze-status | grep -q thawed' "$VRT"
	console_cmd snap 'echo GGG > /mnt/disk/mg; sync; echo WROTE-G$((1+1))'
	check "... and the guest writes to its disk" wait_for 20 console_has snap WROTE-G2
	check "... chain agrees, qemu-img check clean" chain_ok
	check "--quiesce --json snapshot Q1j: frozen_ms measured, at least transaction_ms" \
		bash -c '"$0" --json snapshot --quiesce snap Q1j >"$1/q1j.json"' "$VRT" "$E2E_DIR"
	check "... frozen_ms >= transaction_ms > 0" json_times "$E2E_DIR/q1j.json" 1 1
	check "delete Q1j (live)" "$VRT" snapshot delete snap Q1j
	console_cmd snap 'killall qemu-ga; echo KILLED-GA$((1+1))'
	check "guest agent stopped in the guest" wait_for 20 console_has snap KILLED-GA2
	sum=$(state_sum)
	start_ms=$(( $(date +%s%N) / 1000000 ))
	"$VRT" snapshot --quiesce snap Q2 >"$E2E_DIR/q2.out" 2>&1
	st=$?
	took=$(( $(date +%s%N) / 1000000 - start_ms ))
	check "--quiesce without an agent: exit 1 within the bound ($took ms)" [ "$st" = 1 ] && [ "$took" -lt 10000 ]
	check "... saying no agent answered" grep -q "no guest agent answered" "$E2E_DIR/q2.out"
	check "... and no snapshot, no new layer" [ "$(state_sum)" = "$sum" ]
	check "delete Q1 (live)" "$VRT" snapshot delete snap Q1
else
	echo "# the test guest runs no qemu-ga: --quiesce checks skipped"
fi
check "stops" stop_vm
check "export of a VM with snapshots holds the active layer's data" bash -c \
	'"$0" export snap "$1/snap.tar" >/dev/null && mkdir -p "$1/x" && tar xf "$1/snap.tar" -C "$1/x" disk.qcow2 &&
	 active=$("$0" snapshot list --json snap | python3 -c "import json,sys; print(json.load(sys.stdin)[\"active\"])") &&
	 qemu-img compare -q "$1/x/disk.qcow2" "$active"' "$VRT" "$E2E_DIR"
check "export --with-template of a VM with snapshots is refused" \
	bash -c '! "$0" export --with-template snap "$1/snapt.tar" 2>&1 && [ ! -e "$1/snapt.tar" ]' "$VRT" "$E2E_DIR"
check "offline snapshot Off4 --json" bash -c '"$0" --json snapshot snap Off4 >"$1/off4.json"' "$VRT" "$E2E_DIR"
check "... not live, transaction_ms and frozen_ms null" json_times "$E2E_DIR/off4.json" 0 0
check "destroy removes the snapshot layers" bash -c '"$0" destroy snap >/dev/null && [ ! -e "$1/snapshots" ]' "$VRT" "$VMDIR"

e2e_finish
