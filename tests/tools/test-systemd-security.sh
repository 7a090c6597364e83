#!/bin/bash
# systemd's own verdict on the sandbox of the generated units:
# `systemd-analyze security --offline=yes` (systemd 252 and later; works
# without systemd as PID 1) must rate vrt@.service at most 5.0 and
# vrt-spool.service at most 3.0, and the options vrt-launch and QEMU rely on
# must be as documented. Usage: test-systemd-security.sh UNIT_DIR
set -u
units=$1
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze not installed"; exit 77; }
systemd-analyze security --help 2>&1 | grep -q -- '--offline' ||
        { echo "SKIP: systemd-analyze security has no --offline (systemd < 252)"; exit 77; }

passed=0 failed=0
check() {
        local what=$1; shift
        if "$@"; then echo "ok - $what"; passed=$((passed + 1)); else echo "FAIL - $what"; failed=$((failed + 1)); fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export SYSTEMD_LOG_LEVEL=warning

# --threshold takes tenths: 50 is an exposure of 5.0.
for pair in vrt@.service:50 vrt-spool.service:30; do
        u=${pair%%:*} limit=${pair##*:}
        systemd-analyze security --offline=yes --threshold="$limit" "$units/$u" >"$tmp/$u.log" 2>&1
        rc=$?
        score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$tmp/$u.log")
        echo "  $u: exposure ${score:-?}"
        check "$u: exposure ${score:-?} <= $((limit / 10)).$((limit % 10))" test "$rc" = 0 -a -n "$score"
done

# ...and the threshold can fail: the unhardened unit of before scored 9.6.
sed -n '/^# --- Sandbox/q;p' "$units/vrt@.service" > "$tmp/bare@.service"
systemd-analyze security --offline=yes --threshold=50 "$tmp/bare@.service" >"$tmp/bare.log" 2>&1
check "an unhardened vrt@.service fails the threshold" test $? != 0

for u in vrt@.service vrt-spool.service; do
        f=$units/$u
        caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$f")
        check "$u: exactly the capabilities vrt-launch uses" \
                test "$caps" = "CAP_NET_ADMIN CAP_SETUID CAP_SETGID CAP_SETPCAP CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_KILL"
        check "$u: NoNewPrivileges=yes" grep -qx "NoNewPrivileges=yes" "$f"
        check "$u: ProtectSystem=strict" grep -qx "ProtectSystem=strict" "$f"
        check "$u: the root and the runtime dir stay writable" grep -qx "ReadWritePaths=/var/lib/vrt /run/vrt" "$f"
        check "$u: /dev/net/tun allowed" grep -qx "DeviceAllow=/dev/net/tun rw" "$f"
        check "$u: /dev/kvm allowed" grep -qx "DeviceAllow=/dev/kvm rw" "$f"
        check "$u: address families" grep -qx "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6" "$f"
        check "$u: SystemCallFilter=@system-service" grep -qx "SystemCallFilter=@system-service" "$f"
        # TCG writes the code it runs: this one would kill every TCG guest.
        check "$u: no MemoryDenyWriteExecute=yes (QEMU's TCG)" bash -c '! grep -q "^MemoryDenyWriteExecute=yes" "$0"' "$f"
        check "$u: no PrivateDevices=yes (tap, kvm)" bash -c '! grep -q "^PrivateDevices=yes" "$0"' "$f"
done

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
