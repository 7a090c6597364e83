#!/bin/bash
# Root never follows a link it does not own (issue 18, item 2). At every
# path root touches under a directory someone else can write (or where a
# name could be planted) the test puts (a) a symbolic link and (b) a hard
# link to a root-owned canary (mode 0600, known content), runs the command
# that makes root touch that path, and checks that the canary's content,
# mode and owner are unchanged and that the command refused with one line
# (exit 2) or logged its refusal, or replaced the link safely. The table
# of paths is README's "Paths root touches". No guest boots: every refusal
# comes before QEMU.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=5
e2e_setup
command -v setpriv >/dev/null || skip_all "setpriv missing (util-linux)"
command -v useradd >/dev/null || skip_all "useradd missing (passwd)"
export VRT_SERVICE_MANAGER=detached

operator_setup vrtpsop vrtpsops

# --- the canaries: root-owned, 0600, known content ------------------------------
CAN=$E2E_DIR/canary
mkdir -m 0755 "$CAN"
printf 'image=testguest\nsize=tiny\nnet=none\n# canary-5f1e: root only\n' >"$CAN/secret"
# A disk vrt-launch would accept (an overlay on the template, as a VM's
# hdd.ovl is), so that a link to it gets as far as the hand-over.
check "create a1" bash -c '"$0" create --name a1 --image testguest --size tiny --net none >/dev/null' "$VRT"
cp "$VRT_ROOT/vm/a1/hdd.ovl" "$CAN/disk.qcow2"
chown root:root "$CAN/secret" "$CAN/disk.qcow2"
chmod 0600 "$CAN/secret" "$CAN/disk.qcow2"
state() { echo "$(sha256sum <"$1") $(stat -c '%u:%g %a' "$1")"; }
SECRET_STATE=$(state "$CAN/secret")
DISK_STATE=$(state "$CAN/disk.qcow2")
canary_ok() {
	[ "$(state "$CAN/secret")" = "$SECRET_STATE" ] || { echo "  secret changed: $(state "$CAN/secret")"; return 1; }
	[ "$(state "$CAN/disk.qcow2")" = "$DISK_STATE" ] || { echo "  disk.qcow2 changed: $(state "$CAN/disk.qcow2")"; return 1; }
}
# plant KIND PATH TARGET: a symbolic link (made by the operator when
# operator=1) or a hard link (made by root: fs.protected_hardlinks keeps
# others from linking a root-only file, so this stands in for a host
# without it, or an NFS client that does not enforce it).
plant() {
	rm -f "$2"
	case $1 in
	sym) if [ "${operator:-0}" = 1 ]; then as_op ln -s "$3" "$2"; else ln -s "$3" "$2"; fi ;;
	hard) ln "$3" "$2" ;;
	esac
}
what() { [ "$1" = sym ] && echo "a symbolic link (not followed)" || echo "a hard link (2 names)"; }
# refuses STATUS TEXT COMMAND...: COMMAND exits STATUS with one line on
# stderr that contains TEXT.
refuses() {
	local want=$1 text=$2 st; shift 2
	"$@" >"$E2E_DIR/out" 2>"$E2E_DIR/err"
	st=$?
	[ "$st" = "$want" ] || { echo "  exit $st, not $want:"; cat "$E2E_DIR/err"; return 1; }
	[ "$(wc -l <"$E2E_DIR/err")" = 1 ] || { echo "  not one line:"; cat "$E2E_DIR/err"; return 1; }
	grep -qF -- "$text" "$E2E_DIR/err" || { echo "  no \"$text\" in:"; cat "$E2E_DIR/err"; return 1; }
}
# launch_refuses TEXT ARGS...: vrt-launch (foreground) exits 2 and logs TEXT.
launch_refuses() {
	local text=$1 st; shift
	timeout 60 "$VRT_LAUNCH" "$@" >"$E2E_DIR/launch.out" 2>&1
	st=$?
	[ "$st" = 2 ] || { echo "  vrt-launch exit $st, not 2:"; tail -n 3 "$E2E_DIR/launch.out"; return 1; }
	grep -qF -- "$text" "$E2E_DIR/launch.out" || { echo "  no \"$text\" in:"; tail -n 3 "$E2E_DIR/launch.out"; return 1; }
}
running() { [ -e "$VRT_RUNTIME_DIR/$1/pid" ] && kill -0 "$(cat "$VRT_RUNTIME_DIR/$1/pid")" 2>/dev/null; }

# --- vm/NAME/: root's directory; QEMU's user owns the disk it writes -----------
V=$VRT_ROOT/vm/a1
check "... vm/a1 is root's, 0755" [ "$(stat -c '%U %a' "$V")" = "root 755" ]
cp --preserve=all "$V/hdd.ovl" "$E2E_DIR/a1.ovl"
mkdir -p "$V/log"
for kind in sym hard; do
	plant $kind "$V/hdd.ovl" "$CAN/disk.qcow2"
	check "hdd.ovl $kind: vrt start refuses, one line" refuses 2 "hdd.ovl: $(what $kind)" "$VRT" start a1
	check "... vrt-launch refuses it too (exit 2)" launch_refuses "hdd.ovl: $(what $kind)" a1
	check "... not running" not running a1
	check "... the canary is unchanged" canary_ok
	rm -f "$V/hdd.ovl" && cp --preserve=all "$E2E_DIR/a1.ovl" "$V/hdd.ovl"

	plant $kind "$V/log/console.log" "$CAN/secret"
	check "log/console.log $kind: vrt start refuses" refuses 2 "console.log: $(what $kind)" "$VRT" start a1
	check "... vrt-launch refuses it too" launch_refuses "console.log: $(what $kind)" a1
	check "... the canary is unchanged" canary_ok
	rm -f "$V/log/console.log"

	# First boot: vrt-launch --seed-image hands the seed to QEMU's user and
	# truncates the init log.
	plant $kind "$V/seed.iso" "$CAN/disk.qcow2"
	check "--seed-image $kind: vrt-launch refuses" \
		launch_refuses "seed.iso: $(what $kind)" --seed-image "$V/seed.iso" --init-log "$V/init.log" a1
	check "... the canary keeps owner and mode" canary_ok
	rm -f "$V/seed.iso" "$V/init.log"
	: >"$V/seed.iso"
	plant $kind "$V/init.log" "$CAN/secret"
	check "--init-log $kind: vrt-launch refuses, nothing truncated" \
		launch_refuses "init.log: $(what $kind)" --seed-image "$V/seed.iso" --init-log "$V/init.log" a1
	check "... the canary is unchanged" canary_ok
	check "... the seed was not handed over either" [ "$(stat -c %U "$V/seed.iso")" = root ]
	rm -f "$V/seed.iso" "$V/init.log"
done
# A directory planted as a symbolic link: vm/a1/log -> elsewhere.
mkdir -m 0755 "$E2E_DIR/elsewhere"
mv "$V/log" "$E2E_DIR/a1.log.saved"
ln -s "$E2E_DIR/elsewhere" "$V/log"
check "log/ a symlink to a directory: vrt start refuses" refuses 2 "log: a symbolic link (not followed)" "$VRT" start a1
check "... vrt-launch refuses it too" launch_refuses "log/console.log: a symbolic link (not followed)" a1
check "... nothing created where it points" [ -z "$(ls -A "$E2E_DIR/elsewhere")" ]
rm "$V/log" && mv "$E2E_DIR/a1.log.saved" "$V/log"
check "a1 starts once its files are its own again" bash -c '"$0" start a1 >/dev/null' "$VRT"
check "... and stops" bash -c '"$0" stop --force a1 >/dev/null' "$VRT"
check "... the overlay was handed to QEMU's user, the canary not" \
	bash -c '[ "$(stat -c %U "$0/hdd.ovl")" = vrt ]' "$V"
check "... the canary is unchanged" canary_ok

if [ -f /usr/share/OVMF/OVMF_VARS.fd ] && [ -f /usr/share/OVMF/OVMF_CODE.fd ]; then
	check "create u1 (firmware=uefi)" bash -c '"$0" create --name u1 --image testguest --size tiny --net none --firmware uefi >/dev/null' "$VRT"
	for kind in sym hard; do
		plant $kind "$VRT_ROOT/vm/u1/OVMF_VARS.fd" "$CAN/disk.qcow2"
		check "OVMF_VARS.fd $kind: vrt start refuses" refuses 2 "OVMF_VARS.fd: $(what $kind)" "$VRT" start u1
		check "... vrt-launch refuses it too" launch_refuses "OVMF_VARS.fd: $(what $kind)" u1
		check "... the canary is unchanged" canary_ok
	done
	rm -f "$VRT_ROOT/vm/u1/OVMF_VARS.fd"
fi

# Snapshots and exports: new files, made anew; a link in their place is
# replaced or refused, never written through.
check "create a4, a5" bash -c '"$0" create --name a4 --image testguest --size tiny --net none >/dev/null &&
	"$0" create --name a5 --image testguest --size tiny --net none >/dev/null' "$VRT"
for kind in sym hard; do
	vm=$([ $kind = sym ] && echo a4 || echo a5)
	mkdir -p "$VRT_ROOT/vm/$vm/snapshots"
	plant $kind "$VRT_ROOT/vm/$vm/snapshots/1.qcow2" "$CAN/disk.qcow2"
	check "snapshots/1.qcow2 $kind: vrt snapshot succeeds" bash -c '"$0" snapshot "$1" s1 >/dev/null' "$VRT" $vm
	check "... the link was replaced by the new layer" \
		bash -c '[ -f "$0" ] && [ ! -L "$0" ] && [ "$(stat -c %h "$0")" = 1 ]' "$VRT_ROOT/vm/$vm/snapshots/1.qcow2"
	check "... the canary is unchanged" canary_ok
	plant $kind "$E2E_DIR/$vm.tar" "$CAN/secret"
	check "vrt export onto a $kind: refused" refuses 2 "$vm.tar: already exists" "$VRT" export a1 "$E2E_DIR/$vm.tar"
	check "... the canary is unchanged" canary_ok
	rm -f "$E2E_DIR/$vm.tar"
	mkdir -p "$E2E_DIR/bk-$vm"
	plant $kind "$E2E_DIR/bk-$vm/.lock" "$CAN/secret"
	check "a backup directory whose .lock is a $kind: vrt backup refuses" \
		refuses 2 ".lock: $(what $kind)" "$VRT" backup $vm "$E2E_DIR/bk-$vm"
	check "... the canary is unchanged" canary_ok
	rm -f "$E2E_DIR/bk-$vm/.lock"
done

check "create a7" bash -c '"$0" create --name a7 --image testguest --size tiny --net none >/dev/null' "$VRT"
ln -s "$E2E_DIR/elsewhere" "$VRT_ROOT/vm/a7/snapshots"
check "snapshots/ a symlink to a directory: vrt snapshot refuses" \
	refuses 2 "snapshots/.lock: a symbolic link (not followed)" "$VRT" snapshot a7 s1
check "... nothing created where it points" [ -z "$(ls -A "$E2E_DIR/elsewhere")" ]

# QEMU's user owns hdd.ovl and may write any backing file name into it:
# an offline backup or export (root reading the whole chain) must not read
# a file outside the VM's directory and images/.
check "create a8" bash -c '"$0" create --name a8 --image testguest --size tiny --net none >/dev/null' "$VRT"
qemu-img create -q -f qcow2 -b "$CAN/secret" -F raw "$VRT_ROOT/vm/a8/hdd.ovl" && chown vrt: "$VRT_ROOT/vm/a8/hdd.ovl"
check "hdd.ovl backed by a root-only file: vrt backup refuses" \
	refuses 2 "backing file $CAN/secret is outside the VM's directory and images/: not read" "$VRT" backup a8 "$E2E_DIR/bk-a8"
check "... no backup of it" bash -c '! ls "$0"/*.qcow2 >/dev/null 2>&1' "$E2E_DIR/bk-a8"
check "... vrt export refuses" \
	refuses 2 "backing file $CAN/secret is outside the VM's directory and images/: not read" "$VRT" export a8 "$E2E_DIR/a8.tar"
check "... no archive" [ ! -e "$E2E_DIR/a8.tar" ]
check "... vrt-launch refuses to start it (not an overlay on its template)" launch_refuses "is not an overlay on" a8
check "... the canary is unchanged" canary_ok

# log/ (the activity logs): root's, appended to by every command.
plant sym "$VRT_ROOT/log/create.log" "$CAN/secret"
"$VRT" create --name a2 --image testguest --size tiny --net none >/dev/null 2>"$E2E_DIR/err"
check "log/create.log a symlink: the create still works" [ -f "$VRT_ROOT/vm/a2/instance.properties" ]
check "... the link is not followed" canary_ok
plant hard "$VRT_ROOT/log/create.log" "$CAN/secret"
"$VRT" destroy a2 >/dev/null 2>&1
"$VRT" create --name a3 --image testguest --size tiny --net none >/dev/null 2>"$E2E_DIR/err"
check "log/create.log a hard link: nothing appended through it" canary_ok
rm -f "$VRT_ROOT/log/create.log"

mv "$VRT_ROOT/log" "$E2E_DIR/root.log.saved"
ln -s "$E2E_DIR/elsewhere" "$VRT_ROOT/log"
"$VRT" create --name a6 --image testguest --size tiny --net none >/dev/null 2>&1
check "the root's log/ a symlink to a directory: no activity log written there" [ -z "$(ls -A "$E2E_DIR/elsewhere")" ]
rm "$VRT_ROOT/log" && mv "$E2E_DIR/root.log.saved" "$VRT_ROOT/log"

# --- the spool: inst/ start/ stop/ destroy/ are root:GROUP 2775 -----------------
echo "group=$OP_GROUP" >>"$VRT_ROOT/vrt.conf"
spool() { timeout 60 "$VRT" spool >"$E2E_DIR/spool.out" 2>&1; }
logged() { grep -qF -- "$2" "$VRT_ROOT/log/$1.log"; }
check "vrt spool with group= makes the queues the group's" spool
check "... start/ is root:$OP_GROUP 2775" [ "$(stat -c '%U:%G %a' "$VRT_ROOT/start")" = "root:$OP_GROUP 2775" ]
operator=1
for kind in sym hard; do
	for q in start stop destroy; do
		plant $kind "$VRT_ROOT/$q/a1" "$CAN/secret"
		spool
		check "$q/a1 $kind: removed" [ ! -e "$VRT_ROOT/$q/a1" -a ! -L "$VRT_ROOT/$q/a1" ]
		check "... refused in log/$q.log" logged $q "$q/a1: $( [ $kind = sym ] && echo "a symbolic link (not followed)" || echo "a hard link (2 names): not read")"
		check "... the canary is unchanged" canary_ok
	done
	check "... a1 neither runs nor is destroyed" [ ! -e "$V/DESTROYED" -a ! -e "$VRT_RUNTIME_DIR/a1/pid" ]
	plant $kind "$VRT_ROOT/inst/evil.properties" "$CAN/secret"
	spool
	check "inst/evil.properties $kind (a valid request's text): no VM evil" [ ! -e "$VRT_ROOT/vm/evil" ]
	check "... the request is gone from inst/" [ ! -e "$VRT_ROOT/inst/evil.properties" -a ! -L "$VRT_ROOT/inst/evil.properties" ]
	check "... refused in log/create.log" logged create "inst/evil.properties: $( [ $kind = sym ] && echo "not a regular file (symbolic links are not followed)" || echo "a hard link (2 names): not read")"
	check "... the canary is unchanged" canary_ok
done
# inst/failed/ made by the operator, holding a hard link where the spool
# writes the reason of a failed request.
rm -rf "$VRT_ROOT/inst/failed"
as_op mkdir "$VRT_ROOT/inst/failed"
ln "$CAN/secret" "$VRT_ROOT/inst/failed/bad.properties.error"
printf 'image=no-such-image\nsize=tiny\nnet=none\n' >"$E2E_DIR/bad.properties"
as_op cp "$E2E_DIR/bad.properties" "$VRT_ROOT/inst/bad.properties"
spool
check "inst/failed/ the operator's own: the failed request is removed, not moved there" \
	[ ! -e "$VRT_ROOT/inst/bad.properties" -a ! -e "$VRT_ROOT/inst/failed/bad.properties" ]
check "... logged" logged create "inst/bad.properties: failed"
check "... nothing written through failed/bad.properties.error" canary_ok
rm -rf "$VRT_ROOT/inst/failed"

# --- images/ and init/ writable by the operator group (a site's choice) -------
chgrp "$OP_GROUP" "$VRT_ROOT/images" "$VRT_ROOT/init"
chmod 2775 "$VRT_ROOT/images" "$VRT_ROOT/init"
cp "$VRT_ROOT/images/testguest.properties" "$VRT_ROOT/images/evil.properties"
for kind in sym hard; do
	plant $kind "$VRT_ROOT/images/evil.qcow2" "$CAN/disk.qcow2"
	if [ $kind = sym ]; then text="a symbolic link owned by uid $OP_UID, not root (not followed)"; else
		text="a hard link (2 names) to a file not everybody may read: not read"; fi
	for disk in copy overlay; do
		check "images/evil.qcow2 $kind, disk=$disk: vrt create refuses" \
			refuses 2 "$text" "$VRT" create --name e-$kind-$disk --image evil --size tiny --net none --disk $disk
		check "... nothing half-created" [ ! -e "$VRT_ROOT/vm/e-$kind-$disk" ]
		check "... the canary is unchanged" canary_ok
	done
	plant $kind "$VRT_ROOT/init/evil.sh" "$CAN/secret"
	check "init/evil.sh $kind: vrt create --init refuses" \
		refuses 2 "$text" \
		"$VRT" create --name i-$kind --image testguest --size tiny --net none --init evil.sh
	check "... nothing half-created" [ ! -e "$VRT_ROOT/vm/i-$kind" ]
	check "... the canary is unchanged" canary_ok
	check "vrt image protect of a $kind: refused (exit 2)" refuses 2 "images/evil.qcow2: " "$VRT" image protect evil
	check "... the canary keeps mode 0600" canary_ok
done
rm -f "$VRT_ROOT/images/evil.qcow2" "$VRT_ROOT/init/evil.sh"
# vrt export streams the template's kernel and initrd into an archive
# others may read: a kernel that is the operator's link is not read.
cp "$VRT_ROOT/images/testguest.qcow2" "$VRT_ROOT/images/kern.qcow2"
sed 's/^kernel=.*/kernel=kern.vmlinuz/' "$VRT_ROOT/images/testguest.properties" >"$VRT_ROOT/images/kern.properties"
ln -s "$(readlink -f "$VRT_ROOT/images/testguest.vmlinuz")" "$VRT_ROOT/images/kern.vmlinuz"
check "create k1 on template kern" bash -c '"$0" create --name k1 --image kern --size tiny --net none >/dev/null' "$VRT"
for kind in sym hard; do
	plant $kind "$VRT_ROOT/images/kern.vmlinuz" "$CAN/secret"
	if [ $kind = sym ]; then text="a symbolic link owned by uid $OP_UID, not root (not followed)"; else
		text="a hard link (2 names) to a file not everybody may read: not read"; fi
	check "images/kern.vmlinuz $kind: vrt export refuses" refuses 2 "$text" "$VRT" export k1 "$E2E_DIR/k1-$kind.tar"
	check "... no archive left" [ ! -e "$E2E_DIR/k1-$kind.tar" ]
	check "... the canary is unchanged" canary_ok
done
rm -f "$VRT_ROOT/images/kern.vmlinuz"
# What root made itself is still followed: an admin's alias of a template.
ln -s testguest.qcow2 "$VRT_ROOT/images/alias.qcow2"
cp "$VRT_ROOT/images/testguest.properties" "$VRT_ROOT/images/alias.properties"
check "images/alias.qcow2, root's own symlink: disk=copy works as before" \
	bash -c '"$0" create --name alias-copy --image alias --size tiny --net none --disk copy >/dev/null' "$VRT"
check "... the copy is there" [ -s "$VRT_ROOT/vm/alias-copy/hdd.img" ]
check "the canaries are unchanged after all of it" canary_ok

e2e_finish
