#!/usr/bin/env python3
"""launcher/'s layers: a file includes only its own layer and those below
(cli -> lifecycle -> vm -> core), and no two modules include each other,
directly or through others. The linker checks the same direction for calls
(each layer is its own static library); this checks the headers."""
import os
import re
import sys

LAYERS = ["core", "vm", "lifecycle", "cli"]
src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
launcher = os.path.join(src, "launcher")
include = re.compile(r'^\s*#\s*include\s+"launcher/([a-z]+)/([a-z_]+)\.h"', re.M)

errors = []
edges = {}
for layer in LAYERS:
    for name in sorted(os.listdir(os.path.join(launcher, layer))):
        if not name.endswith((".c", ".h")):
            continue
        module = layer + "/" + name[:-2]
        with open(os.path.join(launcher, layer, name)) as f:
            text = f.read()
        for dep_layer, dep in include.findall(text):
            if dep_layer not in LAYERS:
                errors.append(f"launcher/{layer}/{name}: includes unknown layer {dep_layer}/")
                continue
            if LAYERS.index(dep_layer) > LAYERS.index(layer):
                errors.append(f"launcher/{layer}/{name}: includes {dep_layer}/{dep}.h, a layer above {layer}/")
            target = dep_layer + "/" + dep
            if target != module:
                edges.setdefault(module, set()).add(target)

# Module-level cycles (a.c includes b.h and b.c includes a.h counts).
state = {}
def visit(node, stack):
    state[node] = "open"
    for nxt in sorted(edges.get(node, ())):
        if state.get(nxt) == "open":
            cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
            errors.append("include cycle: " + " -> ".join(cycle))
        elif nxt not in state:
            visit(nxt, stack + [nxt])
    state[node] = "done"

for node in sorted(edges):
    if node not in state:
        visit(node, [node])

for e in errors:
    print(e)
print(f"{len(edges)} modules checked, {len(errors)} problems")
sys.exit(1 if errors else 0)
