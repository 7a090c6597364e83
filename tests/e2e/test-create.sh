#!/bin/bash
# vrt create / destroy / cleanup end to end: creation from inst/X.properties,
# a file and flags; parallel creates; kill -9 at random points (the root
# stays consistent); malformed input (exit 2, one line naming file:line and
# the value, nothing created); a created VM boots over its overlay; destroy
# of a running VM; cleanup; names are never reused.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=5
e2e_setup
[ -f "$VRT_ROOT/images/testguest.qcow2" ] || skip_all "the test guest has no template disk"

NAMES="$VRT_ROOT/install/installed.txt"
MACS="$VRT_ROOT/install/mac-addresses.txt"
NAME_RE='^[a-z0-9]([a-z0-9-]*[a-z0-9])?$'
MAC_RE='^[0-9a-f]{2}(:[0-9a-f]{2}){5}$'

# vm_macs FILE...: the MACs of every NIC (mac=, mac.N=) in instance.properties files.
vm_macs() { sed -n 's/^mac\(\.[1-7]\)\{0,1\}=//p' "$@"; }

# --- the invariant -----------------------------------------------------------
# Every vm/NAME is complete (instance.properties with name=NAME and a mac=,
# a disk unless DESTROYED, log/), NAME is in installed.txt and its MAC in
# mac-addresses.txt; the registry holds well-formed lines only, no
# duplicates, no torn last line. Prints what is wrong; fails if anything is.
invariant() {
	local bad=0 d n mac f
	for f in "$NAMES" "$MACS"; do
		[ -e "$f" ] || continue
		if [ -s "$f" ] && [ "$(tail -c 1 "$f" | od -An -c | tr -d ' ')" != '\n' ]; then
			echo "  $f: last line not terminated"; bad=1
		fi
		if [ -n "$(sort "$f" | uniq -d)" ]; then
			echo "  $f: duplicate lines: $(sort "$f" | uniq -d | tr '\n' ' ')"; bad=1
		fi
	done
	if [ -e "$NAMES" ] && grep -Evq "$NAME_RE" "$NAMES"; then
		echo "  $NAMES: malformed: $(grep -Ev "$NAME_RE" "$NAMES" | head -3 | tr '\n' ' ')"; bad=1
	fi
	if [ -e "$MACS" ] && grep -Evq "$MAC_RE" "$MACS"; then
		echo "  $MACS: malformed: $(grep -Ev "$MAC_RE" "$MACS" | head -3 | tr '\n' ' ')"; bad=1
	fi
	for d in "$VRT_ROOT"/vm/*/; do
		[ -d "$d" ] || continue
		n=$(basename "$d")
		f="$d/instance.properties"
		[ -f "$f" ] || { echo "  vm/$n: no instance.properties"; bad=1; continue; }
		grep -qx "name=$n" "$f" || { echo "  vm/$n: name= does not match"; bad=1; }
		mac=$(sed -n 's/^mac=//p' "$f")
		[ -n "$mac" ] || { echo "  vm/$n: no mac="; bad=1; }
		grep -qx "$n" "$NAMES" 2>/dev/null || { echo "  vm/$n: name not registered"; bad=1; }
		for mac in $(vm_macs "$f"); do
			grep -qx "$mac" "$MACS" 2>/dev/null || { echo "  vm/$n: MAC $mac not registered"; bad=1; }
		done
		[ -d "$d/log" ] || { echo "  vm/$n: no log/"; bad=1; }
		if [ ! -e "$d/DESTROYED" ] && [ ! -f "$d/hdd.ovl" ] && [ ! -f "$d/hdd.img" ]; then
			echo "  vm/$n: no disk"; bad=1
		fi
		if ls -A "$d" | grep -q '^\.'; then
			echo "  vm/$n: stray files: $(ls -A "$d" | grep '^\.' | tr '\n' ' ')"; bad=1
		fi
	done
	return $bad
}

# After a sweep nothing else may exist either: no hidden entries in vm/, and
# the registry lists exactly the VMs there are (minus those cleaned up).
strict_invariant() {
	local bad=0 dirs regs macs_vm macs_reg
	invariant || bad=1
	if ls -A "$VRT_ROOT/vm" | grep -q '^\.'; then
		echo "  vm/: leftovers: $(ls -A "$VRT_ROOT/vm" | grep '^\.' | tr '\n' ' ')"; bad=1
	fi
	dirs=$(ls "$VRT_ROOT/vm" | sort)
	regs=$(grep -v -x -f <(printf '%s\n' "${CLEANED[@]:-}") "$NAMES" 2>/dev/null | sort)
	if [ "$dirs" != "$regs" ]; then
		echo "  registry names differ from vm/: $(diff <(echo "$dirs") <(echo "$regs") | grep '^[<>]' | tr '\n' ' ')"; bad=1
	fi
	macs_vm=$(vm_macs "$VRT_ROOT"/vm/*/instance.properties 2>/dev/null | sort)
	macs_reg=$(grep -v -x -f <(printf '%s\n' "${CLEANED_MACS[@]:-}") "$MACS" 2>/dev/null | sort)
	if [ "$macs_vm" != "$macs_reg" ]; then
		echo "  registry MACs differ from the VMs': $(diff <(echo "$macs_vm") <(echo "$macs_reg") | grep '^[<>]' | tr '\n' ' ')"; bad=1
	fi
	return $bad
}
CLEANED=()
CLEANED_MACS=()

vm_count() { ls "$VRT_ROOT/vm" | wc -l; }
not() { ! "$@"; }
quiet() { "$@" >/dev/null; }
registered() { grep -qx "$1" "$NAMES"; }

# --- create from inst/X.properties, a file, flags --------------------------
cat > "$VRT_ROOT/inst/pluto-4711.properties" <<'EOF'
# Image Name from images-dir without file extension
image=testguest
#
# sizes have to be defined in config file
size=tiny
#
# a free comment, I.e. purpose
comment=the seed's example
net=none
EOF
out=$("$VRT" create pluto-4711 2>"$E2E_DIR/err")
check "inst/X.properties: exit 0, prints the name" [ "$?" = 0 -a "$out" = pluto-4711 ]
check "inst/X.properties: vm/pluto-4711 with instance.properties" grep -qx "comment=the seed's example" "$VRT_ROOT/vm/pluto-4711/instance.properties"
check "inst/X.properties: mac= recorded" grep -Eq "^mac=52:54:00(:[0-9a-f]{2}){3}$" "$VRT_ROOT/vm/pluto-4711/instance.properties"
check "inst/X.properties: hdd.ovl over ../../images/testguest.qcow2 (relative, as written)" \
	bash -c 'qemu-img info --output=json "$0" | grep -q "\"backing-filename\": \"../../images/testguest.qcow2\""' "$VRT_ROOT/vm/pluto-4711/hdd.ovl"
check "inst/X.properties: overlay records its backing format" \
	bash -c 'qemu-img info --output=json "$0" | grep -q "\"backing-filename-format\": \"qcow2\""' "$VRT_ROOT/vm/pluto-4711/hdd.ovl"
check "inst/X.properties: qemu-img check passes" qemu-img check -q "$VRT_ROOT/vm/pluto-4711/hdd.ovl"
check "inst/X.properties: name registered" registered pluto-4711
mac=$(sed -n 's/^mac=//p' "$VRT_ROOT/vm/pluto-4711/instance.properties")
check "inst/X.properties: MAC registered" grep -qx "$mac" "$MACS"
check "inst/X.properties: log/ created" test -d "$VRT_ROOT/vm/pluto-4711/log"
check "inst/X.properties: create.log line" grep -q "pluto-4711: created" "$VRT_ROOT/log/create.log"

printf 'image=testguest\nsize=tiny\nname=web-1\nnet=none\ndisk=copy\n' > "$E2E_DIR/web.properties"
out=$("$VRT" create "$E2E_DIR/web.properties")
check "file with name=: exit 0, name from name=" [ "$?" = 0 -a "$out" = web-1 ]
check "file with name=: disk=copy gives hdd.img" test -f "$VRT_ROOT/vm/web-1/hdd.img"
check "file with name=: hdd.img has no backing file" \
	bash -c '! qemu-img info --output=json "$0" | grep -q backing-filename' "$VRT_ROOT/vm/web-1/hdd.img"
printf 'image=testguest\nsize=tiny\nnet=none\n' > "$E2E_DIR/db-7.properties"
out=$("$VRT" create "$E2E_DIR/db-7.properties")
check "file without name=: name from the file name" [ "$out" = db-7 ]
printf 'image=testguest\nsize=tiny\nnet=none\n' > "$VRT_ROOT/inst/instance.properties"
out=$("$VRT" create instance)
check "inst/instance.properties: a generated name like testguest-NNNN" bash -c '[[ "$0" =~ ^testguest-[0-9]{4}$ ]]' "$out"

json=$("$VRT" create --json --image testguest --size tiny --net none --comment "from flags")
fname=$(sed -n 's/.*"name":"\([^"]*\)".*/\1/p' <<<"$json")
check "flags: --json has name, mac, disk" bash -c '[[ "$0" == *"\"mac\":\"52:54:00:"* && "$0" == *"\"disk\":\""*"/hdd.ovl\""* ]]' "$json"
check "flags: the VM exists" grep -qx "comment=from flags" "$VRT_ROOT/vm/$fname/instance.properties"
out=$("$VRT" create --name flag-2 --image testguest --size tiny --net user --mac 52:54:00:AA:00:01)
check "flags: --name and --mac (stored lowercase)" grep -qx "mac=52:54:00:aa:00:01" "$VRT_ROOT/vm/flag-2/instance.properties"
check "created VMs pass vrt check" quiet "$VRT" check
check "invariant after the first creates" strict_invariant

# --- 32 parallel creates ------------------------------------------------------
before=$(vm_count)
pids=()
for i in $(seq 1 32); do
	"$VRT" create --image testguest --size tiny --net none >"$E2E_DIR/par.$i" 2>&1 &
	pids+=($!)
done
fails=0
for p in "${pids[@]}"; do wait "$p" || fails=$((fails + 1)); done
check "parallel: all 32 creates succeed" [ "$fails" = 0 ]
check "parallel: 32 distinct names printed" [ "$(cat "$E2E_DIR"/par.* | sort -u | grep -Ec '^testguest-[0-9]+$')" = 32 ]
check "parallel: 32 new VM directories" [ "$(($(vm_count) - before))" = 32 ]
check "parallel: 32 distinct MACs" \
	[ "$(cat "$VRT_ROOT"/vm/*/instance.properties | sed -n 's/^mac=//p' | sort -u | wc -l)" = "$(vm_count)" ]
check "parallel: registry well-formed, matches vm/" strict_invariant

# --- kill -9 at random points -------------------------------------------------
KILLS=${E2E_KILLS:-60}
completed=0 nothing=0 staged=0 broken=0
for i in $(seq 1 "$KILLS"); do
	disk=overlay
	[ $((i % 3)) = 0 ] && disk=copy
	if [ $((i % 2)) = 1 ]; then
		"$VRT" create --image testguest --size tiny --net none --disk "$disk" >/dev/null 2>&1 &
	else    # three NICs: three MACs to register, or none
		printf 'image=testguest\nsize=tiny\ndisk=%s\nnet=user\nnet.1=user\nnet.2=user\n' "$disk" >"$E2E_DIR/k3nic$i.properties"
		"$VRT" create "$E2E_DIR/k3nic$i.properties" >/dev/null 2>&1 &
	fi
	pid=$!
	sleep "$(printf '0.%03d' $((RANDOM % 31)))"
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	if ls -A "$VRT_ROOT/vm" | grep -q '^\.'; then staged=$((staged + 1)); fi
	# What is visible must be consistent right away ...
	if ! invariant >"$E2E_DIR/inv.$i"; then
		broken=$((broken + 1))
		echo "  kill $i:"; cat "$E2E_DIR/inv.$i"
	fi
	# ... and after the next sweep nothing else may remain. Alternate
	# between cleanup and the next create doing the sweep.
	if [ $((i % 2)) = 0 ]; then
		"$VRT" cleanup >/dev/null 2>&1
		if ! strict_invariant >"$E2E_DIR/inv.$i"; then
			broken=$((broken + 1))
			echo "  kill $i after cleanup:"; cat "$E2E_DIR/inv.$i"
		fi
	fi
done
echo "# kill -9: $KILLS runs, $staged left a staging dir behind for the sweep"
check "kill -9 x$KILLS: the root was consistent every time" [ "$broken" = 0 ]
n=$(vm_count)
out=$("$VRT" create --image testguest --size tiny --net none)
check "kill -9: the next create succeeds and sweeps" [ "$?" = 0 -a "$(vm_count)" = $((n + 1)) ]
check "kill -9: no staging dir left, registry == vm/" strict_invariant
check "kill -9: vrt check passes" quiet "$VRT" check

# --- malformed input: exit 2, one line naming file:line and the value ----------
printf 'QFI\373garbage that is not a qcow2 header' > "$VRT_ROOT/images/broken.qcow2"
sed -i '$a size.mini.disk=1M' "$VRT_ROOT/vrt.conf"
taken_mac=$(sed -n 's/^mac=//p' "$VRT_ROOT/vm/pluto-4711/instance.properties")
long_name=$(printf 'a%.0s' $(seq 1 64))
long_value=$(printf 'x%.0s' $(seq 1 1100))
B='image=testguest\nsize=tiny\n'
# Each case: the file's content (printf format) | a text the error must contain.
cases=(
	"${B}colour=red\n|bad.properties:3: unknown key colour"
	"${B}disk=thin\n|bad.properties:3: invalid disk \"thin\""
	"${B}net=wifi\n|bad.properties:3: invalid net \"wifi\""
	"${B}firmware=coreboot\n|bad.properties:3: invalid firmware \"coreboot\""
	"${B}autostart=maybe\n|bad.properties:3: invalid autostart \"maybe\""
	"${B}shutdown_timeout=0\n|bad.properties:3: invalid shutdown_timeout \"0\""
	"${B}shutdown_timeout=soon\n|bad.properties:3: invalid shutdown_timeout \"soon\""
	"${B}mac=52:54:00:12:34\n|bad.properties:3: invalid mac \"52:54:00:12:34\""
	"${B}mac=01:00:5e:00:00:01\n|bad.properties:3: invalid mac \"01:00:5e:00:00:01\": MAC address 01:00:5e:00:00:01 is a multicast"
	"${B}mac=00:00:00:00:00:00\n|bad.properties:3: invalid mac \"00:00:00:00:00:00\""
	"${B}mac=52-54-00-12-34-56\n|bad.properties:3: invalid mac \"52-54-00-12-34-56\""
	"${B}mac=$taken_mac\n|bad.properties:3: mac=$taken_mac is already registered"
	"${B}name=Pluto\n|bad.properties:3: invalid VM name \"Pluto\""
	"${B}name=a_b\n|bad.properties:3: invalid VM name \"a_b\""
	"${B}name=-x\n|bad.properties:3: invalid VM name \"-x\""
	"${B}name=$long_name\n|bad.properties:3: VM name \"$long_name\" longer than 63"
	"${B}name=pluto-4711\n|bad.properties:3: name pluto-4711 is already registered"
	"image=../etc\nsize=tiny\n|bad.properties:1: invalid image name \"../etc\""
	"image=nosuch\nsize=tiny\n|bad.properties:1: image=nosuch: template"
	"image=broken\nsize=tiny\n|bad.properties:1: image=broken:"
	"image=testguest\nsize=huge\n|bad.properties:2: unknown size \"huge\""
	"image=testguest\nsize=a/b\n|bad.properties:2: invalid size name \"a/b\""
	"image=testguest\nsize=mini\n|bad.properties:2: size=mini: its disk of 1M is smaller than template testguest"
	"size=tiny\n|bad.properties: missing required key image"
	"image=testguest\n|bad.properties: missing required key size"
	"image=testguest\nimage=testguest\nsize=tiny\n|bad.properties:2: duplicate key image"
	"${B}just some words\n|bad.properties:3: expected key=value, got \"just some words\""
	"${B}Image=x\n|bad.properties:3: invalid key \"Image\""
	"${B}bridge=averyveryverylongbridge\n|bad.properties:3: invalid bridge name \"averyveryverylongbridge\""
	"${B}hostfwd=tcp::2222-:22\n|bad.properties:3: hostfwd needs net=user"
	"${B}net.2=user\n|bad.properties:3: NIC 2 has keys but NIC 1 has no net.1="
	"${B}bridge.1=br1\n|bad.properties:3: NIC 1 needs net.1= (bridge or user)"
	"${B}net.1=none\n|bad.properties:3: invalid net.1 \"none\" (bridge or user)"
	"${B}net.9=user\n|bad.properties:3: unknown key net.9"
	"${B}net.1=user\nmac.1=$taken_mac\n|bad.properties:4: mac.1=$taken_mac is already registered"
	"${B}net=user\nhostfwd=tcp::22-:22 rm\n|bad.properties:4: invalid hostfwd \"tcp::22-:22 rm\""
	"${B}init=nosuch.sh\n|bad.properties:3: init=nosuch.sh:"
	"${B}init=../x\n|bad.properties:3: invalid init script name \"../x\""
	"${B}comment=bell\a\n|bad.properties:3: comment: control character in value"
	"${B}comment=$long_value\n|bad.properties:3: value of comment longer than 1024 bytes"
)
n_before=$(vm_count)
names_before=$(cat "$NAMES")
macs_before=$(cat "$MACS")
ovl_before=$(find "$VRT_ROOT" -name 'hdd.*' | wc -l)
i=0
bad_cases=0
for c in "${cases[@]}"; do
	i=$((i + 1))
	# shellcheck disable=SC2059 # the case is a printf format on purpose
	printf "${c%%|*}" > "$E2E_DIR/bad.properties"
	"$VRT" create "$E2E_DIR/bad.properties" >"$E2E_DIR/bad.out" 2>"$E2E_DIR/bad.err"
	status=$?
	expect=${c#*|}
	lines=$(wc -l < "$E2E_DIR/bad.err")
	if [ "$status" != 2 ] || [ "$lines" != 1 ] || ! grep -qF -- "$expect" "$E2E_DIR/bad.err" || [ -s "$E2E_DIR/bad.out" ]; then
		echo "  case $i: status $status, $lines lines: $(head -c 300 "$E2E_DIR/bad.err")"
		echo "          expected: $expect"
		bad_cases=$((bad_cases + 1))
	fi
done
# Printf cannot write a NUL through a bash variable: write it directly.
printf 'image=testguest\nsize=tiny\ncomment=a\0b\n' > "$E2E_DIR/bad.properties"
"$VRT" create "$E2E_DIR/bad.properties" 2>"$E2E_DIR/bad.err"
[ "$?" = 2 ] && grep -qF "bad.properties:3: NUL byte in line" "$E2E_DIR/bad.err" || { echo "  NUL case: $(cat "$E2E_DIR/bad.err")"; bad_cases=$((bad_cases + 1)); }
"$VRT" create "$E2E_DIR/nonexistent.properties" 2>"$E2E_DIR/bad.err"
[ "$?" = 2 ] && grep -qF "nonexistent.properties: No such file" "$E2E_DIR/bad.err" || { echo "  missing file: $(cat "$E2E_DIR/bad.err")"; bad_cases=$((bad_cases + 1)); }
# Flags name the flag.
flag_cases=(
	"--image testguest --size huge|--size: unknown size \"huge\""
	"--image testguest --size tiny --disk thin|--disk: invalid disk \"thin\""
	"--image testguest --size tiny --mac 52:54:00:zz:00:00|--mac: invalid mac \"52:54:00:zz:00:00\""
	"--image nosuch --size tiny|--image: image=nosuch: template"
	"--size tiny|command line: missing required key image"
	"--image testguest --size tiny --name Bad|invalid VM name \"Bad\""
)
for c in "${flag_cases[@]}"; do
	i=$((i + 1))
	# shellcheck disable=SC2086 # split the flags on purpose
	"$VRT" create ${c%%|*} >"$E2E_DIR/bad.out" 2>"$E2E_DIR/bad.err"
	status=$?
	if [ "$status" != 2 ] || [ "$(wc -l < "$E2E_DIR/bad.err")" != 1 ] || ! grep -qF -- "${c#*|}" "$E2E_DIR/bad.err"; then
		echo "  flag case $i: status $status: $(cat "$E2E_DIR/bad.err")"
		bad_cases=$((bad_cases + 1))
	fi
done
"$VRT" create --image testguest --size tiny --comment $'two\nlines' 2>"$E2E_DIR/bad.err"
[ "$?" = 2 ] && grep -qF -- "--comment: control character in value" "$E2E_DIR/bad.err" || { echo "  newline flag: $(cat "$E2E_DIR/bad.err")"; bad_cases=$((bad_cases + 1)); }
"$VRT" create "$E2E_DIR/web.properties" --image testguest 2>"$E2E_DIR/bad.err"
[ "$?" = 2 ] || { echo "  file and flags together were accepted"; bad_cases=$((bad_cases + 1)); }
total=$((${#cases[@]} + 2 + ${#flag_cases[@]} + 2))
check "malformed input: $total cases exit 2 with one line naming file:line and the value" [ "$bad_cases" = 0 ]
check "malformed input: no VM directory was created" [ "$(vm_count)" = "$n_before" ]
check "malformed input: no registry line was added" \
	bash -c '[ "$(cat "$0")" = "$1" ] && [ "$(cat "$2")" = "$3" ]' "$NAMES" "$names_before" "$MACS" "$macs_before"
check "malformed input: no disk was created" [ "$(find "$VRT_ROOT" -name 'hdd.*' | wc -l)" = "$ovl_before" ]
check "malformed input: no staging dir left" bash -c '! ls -A "$0" | grep -q "^\."' "$VRT_ROOT/vm"
rm -f "$VRT_ROOT/images/broken.qcow2"
sed -i '/^size.mini.disk=/d' "$VRT_ROOT/vrt.conf"

# --- a created VM boots over its overlay ---------------------------------------
tmpl_sum=$(sha256sum < "$VRT_ROOT/images/testguest.qcow2")
"$VRT" create --name boot-1 --image testguest --size tiny --net none >/dev/null
check "boot: showcmd uses the overlay" bash -c '"$0" showcmd boot-1 | grep -q "vm/boot-1/hdd.ovl"' "$VRT"
launch boot-1
BOOT_PID=$LAUNCH_PID
check "boot: the created VM boots" wait_ready boot-1
console_cmd boot-1 'cat /mnt/disk/etc/template-marker'
check "boot: the guest reads the template's marker through the overlay" wait_for 15 console_has boot-1 "vrt-testguest-template v1"
console_cmd boot-1 'echo written-by-guest > /mnt/disk/etc/guest-file && sync && echo WRITE-DONE'
check "boot: the guest writes to its disk" wait_for 15 console_has boot-1 WRITE-DONE

# --- destroy of a running VM -----------------------------------------------------
out=$("$VRT" destroy boot-1 2>&1)
check "destroy: exit 0 on a running VM" [ "$?" = 0 ]
check "destroy: ... says it stopped it and deleted the disk" bash -c '[[ "$0" == *"stopped"*"hdd.ovl"* ]]' "$out"
check "destroy: the supervisor is gone" wait_exit "$BOOT_PID" 5
check "destroy: ... after a graceful poweroff (status 0)" [ "$EXIT_STATUS" = 0 ]
check "destroy: the guest powered off by ACPI" console_has boot-1 VRT-TESTGUEST-POWEROFF
check "destroy: hdd.ovl deleted" test ! -e "$VRT_ROOT/vm/boot-1/hdd.ovl"
check "destroy: DESTROYED written with a timestamp" \
	grep -Eq '^destroyed=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}' "$VRT_ROOT/vm/boot-1/DESTROYED"
check "destroy: the directory stays" test -f "$VRT_ROOT/vm/boot-1/instance.properties"
check "destroy: destroy.log line" grep -q "boot-1: destroyed" "$VRT_ROOT/log/destroy.log"
check "destroy: runtime dir removed" runtime_empty boot-1
check "destroy: the template is untouched" [ "$(sha256sum < "$VRT_ROOT/images/testguest.qcow2")" = "$tmpl_sum" ]
marker=$(cat "$VRT_ROOT/vm/boot-1/DESTROYED")
out=$("$VRT" destroy boot-1)
check "destroy: again is a no-op (exit 0, already destroyed)" [ "$?" = 0 -a "$out" = "boot-1: already destroyed" ]
check "destroy: ... the first timestamp stays" [ "$(cat "$VRT_ROOT/vm/boot-1/DESTROYED")" = "$marker" ]
"$VRT" destroy nosuch-vm 2>/dev/null
check "destroy: an unknown VM exits 2" [ "$?" = 2 ]

# --force on a guest that ignores the power button; two destroys at once.
"$VRT" create --name boot-2 --image testguest --size tiny --net none >/dev/null
cp "$VRT_ROOT/images/testguest.properties" "$E2E_DIR/props.bak"
image_cmdline_append "vrt.ignore_acpi=1 vrt.noagent=1"
launch boot-2
BOOT_PID=$LAUNCH_PID
check "destroy --force: ready" wait_ready boot-2
cp "$E2E_DIR/props.bak" "$VRT_ROOT/images/testguest.properties"
start=$(date +%s)
"$VRT" destroy --force boot-2 >"$E2E_DIR/d1" 2>&1 &
d1=$!
"$VRT" destroy --force boot-2 >"$E2E_DIR/d2" 2>&1 &
d2=$!
wait "$d1"; s1=$?
wait "$d2"; s2=$?
took=$(( $(date +%s) - start ))
check "destroy --force: two at once both exit 0" [ "$s1" = 0 -a "$s2" = 0 ]
check "destroy --force: done well before the 5 s shutdown timeout" [ "$took" -lt 5 ]
check "destroy --force: the supervisor is gone" wait_exit "$BOOT_PID" 5
check "destroy --force: the guest did not power off itself" not console_has boot-2 VRT-TESTGUEST-POWEROFF
check "destroy --force: disk gone, marked" bash -c '[ ! -e "$0/hdd.ovl" ] && [ -f "$0/DESTROYED" ]' "$VRT_ROOT/vm/boot-2"

# --- cleanup ---------------------------------------------------------------------
mac1=$(sed -n 's/^mac=//p' "$VRT_ROOT/vm/boot-1/instance.properties")
mac2=$(sed -n 's/^mac=//p' "$VRT_ROOT/vm/boot-2/instance.properties")
out=$("$VRT" cleanup)
check "cleanup: exit 0, removes both destroyed VMs" bash -c '[[ "$0" == *"removed boot-1"* && "$0" == *"removed boot-2"* ]]' "$out"
check "cleanup: vm/boot-1 gone" test ! -e "$VRT_ROOT/vm/boot-1"
check "cleanup: other VMs stay" test -f "$VRT_ROOT/vm/pluto-4711/hdd.ovl"
check "cleanup: cleanup.log line" grep -q "boot-1: removed" "$VRT_ROOT/log/cleanup.log"
check "cleanup: the name stays registered" registered boot-1
check "cleanup: the MAC stays registered" grep -qx "$mac1" "$MACS"
CLEANED=(boot-1 boot-2)
CLEANED_MACS=("$mac1" "$mac2")
"$VRT" create --name boot-1 --image testguest --size tiny --net none 2>"$E2E_DIR/err"
check "cleanup: create --name of a cleaned-up name exits 2" [ "$?" = 2 ]
check "cleanup: ... saying it is registered" grep -q "name boot-1 is already registered" "$E2E_DIR/err"
printf 'image=testguest\nsize=tiny\nmac=%s\n' "$mac1" > "$E2E_DIR/reuse.properties"
"$VRT" create "$E2E_DIR/reuse.properties" 2>"$E2E_DIR/err"
check "cleanup: a cleaned-up VM's MAC is not handed out again" [ "$?" = 2 ]
out=$("$VRT" destroy boot-1)
check "cleanup: destroy of a cleaned-up VM is a no-op" [ "$?" = 0 -a "$out" = "boot-1: already destroyed and cleaned up" ]
out=$("$VRT" cleanup)
check "cleanup: a second cleanup has nothing to do" [ "$?" = 0 -a -z "$out" ]
check "final: registry == vm/ (minus cleaned-up)" strict_invariant
check "final: vrt check passes" quiet "$VRT" check

e2e_finish
