#!/bin/bash
# vrt --version and vrt-launch --version print meson's project version,
# and what git describe says when built from a git tree.
# Usage: test-version.sh VERSION VRT VRT_LAUNCH SRCDIR
set -u
version=$1 vrt=$2 launch=$3 src=$4
failed=0
for p in "$vrt" "$launch"; do
        name=${p##*/}
        out=$("$p" --version); rc=$?
        echo "$out"
        [ "$rc" = 0 ] || { echo "FAIL - $name --version exits $rc"; failed=1; }
        v=${version//./\\.}
        if git -C "$src" rev-parse --git-dir >/dev/null 2>&1 && command -v git >/dev/null; then
                d=$(git -C "$src" describe --tags --always 2>/dev/null)
                # The build saw the tree as it was then: clean or -dirty.
                [[ $out =~ ^$name\ $v(\ \(git\ ${d}(-dirty)?\))?$ ]] || { echo "FAIL - $name --version: want '$name $version (git $d...)'"; failed=1; }
        else
                [ "$out" = "$name $version" ] || { echo "FAIL - $name --version: want '$name $version'"; failed=1; }
        fi
done
"$vrt" --help | grep -q -- --version || { echo "FAIL - vrt --help does not mention --version"; failed=1; }
exit $failed
