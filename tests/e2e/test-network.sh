#!/bin/bash
# Host networking and least privilege, end to end: two test guests on a
# bridge ping each other and the host; the tap's name, bridge port and alias
# while running, and that no tap outlives any exit path; what QEMU's process
# holds (credentials, capabilities, seccomp, descriptors); bridge errors;
# several NICs on two bridges; net=user with hostfwd; net=none. Everything runs in a network namespace
# this script creates and deletes: no host interface is touched.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=10
e2e_setup

[ -c /dev/net/tun ] || skip_all "no /dev/net/tun"
NS="vrt-e2e-net-$$"
ip netns add "$NS" 2>/dev/null || skip_all "cannot create a network namespace"

net_cleanup() {
        local p
        e2e_cleanup
        # Whatever still runs in our namespace was started by this script.
        for p in $(ip netns pids "$NS" 2>/dev/null); do
                kill -9 "$p" 2>/dev/null
        done
        ip netns del "$NS" 2>/dev/null
}
trap net_cleanup EXIT

nsx() {         # nsx COMMAND...: runs COMMAND in the test's namespace
        ip netns exec "$NS" "$@"
}

# The tap name of NIC 0 of VM $1, as net/tap.h defines it: "vrt", the first
# 4 bytes of the name, 7 base32 digits of FNV-1a + murmur3 fmix64 of the
# name (top 35 bits), the NIC index. Bash arithmetic is 64-bit two's
# complement; logical right shifts are masked by hand.
tap_name() {
        local name=$1 nic=${2:-0} b32=0123456789abcdefghijklmnopqrstuv
        local h=$((0xcbf29ce484222325)) i c out prefix
        for ((i = 0; i < ${#name}; i++)); do
                printf -v c '%d' "'${name:i:1}"
                h=$(( (h ^ c) * 0x100000001b3 ))
        done
        h=$(( h ^ ((h >> 33) & 0x7fffffff) ))
        h=$(( h * 0xff51afd7ed558ccd ))
        h=$(( h ^ ((h >> 33) & 0x7fffffff) ))
        h=$(( h * 0xc4ceb9fe1a85ec53 ))
        h=$(( h ^ ((h >> 33) & 0x7fffffff) ))
        prefix=${name:0:4}
        out="vrt${prefix//[^A-Za-z0-9_-]/-}"
        for ((i = 1; i <= 7; i++)); do
                out+=${b32:$(( (h >> (64 - 5 * i)) & 31 )):1}
        done
        echo "$out${b32:nic:1}"
}
check "tap names follow net/tap.h (web01 -> vrtweb032p0r0j0)" [ "$(tap_name web01)" = vrtweb032p0r0j0 ]

# image_variant NAME KERNEL-ARGS: an image sidecar NAME.properties that boots
# the test guest's kernel and initrd with extra arguments.
image_variant() {
        sed "s|^cmdline=.*|& $2|" "$VRT_ROOT/images/testguest.properties" >"$VRT_ROOT/images/$1.properties"
        chmod a+r "$VRT_ROOT/images/$1.properties"
}

# net_vm NAME IMAGE [instance.properties lines...]: a diskless VM.
net_vm() {
        local name=$1 image=$2 l; shift 2
        mkdir -p "$VRT_ROOT/vm/$name"
        {
                echo "image=$image"
                echo "size=tiny"
                for l in "$@"; do echo "$l"; done
        } >"$VRT_ROOT/vm/$name/instance.properties"
}

# launch_ns NAME: vrt-launch in the namespace, in the background (ip netns
# exec execs the command, so LAUNCH_PID is vrt-launch itself).
launch_ns() {
        ip netns exec "$NS" "$VRT_LAUNCH" "$1" >>"$E2E_DIR/$1.launch.log" 2>&1 &
        LAUNCH_PID=$!
        E2E_PIDS+=("$LAUNCH_PID")
}

tap_present() { nsx ip link show dev "$1" >/dev/null 2>&1; }
tap_absent() { ! nsx ip link show dev "$1" >/dev/null 2>&1; }
no_vrt_links() {        # no interface named vrt* in the namespace
        ! nsx ip -o link show | awk -F': ' '{print $2}' | grep -q '^vrt'
}
qemu_pid_of() { cat "$VRT_RUNTIME_DIR/$1/qemu.pid" 2>/dev/null; }
status_field() { awk -v k="$2:" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "/proc/$1/status"; }

# console_result NAME TAG: waits for "TAG=<status>" on the console and
# prints the status. The echoed command line reads "TAG=$?", so it never
# matches.
console_result() {
        wait_for "${3:-30}" console_has "$1" "$2=[0-9]" || { echo timeout; return; }
        grep -o -- "$2=[0-9]*" "$VRT_ROOT/vm/$1/log/console.log" | tail -n 1 | cut -d= -f2
}

# fds_allowed PID CONSOLE_LOG [DISK...]: every descriptor of PID is one QEMU
# is meant to hold; prints the others.
fds_allowed() {
        local pid=$1 log=$2 fd target bad=0 ok d; shift 2
        for fd in /proc/"$pid"/fd/*; do
                target=$(readlink "$fd") || continue
                ok=0
                case "$target" in
                /dev/null | pipe:\[*\] | socket:\[*\] | /dev/net/tun | /dev/vhost-net | /dev/urandom | anon_inode:*)
                        ok=1 ;;
                "$log") ok=1 ;;
                esac
                for d in "$@"; do [ "$target" = "$d" ] && ok=1; done
                if [ "$ok" = 0 ]; then
                        echo "# unexpected fd ${fd##*/} of QEMU pid $pid: $target"
                        bad=1
                fi
        done
        [ "$bad" = 0 ]
}

quiet() { "$@" >/dev/null; }

fd_list() {     # fd_list PID: "fd -> target" lines, for the record
        local fd
        for fd in /proc/"$1"/fd/*; do
                echo "#   ${fd##*/} -> $(readlink "$fd")"
        done
}

nsx ip link set lo up
nsx ip link add br0 type bridge
nsx ip addr add 10.77.0.1/24 dev br0
nsx ip link set br0 up

image_variant tga "vrt.ip=10.77.0.2/24"
image_variant tgb "vrt.ip=10.77.0.3/24"
image_variant tgu "vrt.ip=10.0.2.15/24 vrt.gw=10.0.2.2"
TAP_A=$(tap_name tga)
TAP_B=$(tap_name tgb)
echo "# tap of tga: $TAP_A, tap of tgb: $TAP_B"

# --- bridge errors: exit 2, one line naming the bridge, nothing left ---
bridge_error() {        # bridge_error VM BRIDGE WHAT PATTERN
        local vm=$1 br=$2 what=$3 pattern=$4 st
        net_vm "$vm" tga net=bridge "bridge=$br" mac=52:54:00:77:00:09
        nsx "$VRT_LAUNCH" "$vm" >"$E2E_DIR/$vm.log" 2>&1
        st=$?
        check "$what: vrt-launch exits 2" [ "$st" = 2 ]
        check "$what: ... with one line" [ "$(wc -l <"$E2E_DIR/$vm.log")" = 1 ]
        check "$what: ... naming the bridge ($pattern)" grep -q "bridge $br: $pattern" "$E2E_DIR/$vm.log"
        check "$what: ... no tap left" no_vrt_links
        check "$what: ... no runtime dir (sockets, lock) left" runtime_empty "$vm"
        [ "$st" = 2 ] || cat "$E2E_DIR/$vm.log"
}
bridge_error errmissing nosuchbr "missing bridge" "no such interface"
nsx ip link add brdown type bridge
bridge_error errdown brdown "bridge that is down" "bridge is down"
nsx ip link add vethx type veth peer name vethy
nsx ip link set vethx up
bridge_error errveth vethx "veth instead of a bridge" "interface is not a bridge"

# An interface already bears the tap's name (a leftover, another instance).
TAP_C=$(tap_name errbusy)
nsx ip link add "$TAP_C" type veth peer name busypeer
net_vm errbusy tga net=bridge bridge=br0 mac=52:54:00:77:00:0a
nsx "$VRT_LAUNCH" errbusy >"$E2E_DIR/errbusy.log" 2>&1
st=$?
check "tap name taken: vrt-launch exits 2" [ "$st" = 2 ]
check "tap name taken: ... saying the interface exists" grep -q "tap $TAP_C: interface already exists" "$E2E_DIR/errbusy.log"
check "tap name taken: ... the other interface is left alone" \
        bash -c '[ "$(ip netns exec "$0" ip -d -o link show dev "$1" | grep -c veth)" = 1 ]' "$NS" "$TAP_C"
check "tap name taken: ... no runtime dir left" runtime_empty errbusy
nsx ip link del "$TAP_C"
# Two VMs with the same mac= are refused by `vrt create`'s MAC registry;
# vrt-launch takes instance.properties as given, so there is nothing to test here.

# --- two guests on br0 ---
net_vm tga tga net=bridge bridge=br0 mac=52:54:00:77:00:02
net_vm tgb tgb net=bridge bridge=br0 mac=52:54:00:77:00:03
launch_ns tga; PID_A=$LAUNCH_PID
launch_ns tgb; PID_B=$LAUNCH_PID
check "tga: ready" wait_ready tga 90
check "tgb: ready" wait_ready tgb 90

link_a=$(nsx ip -d link show dev "$TAP_A" 2>&1)
echo "$link_a" | sed 's/^/#   /'
check "tga: tap $TAP_A exists while running" tap_present "$TAP_A"
check "tga: ... is a tap" grep -q "tun type tap" <<<"$link_a"
check "tga: ... is a port of br0" grep -q "master br0" <<<"$link_a"
check "tga: ... is up" grep -qE "<([A-Z_]+,)*UP[,>]" <<<"$link_a"
check "tga: ... has the VM name as alias" grep -qE "^ +alias tga$" <<<"$link_a"
check "tga: ... is a bridge port (bridge_slave)" grep -q "bridge_slave" <<<"$link_a"
check "tgb: tap $TAP_B is a port of br0 with alias tgb" \
        bash -c 'l=$(ip netns exec "$0" ip -d link show dev "$1") && grep -q "master br0" <<<"$l" && grep -qE "^ +alias tgb$" <<<"$l"' "$NS" "$TAP_B"
check "tga: the guest's MAC is on the bridge" \
        wait_for 10 bash -c 'ip netns exec "$0" bridge fdb show br br0 | grep -q "^52:54:00:77:00:02 dev $1"' "$NS" "$TAP_A"

console_cmd tga 'ping -c 3 -W 5 10.77.0.3 >/dev/null 2>&1; echo PINGB-RC=$?'
check "tga pings tgb over br0" [ "$(console_result tga PINGB-RC 40)" = 0 ]
console_cmd tga 'ping -c 3 -W 5 10.77.0.1 >/dev/null 2>&1; echo PINGH-RC=$?'
check "tga pings the host side 10.77.0.1" [ "$(console_result tga PINGH-RC 40)" = 0 ]
host_ping() { nsx busybox ping -q -c 1 -W 5 "$1" >/dev/null 2>&1; }
check "the host side pings tgb" host_ping 10.77.0.3

# --- what QEMU holds ---
QA=$(qemu_pid_of tga)
echo "# QEMU of tga, pid $QA:"
for k in Uid Gid Groups CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs Seccomp Seccomp_filters; do
        echo "#   $k: $(status_field "$QA" "$k")"
done
fd_list "$QA"
vrt_uid=$(id -u vrt)
vrt_gid=$(id -g vrt)
check "QEMU: real, effective, saved, fs uid are vrt's ($vrt_uid)" \
        [ "$(status_field "$QA" Uid)" = "$vrt_uid $vrt_uid $vrt_uid $vrt_uid" ]
check "QEMU: all gids are vrt's ($vrt_gid)" \
        [ "$(status_field "$QA" Gid)" = "$vrt_gid $vrt_gid $vrt_gid $vrt_gid" ]
check "QEMU: no supplementary groups" [ -z "$(status_field "$QA" Groups)" ]
for k in CapInh CapPrm CapEff CapBnd CapAmb; do
        check "QEMU: $k is empty" [ "$(status_field "$QA" $k)" = 0000000000000000 ]
done
check "QEMU: seccomp filter mode (2)" [ "$(status_field "$QA" Seccomp)" = 2 ]
check "QEMU: no_new_privs set" [ "$(status_field "$QA" NoNewPrivs)" = 1 ]
check "QEMU: holds only the descriptors it needs" fds_allowed "$QA" "$VRT_ROOT/vm/tga/log/console.log"
check "QEMU: holds exactly one tap (/dev/net/tun)" \
        [ "$(for f in /proc/"$QA"/fd/*; do readlink "$f"; done | grep -c '^/dev/net/tun$')" = 1 ]
check "the descriptor check is not vacuous: it refuses vrt-launch's own (lock file, ...)" \
        not quiet fds_allowed "$PID_A" "$VRT_ROOT/vm/tga/log/console.log"
echo "# vrt-launch of tga, pid $PID_A: CapEff $(status_field "$PID_A" CapEff), Uid $(status_field "$PID_A" Uid)"
check "vrt-launch keeps only CAP_KILL once QEMU runs" \
        [ "$(status_field "$PID_A" CapEff)" = 0000000000000020 ]
check "vrt-launch holds no tap fd of its own (QEMU has the only one)" \
        not bash -c 'for f in /proc/$0/fd/*; do readlink "$f"; done | grep -q "^/dev/net/tun$"' "$PID_A"

# --- exit paths: no tap survives ---
console_cmd tga "poweroff"
check "tga: guest poweroff ends vrt-launch" wait_exit "$PID_A" 30
check "tga: ... with status 0" [ "$EXIT_STATUS" = 0 ]
check "tga: ... and its tap is gone" wait_for 5 tap_absent "$TAP_A"
kill -TERM "$PID_B"
check "tgb: SIGTERM ends vrt-launch" wait_exit "$PID_B" 30
check "tgb: ... with status 0" [ "$EXIT_STATUS" = 0 ]
check "tgb: ... and its tap is gone" wait_for 5 tap_absent "$TAP_B"
check "tga, tgb: runtime dirs removed" bash -c '[ ! -e "$0/tga" ] && [ ! -e "$0/tgb" ]' "$VRT_RUNTIME_DIR"

# The console logs are appended to, so the second boot waits for the taps
# and QEMU's pid instead of the ready marker.
rm -f "$VRT_ROOT/vm/tga/log/console.log" "$VRT_ROOT/vm/tgb/log/console.log"
launch_ns tga; PID_A=$LAUNCH_PID
launch_ns tgb; PID_B=$LAUNCH_PID
check "tga: second start, tap present" wait_for 30 tap_present "$TAP_A"
check "tgb: second start, tap present" wait_for 30 tap_present "$TAP_B"
wait_for 10 test -S "$VRT_RUNTIME_DIR/tga/monitor.sock"
wait_for 10 test -S "$VRT_RUNTIME_DIR/tgb/monitor.sock"
wait_for 10 test -s "$VRT_RUNTIME_DIR/tga/qemu.pid"
wait_for 10 test -s "$VRT_RUNTIME_DIR/tgb/qemu.pid"
QA=$(qemu_pid_of tga)
QB=$(qemu_pid_of tgb)
kill -9 "$QA"
check "tga: kill -9 of QEMU ends vrt-launch" wait_exit "$PID_A" 10
check "tga: ... with status 1" [ "$EXIT_STATUS" = 1 ]
check "tga: ... and its tap is gone" wait_for 5 tap_absent "$TAP_A"
check "tga: ... runtime dir removed" runtime_empty tga
kill -9 "$PID_B"
check "tgb: kill -9 of vrt-launch takes QEMU down" wait_for 5 process_gone "$QB"
check "tgb: ... and its tap is gone" wait_for 5 tap_absent "$TAP_B"
check "no vrt tap left in the namespace" no_vrt_links

# --- several NICs: net.1= on a second bridge ---
nsx ip link add br1 type bridge
nsx ip addr add 10.78.0.1/24 dev br1
nsx ip link set br1 up
image_variant tgm "vrt.ip=10.77.0.4/24"
TAP_M0=$(tap_name tgm 0)
TAP_M1=$(tap_name tgm 1)
# The second NIC's bridge is missing: refused, and the first NIC's tap,
# already made, goes too.
net_vm tgm tgm net=bridge bridge=br0 mac=52:54:00:77:00:04 net.1=bridge bridge.1=nosuchbr mac.1=52:54:00:77:01:04
nsx "$VRT_LAUNCH" tgm >"$E2E_DIR/tgm-err.log" 2>&1
st=$?
check "net.1 on a missing bridge: vrt-launch exits 2" [ "$st" = 2 ]
check "net.1 on a missing bridge: ... naming it" grep -q "instance.properties: NIC 1: bridge nosuchbr: no such interface" "$E2E_DIR/tgm-err.log"
check "net.1 on a missing bridge: ... no tap left (not even NIC 0's)" no_vrt_links
check "net.1 on a missing bridge: ... no runtime dir left" runtime_empty tgm
net_vm tgm tgm net=bridge bridge=br0 mac=52:54:00:77:00:04 net.1=bridge bridge.1=br1 mac.1=52:54:00:77:01:04
launch_ns tgm; PID_M=$LAUNCH_PID
check "tgm: ready with two NICs" wait_ready tgm 90
check "tgm: NIC 0's tap $TAP_M0 is a port of br0 with alias tgm" \
        bash -c 'l=$(ip netns exec "$0" ip -d link show dev "$1") && grep -q "master br0" <<<"$l" && grep -qE "^ +alias tgm$" <<<"$l"' "$NS" "$TAP_M0"
check "tgm: NIC 1's tap $TAP_M1 is a port of br1 with alias tgm" \
        bash -c 'l=$(ip netns exec "$0" ip -d link show dev "$1") && grep -q "master br1" <<<"$l" && grep -qE "^ +alias tgm$" <<<"$l"' "$NS" "$TAP_M1"
console_cmd tgm 'echo MACS=$(cat /sys/class/net/eth0/address),$(cat /sys/class/net/eth1/address)END'
check "tgm: the guest has eth0 and eth1 with mac= and mac.1=" wait_for 10 console_has tgm "MACS=52:54:00:77:00:04,52:54:00:77:01:04END"
console_cmd tgm 'ip addr add 10.78.0.4/24 dev eth1; ip link set eth1 up; ping -c 3 -W 5 10.78.0.1 >/dev/null 2>&1; echo PINGBR1-RC=$?'
check "tgm: pings the host side of br1 over eth1" [ "$(console_result tgm PINGBR1-RC 40)" = 0 ]
console_cmd tgm 'ping -c 3 -W 5 10.77.0.1 >/dev/null 2>&1; echo PINGBR0-RC=$?'
check "tgm: pings the host side of br0 over eth0" [ "$(console_result tgm PINGBR0-RC 40)" = 0 ]
QM=$(qemu_pid_of tgm)
check "tgm: QEMU holds exactly two taps" \
        [ "$(for f in /proc/"$QM"/fd/*; do readlink "$f"; done | grep -c '^/dev/net/tun$')" = 2 ]
check "tgm: QEMU holds only the descriptors it needs" fds_allowed "$QM" "$VRT_ROOT/vm/tgm/log/console.log"
kill -TERM "$PID_M"
check "tgm: SIGTERM ends vrt-launch" wait_exit "$PID_M" 30
check "tgm: ... with status 0" [ "$EXIT_STATUS" = 0 ]
check "tgm: ... and both taps are gone" wait_for 5 no_vrt_links

# --- net=user with a host forward, and net=none ---
PORT=18080     # any port: the namespace is ours alone
net_vm tgu tgu net=user "hostfwd=tcp:127.0.0.1:$PORT-:8080"
net_vm tgn tga net=none
launch_ns tgu; PID_U=$LAUNCH_PID
launch_ns tgn; PID_N=$LAUNCH_PID
check "tgu: ready" wait_ready tgu 90
check "tgn: ready" wait_ready tgn 90
check "tgu: net=user makes no tap" no_vrt_links
console_cmd tgu "nc -ll -p 8080 -e echo hello-from-guest &"
fetch() {       # the guest's reply through 127.0.0.1:PORT in the namespace
        nsx socat -T 3 - "TCP:127.0.0.1:$PORT" </dev/null 2>/dev/null | grep -q hello-from-guest
}
check "tgu: the host side reaches the guest's port 8080 via hostfwd 127.0.0.1:$PORT" wait_for 30 fetch
check "tgu: ... and the port is bound in the namespace" \
        bash -c 'ip netns exec "$0" cat /proc/net/tcp | grep -qi ":$(printf %04X "$1") .* 0A "' "$NS" "$PORT"
check "tgu: ... not on the host" not bash -c 'grep -qi "0100007F:$(printf %04X "$0") .* 0A " /proc/net/tcp' "$PORT"
QU=$(qemu_pid_of tgu)
check "tgu: QEMU holds no tap" not bash -c 'for f in /proc/$0/fd/*; do readlink "$f"; done | grep -q "^/dev/net/tun$"' "$QU"
check "tgu: QEMU holds only the descriptors it needs" fds_allowed "$QU" "$VRT_ROOT/vm/tgu/log/console.log"
console_cmd tgn 'test -e /sys/class/net/eth0; echo NOETH-RC=$?'
check "tgn: net=none, the guest has no eth0" [ "$(console_result tgn NOETH-RC)" = 1 ]
console_cmd tgn 'echo NETS=$(ls /sys/class/net | tr "\n" ,)END'
check "tgn: ... only lo" wait_for 10 console_has tgn "NETS=lo,END"
kill -TERM "$PID_U" "$PID_N"
wait_exit "$PID_U" 30
check "tgu: SIGTERM ends vrt-launch with status 0" [ "$EXIT_STATUS" = 0 ]
wait_exit "$PID_N" 30
check "tgn: SIGTERM ends vrt-launch with status 0" [ "$EXIT_STATUS" = 0 ]
check "no vrt tap left in the namespace at the end" no_vrt_links

e2e_finish
