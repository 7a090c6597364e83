#!/usr/bin/env python3
"""Configuration fixtures, as OpenBSD's regress/usr.sbin/vmd/config does it.

Each directory under fixtures/pass/ and fixtures/fail/ is one case. It is
turned into a throwaway root with one VM, vm1, and `vrt check` runs on it;
its output (stdout and stderr, the root's path shown as ROOT) must equal the
case's `expected` file, and its exit status must be 0 (pass) or 2 (fail).
Then `vrt showcmd vm1` runs on the same root: for a fail case it must exit 2
with exactly the message `vrt check` printed (a start loads the VM the same
way), for a pass case it must exit 0.

Files of a case:
  vrt.conf             ROOT/vrt.conf (default: accel=tcg)
  instance.properties  ROOT/vm/vm1/instance.properties (default: image=base, size=small, net=none)
  NAME.sidecar         ROOT/images/NAME.properties
  disk                 "overlay BASE" (default: overlay base), "copy BASE" or "none"
  needs-root           run only as root (user=/group= are looked up only then)
  expected             the exact output of `vrt check`

Every root has the templates images/base.qcow2 and images/other.qcow2 (blank,
0444) and empty files images/vmlinuz and images/initrd.
VRT_REGENERATE_FIXTURES=1 rewrites the expected files.

usage: test-fixtures.py VRT FIXTURES-DIR
"""
import os
import shutil
import subprocess
import sys
import tempfile

MIN_FAIL_CASES = 20


def run(argv, env):
    p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout


def make_root(case, top):
    root = os.path.join(top, "root")
    for d in ("images", "vm/vm1", "inst", "iso", "init"):
        os.makedirs(os.path.join(root, d))
    for t in ("base", "other"):
        img = os.path.join(root, "images", t + ".qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "16M"], check=True)
        os.chmod(img, 0o444)
    for f in ("vmlinuz", "initrd"):
        open(os.path.join(root, "images", f), "w").close()

    def case_file(name):
        path = os.path.join(case, name)
        return open(path).read() if os.path.exists(path) else None

    with open(os.path.join(root, "vrt.conf"), "w") as f:
        f.write(case_file("vrt.conf") or "accel=tcg\n")
    with open(os.path.join(root, "vm/vm1/instance.properties"), "w") as f:
        f.write(case_file("instance.properties") or "image=base\nsize=small\nnet=none\n")
    for name in os.listdir(case):
        if name.endswith(".sidecar"):
            shutil.copy(os.path.join(case, name), os.path.join(root, "images", name[:-len(".sidecar")] + ".properties"))
    disk = (case_file("disk") or "overlay base").split()
    vm = os.path.join(root, "vm/vm1")
    if disk[0] == "overlay":
        base = os.path.join(root, "images", disk[1] + ".qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2",
                        os.path.join(vm, "hdd.ovl")], check=True)
    elif disk[0] == "copy":
        shutil.copy(os.path.join(root, "images", disk[1] + ".qcow2"), os.path.join(vm, "hdd.img"))
        os.chmod(os.path.join(vm, "hdd.img"), 0o644)
    elif disk[0] != "none":
        raise SystemExit(f"{case}/disk: unknown {disk[0]}")
    return root


def check_case(vrt, case, kind):
    """Returns a list of problems (empty: the case passed)."""
    problems = []
    with tempfile.TemporaryDirectory(prefix="vrt-fixture-") as top:
        root = make_root(case, top)
        env = dict(os.environ, VRT_ROOT=root, VRT_RUNTIME_DIR=os.path.join(top, "run"))
        status, out = run([vrt, "check"], env)
        out = out.replace(root, "ROOT")
        expected_path = os.path.join(case, "expected")
        if os.environ.get("VRT_REGENERATE_FIXTURES"):
            with open(expected_path, "w") as f:
                f.write(out)
        want = open(expected_path).read() if os.path.exists(expected_path) else None
        if want is None:
            problems.append("no expected file (VRT_REGENERATE_FIXTURES=1 writes it)")
        elif out != want:
            problems.append(f"vrt check printed\n{out}expected\n{want}")
        want_status = 0 if kind == "pass" else 2
        if status != want_status:
            problems.append(f"vrt check exited {status}, expected {want_status}")
        if kind == "pass" and out != "configuration OK\n":
            problems.append("a pass case must print exactly \"configuration OK\"")

        s_status, s_out = run([vrt, "showcmd", "vm1"], env)
        s_out = s_out.replace(root, "ROOT")
        if s_status != want_status:
            problems.append(f"vrt showcmd exited {s_status}, expected {want_status}: {s_out.strip()}")
        if kind == "fail" and s_out != out:
            problems.append(f"vrt showcmd said\n{s_out}but vrt check said\n{out}")
    return problems


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    vrt, fixtures = sys.argv[1], sys.argv[2]
    if shutil.which("qemu-img") is None:
        print("qemu-img not installed (tools/setup-host)")
        return 77
    failed = 0
    counts = {}
    for kind in ("pass", "fail"):
        cases = sorted(os.listdir(os.path.join(fixtures, kind)))
        counts[kind] = len(cases)
        for name in cases:
            if os.path.exists(os.path.join(fixtures, kind, name, "needs-root")) and os.geteuid() != 0:
                print(f"skip {kind}/{name} (needs root)")
                counts[kind] -= 1
                continue
            problems = check_case(vrt, os.path.join(fixtures, kind, name), kind)
            print(f"{'ok' if not problems else 'FAIL'} {kind}/{name}")
            for p in problems:
                print("    " + p.replace("\n", "\n    ").rstrip())
            failed += bool(problems)
    if counts["fail"] < MIN_FAIL_CASES:
        print(f"only {counts['fail']} fail cases, expected at least {MIN_FAIL_CASES}")
        failed += 1
    print(f"{sum(counts.values()) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
