#!/bin/bash
# The Prometheus exposition of vrt stats passes `promtool check metrics`
# (format and the naming lints). Skipped without promtool (Debian package
# prometheus, installed by tools/setup-host).
set -u
command -v promtool >/dev/null || { echo "SKIP: promtool not installed"; exit 77; }
out=$(mktemp) && trap 'rm -f "$out"' EXIT
"$1" --exposition >"$out" || { echo "FAIL: test-stats --exposition"; exit 1; }
promtool check metrics <"$out"
