#!/usr/bin/env python3
"""Checks the crate layering that ARCHITECTURE.md's "Layers" table states against the real
dependency graph (`cargo tree`, normal dependencies, transitive): a crate that depends on one it
must not fails with a line naming both and the path between them."""
import re
import subprocess
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
text = (root / "ARCHITECTURE.md").read_text()
table = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
rules = {}
for line in table.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 2 and cells[0].startswith("gatehouse-"):
        rules[cells[0]] = [d.strip() for d in cells[1].split(",") if d.strip()]
if not rules:
    sys.exit("check-layers: no rules found under '## Layers' in ARCHITECTURE.md")

failures = []
for crate, forbidden in rules.items():
    tree = subprocess.run(
        ["cargo", "tree", "-p", crate, "-e", "normal", "--prefix", "depth", "--offline"],
        cwd=root, capture_output=True, text=True,
    )
    if tree.returncode != 0:
        tree = subprocess.run(
            ["cargo", "tree", "-p", crate, "-e", "normal", "--prefix", "depth"],
            cwd=root, capture_output=True, text=True,
        )
    if tree.returncode != 0:
        sys.exit(f"check-layers: cargo tree -p {crate} failed: {tree.stderr.strip()}")
    path = []
    for line in tree.stdout.splitlines():
        m = re.match(r"^(\d+)(\S+)", line)
        if not m:
            continue
        depth, name = int(m.group(1)), m.group(2)
        path[depth:] = [name]
        if name in forbidden:
            failures.append(f"{crate} must not depend on {name}, but does: {' -> '.join(path)}")

for f in sorted(set(failures)):
    print(f"check-layers: {f}")
if failures:
    sys.exit(1)
print(f"check-layers: {len(rules)} crates keep to their layers")
