#!/bin/bash
# Drives the bash completion function _vrt the way bash does (COMP_WORDS,
# COMP_CWORD) against a throwaway root: every subcommand in the CLI's table
# is offered, each one's flags (from its own usage text) are offered, and
# VM names, images, sizes, init scripts and request files come from the root.
# Usage: test-completion.sh SRCDIR COMPLETION_SCRIPT VRT_BUILD_DIR
set -u
src=$1 script=$2 bindir=$3
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img not installed (needed for a template)"; exit 77; }
passed=0 failed=0
check() {
        local what=$1; shift
        if "$@"; then passed=$((passed + 1)); else echo "FAIL - $what"; failed=$((failed + 1)); fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# With bash-completion's helpers when installed, as in an interactive shell.
if [ -r /usr/share/bash-completion/bash_completion ]; then
        . /usr/share/bash-completion/bash_completion
fi
. "$script"

export VRT_ROOT=$tmp/root VRT_RUNTIME_DIR=$tmp/run
real=$bindir/vrt
mkdir -p "$VRT_ROOT"/{images,init,inst,vm,iso} "$tmp/bin"
qemu-img create -q -f qcow2 "$VRT_ROOT/images/deb12.qcow2" 64M
qemu-img create -q -f qcow2 "$VRT_ROOT/images/alpine.qcow2" 64M
printf 'size.db.cpus=4\nsize.db.memory=8G\n' > "$VRT_ROOT/vrt.conf"
printf '#!/bin/sh\n' > "$VRT_ROOT/init/web.sh"
printf 'image=deb12\nsize=small\n' > "$VRT_ROOT/inst/pluto.properties"
for vm in web1 db1 old1 fail1; do
        "$real" create --image deb12 --size small --name $vm --net none >/dev/null || exit 1
done
"$real" destroy old1 >/dev/null || exit 1
# fail1: its first boot failed.
echo "init=web.sh" >> "$VRT_ROOT/vm/fail1/instance.properties"
rm -f "$VRT_ROOT/vm/fail1/CREATED"
echo "init script web.sh failed with status 1" > "$VRT_ROOT/vm/fail1/INIT-FAILED"
check "fail1 is init-failed for vrt list" bash -c '"$0" list | grep -q "^fail1 *init-failed"' "$real"
# db1 runs: the one thing a test without QEMU cannot have for real, so this
# vrt reports it running and passes everything else through.
cat > "$tmp/bin/vrt" <<EOS
#!/bin/bash
if [[ " \$* " == *" list --json "* ]]; then
        "$real" "\$@" | awk '/"name":"db1"/ { f = 1 } f && /"state":/ { sub(/"stopped"/, "\"running\""); f = 0 } { print }'
else
        exec "$real" "\$@"
fi
EOS
chmod +x "$tmp/bin/vrt"
export PATH=$tmp/bin:$PATH
check "the wrapped vrt list says db1 runs" bash -c 'vrt list --json | grep -A1 "\"name\":\"db1\"" | grep -q running'

# complete "vrt start w": the reply for the last word, sorted, one line.
complete_line() {
        local line=$1
        read -ra COMP_WORDS <<<"$line"
        [[ $line == *" " ]] && COMP_WORDS+=("")
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMP_LINE=$line COMP_POINT=${#line}
        COMPREPLY=()
        local fn=_vrt
        [ "${COMP_WORDS[0]}" = vrt-launch ] && fn=_vrt_launch
        "$fn" vrt "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
        printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ' | sed 's/ $//'
}
expect() { # expect LINE WANTED: the reply is exactly WANTED
        local got; got=$(complete_line "$1")
        [ "$got" = "$2" ] || { echo "  '$1<TAB>' gave '$got', want '$2'"; return 1; }
}
offers() { # offers LINE WORD...: the reply has each WORD
        local got w; got=" $(complete_line "$1") "
        for w in "${@:2}"; do
                [[ $got == *" $w "* ]] || { echo "  '$1<TAB>' gave '$got', lacks '$w'"; return 1; }
        done
}

cmds=$(grep -hoE '\{ *"[a-z-]+", *cmd_[a-z_]+ *[,}]' "$src"/launcher/cli/*.c | sed -E 's/\{ *"([a-z-]+)".*/\1/')
subs=$(grep -hoE '\{ *"[a-z-]+", *image_[a-z_]+ *[,}]' "$src"/launcher/cli/*.c | sed -E 's/\{ *"([a-z-]+)".*/\1/')
check "the CLI table has commands (parsing the sources works)" test "$(echo "$cmds" | wc -w)" -ge 10
for c in $cmds; do
        check "vrt <TAB> offers $c" offers "vrt " "$c"
        check "vrt ${c:0:2}<TAB> offers $c" offers "vrt ${c:0:2}" "$c"
        flags=$("$real" "$c" --help 2>&1 | grep -vF '"--help"' | grep -oE -- '--[a-z][a-z-]+' | sort -u)
        [ "$c" = image ] && flags=
        for f in $flags; do
                check "vrt $c --<TAB> offers $f" offers "vrt $c --" "$f"
        done
done
for s in $subs; do
        check "vrt image <TAB> offers $s" offers "vrt image " "$s"
        for f in $("$real" image "$s" --help 2>&1 | grep -oE -- '--[a-z][a-z-]+' | grep -vx -- --help | sort -u); do
                check "vrt image $s --<TAB> offers $f" offers "vrt image $s --" "$f"
        done
done
check "vrt --<TAB>: global options" expect "vrt --" "--help --json --root --version"
check "vrt --root DIR <TAB> still offers commands" offers "vrt --root $VRT_ROOT " list start

# VM names by state.
check "vrt start <TAB>: stopped VMs (an init-failed one is refused)" expect "vrt start " "web1"
check "vrt start w<TAB>" expect "vrt start w" "web1"
check "vrt stop <TAB>: running VMs" expect "vrt stop " "db1"
check "vrt stop --force <TAB>: running VMs" expect "vrt stop --force " "db1"
check "vrt console <TAB>: running VMs" expect "vrt console " "db1"
check "vrt qmp <TAB>: running VMs" expect "vrt qmp " "db1"
check "vrt qmp db1 query-s<TAB>" expect "vrt qmp db1 query-s" "query-status"
check "vrt status <TAB>: every VM" expect "vrt status " "db1 fail1 web1"
check "vrt showcmd <TAB>: every VM" expect "vrt showcmd " "db1 fail1 web1"
check "vrt destroy <TAB>: not destroyed ones" expect "vrt destroy " "db1 fail1 web1"
check "vrt init <TAB>: first boot not done" expect "vrt init " "fail1"
check "--root elsewhere: no VMs there" expect "vrt --root $tmp/bin start " ""
# Root contents.
check "vrt create --image <TAB>: templates" expect "vrt create --image " "alpine deb12"
check "vrt create --size <TAB>: sizes incl. vrt.conf's" expect "vrt create --size " "db large medium small"
check "vrt create --init <TAB>: init scripts" expect "vrt create --init " "web.sh"
check "vrt create --net <TAB>" expect "vrt create --net " "bridge none user"
check "vrt create --disk <TAB>" expect "vrt create --disk " "copy overlay"
check "vrt create --firmware <TAB>" expect "vrt create --firmware " "bios uefi"
check "vrt create <TAB>: requests in inst/" expect "vrt create " "pluto"
check "vrt image info <TAB>: templates" expect "vrt image info " "alpine deb12"
check "vrt image protect d<TAB>" expect "vrt image protect d" "deb12"
check "vrt image install x --firmware <TAB>" expect "vrt image install x --firmware " "bios uefi"
check "vrt spool <TAB>: queues" expect "vrt spool " "destroy inst start stop"
check "vrt list <TAB>: nothing but flags" expect "vrt list " ""
check "vrt-launch <TAB>: VMs that can run" expect "vrt-launch " "fail1 web1"
check "vrt-launch --<TAB>" offers "vrt-launch --" --root --seed-image --version

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
