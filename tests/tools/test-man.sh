#!/bin/bash
# The man pages cover what the programs accept, and render without warnings.
# Subcommands and long options are read from the CLI's tables in the
# sources; config keys are found by asking the parser itself: every
# identifier-like string literal in launcher/core/*.c is tried as a key in
# vrt.conf, instance.properties and an image sidecar, and counts as a key
# when `vrt check` answers differently than for a key that cannot exist.
# Usage: test-man.sh SRCDIR MANDIR VRT
set -u
src=$1 man=$2 vrt=$3
passed=0 failed=0
check() {
        local what=$1; shift
        if "$@"; then passed=$((passed + 1)); else echo "FAIL - $what"; failed=$((failed + 1)); fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
command -v groff >/dev/null || { echo "SKIP: groff not installed"; exit 77; }

pages=(vrt.8 vrt-launch.8 vrt.conf.5 vrt-instance.properties.5 vrt-spool.7)
for p in "${pages[@]}"; do
        check "$p built" test -s "$man/$p"
        LC_ALL=C.UTF-8 groff -ww -z -man -Tutf8 "$man/$p" >"$tmp/lint" 2>&1
        check "$p: groff -ww has nothing to say" test ! -s "$tmp/lint"
        sed 's/^/  /' "$tmp/lint"
        if command -v mandoc >/dev/null; then
                mandoc -T lint -W warning "$man/$p" >"$tmp/lint" 2>&1
                check "$p: mandoc -T lint clean" test ! -s "$tmp/lint"
                sed 's/^/  /' "$tmp/lint"
        fi
        # Plain text: no bold, no underline, no hyphenation at line ends.
        MANWIDTH=300 LC_ALL=C.UTF-8 groff -man -Tutf8 -rLL=300n -P-cbou -Z "$man/$p" >/dev/null 2>&1
        LC_ALL=C.UTF-8 groff -man -Tascii -rLL=300n -rHY=0 -P-cbou "$man/$p" 2>/dev/null > "$tmp/$p.txt"
done

# --- subcommands: the tables { "name", cmd_x } and { "name", image_x } ---
cmds=$(grep -hoE '\{ *"[a-z-]+", *cmd_[a-z_]+ *[,}]' "$src"/launcher/cli/*.c | sed -E 's/\{ *"([a-z-]+)".*/\1/')
subs=$(grep -hoE '\{ *"[a-z-]+", *image_[a-z_]+ *[,}]' "$src"/launcher/cli/*.c | sed -E 's/\{ *"([a-z-]+)".*/\1/')
check "the CLI table has commands (parsing the sources works)" test "$(echo "$cmds" | wc -w)" -ge 10
check "the image table has subcommands" test "$(echo "$subs" | wc -w)" -ge 3
for c in $cmds; do
        check "vrt(8) has an entry for 'vrt $c'" grep -qE "^ {4,}$c( |\$)" "$tmp/vrt.8.txt"
        check "vrt --help lists '$c'" bash -c '"$0" --help | grep -qE "^  $1( |\$)"' "$vrt" "$c"
done
for s in $subs; do
        check "vrt(8) has an entry for 'vrt image $s'" grep -qE "^ {4,}image $s( |\$)" "$tmp/vrt.8.txt"
done

# --- long options: every struct option entry ---
opts() { grep -hoE '\{ *"[a-z-]+", *(no|required|optional)_argument' "$@" | sed -E 's/\{ *"([a-z-]+)".*/\1/' | sort -u; }
cli_opts=$(opts "$src"/launcher/cli/*.c)
check "the CLI has long options (parsing the sources works)" test "$(echo "$cli_opts" | wc -w)" -ge 10
for o in $cli_opts; do
        check "vrt(8) documents --$o" grep -qE -- "--$o\b" "$tmp/vrt.8.txt"
done
for o in $(opts "$src"/launcher/vm/*.c); do
        check "vrt-launch(8) documents --$o" grep -qE -- "--$o\b" "$tmp/vrt-launch.8.txt"
done
# Each command's own usage text names only options the page has.
for c in $cmds; do
        for o in $("$vrt" "$c" --help 2>&1 | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
                check "vrt(8) documents $o (from 'vrt $c --help')" grep -qE -- "$o\b" "$tmp/vrt.8.txt"
        done
done

# --- config keys, found by asking the parser ---
cands=$(cat "$src"/launcher/core/*.c | grep -oE '"[a-z][a-z_]*"' | tr -d '"' | sort -u)
root=$tmp/root
mkdir -p "$root/images" "$root/vm/probe" "$root/inst"
: > "$root/images/probe.qcow2"
# probe FILE PREFIX KEY VALUE [BODY]: 0 when the parser accepts the key,
# i.e. `vrt check` says something else than for a key that cannot exist
# (with that key's name put in).
base_for() {
        printf '%s%s%s=%s\n' "$4" "$1" zzqqnokey "$3" > "$2"
        "$vrt" --root "$root" check 2>&1
}
probe() {
        local file=$1 pre=$2 key=$3 value=$4 body=${5:-} base got
        base=$(base_for "$pre" "$file" "$value" "$body" | sed "s/zzqqnokey/$key/g")
        printf '%s%s%s=%s\n' "$body" "$pre" "$key" "$value" > "$file"
        got=$("$vrt" --root "$root" check 2>&1)
        : > "$file"
        [ "$got" != "$base" ]
}
conf_keys=() size_keys=() inst_keys=() nic_keys=() image_keys=()
rm -f "$root/images/probe.properties"
for k in $cands; do
        probe "$root/vrt.conf" "" "$k" x && conf_keys+=("$k")
        probe "$root/vrt.conf" "size.small." "$k" 1 && size_keys+=("$k")
done
rm -f "$root/vrt.conf"
for k in $cands; do
        probe "$root/vm/probe/instance.properties" "" "$k" x $'image=probe\nsize=small\n' && inst_keys+=("$k")
        probe "$root/vm/probe/instance.properties" "" "$k.1" x $'image=probe\nsize=small\n' && nic_keys+=("$k")
done
rm -rf "$root/vm/probe"
for k in $cands; do
        probe "$root/images/probe.properties" "" "$k" x && image_keys+=("$k")
done
echo "vrt.conf keys: ${conf_keys[*]}; size.NAME.: ${size_keys[*]}"
echo "instance keys: ${inst_keys[*]}; numbered: ${nic_keys[*]}; image sidecar: ${image_keys[*]}"
# The oracle works: keys everybody knows are found, a made-up one is not.
check "probe finds vrt.conf bridge" bash -c '[[ " $0 " == *" bridge "* ]]' "${conf_keys[*]}"
check "probe finds size.small.memory" bash -c '[[ " $0 " == *" memory "* ]]' "${size_keys[*]}"
check "probe finds instance image and net.1" bash -c '[[ " $0 " == *" image "* && " $1 " == *" net "* ]]' "${inst_keys[*]}" "${nic_keys[*]}"
check "probe finds image sidecar kernel" bash -c '[[ " $0 " == *" kernel "* ]]' "${image_keys[*]}"
check "probe rejects a made-up key" bash -c '! [[ " $0 " == *" small "* ]]' "${conf_keys[*]}"
for k in "${conf_keys[@]}"; do check "vrt.conf(5) documents $k=" grep -qE "(^| )$k=" "$tmp/vrt.conf.5.txt"; done
for k in "${size_keys[@]}"; do check "vrt.conf(5) documents size.NAME.$k=" grep -qF "size.NAME.$k=" "$tmp/vrt.conf.5.txt"; done
for k in "${inst_keys[@]}"; do check "vrt-instance.properties(5) documents $k=" grep -qE "(^| )$k=" "$tmp/vrt-instance.properties.5.txt"; done
for k in "${nic_keys[@]}"; do check "vrt-instance.properties(5) documents $k.N=" grep -qF "$k.N=" "$tmp/vrt-instance.properties.5.txt"; done
for k in "${image_keys[@]}"; do check "vrt-spool(7) documents image sidecar $k=" grep -qE "(^| )$k=" "$tmp/vrt-spool.7.txt"; done

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
