#!/bin/bash
# vrt export / vrt import end to end: a guest writes a file to its disk,
# the stopped VM is exported, `tar tf` lists the archive, it is imported
# into a second, empty root, boots there and reads the same file (same
# sha256). A taken name is an error (exit 2, nothing created), --name
# imports it again and, the archived MAC being taken, gets a new MAC. A
# running VM is exported through QMP and imported too. Malformed archives built here with
# python3's tarfile are each refused with exit 2, one line, and nothing in
# the root.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=10
e2e_setup
[ -f "$VRT_ROOT/images/testguest.qcow2" ] || skip_all "the test guest has no template disk"
command -v python3 >/dev/null || skip_all "python3 missing"

ROOT1=$VRT_ROOT
RUN1=$VRT_RUNTIME_DIR
ROOT2="$E2E_DIR/root2"
RUN2="$E2E_DIR/run2"
# The second root has the template disk (a VM names its template with
# image=, and vrt-launch wants it there even for a copy), but neither its
# sidecar nor its kernel and initrd: those come from the archive.
mkdir -p "$ROOT2/images"
cp "$ROOT1/vrt.conf" "$ROOT2/"
cp "$ROOT1/images/testguest.qcow2" "$ROOT2/images/"
chmod -R a+rX "$ROOT2"
use_root() { export VRT_ROOT=$1 VRT_RUNTIME_DIR=$2; }

# --- a guest writes a file ---------------------------------------------------------
"$VRT" create --image testguest --size tiny --net none --name src >/dev/null
check "create: src" [ -f "$ROOT1/vm/src/hdd.ovl" ]
launch src
check "src: boots" wait_ready src 120
check "src: its disk is mounted" wait_for 20 console_has src "/dev/vda mounted on /mnt/disk"
console_cmd src 'head -c 3000000 /dev/urandom >/mnt/disk/payload; sync; echo SUM-$(sha256sum /mnt/disk/payload); echo WROTE-$((2+3))'
check "src: the guest wrote its payload" wait_for 60 console_has src WROTE-5
SUM=$(sed -n 's/.*SUM-\([0-9a-f]\{64\}\).*/\1/p' "$ROOT1/vm/src/log/console.log" | head -1)
check "src: ... and printed its sha256" [ -n "$SUM" ]

# --- export of the running VM (QMP blockdev-backup) ---------------------------------
"$VRT" export src "$E2E_DIR/running.tar" >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "export of a running VM: exit 0" [ $? = 0 ]
check "... says it copied from the running VM" grep -q "blockdev-backup" "$E2E_DIR/out"
check "... tar tf lists it" bash -c 'tar tf "$1" | grep -qx disk.qcow2' _ "$E2E_DIR/running.tar"
check "... no temporary copy left" [ ! -e "$ROOT1/vm/src/.export.qcow2" ]
check "... the guest keeps running" kill -0 "$LAUNCH_PID"

kill -TERM "$LAUNCH_PID"
check "src: stops" wait_exit "$LAUNCH_PID" 60

# --- export of the stopped VM --------------------------------------------------------
"$VRT" export src "$E2E_DIR/src.tar" >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "export: exit 0" [ $? = 0 ]
check "export: says where" grep -q "^src: exported to $E2E_DIR/src.tar" "$E2E_DIR/out"
tar tf "$E2E_DIR/src.tar" >"$E2E_DIR/list" 2>&1
check "tar tf lists it" [ $? = 0 ]
for m in manifest.json instance.properties disk.qcow2 image/testguest.properties; do
	check "tar tf: $m" grep -qx "$m" "$E2E_DIR/list"
done
check "the flattened disk is a standalone qcow2" bash -c \
	'mkdir -p "$1/x" && tar xf "$2" -C "$1/x" disk.qcow2 && qemu-img check -q "$1/x/disk.qcow2" &&
	 ! qemu-img info "$1/x/disk.qcow2" | grep -q "^backing file"' _ "$E2E_DIR" "$E2E_DIR/src.tar"
"$VRT" export src "$E2E_DIR/src.tar" 2>"$E2E_DIR/err"
check "export to an existing file -> exit 2" [ $? = 2 ]
"$VRT" export nosuchvm "$E2E_DIR/none.tar" 2>"$E2E_DIR/err"
check "export of an unknown VM -> exit 2, no file" bash -c '[ $0 = 2 ] && [ ! -e "$1" ]' $? "$E2E_DIR/none.tar"

# A FILE on a file system that fills up: one line naming the archive
# (not the VM's disk, which is only read), and nothing left behind.
mkdir "$E2E_DIR/small"
check "a 256 KiB tmpfs for FILE" mount -t tmpfs -o size=256k tmpfs "$E2E_DIR/small"
"$VRT" export src "$E2E_DIR/small/src.tar" >/dev/null 2>"$E2E_DIR/errfull"
check "full file system: exit 1" [ $? = 1 ]
check "... one line: the archive cannot be written, no space" bash -c '[ "$(wc -l <"$0")" = 1 ] &&
	grep -q "cannot write the archive: No space left on device" "$0" && ! grep -q "hdd.ovl\|testguest.qcow2" "$0"' "$E2E_DIR/errfull"
check "... nothing left behind" [ -z "$(ls -A "$E2E_DIR/small")" ]
umount "$E2E_DIR/small"

# --- --with-template: the chain as members, imported into a root without the template ---
"$VRT" export --with-template src "$E2E_DIR/chain.tar" >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "export --with-template: exit 0" [ $? = 0 ]
check "... keeps the template as a member" bash -c 'tar tf "$1" | grep -qx image/testguest.qcow2' _ "$E2E_DIR/chain.tar"
ROOT4="$E2E_DIR/root4"
mkdir -p "$ROOT4"
cp "$ROOT1/vrt.conf" "$ROOT4/"
use_root "$ROOT4" "$E2E_DIR/run4"
"$VRT" import "$E2E_DIR/chain.tar" >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "import of the chain into an empty root: exit 0" [ $? = 0 ]
cat "$E2E_DIR/err"
check "... the template was installed" cmp -s "$ROOT1/images/testguest.qcow2" "$ROOT4/images/testguest.qcow2"
check "... the VM is an overlay on it" bash -c 'grep -qx disk=overlay "$1/vm/src/instance.properties" && qemu-img info --backing-chain "$1/vm/src/hdd.ovl" | grep -q "images/testguest.qcow2"' _ "$ROOT4"
use_root "$ROOT1" "$RUN1"

# --- import on the second root, boot, same data ------------------------------------
use_root "$ROOT2" "$RUN2"
"$VRT" import "$E2E_DIR/src.tar" >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "import: exit 0" [ $? = 0 ]
cat "$E2E_DIR/err"
check "import: registered the name" grep -qx src "$ROOT2/install/installed.txt"
MAC1=$(sed -n 's/^mac=//p' "$ROOT1/vm/src/instance.properties")
check "import: kept the archived MAC (free here)" grep -qx "mac=$MAC1" "$ROOT2/vm/src/instance.properties"
check "import: ... and registered it" grep -qx "$MAC1" "$ROOT2/install/mac-addresses.txt"
check "import: the disk is a copy" [ -f "$ROOT2/vm/src/hdd.img" ]
check "import: the image sidecar was installed" [ -f "$ROOT2/images/testguest.properties" ]
launch src
check "imported src: boots on the second root" wait_ready src 120
check "imported src: disk mounted" wait_for 20 console_has src "/dev/vda mounted on /mnt/disk"
console_cmd src 'echo GOT-$(sha256sum /mnt/disk/payload)'
check "imported src: the payload has the same sha256" wait_for 60 console_has src "GOT-$SUM"
kill -TERM "$LAUNCH_PID"
check "imported src: stops" wait_exit "$LAUNCH_PID" 60

# The archive of the running VM: imported as NEWNAME, boots, same payload.
"$VRT" import "$E2E_DIR/running.tar" hot >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "import of the running export as hot: exit 0" [ $? = 0 ]
launch hot
check "hot: boots" wait_ready hot 120
check "hot: disk mounted" wait_for 20 console_has hot "/dev/vda mounted on /mnt/disk"
console_cmd hot 'echo GOT-$(sha256sum /mnt/disk/payload)'
check "hot: the payload has the same sha256" wait_for 60 console_has hot "GOT-$SUM"
kill -TERM "$LAUNCH_PID"
check "hot: stops" wait_exit "$LAUNCH_PID" 60

# A taken name: exit 2, nothing new.
snap() { (cd "$ROOT2" && find . | sort; cat install/*.txt 2>/dev/null) ; }
before=$(snap)
"$VRT" import "$E2E_DIR/src.tar" >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "import of a taken name -> exit 2" [ $? = 2 ]
check "... one line naming the name" bash -c '[ "$(wc -l <"$1")" = 1 ] && grep -q "name src is already registered" "$1"' _ "$E2E_DIR/err"
check "... nothing created" [ "$(snap)" = "$before" ]

# --name: a new VM; the archived MAC is taken here now, so a new one.
"$VRT" import "$E2E_DIR/src.tar" --name twin >"$E2E_DIR/out" 2>"$E2E_DIR/err"
check "import --name twin: exit 0" [ $? = 0 ]
MAC2=$(sed -n 's/^mac=//p' "$ROOT2/vm/twin/instance.properties")
check "twin: a different MAC" bash -c '[ -n "$0" ] && [ "$0" != "$1" ]' "$MAC2" "$MAC1"
check "twin: stdout says the MAC is new" grep -q "MAC $MAC2; the archived MAC is taken here, a new one was assigned" "$E2E_DIR/out"
check "twin: name and MAC registered" bash -c 'grep -qx twin "$1/install/installed.txt" && grep -qx "$2" "$1/install/mac-addresses.txt"' _ "$ROOT2" "$MAC2"
check "twin: name= rewritten" grep -qx "name=twin" "$ROOT2/vm/twin/instance.properties"
"$VRT" import "$E2E_DIR/src.tar" --name 'Bad/Name' 2>"$E2E_DIR/err"
check "import --name with a bad name -> exit 2" [ $? = 2 ]

# --- malformed archives --------------------------------------------------------------
# Built from scratch: a manifest that lists the members with their real
# sizes and SHA-256 unless the case breaks exactly that.
python3 - "$E2E_DIR/bad" <<'PY'
import hashlib, io, json, os, sys, tarfile
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
PROPS = b"image=testguest\nsize=tiny\nnet=none\nname=evil\nmac=52:54:00:12:34:56\n"

def manifest(members, **over):
    m = {"format": "vrt-export", "version": 1, "name": "evil", "image": "testguest",
         "macs": ["52:54:00:12:34:56"],
         "members": [{"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in members]}
    m.update(over)
    return json.dumps(m).encode()

def add(t, name, data, **kw):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    for k, v in kw.items():
        setattr(ti, k, v)
    t.addfile(ti, io.BytesIO(data) if ti.isreg() else None)

def build(case, members, man=None, extra=None):
    with tarfile.open(os.path.join(out, case + ".tar"), "w", format=tarfile.USTAR_FORMAT) as t:
        add(t, "manifest.json", man if man is not None else manifest(members))
        for n, d in members:
            add(t, n, d)
        if extra:
            extra(t)

ok = [("instance.properties", PROPS)]
build("traversal", ok + [("../x", b"boo")])
build("absolute", ok + [("/etc/x", b"boo")])
def symlink(t):
    ti = tarfile.TarInfo("link"); ti.type = tarfile.SYMTYPE; ti.linkname = "/etc/passwd"; t.addfile(ti)
build("symlink", ok, manifest(ok + [("link", b"")]), symlink)
def hardlink(t):
    ti = tarfile.TarInfo("hard"); ti.type = tarfile.LNKTYPE; ti.linkname = "instance.properties"; t.addfile(ti)
build("hardlink", ok, manifest(ok + [("hard", b"")]), hardlink)
def device(t):
    ti = tarfile.TarInfo("dev"); ti.type = tarfile.CHRTYPE; ti.devmajor = 1; ti.devminor = 3; t.addfile(ti)
build("device", ok, manifest(ok + [("dev", b"")]), device)
def fifo(t):
    ti = tarfile.TarInfo("fifo"); ti.type = tarfile.FIFOTYPE; t.addfile(ti)
build("fifo", ok, manifest(ok + [("fifo", b"")]), fifo)
# No manifest at all: instance.properties first.
with tarfile.open(os.path.join(out, "no-manifest.tar"), "w", format=tarfile.USTAR_FORMAT) as t:
    add(t, "instance.properties", PROPS)
# Size in the manifest differs from the member.
build("size-mismatch", ok, manifest([("instance.properties", PROPS + b"x")]))
# Right size, wrong checksum.
m = json.loads(manifest(ok)); m["members"][0]["sha256"] = "0" * 64
build("bad-sha256", ok, json.dumps(m).encode())
build("duplicate", ok + ok, manifest(ok))
# A huge declared size (the manifest agrees, the data is not there).
m = json.loads(manifest(ok)); m["members"][0]["size"] = 1 << 50
build("huge", ok, json.dumps(m).encode())
build("no-properties", [("init.log", b"hi\n")])
bad = [("instance.properties", b"image=testguest\nsize=tiny\nbogus-key=1\nname=evil\nmac=52:54:00:12:34:56\n")]
build("bad-properties", bad)
build("not-json", ok, b"{ not json")
build("wrong-format", ok, manifest(ok, format="zip"))
# Truncated: a good archive cut in the middle of a member.
build("full", ok + [("init.log", b"z" * 20000)])
data = open(os.path.join(out, "full.tar"), "rb").read()
open(os.path.join(out, "truncated.tar"), "wb").write(data[:5000])
os.unlink(os.path.join(out, "full.tar"))
# Not a tar file at all, and an empty file.
open(os.path.join(out, "garbage.tar"), "wb").write(os.urandom(3000))
open(os.path.join(out, "empty.tar"), "wb").close()
PY
check "malformed archives built" [ -f "$E2E_DIR/bad/truncated.tar" ]

# A root of its own, so "nothing created" is exact.
ROOT3="$E2E_DIR/root3"
mkdir -p "$ROOT3"
cp "$ROOT1/vrt.conf" "$ROOT3/"
use_root "$ROOT3" "$E2E_DIR/run3"
# What counts: entries in vm/ and images/, and the registry's lines (an
# empty vm/ or registry file made on first use is no VM).
snap3() { (cd "$ROOT3" && find vm images -mindepth 1 2>/dev/null | sort; cat install/*.txt 2>/dev/null); }
n_bad=0
for f in "$E2E_DIR"/bad/*.tar; do
	c=$(basename "$f" .tar)
	before=$(snap3)
	"$VRT" import "$f" >"$E2E_DIR/out" 2>"$E2E_DIR/err"
	st=$?
	check "malformed $c: exit 2" [ $st = 2 ]
	check "malformed $c: one line naming the file" bash -c '[ "$(wc -l <"$1")" = 1 ] && grep -qF "$2" "$1"' _ "$E2E_DIR/err" "$f"
	echo "# $c: $(cat "$E2E_DIR/err")"
	check "malformed $c: nothing created" bash -c '[ "$1" = "$2" ] && [ ! -e "$3/vm/evil" ] && ! grep -qsx evil "$3/install/installed.txt"' \
		_ "$(snap3)" "$before" "$ROOT3"
	n_bad=$((n_bad + 1))
done
check "at least 10 malformed archives tried" [ "$n_bad" -ge 10 ]
check "no staging left in vm/" bash -c '! ls -A "$1/vm" 2>/dev/null | grep -q .' _ "$ROOT3"

# The good archive still imports into that root afterwards.
"$VRT" import "$E2E_DIR/src.tar" >/dev/null 2>"$E2E_DIR/err"
check "after all that, a good import works" [ -f "$ROOT3/vm/src/hdd.img" ]

e2e_finish
