#!/bin/bash
# The Cockpit page in a real browser: cockpit-ws with a local session
# (cockpit-bridge, no login) on 127.0.0.1 serves tools/cockpit/vrt, headless
# Chromium loads it and cockpit-browser.py drives it over the DevTools
# protocol: a running test guest is listed with its CPU and memory, Stop
# stops it (checked with vrt list), an invalid create shows vrt's error
# line. Screenshots go to BUILD/tests/artifacts/.
. "$(dirname "$0")/lib.sh"
E2E_SHUTDOWN_TIMEOUT=20
e2e_setup
WS=/usr/lib/cockpit/cockpit-ws
[ -x "$WS" ] || skip_all "cockpit-ws not installed (tools/setup-host)"
command -v cockpit-bridge >/dev/null || skip_all "cockpit-bridge not installed"
command -v chromium >/dev/null || skip_all "chromium not installed"
/usr/bin/python3 -c "import websocket" 2>/dev/null || skip_all "python3-websocket not installed"
WS_PID=
cockpit_cleanup() {
        # The bridge is cockpit-ws's child: end it first, then cockpit-ws.
        if [ -n "$WS_PID" ]; then
                pkill -P "$WS_PID" 2>/dev/null
                kill "$WS_PID" 2>/dev/null
        fi
        e2e_cleanup
}
trap cockpit_cleanup EXIT

# The page as meson installs it, in a data dir of its own.
mkdir -p "$E2E_DIR/share/cockpit"
cp -r "$VRT_SOURCE_DIR/tools/cockpit/vrt" "$E2E_DIR/share/cockpit/"
mkdir -p "$VRT_ROOT/vm/web"
printf 'image=testguest\nsize=tiny\nnet=user\nmac=52:54:00:12:34:56\ncomment=the cockpit test\n' >"$VRT_ROOT/vm/web/instance.properties"
launch web
check "web boots" wait_ready web

port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
XDG_DATA_DIRS="$E2E_DIR/share:/usr/share" PATH="$VRT_BUILD_DIR/launcher:$PATH" \
        "$WS" --local-session=cockpit-bridge --address 127.0.0.1 --port "$port" >"$E2E_DIR/ws.log" 2>&1 &
WS_PID=$!
url="http://127.0.0.1:$port/cockpit/@localhost/vrt/index.html"
served() { curl -sf -o /dev/null "$url"; }
check "cockpit-ws serves the page" wait_for 10 served
mkdir -p "$VRT_BUILD_DIR/tests/artifacts"
if /usr/bin/python3 "$VRT_SOURCE_DIR/tests/e2e/cockpit-browser.py" "$url" "$VRT" web testguest "$VRT_BUILD_DIR/tests/artifacts"; then
        check "the browser test" true
else
        fail "the browser test (see above)"
fi
e2e_finish
