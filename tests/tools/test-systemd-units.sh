#!/bin/bash
# Checks the generated systemd units, sysusers.d and tmpfiles.d entries:
# the build's substitutions, the settings vrt-launch relies on, and
# systemd's own verdict (systemd-analyze verify works without systemd
# running as PID 1). Usage: test-systemd-units.sh UNIT_DIR SYSUSERS TMPFILES BINDIR BUILT_BIN_DIR
set -u
units=$1 sysusers=$2 tmpfiles=$3 bindir=$4 built=$5
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze not installed"; exit 77; }

passed=0 failed=0
check() {
        local what=$1; shift
        if "$@"; then echo "ok - $what"; passed=$((passed + 1)); else echo "FAIL - $what"; failed=$((failed + 1)); fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export SYSTEMD_LOG_LEVEL=warning

all=(vrt@.service vrt-spool.service vrt-spool.path vrt-spool.timer vrt-autostart.service)
for u in "${all[@]}"; do
        check "$u generated" test -s "$units/$u"
        check "$u: no @placeholder@ left" bash -c '! grep -q "@[a-z]*@" "$0"' "$units/$u"
        # Verify against the built binaries: the installed ones need not exist yet.
        sed "s|=$bindir/|=$built/|" "$units/$u" > "$tmp/$u"
done

svc=$units/vrt@.service
check "vrt@.service runs $bindir/vrt-launch %i" grep -qx "ExecStart=$bindir/vrt-launch %i" "$svc"
check "vrt@.service: Type=notify" grep -qx "Type=notify" "$svc"
check "vrt@.service: NotifyAccess=main" grep -qx "NotifyAccess=main" "$svc"
check "vrt@.service: KillMode=mixed (SIGTERM to the supervisor only)" grep -qx "KillMode=mixed" "$svc"
check "vrt@.service: exit 3 (forced stop) is success" grep -qx "SuccessExitStatus=3" "$svc"
check "vrt@.service: Restart=on-failure" grep -qx "Restart=on-failure" "$svc"
check "vrt@.service: exit 2 (bad configuration) and 5 (runs on another host) are not restarted" grep -qx "RestartPreventExitStatus=2 5" "$svc"
check "vrt@.service: VRT_ROOT set" grep -qx "Environment=VRT_ROOT=/var/lib/vrt" "$svc"
stop_s=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' "$svc")
check "vrt@.service: TimeoutStopSec ($stop_s s) > default shutdown_timeout 120 s + escalation 20 s" \
        test "${stop_s:-0}" -gt 140
check "vrt@.service: ordered after remote-fs.target (NFS root)" grep -q "^After=.*remote-fs.target" "$svc"
check "vrt-spool.service runs $bindir/vrt spool" grep -qx "ExecStart=$bindir/vrt spool" "$units/vrt-spool.service"
check "vrt-spool.service: no start rate limit" grep -qx "StartLimitIntervalSec=0" "$units/vrt-spool.service"
for d in inst start stop destroy; do
        check "vrt-spool.path watches $d/" grep -qx "PathChanged=/var/lib/vrt/$d" "$units/vrt-spool.path"
done
check "vrt-autostart.service: after network-online and remote-fs" \
        grep -qx "After=network-online.target remote-fs.target systemd-tmpfiles-setup.service" "$units/vrt-autostart.service"
check "vrt-autostart.service runs vrt autostart" grep -q "^ExecStart=$bindir/vrt autostart" "$units/vrt-autostart.service"

# systemd's verdict. verify exits 0 even for settings it ignores, so any
# message about our files counts as a failure.
systemd-analyze verify --man=no "$tmp/vrt@demo.service" "$tmp/vrt-spool.service" "$tmp/vrt-spool.path" \
        "$tmp/vrt-spool.timer" "$tmp/vrt-autostart.service" >"$tmp/verify.log" 2>&1
rc=$?
grep -F "$tmp" "$tmp/verify.log" | sed 's/^/  /'
check "systemd-analyze verify passes" test "$rc" = 0
check "systemd-analyze verify has nothing to say about our units" bash -c '! grep -qF "$0" "$1"' "$tmp" "$tmp/verify.log"

# ...and it would notice a mistake (so the checks above can fail).
mkdir "$tmp/bad"
sed 's/^KillMode=mixed/KillMode=mixd/' "$tmp/vrt@.service" > "$tmp/bad/vrt@.service"
systemd-analyze verify --man=no "$tmp/bad/vrt@demo.service" >"$tmp/bad.log" 2>&1
check "systemd-analyze verify flags a broken unit" grep -q "bad/vrt@.service:.*mixd" "$tmp/bad.log"

if command -v systemd-sysusers >/dev/null; then
        mkdir -p "$tmp/root/etc"
        SYSTEMD_LOG_LEVEL=info systemd-sysusers --root="$tmp/root" --dry-run "$sysusers" >"$tmp/sysusers.log" 2>&1
        check "sysusers.d: parses" test $? = 0
        check "sysusers.d: creates the user vrt" grep -q "Creating user 'vrt'" "$tmp/sysusers.log"
fi
if command -v systemd-tmpfiles >/dev/null; then
        systemd-tmpfiles --root="$tmp/root" --create "$tmpfiles" >"$tmp/tmpfiles.log" 2>&1
        check "tmpfiles.d: applies" test $? = 0
        check "tmpfiles.d: makes /run/vrt 0755" test "$(stat -c %a "$tmp/root/run/vrt" 2>/dev/null)" = 755
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
