#!/bin/bash
# Backups end to end with the real guest, which keeps writing to its disk:
# a full backup and incrementals of the running VM, each taken from a paused
# guest of which a reference copy is made first (qemu-img convert -U of the
# active chain) and resumed while the backup job runs (so QEMU's
# copy-before-write is exercised); a stop and start between incrementals
# (the persistent bitmap survives); a `vrt backup` killed with SIGKILL
# mid-job (no file under a point's name, the next incremental reaps the
# stale job and is still complete); one killed (test hook) between naming
# its file and writing backup.state, live and offline (the next backup
# moves the unlisted file aside as .orphan, says so, and is complete);
# a live snapshot (the next incremental
# is refused: must be full); an offline full backup. Every point is
# restored into a new VM and compared with qemu-img compare against its
# reference. Refusals exit 2 with one line and leave nothing.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=10
e2e_setup
[ -f "$VRT_ROOT/images/testguest.qcow2" ] || skip_all "the test guest has no template disk"
command -v qemu-img >/dev/null || skip_all "qemu-img (qemu-utils) not installed"
command -v socat >/dev/null || skip_all "socat not installed"
VMDIR="$VRT_ROOT/vm/bk"
DEST="$E2E_DIR/dest"
LOGS=$(mktemp -d /tmp/vrt-e2e-logs.XXXXXX)
trap 'e2e_cleanup; rm -rf "$LOGS"' EXIT
make_vm bk
"$VRT" image overlay ../../images/testguest.qcow2 "$VMDIR/hdd.ovl" || exit 1

boot() {
	: >"$VMDIR/log/console.log" 2>/dev/null
	launch bk
	wait_ready bk 90 && wait_for 20 console_has bk "/dev/vda mounted on /mnt/disk"
}

stop_vm() {
	kill -TERM "$LAUNCH_PID"
	wait_exit "$LAUNCH_PID" 60 && [ "$EXIT_STATUS" = 0 ]
}

# The guest writes random data into two files, forever.
writer() {
	console_cmd bk '(while true; do dd if=/dev/urandom of=/mnt/disk/w1 bs=64k count=8 conv=notrunc 2>/dev/null; dd if=/dev/urandom of=/mnt/disk/w2 bs=4k count=40 seek=$(($RANDOM % 200)) conv=notrunc 2>/dev/null; sync; done) & echo WRITER-$((40+2))'
	wait_for 20 console_has bk WRITER-42
}

active() {
	"$VRT" snapshot list --json bk | sed -n 's/.*"active": *"\([^"]*\)".*/\1/p'
}

job_running() {
	"$VRT" qmp bk query-jobs | grep -q '"vrt-backup"'
}

# job_started PID PARTIAL OLD_INODE: our job runs (its .partial is a new
# file, made after any stale job was reaped; a stale job has the same id),
# or our vrt backup already ended.
job_started() {
	! kill -0 "$1" 2>/dev/null && return 0
	[ -e "$2" ] && [ "$(stat -c %i "$2")" != "$3" ] && job_running
}

# point N ARGS...: pause, reference copy refN.qcow2, start vrt backup ARGS
# (its point in time is the job's start), resume, wait for it.
point() {
	local n=$1; shift
	"$VRT" qmp bk stop >/dev/null || return 1
	qemu-img convert -U -O qcow2 "$(active)" "$E2E_DIR/ref$n.qcow2" || return 1
	local part="$DEST/bk-000$n.qcow2.partial" old
	old=$(stat -c %i "$part" 2>/dev/null)
	"$VRT" backup bk "$DEST" "$@" >"$E2E_DIR/out$n" 2>"$E2E_DIR/err$n" &
	local pid=$!
	# The job runs while the guest is paused too: resume once it started
	# (or, unthrottled, already ended).
	wait_for 20 job_started "$pid" "$part" "$old"
	"$VRT" qmp bk cont >/dev/null || return 1
	wait "$pid" || { cat "$E2E_DIR/err$n"; return 1; }
	[ -f "$DEST/bk-000$n.qcow2" ] && [ ! -e "$DEST/bk-000$n.qcow2.partial" ]
}

dest_sum() {
	ls -la "$1" 2>/dev/null | sha256sum
}

# refused DESCRIPTION DIR ARGS...: vrt ARGS exits 2 with one line and DIR
# (a backup directory, or the VM root) does not change.
refused() {
	local what=$1 dir=$2 before st; shift 2
	before=$(dest_sum "$dir"; ls "$VRT_ROOT/vm" | sha256sum)
	"$VRT" "$@" >"$LOGS/out" 2>"$LOGS/err"
	st=$?
	check "$what: exit 2" [ "$st" = 2 ]
	check "$what: ... one line" [ "$(wc -l <"$LOGS/err")" = 1 ]
	check "$what: ... nothing changed" [ "$(dest_sum "$dir"; ls "$VRT_ROOT/vm" | sha256sum)" = "$before" ]
}

# restored N NAME: point N restored as VM NAME equals its reference.
restored() {
	"$VRT" restore --point "$1" "$DEST" "$2" >"$E2E_DIR/rout" 2>"$E2E_DIR/rerr" || { cat "$E2E_DIR/rerr"; return 1; }
	qemu-img check -q "$VRT_ROOT/vm/$2/hdd.img" &&
		qemu-img compare -q "$E2E_DIR/ref$1.qcow2" "$VRT_ROOT/vm/$2/hdd.img"
}

# --- refusals before any backup ------------------------------------------------
touch "$E2E_DIR/file"
refused "unknown VM" "$E2E_DIR" backup nosuch "$E2E_DIR/d1"
check "... no DEST made" [ ! -e "$E2E_DIR/d1" ]
refused "DEST is a file" "$E2E_DIR" backup bk "$E2E_DIR/file"
refused "DEST's parent missing" "$E2E_DIR" backup bk "$E2E_DIR/no/such"
mkdir "$E2E_DIR/other" && touch "$E2E_DIR/other/x"
refused "DEST not empty, no backup.state" "$E2E_DIR/other" backup bk "$E2E_DIR/other"
refused "--incremental without a full" "$E2E_DIR" backup bk "$E2E_DIR/d2" --incremental
check "... no DEST made" [ ! -e "$E2E_DIR/d2" ]
refused "bad --speed" "$E2E_DIR" backup bk "$E2E_DIR/d3" --speed fast
refused "restore of a non-backup dir" "$E2E_DIR/other" restore "$E2E_DIR/other" r9

# --- live: full + incrementals while the guest writes ---------------------------
check "boots" boot
check "guest writer runs" writer
check "point 0: full backup of the running VM" point 0 --speed 16M
check "... says live and bitmap kept" grep -q "full backup point 0.*bitmap kept" "$E2E_DIR/out0"
check "... qemu-img check" qemu-img check -q "$DEST/bk-0000.qcow2"
check "... standalone" not bash -c 'qemu-img info "$0" | grep -q "backing file"' "$DEST/bk-0000.qcow2"
check "... bitmap in QEMU" bash -c '"$0" qmp bk query-named-block-nodes | grep -q "vrt-backup-"' "$VRT"
sleep 2
check "point 1: incremental" point 1 --incremental --speed 4M
check "... backing file bk-0000.qcow2, format qcow2" bash -c \
	'qemu-img info --output=json "$0" | grep -q "\"backing-filename\": \"bk-0000.qcow2\"" && qemu-img info --output=json "$0" | grep -q "\"backing-filename-format\": \"qcow2\""' \
	"$DEST/bk-0001.qcow2"
check "... holds only the changed clusters (smaller than the disk)" [ "$(stat -c %s "$DEST/bk-0001.qcow2")" -lt 33554432 ]
check "stops" stop_vm
check "boots again" boot
check "guest writer runs again" writer
sleep 2
check "point 2: incremental after a stop and start (bitmap persisted)" point 2 --incremental
# --- killed mid-job ---------------------------------------------------------------
sleep 3         # enough changed clusters that the throttled job takes long
"$VRT" backup bk "$DEST" --incremental --speed 8K >/dev/null 2>&1 &
kpid=$!
check "killed: the throttled job runs" wait_for 20 job_running
kill -9 $kpid; wait $kpid 2>/dev/null
check "killed: no file with the final name" [ ! -e "$DEST/bk-0003.qcow2" ]
check "killed: a .partial is left" [ -e "$DEST/bk-0003.qcow2.partial" ]
check "killed: the state lists 3 points" [ "$(grep -c '^point\.' "$DEST/backup.state")" = 3 ]
check "killed: the stale job still exists in QEMU" job_running
check "point 3: the next incremental reaps the stale job" point 3 --incremental
check "... no stale job left" not job_running
check "... no partial left" [ -z "$(ls "$DEST" | grep partial)" ]
check "... no stale target node" not bash -c '"$0" qmp bk query-named-block-nodes | grep -q "vrt-backup-target"' "$VRT"
check "... nor tmp bitmap" not bash -c '"$0" qmp bk query-named-block-nodes | grep -q "vrt-backup-tmp"' "$VRT"

# --- killed between naming the file and writing backup.state -----------------------
# The test hook kills vrt backup (SIGKILL) right after the rename and the
# fsync of DEST: a complete file that backup.state does not list. The next
# backup moves it aside (never a point: the bitmap was not rotated for it)
# and its incremental still holds every change since point 3.
killed_after_rename() {     # killed_after_rename N ARGS...
	local n=$1 st; shift
	VRT_TEST_BACKUP_KILL=published "$VRT" backup bk "$DEST" "$@" >"$LOGS/kout" 2>"$LOGS/kerr"
	st=$?
	[ "$st" = 137 ] && [ -f "$DEST/bk-000$n.qcow2" ] && [ ! -e "$DEST/bk-000$n.qcow2.partial" ] &&
		qemu-img check -q "$DEST/bk-000$n.qcow2" &&
		[ "$(grep -c '^point\.' "$DEST/backup.state")" = "$n" ] && grep -qx "next=$n" "$DEST/backup.state"
}
# set_aside N: point N moved the unlisted file (and its .properties) aside, said so in one line.
set_aside() {
	local n=$1
	[ "$(grep -c "note: .*bk-000$n.qcow2.orphan" "$E2E_DIR/err$n")" = 1 ] &&
		[ -f "$DEST/bk-000$n.qcow2.orphan" ] && [ -f "$DEST/bk-000$n.properties.orphan" ] &&
		[ -f "$DEST/bk-000$n.properties" ] && grep -q "^point\.$n=" "$DEST/backup.state" &&
		grep -q "moved aside as .*bk-000$n.qcow2.orphan" "$VRT_ROOT/log/backup.log"
}
sleep 2
check "killed after the rename: a complete, unlisted bk-0004.qcow2" killed_after_rename 4 --incremental
refused "restore of the unlisted file" "$DEST" restore "$DEST/bk-0004.qcow2" rx
check "... says why" grep -q "died before recording it" "$LOGS/err"
check "restore of DEST still takes point 3 (the newest listed)" bash -c \
	'"$0" restore --json "$1" rk | grep -q "\"point\":3" && qemu-img compare -q "$2/ref3.qcow2" "$3/vm/rk/hdd.img"' \
	"$VRT" "$DEST" "$E2E_DIR" "$VRT_ROOT"
sleep 2
check "point 4: the next incremental moves the unlisted file aside" point 4 --incremental
check "... one note line, the .orphan files, the action log" set_aside 4
check "... its backing file is point 3" bash -c \
	'qemu-img info --output=json "$0" | grep -q "\"backing-filename\": \"bk-0003.qcow2\""' "$DEST/bk-0004.qcow2"
check "... the state lists 5 points" [ "$(grep -c '^point\.' "$DEST/backup.state")" = 5 ]

# --- a live snapshot moves the active layer: the next backup must be full ---------
check "snapshot s1 (live)" "$VRT" snapshot bk s1
refused "incremental after a snapshot" "$DEST" backup bk "$DEST" --incremental
check "... says it must be full" grep -q "must be full" "$LOGS/err"
check "point 5: full after the snapshot" point 5
check "point 6: incremental on the new layer" point 6 --incremental
check "stops" stop_vm
refused "incremental of a stopped VM" "$DEST" backup bk "$DEST" --incremental

# --- offline full ------------------------------------------------------------------
qemu-img convert -U -O qcow2 "$(active)" "$E2E_DIR/ref7.qcow2"
check "offline: killed after the rename: a complete, unlisted bk-0007.qcow2" killed_after_rename 7
check "point 7: full backup of the stopped VM" bash -c '"$0" backup bk "$1" >"$2/out7" 2>"$2/err7" && grep -q "copied offline" "$2/out7"' "$VRT" "$DEST" "$E2E_DIR"
check "... moved the unlisted file aside" set_aside 7
check "offline: killed after the rename again: an unlisted bk-0008.qcow2" killed_after_rename 8
touch "$DEST/bk-0008.qcow2.orphan"      # taken: the next name is .orphan.2
check "point 8: --json names the file moved aside as .orphan.2" bash -c \
	'"$0" --json backup bk "$1" >"$2/out8" 2>"$2/err8" && grep -q "\"orphan\":\"$1/bk-0008.qcow2.orphan.2\"" "$2/out8" &&
	 [ -f "$1/bk-0008.qcow2.orphan.2" ] && [ ! -s "$1/bk-0008.qcow2.orphan" ] && grep -q "^point\.8=full" "$1/backup.state"' \
	"$VRT" "$DEST" "$E2E_DIR"
cp "$E2E_DIR/ref7.qcow2" "$E2E_DIR/ref8.qcow2"  # the stopped VM's disk did not change
refused "incremental after an offline full (no bitmap)" "$DEST" backup bk "$DEST" --incremental
# Every aside name taken (.orphan, .orphan.2 ... .orphan.99): refused, nothing moved.
check "offline: killed after the rename: an unlisted bk-0009.qcow2" killed_after_rename 9
touch "$DEST/bk-0009.qcow2.orphan" "$DEST"/bk-0009.qcow2.orphan.{2..99}
refused "no name left to move the unlisted file aside" "$DEST" backup bk "$DEST"
check "... says so" grep -q "cannot move aside .*bk-0009.qcow2" "$LOGS/err"
check "... the unlisted file is still there, unlisted" bash -c '[ -f "$0/bk-0009.qcow2" ] && grep -qx next=9 "$0/backup.state"' "$DEST"
rm -f "$DEST"/bk-0009.qcow2.orphan*

# --- a DEST that fills up -------------------------------------------------------------
# One line naming the file that could not be written, and nothing left.
mkdir "$E2E_DIR/small"
check "a 1 MiB tmpfs as DEST's parent" mount -t tmpfs -o size=1m tmpfs "$E2E_DIR/small"
check "full DEST: exit 1" bash -c '"$0" backup bk "$1/d" >/dev/null 2>"$2/errfull"; [ $? = 1 ]' "$VRT" "$E2E_DIR/small" "$E2E_DIR"
check "... one line naming the file" bash -c '[ "$(wc -l <"$0")" = 1 ] &&
	grep -q "cannot write .*/small/d/bk-0000.qcow2: No space left on device" "$0"' "$E2E_DIR/errfull"
check "... nothing left behind" [ -z "$(ls -A "$E2E_DIR/small")" ]
umount "$E2E_DIR/small"

# --- restore every point -------------------------------------------------------------
for n in 0 1 2 3 4 5 6 7 8; do
	check "restore point $n: identical to the paused guest's disk" restored $n r$n
done
# A restored VM is a VM: it boots from its copied disk and mounts it.
restored_boots() {
	: >"$VRT_ROOT/vm/r7/log/console.log" 2>/dev/null
	launch r7
	local pid=$LAUNCH_PID ok=0
	wait_ready r7 90 && wait_for 20 console_has r7 "/dev/vda mounted on /mnt/disk" && ok=1
	kill -TERM "$pid"
	wait_exit "$pid" 60
	[ "$ok" = 1 ] && [ "$EXIT_STATUS" = 0 ]
}
check "restored VM boots and mounts its disk" restored_boots
check "restore by file name picks that point" bash -c \
	'"$0" restore --json "$1/bk-0002.qcow2" rf | grep -q "\"point\":2" && qemu-img compare -q "$2/ref2.qcow2" "$3/vm/rf/hdd.img"' \
	"$VRT" "$DEST" "$E2E_DIR" "$VRT_ROOT"
check "restored instance: disk=copy" grep -q "^disk=copy" "$VRT_ROOT/vm/r1/instance.properties"

# --- restore refusals ----------------------------------------------------------------
refused "restore onto a name in use" "$DEST" restore "$DEST" r1
refused "restore of the original name (registered)" "$DEST" restore "$DEST"
refused "restore of a point that does not exist" "$DEST" restore --point 42 "$DEST" rx
cp -a "$DEST" "$E2E_DIR/broken"
rm "$E2E_DIR/broken/bk-0001.qcow2"
refused "restore with a missing chain link" "$E2E_DIR/broken" restore --point 2 "$E2E_DIR/broken" rx
cp -a "$DEST" "$E2E_DIR/wrong"
qemu-img rebase -u -F qcow2 -b bk-0000.qcow2 "$E2E_DIR/wrong/bk-0002.qcow2"
refused "restore with a wrong backing file" "$E2E_DIR/wrong" restore --point 2 "$E2E_DIR/wrong" rx
cp -a "$DEST" "$E2E_DIR/corrupt"
truncate -s 1000 "$E2E_DIR/corrupt/bk-0004.qcow2"
refused "restore of a corrupt file" "$E2E_DIR/corrupt" restore --point 4 "$E2E_DIR/corrupt" rx
sed -i 's/^next=.*/next=x/' "$E2E_DIR/corrupt/backup.state"
refused "restore with a bad backup.state" "$E2E_DIR/corrupt" restore "$E2E_DIR/corrupt" rx
check "no staging left in vm/" [ -z "$(ls -A "$VRT_ROOT/vm" | grep '^\.')" ]
check "rx never registered" not grep -qx rx "$VRT_ROOT/install/installed.txt"
e2e_finish
