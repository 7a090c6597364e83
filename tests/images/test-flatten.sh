#!/bin/bash
# Native flattening (images/flatten.c) against qemu-img as the oracle:
# every chain below is flattened by flatten-tool, and the result must be a
# standalone qcow2 that `qemu-img check` passes and `qemu-img compare`
# finds identical to the chain it came from.
set -u
TOOL=${FLATTEN_TOOL:?}
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || { echo "SKIP: qemu-utils missing"; exit 77; }
D=$(mktemp -d /tmp/vrt-flatten.XXXXXX)
trap 'rm -rf "$D"' EXIT
cd "$D" || exit 1
PASSED=0 FAILED=0

check() {
	local what=$1; shift
	if "$@"; then echo "ok - $what"; PASSED=$((PASSED + 1)); else echo "FAIL - $what"; FAILED=$((FAILED + 1)); fi
}
not() { ! "$@"; }
io() { qemu-io -f "$1" -c "$2" "$3" >/dev/null; }

# flat NAME TOP: flattens TOP into NAME.flat and judges it.
flat() {
	local name=$1 top=$2
	rm -f "$name.flat"
	check "$name: flattened" "$TOOL" "$top" "$name.flat"
	check "$name: qemu-img check" qemu-img check -q "$name.flat"
	check "$name: no backing file" bash -c '! qemu-img info "$1" | grep -q "^backing file"' _ "$name.flat"
	check "$name: same content as the chain" qemu-img compare -q "$top" "$name.flat"
	check "$name: same virtual size" [ "$(qemu-img info --output=json "$name.flat" | grep -o '"virtual-size": [0-9]*')" = \
		"$(qemu-img info --output=json "$top" | grep -o '"virtual-size": [0-9]*')" ]
}

# Two layers with writes in both, a zero write shadowing base data, and a
# discard that uncovers it again.
qemu-img create -q -f qcow2 base.qcow2 64M
io qcow2 "write -P 0x11 0 4M" base.qcow2
io qcow2 "write -P 0x22 10M 1M" base.qcow2
io qcow2 "write -P 0x33 63M 1M" base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 128M
io qcow2 "write -P 0x44 1M 64k" top.qcow2
io qcow2 "write -z 10M 512k" top.qcow2
io qcow2 "write -P 0x55 100M 3M" top.qcow2
io qcow2 "write -P 0x66 5000 3000" top.qcow2
flat two-layers top.qcow2
check "two-layers: only allocated clusters are stored" [ "$(stat -c %s two-layers.flat)" -lt $((20 * 1024 * 1024)) ]

# Three layers.
qemu-img create -q -f qcow2 -b top.qcow2 -F qcow2 third.qcow2
io qcow2 "write -P 0x77 2M 2M" third.qcow2
flat three-layers third.qcow2

# A compressed template.
qemu-img convert -q -c -O qcow2 base.qcow2 comp.qcow2
qemu-img create -q -f qcow2 -b comp.qcow2 -F qcow2 over-comp.qcow2
io qcow2 "write -P 0x88 3M 2M" over-comp.qcow2
flat compressed over-comp.qcow2

# A sparse raw backing file.
truncate -s 32M base.raw
printf 'raw data at 1M' | dd of=base.raw bs=1 seek=$((1024 * 1024)) conv=notrunc status=none
printf 'raw data at 20M' | dd of=base.raw bs=1 seek=$((20 * 1024 * 1024)) conv=notrunc status=none
qemu-img create -q -f qcow2 -b base.raw -F raw over-raw.qcow2 48M
io qcow2 "write -P 0x99 30M 4M" over-raw.qcow2
flat raw-backing over-raw.qcow2
flat raw-alone base.raw

# 4 KiB clusters over 64 KiB ones: one output cluster from several layers.
qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 small.qcow2
io qcow2 "write -P 0xaa 8k 4k" small.qcow2
io qcow2 "write -P 0xbb 130k 8k" small.qcow2
flat small-clusters small.qcow2

# 2 MiB clusters on top.
qemu-img create -q -f qcow2 -o cluster_size=2M -b base.qcow2 -F qcow2 big.qcow2
io qcow2 "write -P 0xcc 4M 64k" big.qcow2
flat big-clusters big.qcow2

# A size that is not a multiple of the cluster size, a version 2 image, an
# empty overlay, and an empty image.
qemu-img create -q -f qcow2 odd.qcow2 1000448
io qcow2 "write -P 0xdd 983040 17408" odd.qcow2
flat odd-size odd.qcow2
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 16M
io qcow2 "write -P 0xee 1M 1M" v2.qcow2
flat version-2 v2.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 empty-over.qcow2
flat empty-overlay empty-over.qcow2
qemu-img create -q -f qcow2 empty.qcow2 1G
flat empty-image empty.qcow2
check "empty-image: header, refcounts and L1 only" [ "$(stat -c %s empty-image.flat)" = $((4 * 65536)) ]

# A large sparse disk is planned from its L1 table, not cluster by cluster.
qemu-img create -q -f qcow2 huge.qcow2 4T
io qcow2 "write -P 0x12 3T 64k" huge.qcow2
check "huge: 4 TiB with 64 KiB of data flattens in under 10 s" timeout 10 "$TOOL" huge.qcow2 huge.flat
check "huge: qemu-img check" qemu-img check -q huge.flat
check "huge: the data is there" bash -c 'qemu-io -f qcow2 -c "read -P 0x12 3T 64k" huge.flat | grep -q "read 65536/65536"'

# Refused: a broken chain, an existing target.
qemu-img create -q -f qcow2 -b missing.qcow2 -F qcow2 dangling.qcow2 1M
check "dangling backing file: refused" not "$TOOL" dangling.qcow2 dangling.flat
check "... and nothing written" [ ! -e dangling.flat ]
check "existing target: refused" not "$TOOL" top.qcow2 two-layers.flat

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
