#!/bin/bash
# vrt top end to end, in a real terminal: tmux runs it in an 80x24 pane,
# send-keys types, capture-pane reads the screen. Two running test guests
# (zeta burns its vCPU, alpha idles) and a stopped one: all shown, sorted
# by CPU first, by name and memory on a key, within 80 columns; q quits
# with status 0.
. "$(dirname "$0")/lib.sh"
e2e_setup
command -v tmux >/dev/null || skip_all "tmux not installed"
SOCK="vrt-e2e-top-$$"
top_cleanup() {
        tmux -L "$SOCK" kill-server 2>/dev/null
        e2e_cleanup
}
trap top_cleanup EXIT
tm() { tmux -L "$SOCK" "$@"; }
screen() { tm capture-pane -p -t top; }
shows() { screen | grep -qE -- "$1"; }          # shows REGEX: on the screen now
row_of() { screen | grep -nE "^$1 " | head -1 | cut -d: -f1; }
before3() { before "$1" "$2" && before "$2" "$3"; }
before_all() { before "$2" "$1" && before "$3" "$1"; }     # before_all LAST A B: A and B above LAST
before() { local a b; a=$(row_of "$1"); b=$(row_of "$2"); [ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ]; }
out="$E2E_DIR/out"

make_vm zeta
make_vm alpha
make_vm parked
launch zeta
launch alpha
check "zeta boots" wait_ready zeta
check "alpha boots" wait_ready alpha
console_cmd zeta 'while :; do :; done &'

tm -f /dev/null new-session -d -s top -x 80 -y 24 \
        "env VRT_ROOT=$VRT_ROOT VRT_RUNTIME_DIR=$VRT_RUNTIME_DIR TERM=screen $VRT top --interval 1; echo \$? >$E2E_DIR/top.status"
check "top: the header" wait_for 10 shows "^NAME +STATE +%CPU +CPUS +MEM +DISK-R +DISK-W +NET-RX +NET-TX +UPTIME"
check "top: zeta with a CPU figure" wait_for 10 shows "^zeta +running +[0-9]+ +1 "
check "top: alpha" shows "^alpha +running +[0-9]+ +1 "
check "top: parked, stopped, without figures" shows "^parked +stopped +- +- "
check "top: says 3 VMs, 2 running" shows "3 VMs, 2 running"
check "top: sorted by cpu, zeta (busy) above alpha" wait_for 10 before zeta alpha
# How much CPU a spinning vCPU gets depends on the host's load (test-stats
# compares with a host busy loop): here zeta clearly above alpha, which is
# near 0.
pct() { screen | awk -v n="$1" '$1 == n { print $3 }'; }
busier() { local z a; z=$(pct zeta); a=$(pct alpha); [ -n "$z" ] && [ -n "$a" ] && [ "$z" -ge 10 ] && [ "$z" -ge $((4 * a)) ]; }
check "top: zeta busy (>= 10 %CPU and >= 4x alpha)" wait_for 15 busier
check "top: alpha near 0 %CPU" wait_for 10 shows "^alpha +running +[0-9] "
screen >"$E2E_DIR/top-screen.txt"
check "top: every line fits 80 columns" awk 'length($0) > 80 { exit 1 }' "$E2E_DIR/top-screen.txt"
# The screen as a test artifact (README shows one).
mkdir -p "$VRT_BUILD_DIR/tests/artifacts" && cp "$E2E_DIR/top-screen.txt" "$VRT_BUILD_DIR/tests/artifacts/vrt-top.txt"

tm send-keys -t top a
check "key a: sorted by name" wait_for 5 shows "sorted by name"
check "key a: alpha above parked above zeta" wait_for 5 before3 alpha parked zeta
tm send-keys -t top m
check "key m: sorted by mem" wait_for 5 shows "sorted by mem"
check "key m: the stopped VM last" wait_for 5 before_all parked zeta alpha
tm send-keys -t top c
check "key c: sorted by cpu again" wait_for 5 shows "sorted by cpu"
check "key c: zeta first" wait_for 5 before zeta alpha
tm send-keys -t top +
check "key +: interval doubled" wait_for 5 shows "every 2.0s"
tm send-keys -t top x
check "unknown key: a hint, no exit" wait_for 5 shows "unknown key"
# A narrower terminal cuts the columns on the right and wraps nothing.
tm resize-window -t top -x 60 -y 24
nonempty() { [ "$(screen | grep -c .)" = 6 ] && screen | grep -qE "^NAME +STATE" && [ "$(screen | awk '{ print length($0) }' | sort -n | tail -1)" -le 60 ]; }
check "60 columns: 6 lines, none wrapped" wait_for 5 nonempty
tm send-keys -t top q
has_status() { [ -s "$E2E_DIR/top.status" ]; }
check "q: top exits" wait_for 5 has_status
check "q: with status 0" [ "$(cat "$E2E_DIR/top.status" 2>/dev/null)" = 0 ]

"$VRT" top --sort bogus >"$out" 2>&1
check "--sort bogus: exit 2" [ $? = 2 ]
"$VRT" top nosuchvm >"$out" 2>&1
st=$?
check "unknown VM: exit 2 with one line, before the screen is touched" bash -c '[ "$1" = 2 ] && [ "$(wc -l <"$0")" = 1 ]' "$out" "$st"
e2e_finish
