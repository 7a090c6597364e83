#!/bin/bash
# Operators without root: with group= in vrt.conf, `vrt spool` makes inst/
# start/ stop/ destroy/ root:GROUP 2775, and a member of the group (not
# root) creates, starts and stops a VM by dropping files there; the spool
# logs the uid of every request. What an operator can plant there instead
# gets no more than the documented actions: a symlink to a root-only file,
# a hard link, a FIFO, a huge file, bad names, option injection in
# properties, a request that names another VM, a directory with a symlink
# out of the root - each is refused, logged, and changes nothing else.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=10
e2e_setup
command -v setpriv >/dev/null || skip_all "setpriv missing (util-linux)"
command -v useradd >/dev/null || skip_all "useradd missing (passwd)"
export VRT_SERVICE_MANAGER=detached

operator_setup vrte2eop vrte2eops
spool() {
	timeout 60 "$VRT" spool >"$E2E_DIR/spool.out" 2>&1
}
logged() {	# logged LOG TEXT
	grep -qF -- "$2" "$VRT_ROOT/log/$1.log"
}
running() {
	[ "$("$VRT" --json list | python3 -c 'import json,sys; print({v["name"]: v["state"] for v in json.load(sys.stdin)}.get(sys.argv[1], "none"))' "$1")" = running ]
}
shadow_sum=$(sha256sum </etc/shadow)

echo "group=$OP_GROUP" >>"$VRT_ROOT/vrt.conf"
chmod 0755 "$VRT_ROOT"/{inst,start,stop,destroy}
check "vrt spool with group= succeeds" spool
for d in inst start stop destroy; do
	check "$d/ is root:$OP_GROUP 2775" [ "$(stat -c '%U:%G %a' "$VRT_ROOT/$d")" = "root:$OP_GROUP 2775" ]
done
check "vm/ stays root-only writable" [ "$(stat -c '%U %a' "$VRT_ROOT/vm")" = "root 755" ]
check "the operator cannot write vm/" not as_op touch "$VRT_ROOT/vm/x"

# --- the documented actions, as the operator ---------------------------------
printf 'image=testguest\nsize=tiny\nnet=none\n' >"$E2E_DIR/alpha.properties"
check "operator drops inst/alpha.properties" as_op cp "$E2E_DIR/alpha.properties" "$VRT_ROOT/inst/alpha.properties"
spool
check "... the spool creates alpha" [ -f "$VRT_ROOT/vm/alpha/instance.properties" ]
check "... and logs the operator's uid" logged create "inst/alpha.properties: request by uid $OP_UID ($OP_USER)"
check "operator touches start/alpha" as_op touch "$VRT_ROOT/start/alpha"
spool
check "... alpha runs" running alpha
check "... logged with the uid" logged start "start/alpha: request by uid $OP_UID ($OP_USER)"
check "... the guest boots" wait_ready alpha 90
check "operator touches stop/alpha" as_op touch "$VRT_ROOT/stop/alpha"
spool
check "... alpha is stopped" not running alpha
check "... logged with the uid" logged stop "stop/alpha: request by uid $OP_UID ($OP_USER)"
"$VRT" start alpha >/dev/null 2>&1

# --- what an operator may plant instead ---------------------------------------
refused() {	# refused QUEUE ENTRY LOGTEXT: the spool removed it, logged why, alpha untouched
	local q=$1 e=$2 text=$3
	spool
	[ ! -e "$VRT_ROOT/$q/$e" ] && [ ! -L "$VRT_ROOT/$q/$e" ] || { echo "  $q/$e still there"; return 1; }
	logged "$(case $q in inst) echo create ;; *) echo "$q" ;; esac)" "$text" || { echo "  no log line: $text"; tail -n 3 "$VRT_ROOT/log/"*.log; return 1; }
}
check "stop/alpha as a symlink to /etc/shadow: planted" as_op ln -s /etc/shadow "$VRT_ROOT/stop/alpha"
check "... refused" refused stop alpha "a symbolic link (not followed)"
check "... alpha still runs" running alpha
check "... no line of /etc/shadow in the logs" not grep -q "root:" "$VRT_ROOT"/log/*.log
as_op bash -c 'echo force=yes >"$0/inst/own" && ln "$0/inst/own" "$0/stop/alpha"' "$VRT_ROOT"
check "stop/alpha as a hard link: not read" refused stop alpha "a hard link (2 names): not read"
check "... alpha still runs" running alpha
rm -f "$VRT_ROOT/inst/own"
as_op mkfifo "$VRT_ROOT/stop/alpha"
check "stop/alpha as a FIFO: the spool does not hang" refused stop alpha "not a regular file"
check "... alpha still runs" running alpha
as_op head -c 1048576 /dev/zero >"$E2E_DIR/huge" && as_op cp "$E2E_DIR/huge" "$VRT_ROOT/stop/alpha"
check "a 1 MiB stop/alpha: refused" refused stop alpha "bytes, at most"
check "... alpha still runs" running alpha
as_op touch -- "$VRT_ROOT/destroy/-rf"
check "destroy/-rf (an option as a name): refused" refused destroy -rf "invalid VM name"
as_op touch "$VRT_ROOT/destroy/Alpha"
check "destroy/Alpha: refused" refused destroy Alpha "invalid VM name"
check "... alpha is not destroyed" [ ! -e "$VRT_ROOT/vm/alpha/DESTROYED" ]
printf 'image=-drive,file=/etc/shadow\nsize=tiny\nnet=none\n' >"$E2E_DIR/inj.properties"
as_op cp "$E2E_DIR/inj.properties" "$VRT_ROOT/inst/inj.properties"
spool
check "inst/ with an option in image=: no VM inj" [ ! -e "$VRT_ROOT/vm/inj" ]
check "... logged as refused" logged create "invalid image name"
alpha_sum=$(sha256sum <"$VRT_ROOT/vm/alpha/instance.properties")
printf 'image=testguest\nsize=tiny\nnet=none\nname=alpha\n' >"$E2E_DIR/other.properties"
as_op cp "$E2E_DIR/other.properties" "$VRT_ROOT/inst/other.properties"
spool
check "inst/other.properties naming alpha: alpha's properties unchanged" \
	[ "$(sha256sum <"$VRT_ROOT/vm/alpha/instance.properties")" = "$alpha_sum" ]
refused_other() { grep "other.properties" "$VRT_ROOT/log/create.log" | grep -v "request by" | grep -q "alpha"; }
check "... logged as refused, naming alpha" refused_other
check "... alpha still runs" running alpha
as_op mkdir "$VRT_ROOT/start/trap"
as_op ln -s /etc "$VRT_ROOT/start/trap/etc"
check "start/trap, a directory holding a symlink to /etc: removed" refused start trap "a directory, not a request: removed"
check "... /etc/passwd still there" [ -s /etc/passwd ]
check "/etc/shadow unchanged after all of it" [ "$(sha256sum </etc/shadow)" = "$shadow_sum" ]
check "a root-owned request is logged as uid 0" bash -c 'touch "$0/stop/alpha"' "$VRT_ROOT"
spool
check "... and carried out" not running alpha
check "... logged as root" logged stop "stop/alpha: request by uid 0 (root)"

# --- group= that does not exist ----------------------------------------------------
sed -i "s/^group=.*/group=no-such-group-e2e/" "$VRT_ROOT/vrt.conf"
timeout 30 "$VRT" spool >"$E2E_DIR/nogroup.out" 2>&1
st=$?
check "group= naming no group: vrt spool exits 2" [ "$st" = 2 ]
check "... naming file, line and value" grep -q "vrt.conf:[0-9]*: group=no-such-group-e2e does not exist" "$E2E_DIR/nogroup.out"
check "... and the directories keep their group" [ "$(stat -c '%G' "$VRT_ROOT/start")" = "$OP_GROUP" ]

e2e_finish
