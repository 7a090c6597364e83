#!/bin/bash
# vrt image install end to end: a bootable installer ISO is built here from
# the test guest (its Debian kernel as a bzImage and its initramfs, booted by
# isolinux from a CD labelled cidata, so that the guest's NoCloud step runs
# the "installer": mke2fs on the blank disk, a marker file, power off). The
# install makes a read-only template with a sidecar; a VM created from it
# boots and sees the installed file. An interrupted, timed-out or failed
# install leaves nothing under images/; an existing name is refused.
. "$(dirname "$0")/lib.sh"
e2e_setup
ISOLINUX_BIN=/usr/lib/ISOLINUX/isolinux.bin
LDLINUX=/usr/lib/syslinux/modules/bios/ldlinux.c32
[ -f "$ISOLINUX_BIN" ] && [ -f "$LDLINUX" ] ||
	skip_all "isolinux missing (apt-get install isolinux syslinux-common, or run tools/setup-host)"
command -v xorriso >/dev/null || skip_all "xorriso missing (apt-get install xorriso)"
command -v qemu-img >/dev/null || skip_all "qemu-img (qemu-utils) not installed"

# --- the installer ISO ------------------------------------------------------------
# isolinux boots a bzImage, not the ELF kernel the test guest may use for
# speed: take the bzImage from the kernel package the guest was built from.
tree="$E2E_DIR/iso-tree"
mkdir -p "$tree/isolinux"
if [ "$(head -c 4 "$TESTGUEST_DIR/testguest.vmlinuz")" != $'\x7fELF' ]; then
	cp "$TESTGUEST_DIR/testguest.vmlinuz" "$tree/vmlinuz"
else
	read -r _ _ _ _ _ kpkg kver _ < <(grep -m1 '^# vrt test guest from ' "$TESTGUEST_DIR/testguest.properties")
	kver=${kver%,}	# "from KPKG KVER, BUSYBOX ... and AGENT ..."
	kdeb="${VRT_CACHE_DIR:-$HOME/.cache/vrt}/debs/${kpkg}_${kver//:/%3a}_amd64.deb"
	[ -f "$kdeb" ] || skip_all "kernel package $kdeb not cached (rebuild the test guest: rm -r $TESTGUEST_DIR)"
	dpkg-deb --fsys-tarfile "$kdeb" | tar -x -O --wildcards './boot/vmlinuz-*' >"$tree/vmlinuz" ||
		{ echo "cannot extract the kernel from $kdeb"; exit 1; }
fi
cp "$TESTGUEST_DIR/testguest.initrd" "$tree/initrd"
cp "$ISOLINUX_BIN" "$LDLINUX" "$tree/isolinux/"
cat >"$tree/isolinux/isolinux.cfg" <<'EOF'
DEFAULT install
PROMPT 0
TIMEOUT 0
LABEL install
  KERNEL /vmlinuz
  INITRD /initrd
  APPEND console=ttyS0 quiet vrt.cdrom=1
EOF
printf 'instance-id: vrt-test-installer\n' >"$tree/meta-data"

# make_iso FILE END: the installer ends with END (poweroff -f or reboot -f,
# as real installers do).
make_iso() {
	cat >"$tree/user-data" <<EOF
#!/bin/sh
set -e
echo "vrt-test-installer: installing onto /dev/vda"
mke2fs -q /dev/vda
mount -t ext4 /dev/vda /mnt/disk
mkdir -p /mnt/disk/etc
echo "installed by the vrt install test" >/mnt/disk/etc/installed-by-vrt-test
umount /mnt/disk
sync
echo "vrt-test-installer: done, $2"
$2
EOF
	xorriso -as mkisofs -quiet -o "$1" -V cidata -J -r -b isolinux/isolinux.bin -c isolinux/boot.cat \
		-no-emul-boot -boot-load-size 4 -boot-info-table "$tree" 2>/dev/null
	chmod 0644 "$1"
}
make_iso "$VRT_ROOT/iso/installer.iso" "poweroff -f"
make_iso "$VRT_ROOT/iso/reboots.iso" "reboot -f"
check "installer ISOs built" [ -s "$VRT_ROOT/iso/installer.iso" ] && [ -s "$VRT_ROOT/iso/reboots.iso" ]

IMAGES="$VRT_ROOT/images"
# images_are NAME...: images/ holds exactly the test guest's files and NAME.{qcow2,properties}.
images_are() {
	local want="testguest.initrd testguest.properties testguest.qcow2 testguest.vmlinuz" n got
	for n in "$@"; do want="$want $n.properties $n.qcow2"; done
	want=$(echo "$want" | tr ' ' '\n' | sort | tr '\n' ' ')
	got=$(ls -A "$IMAGES" | sort | tr '\n' ' ')
	[ "$got" = "$want" ] || { echo "  images/: $got (expected $want)"; return 1; }
}
install_bg() {	# install_bg NAME ARGS...: vrt image install in the background; INSTALL_PID
	local name=$1; shift
	"$VRT" image install "$name" "$@" >"$E2E_DIR/$name.out" 2>"$E2E_DIR/$name.err" &
	INSTALL_PID=$!
	E2E_PIDS+=("$INSTALL_PID")
}
rfb_greeting() {	# rfb_greeting SOCKET: a VNC server answers on it
	[ "$(socat -t 2 -T 2 - "UNIX-CONNECT:$1" </dev/null 2>/dev/null | head -c 3)" = RFB ]
}

# --- a successful install ---------------------------------------------------------
run="$VRT_RUNTIME_DIR/install.deb"
install_bg deb --iso iso/installer.iso --disk-size 64M --memory 256M --cpus 1 --timeout 120
check "deb: the VNC socket appears" wait_for 20 test -S "$run/vnc/vnc.sock"
check "deb: ... and a VNC server answers on it" rfb_greeting "$run/vnc/vnc.sock"
check "deb: the console socket exists" test -S "$run/console.sock"
check "deb: the disk is staged under a hidden name" test -f "$IMAGES/.deb.qcow2.partial"
check "deb: ... which vrt image list does not show" not bash -c '"$0" image list | grep -q deb' "$VRT"
qpid=$(cat "$run/qemu.pid" 2>/dev/null)
check "deb: QEMU boots the CD first" grep -qF '"driver":"ide-cd","id":"cd0","drive":"install-cd","bootindex":0' "/proc/$qpid/cmdline"
check "deb: QEMU runs unprivileged" [ "$(awk '/^Uid:/{print $2}' "/proc/$qpid/status")" = "$(id -u vrt)" ]
check "deb: where to connect is printed" grep -q "console  socat .*UNIX-CONNECT:$run/console.sock" "$E2E_DIR/deb.out"
check "deb: the install ends" wait_exit "$INSTALL_PID" 120
check "deb: ... with status 0" [ "$EXIT_STATUS" = 0 ]
check "deb: the installer ran (console log)" grep -q "vrt-test-installer: done" "$VRT_ROOT/log/install-deb.console.log"
check "deb: images/deb.qcow2 exists, nothing staged left" images_are deb
check "deb: the template is 0444, owned by root" [ "$(stat -c %a:%u "$IMAGES/deb.qcow2")" = 444:0 ]
check "deb: the sidecar says firmware=bios" grep -qx "firmware=bios" "$IMAGES/deb.properties"
check "deb: the template passes qemu-img check" qemu-img check -q "$IMAGES/deb.qcow2"
check "deb: ... is a standalone qcow2 of 64M" \
	bash -c 'qemu-img info --output=json "$1" | grep -q "\"virtual-size\": 67108864" && ! qemu-img info "$1" | grep -q "backing file"' _ "$IMAGES/deb.qcow2"
check "deb: vrt image list shows it read-only" bash -c '"$0" image list | grep -qE "^deb +qcow2 +64M .* ro +bios +disk +0$"' "$VRT"
check "deb: the runtime dir is gone" [ ! -e "$run" ]
check "deb: install.log records it" grep -q "deb: installed" "$VRT_ROOT/log/install.log"

# --- a VM from the new template ---------------------------------------------------
# The ISO's boot loader is not on the disk: the VM boots the test guest's
# kernel directly and mounts the installed disk on /mnt/disk.
grep -E '^(kernel|initrd|cmdline)=' "$IMAGES/testguest.properties" >>"$IMAGES/deb.properties"
"$VRT" create --image deb --size tiny --net none --name fresh >/dev/null
check "fresh: vrt create made an overlay over deb" \
	bash -c 'qemu-img info "$1" | grep -q "backing file: .*deb.qcow2"' _ "$VRT_ROOT/vm/fresh/hdd.ovl"
launch fresh
check "fresh: boots" wait_ready fresh
check "fresh: the installed disk is mounted" console_has fresh "/dev/vda mounted on /mnt/disk"
console_cmd fresh 'cat /mnt/disk/etc/installed-by-vrt-test'
check "fresh: sees the file the installer wrote" wait_for 20 console_has fresh "installed by the vrt install test"
kill -TERM "$LAUNCH_PID"
check "fresh: stops" wait_exit "$LAUNCH_PID" 30
check "deb: list counts the VM" bash -c '"$0" image list | grep -qE "^deb .* 1$"' "$VRT"

# --- an installer that ends by rebooting ------------------------------------------
"$VRT" image install rb --iso "$VRT_ROOT/iso/reboots.iso" --disk-size 64M --memory 256M --cpus 1 --timeout 120 \
	>"$E2E_DIR/rb.out" 2>"$E2E_DIR/rb.err"
check "rb: an installer's reboot ends the install with status 0" [ $? = 0 ]
check "rb: ... rather than booting the ISO again" \
	[ "$(grep -c "vrt-test-installer: installing" "$VRT_ROOT/log/install-rb.console.log")" = 1 ]
check "rb: template and sidecar written" images_are deb rb

# --- existing names and bad input: exit 2, nothing touched --------------------------
sum=$(sha256sum <"$IMAGES/deb.qcow2")
"$VRT" image install deb --iso iso/installer.iso --disk-size 64M 2>"$E2E_DIR/err"
check "existing name -> exit 2" [ $? = 2 ]
check "... saying it exists" grep -q "image deb already exists" "$E2E_DIR/err"
check "... the template untouched" [ "$(sha256sum <"$IMAGES/deb.qcow2")" = "$sum" ]
echo "firmware=uefi" >"$IMAGES/side.properties"
"$VRT" image install side --iso iso/installer.iso --disk-size 64M 2>"$E2E_DIR/err"
check "a name with a sidecar but no image -> exit 2" [ $? = 2 ]
rm -f "$IMAGES/side.properties"
for bad in "nope --iso iso/missing.iso --disk-size 64M" \
	"nope --iso iso/installer.iso --disk-size 12Q" \
	"nope --iso iso/installer.iso" \
	".hidden --iso iso/installer.iso --disk-size 64M" \
	"a/b --iso iso/installer.iso --disk-size 64M" \
	"nope --iso iso/installer.iso --disk-size 64M --firmware coreboot" \
	"nope --iso iso/installer.iso --disk-size 64M --memory 1000K" \
	"nope --iso iso/installer.iso --disk-size 64M --timeout 0" \
	"nope --iso iso/installer.iso --disk-size 64M --cpus 0"; do
	# shellcheck disable=SC2086 # word splitting wanted
	"$VRT" image install $bad >/dev/null 2>"$E2E_DIR/err"
	st=$?
	check "bad input ($bad) -> exit 2, one line" [ "$st" = 2 ] && [ "$(wc -l <"$E2E_DIR/err")" = 1 ]
done
check "bad input left nothing" images_are deb rb
check "bad input left no runtime dirs" [ -z "$(ls -A "$VRT_RUNTIME_DIR" 2>/dev/null)" ]

# --- interrupted: SIGTERM mid-way ----------------------------------------------------
run="$VRT_RUNTIME_DIR/install.intr"
install_bg intr --iso iso/installer.iso --disk-size 64M --memory 256M --cpus 1 --timeout 120
check "intr: running" wait_for 20 test -S "$run/vnc/vnc.sock"
qpid=$(cat "$run/qemu.pid" 2>/dev/null)
"$VRT" image install intr --iso iso/installer.iso --disk-size 64M 2>"$E2E_DIR/err"
check "intr: a second install of the same name -> exit 1" [ $? = 1 ]
check "intr: ... saying one is running" grep -q "already running" "$E2E_DIR/err"
check "intr: ... and the first one's disk is still staged" test -f "$IMAGES/.intr.qcow2.partial"
kill -TERM "$INSTALL_PID"
check "intr: SIGTERM ends the install" wait_exit "$INSTALL_PID" 20
check "intr: ... with status 1" [ "$EXIT_STATUS" = 1 ]
check "intr: ... saying the install was discarded" grep -q "interrupted by .*; install discarded" "$E2E_DIR/intr.err"
check "intr: QEMU is gone" wait_for 5 process_gone "$qpid"
check "intr: nothing left under images/" images_are deb rb
check "intr: the runtime dir is gone" [ ! -e "$run" ]

# --- interrupted: SIGINT (Ctrl-C) ------------------------------------------------------
install_bg ctrlc --iso iso/installer.iso --disk-size 64M --memory 256M --cpus 1 --timeout 120
wait_for 20 test -S "$VRT_RUNTIME_DIR/install.ctrlc/vnc/vnc.sock"
kill -INT "$INSTALL_PID"
check "ctrlc: SIGINT ends the install" wait_exit "$INSTALL_PID" 20
check "ctrlc: ... with status 1" [ "$EXIT_STATUS" = 1 ]
check "ctrlc: nothing left under images/" images_are deb rb

# --- kill -9: QEMU follows, the staged disk stays and the next install says so ------
run="$VRT_RUNTIME_DIR/install.killed"
install_bg killed --iso iso/installer.iso --disk-size 64M --memory 256M --cpus 1 --timeout 120
wait_for 20 test -S "$run/vnc/vnc.sock"
qpid=$(cat "$run/qemu.pid" 2>/dev/null)
kill -KILL "$INSTALL_PID"
wait_exit "$INSTALL_PID" 10
check "killed: QEMU dies with vrt" wait_for 5 process_gone "$qpid"
check "killed: the staged disk is left (nothing could remove it)" test -f "$IMAGES/.killed.qcow2.partial"
"$VRT" image install killed --iso iso/installer.iso --disk-size 64M 2>"$E2E_DIR/err"
check "killed: the next install of the name -> exit 1" [ $? = 1 ]
check "killed: ... naming the staged file and why" grep -q "killed.qcow2.partial exists: .*was killed" "$E2E_DIR/err"
check "killed: ... and cleaning the stale runtime dir" [ ! -e "$run" ]
rm -f "$IMAGES/.killed.qcow2.partial"
check "killed: nothing else left under images/" images_are deb rb

# --- the guest never powers off: timeout -----------------------------------------------
start=$(date +%s)
"$VRT" image install slow --iso iso/installer.iso --disk-size 64M --memory 256M --cpus 1 --timeout 2 \
	>/dev/null 2>"$E2E_DIR/err"
st=$? took=$(( $(date +%s) - start ))
check "slow: the timeout ends the install with status 1" [ "$st" = 1 ]
check "slow: ... after about 2 s" [ "$took" -ge 2 ] && [ "$took" -le 15 ]
check "slow: ... saying so" grep -q "did not power off within 2 s" "$E2E_DIR/err"
check "slow: nothing left under images/" images_are deb rb
check "slow: the runtime dir is gone" [ ! -e "$VRT_RUNTIME_DIR/install.slow" ]

# --- UEFI: OVMF with its own variable store (this ISO boots BIOS only) --------------------
if [ -r /usr/share/OVMF/OVMF_CODE_4M.fd ] && [ -r /usr/share/OVMF/OVMF_VARS_4M.fd ]; then
	install_bg efi --iso iso/installer.iso --disk-size 64M --memory 256M --cpus 1 --firmware uefi --timeout 3
	check "efi: a variable store for the install" wait_for 10 test -f "$VRT_RUNTIME_DIR/install.efi/OVMF_VARS.fd"
	qpid=$(cat "$VRT_RUNTIME_DIR/install.efi/qemu.pid" 2>/dev/null)
	check "efi: QEMU runs with OVMF" grep -qF "OVMF_CODE_4M.fd" "/proc/$qpid/cmdline"
	check "efi: times out" wait_exit "$INSTALL_PID" 30
	check "efi: ... with status 1 and nothing left" [ "$EXIT_STATUS" = 1 ] && images_are deb rb &&
		[ ! -e "$VRT_RUNTIME_DIR/install.efi" ]
fi

# --- QEMU fails: the ISO is unreadable for QEMU's user ------------------------------------
cp "$VRT_ROOT/iso/installer.iso" "$VRT_ROOT/iso/secret.iso"
chmod 0600 "$VRT_ROOT/iso/secret.iso"
"$VRT" image install broken --iso iso/secret.iso --disk-size 64M --memory 256M --cpus 1 --timeout 60 \
	>/dev/null 2>"$E2E_DIR/err"
check "broken: QEMU cannot open the ISO -> exit 1" [ $? = 1 ]
check "broken: ... QEMU's own message is shown" grep -q "secret.iso.*Permission denied" "$E2E_DIR/err"
check "broken: nothing left under images/" images_are deb rb
check "broken: no runtime dirs left" [ -z "$(ls -A "$VRT_RUNTIME_DIR" 2>/dev/null)" ]

e2e_finish
