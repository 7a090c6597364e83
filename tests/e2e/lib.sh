# Shared helpers for vrt's end-to-end tests (bash). Each test script sources
# this, calls e2e_setup, and uses check/fail; e2e_finish prints the tally.
# The tests boot the real test guest under TCG.
set -u

: "${VRT_BUILD_DIR:?VRT_BUILD_DIR must point at the meson build dir}"
: "${VRT_SOURCE_DIR:?VRT_SOURCE_DIR must point at the source tree}"
VRT="$VRT_BUILD_DIR/launcher/vrt"
VRT_LAUNCH="$VRT_BUILD_DIR/launcher/vrt-launch"
TESTGUEST_DIR="${VRT_TESTGUEST_DIR:-$VRT_BUILD_DIR/testguest}"

E2E_PASSED=0
E2E_FAILED=0
E2E_PIDS=()

check() {       # check DESCRIPTION COMMAND...: passes when COMMAND succeeds
        local what=$1; shift
        if "$@"; then
                echo "ok - $what"
                E2E_PASSED=$((E2E_PASSED + 1))
        else
                echo "FAIL - $what"
                E2E_FAILED=$((E2E_FAILED + 1))
        fi
}

fail() {
        echo "FAIL - $*"
        E2E_FAILED=$((E2E_FAILED + 1))
}

skip_all() {    # the whole script cannot run here: meson's skip status
        echo "SKIP: $*"
        exit 77
}

e2e_cleanup() {
        local p
        for p in "${E2E_PIDS[@]}"; do
                kill -9 "$p" 2>/dev/null
        done
        # QEMU children die with their supervisors (PR_SET_PDEATHSIG).
        sleep 0.2
        if [ -n "${E2E_DIR:-}" ] && [ -d "$E2E_DIR" ]; then
                rm -rf "$E2E_DIR"
        fi
}

# operator_setup USER GROUP: a non-root operator (made here unless it
# exists, removed again at exit with every supervisor left), OP_USER,
# OP_GROUP, OP_UID, and as_op COMMAND... to run a command as it.
operator_setup() {
	OP_USER=$1 OP_GROUP=$2
	OP_MADE_USER=0 OP_MADE_GROUP=0
	getent group "$OP_GROUP" >/dev/null || { groupadd "$OP_GROUP" && OP_MADE_GROUP=1; }
	getent passwd "$OP_USER" >/dev/null ||
		{ useradd -M -N -g "$OP_GROUP" -s /usr/sbin/nologin -d /nonexistent "$OP_USER" && OP_MADE_USER=1; }
	OP_UID=$(id -u "$OP_USER")
	trap operator_cleanup EXIT
}
operator_cleanup() {
	local f
	for f in "$VRT_RUNTIME_DIR"/*/pid; do
		[ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
	done
	[ "$OP_MADE_USER" = 1 ] && userdel "$OP_USER" 2>/dev/null
	[ "$OP_MADE_GROUP" = 1 ] && groupdel "$OP_GROUP" 2>/dev/null
	e2e_cleanup
}
as_op() {	# as_op COMMAND...: runs COMMAND as the operator (not root)
	setpriv --reuid="$OP_USER" --regid="$OP_GROUP" --init-groups --reset-env -- "$@"
}

# Creates a root with the test guest as image "testguest", sizes "tiny"
# (1 vCPU, 128 MiB), accel=tcg, and a short shutdown timeout.
e2e_setup() {
        [ "$(id -u)" = 0 ] || skip_all "needs root (QEMU is started as the unprivileged user)"
        id vrt >/dev/null 2>&1 || skip_all "user vrt missing (run tools/setup-host)"
        command -v qemu-system-x86_64 >/dev/null || skip_all "qemu-system-x86_64 not installed"
        "$VRT_SOURCE_DIR/tools/testguest/build" "$TESTGUEST_DIR" >/dev/null || { echo "test guest build failed"; exit 1; }
        E2E_DIR=$(mktemp -d /tmp/vrt-e2e.XXXXXX)
        trap e2e_cleanup EXIT
        chmod 755 "$E2E_DIR"
        export VRT_ROOT="$E2E_DIR/root"
        export VRT_RUNTIME_DIR="$E2E_DIR/run"
        mkdir -p "$VRT_ROOT"/{images,vm,iso,init,inst,start,stop,destroy,log,autostart,install}
        # The kernel is 66 MB: link it (QEMU, as user vrt, follows the link).
        ln -s "$(realpath "$TESTGUEST_DIR/testguest.vmlinuz")" "$VRT_ROOT/images/testguest.vmlinuz"
        cp "$TESTGUEST_DIR"/testguest.{initrd,properties} "$VRT_ROOT/images/"
        if [ -f "$TESTGUEST_DIR/testguest.qcow2" ]; then
                cp "$TESTGUEST_DIR/testguest.qcow2" "$VRT_ROOT/images/"
                chmod 0444 "$VRT_ROOT/images/testguest.qcow2"
        fi
        chmod -R a+rX "$VRT_ROOT"
        cat > "$VRT_ROOT/vrt.conf" <<CONF
accel=tcg
shutdown_timeout=${E2E_SHUTDOWN_TIMEOUT:-30}
size.tiny.cpus=1
size.tiny.memory=128M
CONF
}

# make_vm NAME [extra instance.properties lines...]: a diskless test-guest VM.
make_vm() {
        local name=$1; shift
        mkdir -p "$VRT_ROOT/vm/$name"
        {
                echo "image=testguest"
                echo "size=tiny"
                echo "net=none"
                local l
                for l in "$@"; do echo "$l"; done
        } > "$VRT_ROOT/vm/$name/instance.properties"
}

# image_cmdline_append TEXT: extra kernel arguments for every test-guest boot.
image_cmdline_append() {
        sed -i "s|^cmdline=.*|& $1|" "$VRT_ROOT/images/testguest.properties"
}

# launch NAME [args]: starts vrt-launch in the background; sets LAUNCH_PID.
launch() {
        local name=$1; shift
        "$VRT_LAUNCH" "$@" "$name" >"$E2E_DIR/$name.launch.log" 2>&1 &
        LAUNCH_PID=$!
        E2E_PIDS+=("$LAUNCH_PID")
}

# wait_for SECONDS COMMAND...: polls every 50 ms until COMMAND succeeds.
wait_for() {
        local deadline=$(( $(date +%s%N) / 1000000 + $1 * 1000 )); shift
        while ! "$@" 2>/dev/null; do
                [ $(( $(date +%s%N) / 1000000 )) -lt $deadline ] || return 1
                sleep 0.05
        done
}

console_has() {         # console_has NAME TEXT
        grep -q -- "$2" "$VRT_ROOT/vm/$1/log/console.log" 2>/dev/null
}

wait_ready() {          # wait_ready NAME: the guest printed its ready marker
        wait_for "${2:-60}" console_has "$1" VRT-TESTGUEST-READY
}

# wait_exit PID SECONDS: waits for a background job; sets EXIT_STATUS.
wait_exit() {
        local pid=$1 secs=$2 i
        for ((i = 0; i < secs * 20; i++)); do
                if ! kill -0 "$pid" 2>/dev/null; then
                        wait "$pid"
                        EXIT_STATUS=$?
                        return 0
                fi
                sleep 0.05
        done
        EXIT_STATUS=255
        return 1
}

# console_cmd NAME COMMAND: types a command on the guest's serial shell.
console_cmd() {
        printf '%s\n' "$2" | socat -t 1 - "UNIX-CONNECT:$VRT_RUNTIME_DIR/$1/console.sock" >/dev/null 2>&1
}

not() {                # not COMMAND...: succeeds when COMMAND fails
        ! "$@"
}

# process_gone PID: the process has exited (a zombie waiting for a slow
# reaper counts as gone: it runs nothing and holds no fds).
process_gone() {
        [ ! -d "/proc/$1" ] || grep -q "^State:[[:space:]]*Z" "/proc/$1/status" 2>/dev/null
}

runtime_empty() {       # runtime_empty NAME: nothing left of a VM's runtime dir
        [ ! -e "$VRT_RUNTIME_DIR/$1" ]
}

e2e_finish() {
        echo "$E2E_PASSED passed, $E2E_FAILED failed"
        [ "$E2E_FAILED" = 0 ]
}
