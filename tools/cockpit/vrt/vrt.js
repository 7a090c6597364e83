/* The vrt Cockpit page. Everything it shows or does is one `vrt ... --json`
 * command run through cockpit.spawn: the page only lays out what vrt
 * printed and shows vrt's own error line when a command fails. */
"use strict";

const REFRESH_MS = 3000;

/* Runs vrt with args; resolves with its stdout, rejects with the text vrt
 * wrote to stderr (its one-line error) or the spawn failure. */
function vrt(args) {
    /* A native promise: cockpit's own has no finally() in older releases. */
    return Promise.resolve(cockpit.spawn(["vrt"].concat(args, ["--json"]), { superuser: "try", err: "message" }))
        .catch(ex => { throw new Error((ex.message || String(ex)).trim() || ex.problem || "vrt failed"); });
}

/* vrt stats exits 1 when a VM did not answer, and still prints every VM
 * (those with "responding": false): the page shows what it printed. */
function vrtStats(args) {
    return new Promise((resolve, reject) => {
        cockpit.spawn(["vrt", "stats"].concat(args, ["--json"]), { superuser: "try", err: "message" })
            .done(resolve)
            .fail((ex, data) => ex.exit_status === 1 && data ? resolve(data) : reject(new Error(ex.message || String(ex))));
    });
}

function showError(text) {
    const box = document.getElementById("error");
    box.textContent = text || "";
    box.hidden = !text;
}

function el(tag, attrs, text) {
    const e = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    if (text !== undefined && text !== null)
        e.textContent = String(text);
    return e;
}

/* Bytes as vrt top shows them (binary units). */
function bytes(b) {
    if (b === null || b === undefined)
        return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let u = 0;
    while (b >= 1024 && u < units.length - 1) {
        b /= 1024;
        u++;
    }
    return (u === 0 ? b.toFixed(0) : b.toFixed(1)) + " " + units[u];
}

function uptime(s) {
    if (s === null || s === undefined)
        return "–";
    if (s >= 86400)
        return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
    if (s >= 3600)
        return Math.floor(s / 3600) + "h " + Math.floor(s % 3600 / 60) + "m";
    return Math.floor(s / 60) + "m " + (s % 60) + "s";
}

let busy = false;       /* an action runs: its buttons stay disabled */

function action(args, button) {
    busy = true;
    button.disabled = true;
    showError("");
    vrt(args)
        .catch(ex => showError(ex.message))
        .finally(() => {
            busy = false;
            refresh();
        });
}

function actionButton(label, args, enabled, cls) {
    const b = el("button", { type: "button", "data-action": label.toLowerCase().replace(" ", "-") }, label);
    if (cls)
        b.className = cls;
    b.disabled = !enabled || busy;
    b.addEventListener("click", () => action(args, b));
    return b;
}

function render(list, stats) {
    const byName = {};
    stats.forEach(s => { byName[s.name] = s; });
    const rows = document.getElementById("vm-rows");
    rows.textContent = "";
    if (list.length === 0) {
        rows.appendChild(el("tr")).appendChild(el("td", { colspan: 10, class: "muted" }, "No VMs under the vrt root."));
        return;
    }
    list.forEach(vm => {
        const s = byName[vm.name] || {};
        const state = vm.state === "running" && s.responding === false ? "no-answer" : vm.state;
        const tr = el("tr", { "data-vm": vm.name, "data-state": vm.state });
        tr.appendChild(el("td", { class: "name" }, vm.name));
        tr.appendChild(el("td", { class: "state state-" + state }, state));
        tr.appendChild(el("td", {}, vm.host || cockpit.transport.host));
        tr.appendChild(el("td", {}, vm.image || "–"));
        tr.appendChild(el("td", {}, vm.size || "–"));
        tr.appendChild(el("td", { class: "mac" }, vm.mac || "–"));
        const cpu = s.cpu && s.cpu.percent !== null && s.cpu.percent !== undefined
            ? s.cpu.percent.toFixed(0) + " % of " + s.cpu.vcpus : "–";
        tr.appendChild(el("td", { class: "num cpu" }, cpu));
        tr.appendChild(el("td", { class: "num mem" }, s.memory ? bytes(s.memory.resident_bytes) : "–"));
        tr.appendChild(el("td", { class: "num" }, uptime(vm.uptime_seconds)));
        const td = el("td", { class: "actions" });
        const running = vm.state === "running";
        td.appendChild(actionButton("Start", ["start", vm.name], !running && vm.state !== "destroyed"));
        td.appendChild(actionButton("Stop", ["stop", vm.name], running));
        td.appendChild(actionButton("Force off", ["stop", "--force", vm.name], running, "danger"));
        const c = el("button", { type: "button", "data-action": "console" }, "Console");
        c.disabled = !running;
        c.addEventListener("click", () => openConsole(vm.name));
        td.appendChild(c);
        tr.appendChild(td);
        rows.appendChild(tr);
    });
}

/* The serial console: `vrt console NAME` on a pty, its output shown as
 * text (terminal control sequences dropped), a line of input sent on Enter. */
let consoleProc = null;

function closeConsole() {
    if (consoleProc) {
        consoleProc.input("\x1d", true);     /* Ctrl-]: vrt console leaves */
        consoleProc.close();
    }
    consoleProc = null;
    document.getElementById("console").hidden = true;
}

function openConsole(name) {
    closeConsole();
    const out = document.getElementById("console-out");
    out.textContent = "";
    document.getElementById("console-vm").textContent = name;
    document.getElementById("console").hidden = false;
    const proc = cockpit.spawn(["vrt", "console", name], { superuser: "try", pty: true, err: "out" });
    consoleProc = proc;
    proc.stream(data => {
        /* eslint-disable-next-line no-control-regex */
        out.textContent += data.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r/g, "");
        out.scrollTop = out.scrollHeight;
    });
    proc.fail(ex => {
        if (consoleProc === proc && ex.problem !== "cancelled")
            showError(ex.message);
    });
    proc.input("\n", true);   /* a fresh prompt */
    document.getElementById("console-in").focus();
}

function sendConsoleLine(event) {
    event.preventDefault();
    const input = document.getElementById("console-in");
    if (consoleProc)
        consoleProc.input(input.value + "\n", true);
    input.value = "";
}

let timer = null;

function refresh() {
    clearTimeout(timer);
    /* One sample over one second gives CPU %; vrt bounds the time per VM. */
    Promise.all([vrt(["list"]), vrtStats(["--interval", "1"]).catch(() => "[]")])
        .then(([list, stats]) => {
            if (!busy)
                render(JSON.parse(list), JSON.parse(stats));
            document.getElementById("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
        })
        .catch(ex => showError(ex.message))
        .finally(() => { timer = setTimeout(refresh, REFRESH_MS); });
}

function loadImages() {
    vrt(["image", "list"])
        .then(out => {
            const select = document.getElementById("create-image");
            select.textContent = "";
            JSON.parse(out).forEach(img => select.appendChild(el("option", { value: img.name }, img.name)));
        })
        .catch(ex => showError(ex.message));
}

function create(event) {
    event.preventDefault();
    const args = ["create", "--image", document.getElementById("create-image").value,
        "--size", document.getElementById("create-size").value];
    const name = document.getElementById("create-name").value.trim();
    const init = document.getElementById("create-init").value.trim();
    if (name)
        args.push("--name", name);
    if (init)
        args.push("--init", init);
    if (document.getElementById("create-start").checked)
        args.push("--start");
    const button = document.getElementById("create-button");
    const result = document.getElementById("create-result");
    button.disabled = true;
    showError("");
    result.textContent = "creating…";
    vrt(args)
        .then(out => {
            let vm = {};
            try {
                vm = JSON.parse(out);
            } catch (e) { /* vrt printed no JSON: show nothing more */ }
            result.textContent = vm.name ? "created " + vm.name : "created";
        })
        .catch(ex => {
            result.textContent = "";
            showError(ex.message);
        })
        .finally(() => {
            button.disabled = false;
            refresh();
        });
}

document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("create-form").addEventListener("submit", create);
    document.getElementById("console-form").addEventListener("submit", sendConsoleLine);
    document.getElementById("console-close").addEventListener("click", closeConsole);
    loadImages();
    refresh();
});
