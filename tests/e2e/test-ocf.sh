#!/bin/bash
# The OCF resource agent ocf:vrt:vm (tools/ocf/vm) against a real VM:
# Debian's ocf-tester passes; then the agent's own cases: a graceful stop
# inside a long operation timeout, monitor of a VM another host runs (7,
# and start there fails: the lease), QEMU that does not answer (1),
# validate-all's refusals (6, 5), the spool leaving a managed_by=pacemaker
# VM alone, and live migration (migrate_to on the source, migrate_from on
# the target; a target that never answers: an error, the VM stays).
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=10
e2e_setup
command -v ocf-tester >/dev/null || skip_all "ocf-tester missing (Debian package resource-agents; tools/setup-host installs it)"
command -v xmllint >/dev/null || skip_all "xmllint missing (Debian package libxml2-utils)"
[ -f /usr/lib/ocf/lib/heartbeat/ocf-shellfuncs ] || skip_all "ocf-shellfuncs missing (resource-agents)"

RUN_A="$E2E_DIR/run-a" RUN_B="$E2E_DIR/run-b"
mkdir -p "$RUN_A" "$RUN_B"
export OCF_ROOT=/usr/lib/ocf
# ocf-tester runs meta-data as user nobody: the agent must be reachable.
mkdir -p "$E2E_DIR/ocf"
install -m 0755 "$VRT_SOURCE_DIR/tools/ocf/vm" "$E2E_DIR/ocf/vm"
AGENT="$E2E_DIR/ocf/vm"

kill_supervisors() {
	local f
	[ -n "${SPOOL_B:-}" ] && kill "$SPOOL_B" 2>/dev/null
	for f in "$RUN_A"/*/pid "$RUN_B"/*/pid; do
		[ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
	done
}
trap 'kill_supervisors; e2e_cleanup' EXIT

on() {		# on A|B COMMAND...: as that host (same root)
	local h=$1; shift
	env VRT_HOST="host$h" VRT_RUNTIME_DIR="$E2E_DIR/run-${h,,}" VRT_SERVICE_MANAGER=detached "$@"
}
# agent A|B ACTION [VAR=VALUE...]: runs one action as Pacemaker would; prints rc.
agent() {
	local h=$1 action=$2; shift 2
	on "$h" env OCF_RESKEY_name=vm1 OCF_RESKEY_binary="$VRT" OCF_RESKEY_root="$VRT_ROOT" \
		OCF_RESOURCE_INSTANCE=vm1 __OCF_ACTION="$action" OCF_RESKEY_CRM_meta_timeout=90000 "$@" \
		"$AGENT" "$action" >"$E2E_DIR/agent.out" 2>&1
	echo $?
}
rc_is() {	# rc_is WANT A|B ACTION [VAR=VALUE...]
	local want=$1; shift
	local got
	got=$(agent "$@")
	[ "$got" = "$want" ] || { echo "  $2 on host $1: rc $got, want $want"; sed 's/^/  | /' "$E2E_DIR/agent.out"; return 1; }
}

make_vm vm1 managed_by=pacemaker

# --- ocf-tester (Debian's resource-agents) ---------------------------------------
on A ocf-tester -n vm1 -o name=vm1 -o binary="$VRT" -o root="$VRT_ROOT" "$AGENT" >"$E2E_DIR/tester.out" 2>&1
st=$?
check "ocf-tester passes" [ "$st" = 0 ]
check "... and says so" grep -q "passed all tests" "$E2E_DIR/tester.out"
[ "$st" = 0 ] || sed 's/^/  | /' "$E2E_DIR/tester.out"
check "meta-data validates against ra-api-1.dtd" \
	bash -c '"$0" meta-data | (cd /usr/share/resource-agents && xmllint --noout --valid -)' "$AGENT"
check "after ocf-tester: vm1 is stopped" rc_is 7 A monitor

# --- start, monitor, graceful stop -----------------------------------------------
check "start on host A" rc_is 0 A start
check "monitor on A: running (0)" rc_is 0 A monitor
lease_is() {	# lease_is HOST: vrt list --json names HOST for vm1
	on A "$VRT" --json list | grep -q "\"host\": *\"$1\""
}
check "the lease names hostA" lease_is hostA
check "monitor on B: not running here (7)" rc_is 7 B monitor
check "probe on B: 7" rc_is 7 B monitor OCF_RESKEY_CRM_meta_interval=0
check "start on B fails while A runs it (1)" rc_is 1 B start
check "... and says why" grep -q "runs on host hostA" "$E2E_DIR/agent.out"
check "start again on A: 0 (already running)" rc_is 0 A start
wait_ready vm1 90
qemu_pid=$(pgrep -f -- "guest=vm1," | head -n 1)
check "QEMU found" [ -n "$qemu_pid" ]
kill -STOP "$qemu_pid" 2>/dev/null
check "QEMU frozen: monitor fails (1)" rc_is 1 A monitor
kill -CONT "$qemu_pid" 2>/dev/null
check "QEMU resumed: monitor 0" rc_is 0 A monitor
"$VRT" qmp vm1 stop >/dev/null 2>&1
check "guest paused by an operator: still running (0)" rc_is 0 A monitor
"$VRT" qmp vm1 cont >/dev/null 2>&1
b_stop_a_keeps() { [ "$(agent B stop)" = 0 ] && [ "$(agent A monitor)" = 0 ]; }
check "stop on B: 0 (nothing of it runs there), A keeps it" b_stop_a_keeps
check "stop on A with a 90 s operation: graceful" rc_is 0 A stop
check "... the guest powered off itself (ACPI), no force" console_has vm1 VRT-TESTGUEST-POWEROFF
check "monitor after stop: 7" rc_is 7 A monitor
check "stop of a stopped VM: 0" rc_is 0 A stop
check "no supervisor left" bash -c '! ls "$0"/vm1/pid 2>/dev/null' "$RUN_A"
check "start on B now works" rc_is 0 B start
b_runs_it() { [ "$(agent B monitor)" = 0 ] && [ "$(agent A monitor)" = 7 ]; }
check "... monitor on B: 0, on A: 7" b_runs_it
check "the lease names hostB" lease_is hostB
check "stop on B" rc_is 0 B stop

# --- migrate_to / migrate_from (Pacemaker's live migration) ------------------------
# Host B takes incoming migrations on loopback (its host.conf) through its spool.
printf 'migration_address=127.0.0.1\n' >"$E2E_DIR/hostB.conf"
# exec: $! is the spool itself, which the kills below reach.
( exec env VRT_HOST=hostB VRT_RUNTIME_DIR="$RUN_B" VRT_SERVICE_MANAGER=detached VRT_HOST_CONF="$E2E_DIR/hostB.conf" \
	"$VRT" spool --watch >"$E2E_DIR/spool-b.log" 2>&1 ) &
SPOOL_B=$!
check "start on A (to migrate it)" rc_is 0 A start
check "... it boots" wait_ready vm1 90
a_runs_it() { [ "$(agent A monitor)" = 0 ] && [ "$(agent B monitor)" = 7 ]; }
# A target that never answers (no spool there), a 15 s operation (vrt migrate --timeout 10).
check "migrate_to a host that never answers: error (1)" \
	rc_is 1 A migrate_to OCF_RESKEY_CRM_meta_migrate_target=hostC OCF_RESKEY_CRM_meta_timeout=15000
check "... saying why" grep -q "host hostC did not answer within 10s" "$E2E_DIR/agent.out"
check "... monitor on A: still 0, on B: 7" a_runs_it
check "... the lease still names hostA" lease_is hostA
check "... no migration request left" bash -c '! ls "$0"/migrate/vm1* 2>/dev/null' "$VRT_ROOT"
check "migrate_to on A, target hostB: 0" rc_is 0 A migrate_to OCF_RESKEY_CRM_meta_migrate_target=hostB
check "... the lease names hostB" lease_is hostB
check "migrate_from on B: 0" rc_is 0 B migrate_from OCF_RESKEY_CRM_meta_migrate_source=hostA
b_runs_it_now() { [ "$(agent B monitor)" = 0 ] && [ "$(agent A monitor)" = 7 ]; }
check "... monitor on B: 0, on A: 7" b_runs_it_now
check "migrate_from on A (it does not run there): error (1)" rc_is 1 A migrate_from
check "... saying so" grep -q "does not run here after the migration" "$E2E_DIR/agent.out"
check "migrate_to this host itself: error (1)" rc_is 1 B migrate_to OCF_RESKEY_CRM_meta_migrate_target=hostB
check "... monitor on B: still 0" rc_is 0 B monitor
check "stop on B after the migration" rc_is 0 B stop
kill "$SPOOL_B" 2>/dev/null; wait "$SPOOL_B" 2>/dev/null; SPOOL_B=

# --- the spool leaves it alone ------------------------------------------------------
touch "$VRT_ROOT/start/vm1"
on A "$VRT" spool >/dev/null 2>&1
check "spool start request for a managed VM: ignored" rc_is 7 A monitor
check "... the request is gone" [ ! -e "$VRT_ROOT/start/vm1" ]
check "... and logged" grep -q "vm1: managed_by=pacemaker: request ignored" "$VRT_ROOT/log/start.log"
check "vrt status says it is cluster-managed" bash -c '"$0" status vm1 | grep -q "^managed: *by pacemaker"' "$VRT"

# --- validate-all and bad parameters ------------------------------------------------
check "validate-all: 0" rc_is 0 A validate-all
check "validate-all without a name: 6 (not configured)" rc_is 6 A validate-all OCF_RESKEY_name=
check "validate-all with a bad name: 6" rc_is 6 A validate-all OCF_RESKEY_name=Bad_Name
check "validate-all of an unknown VM: 6" rc_is 6 A validate-all OCF_RESKEY_name=ghost
check "... naming it" grep -q "ghost" "$E2E_DIR/agent.out"
check "validate-all with a missing vrt: 5 (not installed)" rc_is 5 A validate-all OCF_RESKEY_binary=/nonexistent/vrt
check "probe with a missing vrt: 7" rc_is 7 A monitor OCF_RESKEY_binary=/nonexistent/vrt OCF_RESKEY_CRM_meta_interval=0
check "stop of an unknown VM: 0" rc_is 0 A stop OCF_RESKEY_name=ghost
check "migrate_to without a target: 2 (args)" rc_is 2 A migrate_to
check "an unknown action: 3 (unimplemented)" rc_is 3 A promote
check "nothing was created for ghost" [ ! -e "$VRT_ROOT/vm/ghost" ]

e2e_finish
