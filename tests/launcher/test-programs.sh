#!/bin/bash
# The programs' shared libraries, and vrt's dispatch to its helpers: vrt
# and vrt-launch start without libarchive, libcrypto and ncurses (those
# cost milliseconds of relocations at every start); vrt-archive and vrt-top
# carry them, and vrt runs them for its export/import/backup/restore and
# top commands.
#   test-programs.sh VRT VRT_LAUNCH VRT_ARCHIVE VRT_TOP
set -u
vrt=$1 launch=$2 archive=$3 top=$4
fails=0 checks=0
check() {	# check WHAT COMMAND...
	checks=$((checks + 1))
	if "${@:2}"; then echo "ok - $1"; else echo "not ok - $1"; fails=$((fails + 1)); fi
}
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
lacks() {	# lacks PROGRAM LIB...: PROGRAM needs none of LIB
	local lib
	for lib in "${@:2}"; do
		needed "$1" | grep -q "^$lib" && { echo "  $1 needs $lib"; return 1; }
	done
	return 0
}
has() { needed "$1" | grep -q "^$2"; }
heavy=(libarchive libcrypto libncurses libtinfo libxml2 libicu libstdc++)
check "vrt needs none of ${heavy[*]}" lacks "$vrt" "${heavy[@]}"
check "vrt-launch needs none of ${heavy[*]}" lacks "$launch" "${heavy[@]}"
check "vrt-archive needs libarchive" has "$archive" libarchive
check "vrt-top needs libncursesw" has "$top" libncursesw

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Through vrt, with the global options before the command as vrt got them.
out=$("$vrt" --root "$tmp" export 2>&1); st=$?
check "vrt export without arguments: usage from vrt-archive, exit 2" \
	test "$st" = 2 -a -n "$(printf '%s' "$out" | grep 'export')"
out=$("$vrt" --root "$tmp" --json backup 2>&1); st=$?
check "vrt --json backup without arguments: exit 2" test "$st" = 2
out=$("$vrt" --root "$tmp" restore "$tmp/none" 2>&1); st=$?
check "vrt restore of a missing backup: an error naming it, exit 2" \
	bash -c '[ "$1" = 2 ] && printf "%s" "$2" | grep -q "$3"' _ "$st" "$out" "$tmp/none"
out=$(TERM=dumb "$vrt" --root "$tmp" top --bogus 2>&1); st=$?
check "vrt top --bogus: exit 2 from vrt-top" test "$st" = 2
# A vrt whose helpers are missing says which program it could not run.
cp "$vrt" "$tmp/vrt"
out=$("$tmp/vrt" --root "$tmp" export a b 2>&1); st=$?
check "without vrt-archive: exit 1, one line naming it" \
	bash -c '[ "$1" = 1 ] && [ "$(printf "%s\n" "$2" | wc -l)" = 1 ] && printf "%s" "$2" | grep -q "export: cannot run .*/vrt-archive"' _ "$st" "$out"
check "vrt --help lists export and top" bash -c '"$0" --help | grep -q "^  export " && "$0" --help | grep -q "^  top "' "$vrt"
for p in "$archive" "$top"; do
	check "$(basename "$p") --version" bash -c '"$0" --version | grep -q "^$(basename "$0") "' "$p"
done
echo "$checks checks, $fails failed"
[ "$fails" = 0 ]
