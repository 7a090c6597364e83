#!/bin/bash
# vrt stats end to end: two running test guests, one burning its vCPU and
# one idle, sampled with --interval: CPU near the vCPU count for the busy
# one and near 0 for the idle one; the idle one's disk counters, the busy
# one's tap counters (its NIC is on a bridge in a network namespace, and
# vrt reads the counters from QEMU's namespace), QEMU's memory, the
# Prometheus text through promtool, a VM that does not answer (QEMU
# stopped with SIGSTOP) within bounded time, and bad input.
. "$(dirname "$0")/lib.sh"
e2e_setup
JSON_GET="$VRT_BUILD_DIR/tests/e2e/json-get"
[ -c /dev/net/tun ] || skip_all "no /dev/net/tun"
NS="vrt-e2e-stats-$$"
ip netns add "$NS" 2>/dev/null || skip_all "cannot create a network namespace"
STOPPED_QEMU=
stats_cleanup() {
        local p
        [ -n "$STOPPED_QEMU" ] && kill -CONT $STOPPED_QEMU 2>/dev/null
        e2e_cleanup
        for p in $(ip netns pids "$NS" 2>/dev/null); do
                kill -9 "$p" 2>/dev/null
        done
        ip netns del "$NS" 2>/dev/null
}
trap stats_cleanup EXIT
nsx() { ip netns exec "$NS" "$@"; }
jget() { "$JSON_GET" "$1"; }
# ge A B / lt A B: compares decimal numbers
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'; }
out="$E2E_DIR/out"

nsx ip link set lo up
nsx ip link add br0 type bridge
nsx ip addr add 10.77.0.1/24 dev br0
nsx ip link set br0 up
echo "bridge=br0" >> "$VRT_ROOT/vrt.conf"

# busy: diskless, one bridged NIC with an address; idle: an overlay disk, no NIC.
sed "s|^cmdline=.*|& vrt.ip=10.77.0.2/24|" "$VRT_ROOT/images/testguest.properties" >"$VRT_ROOT/images/tgnet.properties"
chmod a+r "$VRT_ROOT/images/tgnet.properties"
mkdir -p "$VRT_ROOT/vm/busy"
printf 'image=tgnet\nsize=tiny\nnet=bridge\nmac=52:54:00:77:00:02\n' >"$VRT_ROOT/vm/busy/instance.properties"
make_vm idle
"$VRT" image overlay "$VRT_ROOT/images/testguest.qcow2" "$VRT_ROOT/vm/idle/hdd.ovl" >/dev/null
chmod -R a+rX "$VRT_ROOT/vm"
chmod a+rw "$VRT_ROOT/vm/idle/hdd.ovl"
make_vm parked

# The supervisor makes the tap in the namespace it runs in.
ip netns exec "$NS" "$VRT_LAUNCH" busy >"$E2E_DIR/busy.launch.log" 2>&1 &
E2E_PIDS+=($!)
launch idle
check "busy boots" wait_ready busy
check "idle boots" wait_ready idle
console_cmd busy 'while :; do :; done &'
console_cmd busy 'ping -c 5 -i 0.2 10.77.0.1 && echo PING-DONE'
check "busy: the guest pinged the bridge" wait_for 20 console_has busy PING-DONE
sleep 1

# The host is shared (CI runners, other tests): what a spinning thread gets
# depends on the load. A busy loop on the host during the same interval is
# the baseline; a spinning vCPU thread is scheduled like it.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
spin() { while :; do :; done; }
spin &
SPIN=$!
E2E_PIDS+=("$SPIN")
t0=$(date +%s%N); k0=$(ticks "$SPIN")
"$VRT" stats --json --interval 3 >"$out" 2>"$E2E_DIR/err"
st=$?
k1=$(ticks "$SPIN"); t1=$(date +%s%N)
kill "$SPIN"
host=$(awk -v k=$((k1 - k0)) -v hz="$(getconf CLK_TCK)" -v ns=$((t1 - t0)) 'BEGIN { printf "%.3f", k / hz / (ns / 1e9) }')
check "stats --json --interval 3: exit 0" [ "$st" = 0 ]
check "stats --json parses" jget . <"$out" >/dev/null
busy=$(jget "[name=busy].cpu.vcpus_busy" <"$out")
idle=$(jget "[name=idle].cpu.vcpus_busy" <"$out")
echo "# busy guest: $busy of 1 vCPU, idle guest: $idle, a busy loop on the host meanwhile: $host of a CPU"
check "busy: 1 vCPU" [ "$(jget "[name=busy].cpu.vcpus" <"$out")" = 1 ]
check "busy: CPU near its vCPU count, as much as a host busy loop gets (>= 0.6 x $host: $busy)" \
        awk -v b="$busy" -v h="$host" 'BEGIN { exit !(b >= 0.6 * h && b >= 0.1) }'
check "idle: CPU near 0 (< 0.2: $idle)" lt "$idle" 0.2
check "busy uses at least 4x the CPU of idle" awk -v b="$busy" -v i="$idle" 'BEGIN { exit !(b >= 4 * i) }'
check "busy: percent is vcpus_busy of 1 vCPU" \
        awk -v a="$(jget "[name=busy].cpu.percent" <"$out")" -v b="$busy" 'BEGIN { d = a - 100 * b; exit !(d < 0.2 && d > -0.2) }'
check "interval is about 3 s" \
        bash -c 'i=$("$0" "[name=busy].interval_seconds" <"$1"); awk -v i="$i" "BEGIN { exit !(i >= 2.9 && i < 4) }"' "$JSON_GET" "$out"
check "parked (not running) is listed as stopped" [ "$(jget "[name=parked].state" <"$out")" = stopped ]
check "parked has no numbers" not jget "[name=parked].cpu.seconds" <"$out"

qpid=$(jget "[name=busy].qemu_pid" <"$out")
spid=$(cat "$VRT_RUNTIME_DIR/busy/pid")
check "busy: qemu_pid is QEMU, the supervisor's child" \
        bash -c '[ "$(ps -o ppid= -p "$0" | tr -d " ")" = "$1" ] && grep -q qemu "/proc/$0/comm"' "$qpid" "$spid"
rss=$(jget "[name=busy].memory.resident_bytes" <"$out")
ps_rss=$(( $(ps -o rss= -p "$qpid") * 1024 ))
check "busy: resident memory is QEMU's (vrt $rss, ps $ps_rss)" \
        awk -v a="$rss" -v b="$ps_rss" 'BEGIN { exit !(a > b / 2 && a < b * 2) }'
check "busy: guest memory 128 MiB" [ "$(jget "[name=busy].memory.guest_bytes" <"$out")" = 134217728 ]
check "busy: uptime" ge "$(jget "[name=busy].uptime_seconds" <"$out")" 1
check "busy: no disk" [ "$(jget "[name=busy].disks" <"$out" | tr -d ' \n')" = "[]" ]

tap=$(jget "[name=busy].nics.0.tap" <"$out")
check "busy: the NIC's tap ($tap) is in the namespace" nsx ip link show dev "$tap"
# The guest's view: what it sent is what the host received on the tap.
host_rx=$(nsx cat "/sys/class/net/$tap/statistics/rx_packets")
guest_tx=$(jget "[name=busy].nics.0.tx_packets" <"$out")
check "busy: sent >= 5 packets (ping), as the tap counted ($guest_tx, tap rx $host_rx)" \
        bash -c '[ "$0" -ge 5 ] && [ "$0" -le "$1" ]' "$guest_tx" "$host_rx"
check "busy: received >= 5 packets" ge "$(jget "[name=busy].nics.0.rx_packets" <"$out")" 5
check "busy: received bytes > 500" ge "$(jget "[name=busy].nics.0.rx_bytes" <"$out")" 500

check "idle: one disk, vda" [ "$(jget "[name=idle].disks.0.id" <"$out")" = vda ]
check "idle: the boot read from its disk" ge "$(jget "[name=idle].disks.0.rd_bytes" <"$out")" 4096
check "idle: read operations" ge "$(jget "[name=idle].disks.0.rd_ops" <"$out")" 1
check "idle: no NIC" [ "$(jget "[name=idle].nics" <"$out" | tr -d ' \n')" = "[]" ]
# Writes show up as counters and rates.
console_cmd idle 'dd if=/dev/zero of=/mnt/disk/zero bs=64k count=32 && sync && echo DD-DONE'
check "idle: the guest wrote 2 MiB" wait_for 30 console_has idle DD-DONE
"$VRT" stats --json idle >"$out"
check "idle: written bytes >= 2 MiB" ge "$(jget "0.disks.0.wr_bytes" <"$out")" 2097152
check "one sample without --interval has no rates" not jget "0.cpu.percent" <"$out"

# --- text ---
"$VRT" stats >"$out" 2>&1
check "stats: a table with both guests" bash -c 'grep -q "^busy  *running " "$0" && grep -q "^idle  *running " "$0" && grep -q "^NAME " "$0"' "$out"

# --- Prometheus ---
"$VRT" stats --prometheus >"$out" 2>"$E2E_DIR/err"
check "--prometheus: exit 0" [ $? = 0 ]
if command -v promtool >/dev/null; then
        check "--prometheus: promtool check metrics passes" promtool check metrics <"$out"
else
        echo "# promtool not installed: not checked"
fi
check "--prometheus: busy's CPU counter" grep -qE '^vrt_vm_cpu_seconds_total\{vm="busy"\} [0-9.]+$' "$out"
check "--prometheus: idle's disk counter" grep -qE '^vrt_vm_disk_read_bytes_total\{vm="idle",disk="vda"\} [0-9]+$' "$out"
check "--prometheus: busy's NIC" grep -qE "^vrt_vm_network_transmit_packets_total\{vm=\"busy\",nic=\"0\",tap=\"$tap\"\} [0-9]+$" "$out"
check "--prometheus: parked is not running" grep -q '^vrt_vm_running{vm="parked"} 0$' "$out"

# --- a VM that does not answer ---
iqpid=$(pgrep -P "$(cat "$VRT_RUNTIME_DIR/idle/pid")" | head -1)
STOPPED_QEMU=$iqpid
kill -STOP "$iqpid"
t0=$(date +%s%N)
"$VRT" stats --json idle busy >"$out" 2>"$E2E_DIR/err"
st=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
"$VRT" stats idle >"$E2E_DIR/text" 2>&1
kill -CONT "$iqpid"
STOPPED_QEMU=
check "QEMU stopped: stats returns within 5 s (${ms} ms)" [ "$ms" -lt 5000 ]
check "QEMU stopped: exit 1" [ "$st" = 1 ]
check "QEMU stopped: idle is running but not responding" \
        bash -c '[ "$("$0" 0.state <"$1")" = running ] && [ "$("$0" 0.responding <"$1")" = false ]' "$JSON_GET" "$out"
check "QEMU stopped: idle says why" bash -c '"$0" 0.error <"$1" | grep -q "QMP"' "$JSON_GET" "$out"
check "QEMU stopped: the table says no-answer and why" grep -qE "^idle +no-answer .*\(QMP" "$E2E_DIR/text"
check "QEMU stopped: busy still answers" [ "$(jget "1.responding" <"$out")" = true ]
"$VRT" stats idle >/dev/null 2>&1
check "QEMU continued: idle answers again" [ $? = 0 ]
# Two VMs that do not answer cost one timeout, not two: VMs are sampled in parallel.
bqpid=$(pgrep -P "$(cat "$VRT_RUNTIME_DIR/busy/pid")" | head -1)
STOPPED_QEMU="$iqpid $bqpid"
kill -STOP $STOPPED_QEMU
t0=$(date +%s%N)
"$VRT" stats --json >"$out" 2>/dev/null
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
kill -CONT $STOPPED_QEMU
STOPPED_QEMU=
check "two QEMUs stopped: one timeout in all (${ms} ms < 3500)" [ "$ms" -lt 3500 ]
check "two QEMUs stopped: both not responding" \
        bash -c '[ "$("$0" "[name=idle].responding" <"$1")" = false ] && [ "$("$0" "[name=busy].responding" <"$1")" = false ]' "$JSON_GET" "$out"

# --- bad input ---
bad() {         # bad DESCRIPTION ARGS...: exit 2 with one line on stderr
        local what=$1; shift
        "$VRT" stats "$@" >"$out" 2>"$E2E_DIR/err"
        local st=$?
        check "$what: exit 2" [ "$st" = 2 ]
        check "$what: one line" bash -c '[ "$(wc -l <"$0")" = 1 ] && grep -q "^vrt: " "$0"' "$E2E_DIR/err"
}
bad "unknown VM" nosuchvm
bad "bad name" 'Bad/Name'
bad "interval 0" --interval 0
bad "interval not a number" --interval 1x
bad "--prometheus with --json" --prometheus --json
bad "unknown option" --bogus
e2e_finish
