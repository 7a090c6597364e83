#!/bin/bash
# Builds the Debian package from a copy of the source tree (the files git
# knows, committed or not, else the whole tree without build directories),
# runs lintian on it (errors and warnings fail), and unpacks it with
# dpkg -x into a throwaway directory to check what it installs: binaries
# that run, man pages, bash completion, systemd units that systemd-analyze
# accepts, sysusers.d and tmpfiles.d entries, the Cockpit page, and
# maintainer scripts that create the user but enable and start nothing.
# Nothing is installed on the host. Usage: test-deb.sh SRCDIR VERSION
set -u
src=$1 version=$2

for p in dpkg-buildpackage dpkg-checkbuilddeps dh lintian; do
        command -v "$p" >/dev/null || { echo "SKIP: $p not installed (tools/setup-host installs it)"; exit 77; }
done

passed=0 failed=0
check() {
        local what=$1; shift
        if "$@"; then echo "ok - $what"; passed=$((passed + 1)); else echo "FAIL - $what"; failed=$((failed + 1)); fi
}
tmp=$(mktemp -d /tmp/vrt-test-deb.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export SYSTEMD_LOG_LEVEL=warning
unset ASAN_OPTIONS UBSAN_OPTIONS DEB_BUILD_PROFILES MAKEFLAGS

# The copy: dpkg-buildpackage writes its results next to it, into $tmp.
tree=$tmp/vrt-$version
mkdir "$tree"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$src" && git ls-files -z --cached --others --exclude-standard |
                while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
                tar --null -T - -cf -) | tar -xf - -C "$tree"
else
        tar -C "$src" --exclude='./build*' --exclude='./obj-*' --exclude=./.git \
                --exclude=./debian/vrt --exclude=./debian/.debhelper -cf - . | tar -xf - -C "$tree"
fi
check "source copied" test -x "$tree/debian/rules"

# The unit tests run in their own meson test targets: build without them.
if ! (cd "$tree" && dpkg-checkbuilddeps -Pnocheck) >"$tmp/builddeps.log" 2>&1; then
        cat "$tmp/builddeps.log"
        echo "SKIP: build dependencies missing (tools/setup-host installs them)"
        exit 77
fi
check "debian/changelog has meson's project version $version" \
        test "$(cd "$tree" && dpkg-parsechangelog -SVersion)" = "$version"

if (cd "$tree" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" \
        dpkg-buildpackage -us -uc -b -Pnocheck) >"$tmp/build.log" 2>&1; then
        check "dpkg-buildpackage -us -uc -b" true
else
        tail -n 40 "$tmp/build.log" | sed 's/^/  /'
        check "dpkg-buildpackage -us -uc -b" false
        exit 1
fi
arch=$(dpkg --print-architecture)
deb=$tmp/vrt_${version}_$arch.deb
check "vrt_${version}_$arch.deb built" test -s "$deb"
[ -s "$deb" ] || exit 1

# lintian: the overrides in debian/vrt.lintian-overrides carry their reasons.
lintian --fail-on error,warning --info "$tmp/vrt_${version}_$arch.changes" >"$tmp/lintian.log" 2>&1
rc=$?
grep -v '^running with root privileges' "$tmp/lintian.log" | sed 's/^/  /'
check "lintian: no errors, no warnings" test "$rc" = 0

# The control data.
deps=$(dpkg-deb -f "$deb" Depends)
for d in qemu-system-x86 adduser libjson-c5 libqcow1 libcap-ng0; do
        check "Depends: $d" grep -qE "(^|, )$d( |,|$)" <<<"$deps"
done
check "qemu-utils is not a hard dependency (vrt writes qcow2 itself)" bash -c '! grep -q qemu-utils <<<"$0"' "$deps"
check "cockpit is only suggested" grep -q cockpit-bridge <<<"$(dpkg-deb -f "$deb" Suggests)"

# The maintainer scripts: the user, the root's layout, and no unit
# enabled, started or stopped on install or upgrade.
mkdir "$tmp/control"
dpkg-deb -e "$deb" "$tmp/control"
for s in postinst postrm; do
        check "$s is valid sh" sh -n "$tmp/control/$s"
done
check "postinst creates the system user vrt" grep -q "adduser --system --group" "$tmp/control/postinst"
check "postinst creates the root's directories" grep -q "mkdir -m 0755" "$tmp/control/postinst"
check "postinst applies the tmpfiles.d entry" grep -q "systemd-tmpfiles .*--create vrt.conf" "$tmp/control/postinst"
check "postinst starts no unit" bash -c '! grep -q "deb-systemd-invoke" "$0"' "$tmp/control/postinst"
# dh_installsystemd --no-enable: "enable" only where the unit was
# enabled before (an upgrade), inside a debian-installed test each.
check "postinst enables a unit only if it was enabled before" bash -c \
        'test "$(grep -c "deb-systemd-helper --quiet was-enabled" "$0")" = "$(grep -c "deb-systemd-helper debian-installed" "$0")" &&
         ! grep -q "^[^#]*systemctl[^|]* enable" "$0"' "$tmp/control/postinst"
check "no unit is stopped on upgrade" bash -c '! grep -qs "deb-systemd-invoke stop" "$0"' "$tmp/control/preinst"
check "no VM unit in the maintainer scripts" bash -c '! grep -q "vrt@" "$0"/postinst "$0"/postrm' "$tmp/control"
check "postrm purge removes only empty directories" bash -c \
        'grep -q "rmdir --ignore-fail-on-non-empty" "$0" && ! grep -q "rm -r" "$0"' "$tmp/control/postrm"

# The package's own part of postinst and postrm (before debhelper's
# snippets), run against a root in $tmp with adduser and getent faked.
mkdir -p "$tmp/fake" "$tmp/sys/run"
cat >"$tmp/fake/adduser" <<EOF
#!/bin/sh
echo "adduser \$*" >>"$tmp/adduser.log"
EOF
cat >"$tmp/fake/getent" <<EOF
#!/bin/sh
[ -e "$tmp/user-exists" ]
EOF
chmod +x "$tmp/fake/adduser" "$tmp/fake/getent"
for s in postinst postrm; do
        sed -e '/^# Automatically added by/,$d' -e "s|/var/lib/vrt|$tmp/sys/vrt|g" -e "s|/run/vrt|$tmp/sys/run/vrt|g" \
                "$tmp/control/$s" >"$tmp/$s"
        echo "exit 0" >>"$tmp/$s"
done
maint() { PATH=$tmp/fake:$PATH sh -e "$tmp/$1" "$2"; }
vr=$tmp/sys/vrt
check "postinst configure runs" maint postinst configure
check "postinst called adduser --system --group ... vrt" grep -q -- "--system --group .*vrt$" "$tmp/adduser.log"
for d in images iso init inst vm start stop destroy autostart install log; do
        check "postinst created the root's $d/" test -d "$vr/$d"
done
touch "$tmp/user-exists"; rm -f "$tmp/adduser.log"
mkdir -p "$vr/vm/web01" && echo data >"$vr/vm/web01/hdd.ovl" && echo web01 >"$vr/install/installed.txt"
rmdir "$vr/iso"
check "postinst configure (upgrade) runs again" maint postinst configure 0.1.0
check "no adduser when the user exists" test ! -e "$tmp/adduser.log"
check "the VM's data is untouched by postinst" test "$(cat "$vr/vm/web01/hdd.ovl")" = data
check "a removed directory comes back" test -d "$vr/iso"
mkdir "$tmp/sys/run/vrt"
check "postrm remove runs" maint postrm remove
check "postrm remove keeps the root" test -d "$vr/images"
check "postrm purge runs" maint postrm purge
check "purge keeps the VM's disk" test "$(cat "$vr/vm/web01/hdd.ovl" 2>/dev/null)" = data
check "purge keeps the name registry" test -s "$vr/install/installed.txt"
check "purge removes the empty directories" test ! -e "$vr/images" -a ! -e "$vr/start"
check "purge removes an empty /run/vrt" test ! -e "$tmp/sys/run/vrt"
rm -r "$vr/vm" "$vr/install"
check "postrm purge with an empty root runs" maint postrm purge
check "purge of an empty root removes it" test ! -e "$vr"
mkdir -p "$tmp/nfs" && ln -s "$tmp/nfs" "$vr"
check "postinst with the root a symlink runs" maint postinst configure
check "the layout is made in the symlink's target" test -d "$tmp/nfs/vm" -a -L "$vr"
check "postrm purge with the root a symlink runs" maint postrm purge
check "purge leaves a symlinked root alone" test -L "$vr" -a -d "$tmp/nfs/vm"

# The files, unpacked into a throwaway root.
root=$tmp/root
dpkg -x "$deb" "$root"
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$tmp/contents"
check "nothing under /var/lib/vrt or /usr/local is shipped" bash -c '! grep -qE "^/(var/lib/vrt|usr/local)" "$0"' "$tmp/contents"
for b in vrt vrt-launch; do
        check "/usr/bin/$b is executable" test -x "$root/usr/bin/$b"
        out=$("$root/usr/bin/$b" --version 2>&1)
        check "$b --version prints '$b $version' (got '$out')" test "$out" = "$b $version"
done
check "vrt --help runs" bash -c '"$0" --help >/dev/null' "$root/usr/bin/vrt"
# vrt runs these for export/import/backup/restore and top.
for b in vrt-archive vrt-top; do
        check "/usr/libexec/vrt/$b is executable" test -x "$root/usr/libexec/vrt/$b"
        out=$("$root/usr/libexec/vrt/$b" --version 2>&1)
        check "$b --version prints '$b $version' (got '$out')" test "$out" = "$b $version"
done
# An empty root, as postinst makes it: the packaged vrt checks it.
mkdir -p "$tmp/emptyroot"/{vm,images,inst,start,stop,destroy,log,autostart,init,iso}
check "the packaged vrt check passes on an empty root" bash -c \
        'VRT_HOST_CONF=/nonexistent "$0" --root "$1" check | grep -qx "configuration OK"' "$root/usr/bin/vrt" "$tmp/emptyroot"

for m in man8/vrt.8 man8/vrt-launch.8 man5/vrt.conf.5 man5/vrt-instance.properties.5 man7/vrt-spool.7; do
        f=$root/usr/share/man/$m.gz
        check "man page /usr/share/man/$m.gz" test -s "$f"
        check "$m.gz is roff with a .TH" bash -c 'zcat "$0" | grep -q "^\.TH"' "$f"
done
if command -v man >/dev/null; then
        check "man -l vrt.8.gz renders" bash -c 'MANWIDTH=80 man -l "$0" 2>/dev/null | grep -q "vrt"' "$root/usr/share/man/man8/vrt.8.gz"
fi

comp=$root/usr/share/bash-completion/completions
check "bash completion /usr/share/bash-completion/completions/vrt" test -s "$comp/vrt"
check "bash completion for vrt-launch links to vrt" test "$(readlink "$comp/vrt-launch")" = vrt
check "the completion registers for vrt and vrt-launch" bash -c \
        'source "$0" && complete -p vrt >/dev/null && complete -p vrt-launch >/dev/null' "$comp/vrt"

units=(vrt@.service vrt-spool.service vrt-spool.path vrt-spool.timer vrt-autostart.service)
mkdir "$tmp/units"
for u in "${units[@]}"; do
        f=$root/lib/systemd/system/$u
        check "unit /lib/systemd/system/$u" test -s "$f"
        # Verify against the unpacked binaries: the package is not installed.
        sed "s|=/usr/bin/|=$root/usr/bin/|" "$f" >"$tmp/units/$u"
done
check "vrt@.service runs /usr/bin/vrt-launch" grep -qx "ExecStart=/usr/bin/vrt-launch %i" "$root/lib/systemd/system/vrt@.service"
check "vrt-spool.service runs /usr/bin/vrt spool" grep -qx "ExecStart=/usr/bin/vrt spool" "$root/lib/systemd/system/vrt-spool.service"
check "no unit under /usr/lib/systemd/system (Debian 12 looks in /lib)" test ! -e "$root/usr/lib/systemd/system"
if command -v systemd-analyze >/dev/null; then
        (cd "$tmp/units" && systemd-analyze verify --man=no "$tmp/units/vrt@demo.service" "$tmp/units/vrt-spool.service" \
                "$tmp/units/vrt-spool.path" "$tmp/units/vrt-spool.timer" "$tmp/units/vrt-autostart.service") \
                >"$tmp/verify.log" 2>&1
        rc=$?
        sed 's/^/  /' "$tmp/verify.log"
        check "systemd-analyze verify passes for the installed units" test "$rc" = 0
        check "systemd-analyze verify has nothing to say about them" bash -c '! grep -qF "$0" "$1"' "$tmp/units" "$tmp/verify.log"
fi

check "sysusers.d entry for user vrt" grep -q "^u vrt " "$root/usr/lib/sysusers.d/vrt.conf"
check "tmpfiles.d entry for /run/vrt" grep -q "^d /run/vrt " "$root/usr/lib/tmpfiles.d/vrt.conf"

ck=$root/usr/share/cockpit/vrt
check "Cockpit page /usr/share/cockpit/vrt/index.html" test -s "$ck/index.html"
check "Cockpit manifest is JSON with a menu entry" python3 -c \
        'import json, sys; m = json.load(open(sys.argv[1])); assert m["menu"]["index"]["label"]' "$ck/manifest.json"
check "every file the Cockpit page loads is shipped" bash -c \
        'for f in $(grep -oE "(src|href)=\"[^\"/]+\"" "$0/index.html" | sed "s/.*=\"//; s/\"$//"); do test -s "$0/$f" || exit 1; done' "$ck"
check "OCF agent ocf:vrt:vm in /usr/lib/ocf/resource.d/vrt/vm, executable" test -x "$root/usr/lib/ocf/resource.d/vrt/vm"
check "Pacemaker and resource-agents are only suggested" grep -q "pacemaker.*resource-agents" <<<"$(dpkg-deb -f "$deb" Suggests)"
check "copyright and changelog in /usr/share/doc/vrt" test -s "$root/usr/share/doc/vrt/copyright" -a -s "$root/usr/share/doc/vrt/changelog.gz"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
