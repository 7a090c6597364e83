#!/usr/bin/python3
"""Drives the vrt Cockpit page in headless Chromium over the DevTools
protocol (a websocket; python3-websocket) and checks it against the vrt
CLI: the list shows the running guest, Stop stops it (vrt list says so),
an invalid create shows vrt's own error line. Prints "ok - ..." /
"FAIL - ..." lines like lib.sh and saves screenshots.

usage: cockpit-browser.py URL VRT VM IMAGE ARTIFACT_DIR"""
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

url, vrt, vm, image, artifacts = sys.argv[1:6]
passed = failed = 0


def check(what, ok):
    global passed, failed
    print(("ok - " if ok else "FAIL - ") + what, flush=True)
    if ok:
        passed += 1
    else:
        failed += 1
    return ok


class Page:
    """One tab: commands by id, events ignored."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)

    def send(self, method, **params):
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expr):
        r = self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            return None
        return r["result"].get("value")

    def wait(self, expr, secs):
        deadline = time.monotonic() + secs
        while time.monotonic() < deadline:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.2)
        return None

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))


def vrt_json(*args):
    out = subprocess.run([vrt, *args, "--json"], capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout) if out.returncode == 0 else None


def list_state(name):
    vms = vrt_json("list", "--all") or []
    return next((v["state"] for v in vms if v["name"] == name), None)


profile = tempfile.mkdtemp(prefix="vrt-chromium.")
browser = subprocess.Popen(
    ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
     "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--remote-allow-origins=*",
     f"--user-data-dir={profile}", "--window-size=1280,720", "about:blank"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    port_file = os.path.join(profile, "DevToolsActivePort")
    deadline = time.monotonic() + 30
    while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
        if time.monotonic() > deadline or browser.poll() is not None:
            print("FAIL - chromium did not start its DevTools endpoint")
            sys.exit(1)
        time.sleep(0.1)
    port = open(port_file).read().split("\n")[0]
    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
    page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
    page.send("Page.enable")
    page.send("Page.navigate", url=url)

    row = f'document.querySelector(\'tr[data-vm="{vm}"]\')'
    cell = lambda sel: f'({row} && {row}.querySelector("{sel}") ? {row}.querySelector("{sel}").textContent : "")'
    check(f"the list shows {vm} running",
          page.wait(f'{row} && {row}.dataset.state === "running"', 60))
    mac = next((v["mac"] for v in vrt_json("list") or [] if v["name"] == vm), None)
    check(f"the row has the image and MAC vrt list gives ({mac})",
          page.wait(f'{row} && {row}.textContent.includes("{image}") && {cell(".mac")} === {json.dumps(mac)}', 10))
    cpu = page.wait(f'{cell(".cpu")}.includes("%") && {cell(".cpu")}', 30)
    check(f"CPU refreshes from vrt stats ({cpu})", bool(cpu))
    mem = page.wait(f'{cell(".mem")}.includes("MiB") && {cell(".mem")}', 10)
    check(f"memory from vrt stats ({mem})", bool(mem))

    # The serial console: a line typed in the page reaches the guest's shell,
    # which answers with something only it computes.
    page.js(f'{row}.querySelector("button[data-action=console]").click()')
    check("Console: the panel opens", page.wait('!document.getElementById("console").hidden', 10))
    page.js('document.getElementById("console-in").value = "echo cockpit-$((6 * 7))"')
    page.js('document.getElementById("console-form").requestSubmit()')
    check("Console: the guest's shell answered (cockpit-42)",
          page.wait('document.getElementById("console-out").textContent.includes("cockpit-42\\n")', 30))
    page.screenshot(os.path.join(artifacts, "cockpit-vrt.png"))
    page.js('document.getElementById("console-close").click()')
    check("Console: Close hides it", page.wait('document.getElementById("console").hidden', 10))

    page.js(f'{row}.querySelector("button[data-action=stop]").click()')
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and list_state(vm) != "stopped":
        time.sleep(0.5)
    check("Stop: vrt list says the VM stopped", list_state(vm) == "stopped")
    check("Stop: the page shows it stopped", page.wait(f'{row} && {row}.dataset.state === "stopped"', 15))
    check("Stop: Start is enabled again",
          page.wait(f'{row} && !{row}.querySelector("button[data-action=start]").disabled', 10))

    # An invalid create: the page shows exactly the line vrt prints.
    want = subprocess.run([vrt, "create", "--image", image, "--size", "no-such-size", "--json"],
                          capture_output=True, text=True, timeout=60)
    want_line = want.stderr.strip()
    check(f"vrt itself refuses the size with exit 2 and one line ({want_line})",
          want.returncode == 2 and want_line.startswith("vrt: ") and "\n" not in want_line)
    page.js('document.getElementById("create-size").value = "no-such-size"')
    page.js('document.getElementById("create-button").click()')
    shown = page.wait('!document.getElementById("error").hidden && document.getElementById("error").textContent', 30)
    check(f"invalid create: the page shows vrt's line as it is ({shown})", shown == want_line)
    check("invalid create: no VM appeared", not any(v["name"].startswith("no-such") for v in vrt_json("list", "--all") or []))
    page.screenshot(os.path.join(artifacts, "cockpit-vrt-error.png"))
    check("screenshots saved", all(os.path.getsize(os.path.join(artifacts, f)) > 1000
                                   for f in ("cockpit-vrt.png", "cockpit-vrt-error.png")))
finally:
    browser.kill()
    browser.wait()
    shutil.rmtree(profile, ignore_errors=True)

print(f"# browser: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
