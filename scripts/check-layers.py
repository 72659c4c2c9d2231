#!/usr/bin/env python3
"""Checks that the modules of src/ depend on each other one way only.

    python3 scripts/check-layers.py          # prints the layers and exits 1 on a violation

Every `crate::a::b` path in a file of src/ (in `use` lines and in code, tests excluded) is
an edge from that file's room to the room of `a` (or `a::b` where `a` is a folder of
rooms). Two rules:

1. No import cycle between rooms.
2. No upward import: a room may use rooms of its own layer or of layers below it, as
   LAYERS lists them (top first). A room missing from LAYERS is an error too, so a new
   module has to be placed.

It reads the source as text, which is enough for this crate's style (every cross-module
reference is spelled `crate::...`); `super::` inside a folder stays inside its room.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"

# Top first. Each entry is a layer: the rooms in it may use each other (no cycles) and
# anything below.
LAYERS: list[list[str]] = [
    ["main", "lib"],
    ["commands"],
    ["job", "errors"],
    ["report", "gate", "github", "guard", "sweep", "workflow", "diagnose"],
    ["kill", "classify", "diff", "state", "settings"],
    ["cli", "redact", "signature", "files", "text"],
    ["platform"],
    ["model"],
]

# Files compiled only for unit tests (`#[cfg(test)] mod ...;`).
TEST_ONLY = {"test_support.rs", "fixtures.rs"}

# Folders whose files are rooms of their own (`guard/daemon.rs` is the room
# `guard::daemon`); every other folder is one room.
SPLIT: set[str] = set()

PATH_RE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)(?:::([a-z_][a-z0-9_]*))?")
TEST_MOD_RE = re.compile(r"^\s*#\[cfg\(test\)\]\s*$")


def room_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = list(rel.parts)
    name = parts[-1].removesuffix(".rs")
    if len(parts) == 1:
        return name
    if parts[0] in SPLIT:
        return parts[0] if name == "mod" else f"{parts[0]}::{name}"
    return parts[0]


def code_lines(text: str) -> list[str]:
    """The file's lines up to its `#[cfg(test)]` module, comments removed."""
    out = []
    for line in text.splitlines():
        if TEST_MOD_RE.match(line):
            break
        out.append(line.split("//", 1)[0])
    return out


def edges() -> dict[str, dict[str, list[str]]]:
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(ROOT.rglob("*.rs")):
        if path.name in TEST_ONLY:
            continue
        src = room_of(path)
        graph.setdefault(src, {})
        for line in code_lines(path.read_text()):
            for m in PATH_RE.finditer(line):
                top, sub = m.group(1), m.group(2)
                dst = f"{top}::{sub}" if top in SPLIT and sub else top
                if dst == src or dst.startswith("test_support"):
                    continue
                graph[src].setdefault(dst, []).append(str(path.relative_to(ROOT.parent)))
    return graph


def layer_of(room: str) -> int | None:
    base = room.split("::", 1)[0]
    for i, layer in enumerate(LAYERS):
        if room in layer or base in layer:
            return i
    return None


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one room (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph.get(start, {})))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(graph.get(nxt, {}))))
                    advanced = True
                    break
                if nxt in on:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def main() -> int:
    graph = edges()
    problems: list[str] = []
    for room in sorted(graph):
        if layer_of(room) is None:
            problems.append(f"{room}: not placed in a layer (add it to LAYERS in {__file__})")
    for comp in cycles(graph):
        problems.append("cycle: " + " <-> ".join(comp))
    for src, dsts in sorted(graph.items()):
        ls = layer_of(src)
        for dst, where in sorted(dsts.items()):
            ld = layer_of(dst)
            if ls is not None and ld is not None and ld < ls:
                problems.append(f"upward: {src} (layer {ls}) uses {dst} (layer {ld}) in {where[0]}")
    for i, layer in enumerate(LAYERS):
        print(f"layer {i}: {', '.join(layer)}")
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for p in problems:
            print(f"  {p}")
        return 1
    print(f"\nok: {len(graph)} rooms, {sum(len(d) for d in graph.values())} edges, no cycle, nothing upward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
