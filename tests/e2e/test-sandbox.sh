#!/bin/bash
# The sandbox of vrt@.service, applied without systemd: a bridged test guest
# boots, networks and stops under vrt-launch with the unit's capability
# bounding set (setpriv), no_new_privs, and a read-only file system except
# the root and the runtime dir (a private mount namespace). This is what
# CapabilityBoundingSet=, NoNewPrivileges= and ProtectSystem=strict +
# ReadWritePaths= do; the syscall filter and the device ACL need systemd as
# PID 1 and are checked offline by tests/tools/test-systemd-security.sh.
# Negative controls: without CAP_NET_ADMIN the tap cannot be made, without
# CAP_SETPCAP QEMU is not started, and the file system really is read-only. Runs in its own network namespace.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=20
e2e_setup

[ -c /dev/net/tun ] || skip_all "no /dev/net/tun"
command -v setpriv >/dev/null || skip_all "setpriv (util-linux) not installed"
command -v unshare >/dev/null || skip_all "unshare (util-linux) not installed"
NS="vrt-e2e-sbx-$$"
ip netns add "$NS" 2>/dev/null || skip_all "cannot create a network namespace"
sbx_cleanup() {
        local p
        e2e_cleanup
        for p in $(ip netns pids "$NS" 2>/dev/null); do
                kill -9 "$p" 2>/dev/null
        done
        ip netns del "$NS" 2>/dev/null
}
trap sbx_cleanup EXIT
nsx() { ip netns exec "$NS" "$@"; }
quiet() { "$@" >/dev/null 2>&1; }

# The unit's CapabilityBoundingSet=, as read from the unit itself.
UNIT="$VRT_BUILD_DIR/tools/systemd/vrt@.service"
[ -f "$UNIT" ] || { echo "no $UNIT"; exit 1; }
CAPS=$(sed -n 's/^CapabilityBoundingSet=//p' "$UNIT")
check "the unit names a bounding set" [ -n "$CAPS" ]
bset() {        # bset CAP_X CAP_Y ...: setpriv's "-all,+x,+y"
        local s=-all c
        for c in "$@"; do c=${c#CAP_}; s+=",+${c,,}"; done
        echo "$s"
}
cap_mask() {    # cap_mask CAP_X ...: the hex mask /proc/PID/status shows
        local m=0 c n
        for c in "$@"; do
                n=$(awk -v c="${c,,}" 'BEGIN { split("chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap linux_immutable net_bind_service net_broadcast net_admin", a, " "); for (i in a) if ("cap_" a[i] == c) print i - 1 }')
                m=$(( m | (1 << n) ))
        done
        printf '%016x' "$m"
}
# sandboxed [--exec] CAPS... -- COMMAND...: COMMAND in the namespace, under
# the bounding set, no_new_privs, and / read-only but for the test's root and
# runtime dir. With --exec the calling (sub)shell becomes COMMAND, so $! of
# "sandboxed --exec ... &" is COMMAND's pid (every step in between execs).
sandboxed() {
        local caps=() ex=
        [ "$1" = --exec ] && { ex=exec; shift; }
        while [ "$1" != -- ]; do caps+=("$1"); shift; done
        shift
        $ex ip netns exec "$NS" unshare --mount --propagation private bash -c '
                dir=$1 bset=$2; shift 2
                mount --bind "$dir" "$dir" || exit 125
                for m in / /usr /var /tmp /home /run /dev/shm /boot /etc; do
                        if mountpoint -q "$m" && [ "$m" != "$dir" ]; then
                                mount -o remount,bind,ro "$m" || exit 125
                        fi
                done
                exec setpriv --bounding-set="$bset" --inh-caps=-all --no-new-privs -- "$@"' \
                sandbox "$E2E_DIR" "$(bset "${caps[@]}")" "$@"
}

nsx ip link set lo up
nsx ip link add br0 type bridge
nsx ip addr add 10.78.0.1/24 dev br0
nsx ip link set br0 up
sed "s|^cmdline=.*|& vrt.ip=10.78.0.2/24|" "$VRT_ROOT/images/testguest.properties" >"$VRT_ROOT/images/tgs.properties"
chmod a+r "$VRT_ROOT/images/tgs.properties"
mkdir -p "$VRT_ROOT/vm/sbx" "$VRT_RUNTIME_DIR"
printf 'image=tgs\nsize=tiny\nnet=bridge\nbridge=br0\nmac=52:54:00:78:00:02\n' >"$VRT_ROOT/vm/sbx/instance.properties"

# --- the sandbox is real ---
# shellcheck disable=SC2086
check "sandbox: /usr is read-only" not quiet sandboxed $CAPS -- touch /usr/vrt-sandbox-probe
check "sandbox: /etc is read-only" not quiet sandboxed $CAPS -- touch /etc/vrt-sandbox-probe
check "sandbox: the root stays writable" sandboxed $CAPS -- touch "$VRT_ROOT/probe"
rm -f /usr/vrt-sandbox-probe /etc/vrt-sandbox-probe "$VRT_ROOT/probe"
bnd=$(sandboxed $CAPS -- awk '$1 == "CapBnd:" { print $2 }' /proc/self/status)
check "sandbox: bounding set is the unit's ($(cap_mask $CAPS))" [ "$bnd" = "$(cap_mask $CAPS)" ]
nnp=$(sandboxed $CAPS -- awk '$1 == "NoNewPrivs:" { print $2 }' /proc/self/status)
check "sandbox: no_new_privs" [ "$nnp" = 1 ]

# --- without CAP_NET_ADMIN there is no tap: the bounding set is what counts ---
no_net_admin=()
for c in $CAPS; do [ "$c" = CAP_NET_ADMIN ] || no_net_admin+=("$c"); done
sandboxed "${no_net_admin[@]}" -- "$VRT_LAUNCH" sbx >"$E2E_DIR/nonetadmin.log" 2>&1
st=$?
sed 's/^/#   /' "$E2E_DIR/nonetadmin.log"
check "without CAP_NET_ADMIN: vrt-launch fails" [ "$st" != 0 ]
check "without CAP_NET_ADMIN: ... no tap left" bash -c '! ip netns exec "$0" ip -o link show | grep -q " vrt"' "$NS"

# ...and without CAP_SETPCAP QEMU's bounding set cannot be cleared, so
# vrt-launch does not start QEMU at all (why the unit has it).
no_setpcap=()
for c in $CAPS; do [ "$c" = CAP_SETPCAP ] || no_setpcap+=("$c"); done
sandboxed "${no_setpcap[@]}" -- "$VRT_LAUNCH" sbx >"$E2E_DIR/nosetpcap.log" 2>&1
st=$?
check "without CAP_SETPCAP: vrt-launch fails (exit 1, got $st)" [ "$st" = 1 ]
check "without CAP_SETPCAP: ... because the drop failed" grep -q "dropping privileges" "$E2E_DIR/nosetpcap.log"

# --- boots, networks, stops under the unit's set ---
# shellcheck disable=SC2086
sandboxed --exec $CAPS -- "$VRT_LAUNCH" sbx >"$E2E_DIR/sbx.launch.log" 2>&1 &
PID=$!
E2E_PIDS+=("$PID")
check "sandboxed: the guest boots" wait_ready sbx 120
# Once QEMU runs, vrt-launch narrows its own set further (to CAP_KILL).
bnd=$(awk '$1 == "CapBnd:" { print $2 }' /proc/$PID/status)
echo "# vrt-launch pid $PID: CapBnd $bnd"
within() { [ -n "$1" ] && [ $(( 0x$1 & ~0x$2 )) = 0 ]; }
check "sandboxed: vrt-launch's bounding set is within the unit's" within "$bnd" "$(cap_mask $CAPS)"
QPID=$(cat "$VRT_RUNTIME_DIR/sbx/qemu.pid" 2>/dev/null)
check "sandboxed: QEMU has no capabilities at all" \
        [ "$(awk '$1 == "CapBnd:" || $1 == "CapEff:" || $1 == "CapPrm:" { printf "%s ", $2 }' /proc/"$QPID"/status)" = "0000000000000000 0000000000000000 0000000000000000 " ]
check "sandboxed: the host side pings the guest over the tap" \
        wait_for 30 quiet nsx busybox ping -q -c 1 -W 2 10.78.0.2
printf '%s\n' 'ping -c 2 -W 5 10.78.0.1 >/dev/null 2>&1; echo SBXPING-RC=$?' |
        socat -t 1 - "UNIX-CONNECT:$VRT_RUNTIME_DIR/sbx/console.sock" >/dev/null 2>&1
check "sandboxed: the guest pings the host side" \
        wait_for 30 grep -q "SBXPING-RC=0" "$VRT_ROOT/vm/sbx/log/console.log"
kill -TERM "$PID"
wait_exit "$PID" 60
check "sandboxed: SIGTERM stops it gracefully (exit 0, got $EXIT_STATUS)" [ "$EXIT_STATUS" = 0 ]
check "sandboxed: ... QEMU is gone" wait_for 5 process_gone "$QPID"
check "sandboxed: ... no tap left" bash -c '! ip netns exec "$0" ip -o link show | grep -q " vrt"' "$NS"
[ "$EXIT_STATUS" = 0 ] || sed 's/^/#   /' "$E2E_DIR/sbx.launch.log"
e2e_finish
