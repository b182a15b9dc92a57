#!/usr/bin/env python3
"""Checks that the modules of each crate import only downward: the graph of `crate::module`
references between a crate's top-level modules (test modules left out) has no cycle, and no
module reaches back into the crate root (`crate::Item` re-exported from lib.rs is for other
crates). Prints each cycle found, and exits non-zero if there is one.

Usage: python3 scripts/check-modules.py [CRATE…]   (default: every crate under crates/)"""
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent


def strip_tests(text):
    """Removes `#[cfg(test)] mod name { … }` blocks (brace-matched, strings ignored roughly)."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 0, m.end() - 1
        while j < len(text):
            c = text[j]
            if c == '"':
                j += 1
                while j < len(text) and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        i = j + 1
    out.append(text[i:])
    return "".join(out)


def module_of(src_dir, path):
    """`request/body.rs` -> `request::body`, `request/mod.rs` -> `request`, lib.rs -> `crate`."""
    rel = path.relative_to(src_dir)
    if rel.parts in (("lib.rs",), ("main.rs",)):
        return "crate"
    parts = list(rel.parts)
    parts[-1] = parts[-1].removesuffix(".rs")
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts)


def check(crate_dir):
    """A module here is a file: `policies::compile` and `policies::serve` are apart, so a
    folder's parts may sit at different layers."""
    src = crate_dir / "src"
    files = [p for p in src.rglob("*.rs")]
    modules = {module_of(src, p) for p in files} - {"crate"}
    edges = {}
    for p in files:
        me = module_of(src, p)
        text = re.sub(r"//[^\n]*", "", strip_tests(p.read_text()))
        for m in re.finditer(r"\bcrate((?:::\w+)+)", text):
            segs = m.group(1).strip(":").split("::")
            target = "crate"
            for k in range(len(segs), 0, -1):
                if "::".join(segs[:k]) in modules:
                    target = "::".join(segs[:k])
                    break
            if target != me and me != "crate" and not target.startswith(me + "::"):
                edges.setdefault(me, set()).add(target)
    problems = []
    for me, targets in sorted(edges.items()):
        if "crate" in targets:
            problems.append(f"{crate_dir.name}: module {me} imports from the crate root")
    # cycles between modules
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for t in sorted(edges.get(n, ())):
            if t == "crate":
                continue
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                problems.append(f"{crate_dir.name}: modules import in a cycle: {' -> '.join(cycle)}")
            elif t not in state:
                visit(t)
        stack.pop()
        state[n] = 2

    for n in sorted(modules):
        if n not in state:
            visit(n)
    return problems


crates = sys.argv[1:] or sorted(p.name for p in (root / "crates").iterdir() if (p / "src").is_dir())
problems = [p for c in crates for p in check(root / "crates" / c)]
for p in problems:
    print(f"check-modules: {p}")
if problems:
    sys.exit(1)
print(f"check-modules: the modules of {len(crates)} crates import only downward")
