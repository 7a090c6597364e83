#!/bin/bash
# Disk images end to end, in a root whose path holds a space and a comma:
# broken backing chains (missing, truncated, looping, raw with a qcow2
# header) are refused by vrt-launch and vrt showcmd before QEMU runs; a real
# guest writes through `vrt image overlay`'s overlay while the template stays
# byte-for-byte unchanged, mode 0444 and open read-only in QEMU; the overlay
# passes qemu-img check and keeps the writes across boots; vrt image
# info/list/overlay/protect, with --json.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=5
e2e_setup
[ -f "$VRT_ROOT/images/testguest.qcow2" ] || skip_all "the test guest has no template disk"
command -v qemu-img >/dev/null || skip_all "qemu-img (qemu-utils) not installed"
JSON_GET="$VRT_BUILD_DIR/tests/e2e/json-get"

# The root moves below a directory with a space and a comma; the runtime
# directory stays short for the 108-byte socket path limit.
mkdir -p "$E2E_DIR/x y,z"
mv "$VRT_ROOT" "$E2E_DIR/x y,z/root"
export VRT_ROOT="$E2E_DIR/x y,z/root"
chmod 755 "$E2E_DIR/x y,z"
TEMPLATE="$VRT_ROOT/images/testguest.qcow2"

json_get() {	# json_get PATH: reads JSON on stdin (tests/e2e/json-get)
	[ -x "$JSON_GET" ] || { echo "json-get not built: $JSON_GET" >&2; return 2; }
	"$JSON_GET" "$1"
}

# overlay_vm NAME BASE: a VM whose hdd.ovl is `vrt image overlay BASE`.
overlay_vm() {
	make_vm "$1"
	"$VRT" image overlay "$2" "$VRT_ROOT/vm/$1/hdd.ovl"
}

# no_qemu_for NAME: no process has NAME's overlay on its command line.
no_qemu_for() {
	! grep -lqsF -- "vm/$1/hdd.ovl" /proc/[0-9]*/cmdline
}

# refused NAME FILE: vrt-launch and vrt showcmd exit 2 with one line naming
# FILE, before QEMU: no process, nothing in the runtime directory.
refused() {
	local name=$1 file=$2 st
	"$VRT_LAUNCH" "$name" >"$E2E_DIR/$name.out" 2>"$E2E_DIR/$name.err"
	st=$?
	check "$name: vrt-launch exits 2" [ "$st" = 2 ]
	check "$name: ... with one line" [ "$(wc -l <"$E2E_DIR/$name.err")" = 1 ]
	check "$name: ... naming $file" grep -qF -- "$file" "$E2E_DIR/$name.err"
	check "$name: ... and no QEMU ran" no_qemu_for "$name"
	check "$name: ... nothing in the runtime dir" runtime_empty "$name"
	"$VRT" showcmd "$name" >"$E2E_DIR/$name.out" 2>"$E2E_DIR/$name.err"
	st=$?
	check "$name: vrt showcmd exits 2" [ "$st" = 2 ]
	check "$name: ... with one line naming $file" \
		bash -c '[ "$(wc -l <"$1")" = 1 ] && grep -qF -- "$2" "$1"' _ "$E2E_DIR/$name.err" "$file"
	check "$name: ... printing no command line" [ ! -s "$E2E_DIR/$name.out" ]
}

cd "$VRT_ROOT" || exit 1

# --- the template and vrt image overlay ----------------------------------------
check "template is 0444 to begin with" [ "$(stat -c %a "$TEMPLATE")" = 444 ]
sum_before=$(sha256sum <"$TEMPLATE")
overlay_vm writer ../../images/testguest.qcow2
check "overlay: created with the backing name as given" \
	bash -c 'qemu-img info "$1" | grep -qx "backing file: ../../images/testguest.qcow2 (actual path: .*)"' _ "$VRT_ROOT/vm/writer/hdd.ovl"
check "overlay: qemu-img check finds no errors" qemu-img check -q "$VRT_ROOT/vm/writer/hdd.ovl"
check "overlay: qemu-img info --backing-chain shows the explicit backing format" \
	bash -c 'qemu-img info --backing-chain "$1" | grep -qx "backing file format: qcow2"' _ "$VRT_ROOT/vm/writer/hdd.ovl"
check "overlay: the chain ends at the template" \
	bash -c 'qemu-img info --backing-chain --output=json "$1" | "$2" 1.filename | grep -qF "images/testguest.qcow2"' \
	_ "$VRT_ROOT/vm/writer/hdd.ovl" "$JSON_GET"
check "overlay: same virtual size as the template" \
	[ "$("$VRT" image info --json vm/writer/hdd.ovl | json_get 0.virtual-size)" = \
	  "$("$VRT" image info --json images/testguest.qcow2 | json_get 0.virtual-size)" ]

"$VRT" image overlay ../../images/testguest.qcow2 "$VRT_ROOT/vm/writer/hdd.ovl" 2>"$E2E_DIR/err"
check "overlay: an existing NEW -> exit 2" [ $? = 2 ]
check "overlay: ... saying it exists" grep -q "already exists" "$E2E_DIR/err"
"$VRT" image overlay no-such.qcow2 "$E2E_DIR/new.ovl" 2>"$E2E_DIR/err"
check "overlay: a missing BASE -> exit 2" [ $? = 2 ]
check "overlay: ... naming it, resolved against NEW's directory" grep -qF "$E2E_DIR/no-such.qcow2" "$E2E_DIR/err"
"$VRT" image overlay "$TEMPLATE" "$E2E_DIR/new.ovl" --size 12Q 2>"$E2E_DIR/err"
check "overlay: a bad --size -> exit 2" [ $? = 2 ]
"$VRT" image overlay "$TEMPLATE" "$E2E_DIR/new.ovl" --size 1M 2>"$E2E_DIR/err"
check "overlay: a --size below the base's -> exit 2" [ $? = 2 ]
check "overlay: ... and nothing was created" [ ! -e "$E2E_DIR/new.ovl" ]
"$VRT" image overlay "$TEMPLATE" "$E2E_DIR/new.ovl" --size 1G
check "overlay: --size 1G over an absolute BASE" \
	[ "$("$VRT" image info --json "$E2E_DIR/new.ovl" | json_get 0.virtual-size)" = 1073741824 ]
check "overlay: ... passes qemu-img check" qemu-img check -q "$E2E_DIR/new.ovl"

# --- broken chains: refused before QEMU -----------------------------------------
# Missing backing file.
qemu-img create -q -f qcow2 images/gone.qcow2 64M
overlay_vm missing ../../images/gone.qcow2
rm -f images/gone.qcow2
refused missing images/gone.qcow2

# Truncated backing file (half of a copy of the template).
cp "$TEMPLATE" images/trunc.qcow2
overlay_vm truncated ../../images/trunc.qcow2
truncate -s $(( $(stat -c %s images/trunc.qcow2) / 2 )) images/trunc.qcow2
refused truncated images/trunc.qcow2
"$VRT" image overlay ../../images/trunc.qcow2 "$VRT_ROOT/vm/truncated/other.ovl" 2>"$E2E_DIR/err"
check "truncated: vrt image overlay refuses it as a base (exit 2)" [ $? = 2 ]
check "truncated: ... saying it is truncated" grep -q "truncated" "$E2E_DIR/err"

# A loop: hdd.ovl -> loop-b.qcow2 -> hdd.ovl.
qemu-img create -q -f qcow2 images/loop-a.qcow2 64M
"$VRT" image overlay loop-a.qcow2 images/loop-b.qcow2
overlay_vm looping ../../images/loop-b.qcow2
qemu-img rebase -u -b ../vm/looping/hdd.ovl -F qcow2 images/loop-b.qcow2
refused looping "vm/looping/hdd.ovl"
check "looping: ... calling it a loop" grep -qi "loop" "$E2E_DIR/looping.err"

# A raw backing file that a guest filled with a qcow2 header.
truncate -s 64M images/rawdisk.img
overlay_vm rawhdr ../../images/rawdisk.img
check "rawhdr: the overlay declares its backing file raw" \
	bash -c '"$0" image info --json vm/rawhdr/hdd.ovl | "$1" 0.backing-format | grep -qx raw' "$VRT" "$JSON_GET"
head -c 65536 "$TEMPLATE" | dd of=images/rawdisk.img conv=notrunc status=none
refused rawhdr images/rawdisk.img
check "rawhdr: ... saying the raw file has a qcow2 header" grep -q "qcow2 header" "$E2E_DIR/rawhdr.err"

# --- a real guest writes through the overlay ------------------------------------
alloc_before=$("$VRT" image info --json vm/writer/hdd.ovl | json_get 0.allocated-size)
launch writer
check "writer: boots from a root with a space and a comma" wait_ready writer
check "writer: the overlay is mounted on /mnt/disk" console_has writer "/dev/vda mounted on /mnt/disk"
qpid=$(cat "$VRT_RUNTIME_DIR/writer/qemu.pid" 2>/dev/null)
tfd= ofd=
for fd in /proc/"$qpid"/fd/*; do
	case "$(readlink "$fd")" in
	"$TEMPLATE") tfd=${fd##*/} ;;
	"$VRT_ROOT/vm/writer/hdd.ovl") ofd=${fd##*/} ;;
	esac
done
# fdinfo flags are octal; the access mode is the low two bits.
acc_mode() { echo $(( 0$(awk '/^flags:/{print $2}' "/proc/$qpid/fdinfo/$1") & 3 )); }
check "writer: QEMU holds the template open" [ -n "$tfd" ]
check "writer: ... read-only (O_RDONLY)" [ -n "$tfd" ] && [ "$(acc_mode "$tfd")" = 0 ]
check "writer: ... and the overlay read-write (O_RDWR)" [ -n "$ofd" ] && [ "$(acc_mode "$ofd")" = 2 ]
check "writer: vrt image info shows the template read-only" \
	bash -c '"$0" image info --json vm/writer/hdd.ovl | "$1" 1.writable | grep -qx false' "$VRT" "$JSON_GET"
console_cmd writer 'cat /mnt/disk/etc/template-marker; head -c 4194304 /dev/urandom > /mnt/disk/blob; echo data-$((6*7)) > /mnt/disk/x; sync; echo WROTE-$((1+1))'
check "writer: the guest reads the template's marker through the overlay" \
	wait_for 20 console_has writer "vrt-testguest-template v1"
check "writer: the guest wrote to its disk" wait_for 30 console_has writer WROTE-2
kill -TERM "$LAUNCH_PID"
check "writer: stops cleanly" wait_exit "$LAUNCH_PID" 30
check "writer: ... status 0" [ "$EXIT_STATUS" = 0 ]
check "writer: the template's sha256 is unchanged" [ "$(sha256sum <"$TEMPLATE")" = "$sum_before" ]
check "writer: the template is still 0444" [ "$(stat -c %a "$TEMPLATE")" = 444 ]
alloc_after=$("$VRT" image info --json vm/writer/hdd.ovl | json_get 0.allocated-size)
echo "# overlay allocated: $alloc_before bytes fresh, $alloc_after after the guest's writes"
check "writer: the overlay grew by the guest's writes (> 4 MiB)" \
	[ "$alloc_after" -gt $((alloc_before + 4 * 1024 * 1024)) ]
check "writer: the overlay passes qemu-img check after use" qemu-img check -q "$VRT_ROOT/vm/writer/hdd.ovl"
check "writer: the template passes qemu-img check" qemu-img check -q "$TEMPLATE"
: >"$VRT_ROOT/vm/writer/log/console.log"
launch writer
check "writer: boots again" wait_ready writer
console_cmd writer 'cat /mnt/disk/x'
check "writer: ... and reads back what it wrote" wait_for 20 console_has writer data-42
kill -TERM "$LAUNCH_PID"
check "writer: stops again" wait_exit "$LAUNCH_PID" 30
check "writer: template unchanged after the second boot" [ "$(sha256sum <"$TEMPLATE")" = "$sum_before" ]

# --- vrt image info / list / protect ----------------------------------------------
"$VRT" image info vm/writer/hdd.ovl >"$E2E_DIR/info.txt"
check "info: the table lists both layers" \
	bash -c 'grep -q "^0 .*rw .*vm/writer/hdd.ovl$" "$1" && grep -q "^1 .*ro .*images/testguest.qcow2$" "$1"' _ "$E2E_DIR/info.txt"
check "info: ... and the backing name and format" grep -qF "backing file ../../images/testguest.qcow2 (qcow2)" "$E2E_DIR/info.txt"
"$VRT" image info --json vm/writer/hdd.ovl >"$E2E_DIR/info.json"
check "info --json: parses, two layers" \
	bash -c '"$1" 1.path <"$2" >/dev/null && ! "$1" 2 <"$2" >/dev/null' _ "$JSON_GET" "$E2E_DIR/info.json"
check "info --json: backing file and format of the top layer" \
	bash -c '[ "$("$1" 0.backing-file <"$2")" = ../../images/testguest.qcow2 ] && [ "$("$1" 0.backing-format <"$2")" = qcow2 ]' \
	_ "$JSON_GET" "$E2E_DIR/info.json"
check "info: a template by name" bash -c '"$0" image info testguest | grep -q "^0 .*images/testguest.qcow2$"' "$VRT"
"$VRT" image info vm/truncated/hdd.ovl >/dev/null 2>"$E2E_DIR/err"
check "info: a broken chain -> exit 2" [ $? = 2 ]
check "info: ... naming the file" grep -qF images/trunc.qcow2 "$E2E_DIR/err"
"$VRT" image info "$E2E_DIR/nothing.qcow2" 2>"$E2E_DIR/err"
check "info: a missing file -> exit 2" [ $? = 2 ]

# VMs of testguest (by their instance.properties): writer, the four with
# broken chains, two more; a destroyed one does not count.
overlay_vm second ../../images/testguest.qcow2
"$VRT" create --image testguest --size tiny --net none --name third >/dev/null
check "list: vrt create made a VM over the template" [ -f "$VRT_ROOT/vm/third/hdd.ovl" ]
mkdir -p "$VRT_ROOT/vm/lpuser"
printf 'image=loop-b\nsize=tiny\nnet=none\n' >"$VRT_ROOT/vm/lpuser/instance.properties"
make_vm gone
touch "$VRT_ROOT/vm/gone/DESTROYED"
"$VRT" image list >"$E2E_DIR/list.txt"
check "list: testguest used by 7 VMs (destroyed ones left out)" \
	grep -qE "^testguest +qcow2 +[0-9.]+[KMG] +[0-9.]+[KMG] +ro +bios +kernel +7$" "$E2E_DIR/list.txt"
check "list: staging and other files are not templates" not grep -qE "^(\.|rawdisk)" "$E2E_DIR/list.txt"
"$VRT" image list --json >"$E2E_DIR/list.json"
check "list --json: testguest has 7 VMs, read-only, its kernel from the sidecar" \
	bash -c '[ "$("$1" "[name=testguest].vms" <"$2")" = 7 ] && [ "$("$1" "[name=testguest].read-only" <"$2")" = true ] &&
		"$1" "[name=testguest].kernel" <"$2" | grep -q "images/testguest.vmlinuz$"' _ "$JSON_GET" "$E2E_DIR/list.json"
check "list --json: the broken template trunc is listed with its error" \
	bash -c '"$1" "[name=trunc].error" <"$2" | grep -q truncated' _ "$JSON_GET" "$E2E_DIR/list.json"
check "list --json: loop-b has its one VM, the unused loop-a none" \
	bash -c '[ "$("$1" "[name=loop-b].vms" <"$2")" = 1 ] && [ "$("$1" "[name=loop-a].vms" <"$2")" = 0 ]' \
	_ "$JSON_GET" "$E2E_DIR/list.json"

chmod 0644 images/loop-a.qcow2
"$VRT" image protect loop-a
check "protect: makes a template 0444" [ "$(stat -c %a images/loop-a.qcow2)" = 444 ]
"$VRT" image protect no-such-image 2>"$E2E_DIR/err"
check "protect: a missing image -> exit 2" [ $? = 2 ]
check "overlay: warns about a writable template" \
	bash -c '"$0" image overlay "$1" "$2" 2>&1 | grep -q "template .*rawdisk.img is writable"' \
	"$VRT" "$VRT_ROOT/images/rawdisk.img" "$E2E_DIR/warn.ovl"
check "overlay: ... but not about other writable bases" \
	bash -c '[ -z "$("$0" image overlay warn.ovl "$1" 2>&1)" ]' "$VRT" "$E2E_DIR/warn2.ovl"

e2e_finish
