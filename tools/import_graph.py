#!/usr/bin/env python3
"""The import picture of justkit: modules, import circles, imports that run back up the layers.

Reads the source with ``ast`` (nothing is imported). Every ``import`` counts, at module level or
inside a function; imports under ``if TYPE_CHECKING:`` never run and are left out. A circle is a
strongly connected component of the module graph (two or more modules, or one that imports
itself). The layers follow DESIGN.md's arrows (``LAYERS`` below, lowest first; a module may
import its own layer and the ones before it):

    errors, fileio, config, ... < frontend, datadir, text, stamp < corpora < score < data < nn < losses
    < models < decode < models.onnx < train, experiment, models.package < cli, bin < utils/, egs/*/local/

with two rules on top: ``score`` imports no model code (models, nn, losses, decode, train), and
``decode`` does not import ``train``. An import from a module to one of a higher layer, or one a
rule forbids, is an upward import.

    tools/import_graph.py            # the picture
    tools/import_graph.py --edges    # also every internal import, with file:line
    tools/import_graph.py --json     # the picture as JSON

Exit status 1 when a circle or an upward import exists (tests/tools/test_import_graph.py pins 0).
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "justkit"

# Areas of justkit, lowest layer first; an area may import its own layer and the ones below. An
# entry names a top-level module or package of justkit (``models``) or, where one module of a
# package sits higher than the rest, that module (``models.package``: stage 8's packer reads an
# experiment; ``models.onnx``: its ONNX Runtime transcriber is a ``decode.transcribe.Transcriber``).
# utils/ and egs/*/local/ are the recipes' scripts, on top.
LAYERS: Sequence[Sequence[str]] = (
    ("errors", "fileio", "config", "provenance", "progress", "lang", "log"),
    ("frontend", "datadir", "text", "stamp"),
    ("corpora",),
    ("score",),
    ("data",),
    ("nn",),
    ("losses",),
    ("models",),
    ("decode",),
    ("models.onnx",),
    ("train", "experiment", "models.package"),
    ("cli", "bin"),
    ("utils", "egs"),
)
# Areas an area must not import even where the layer order would allow it (DESIGN.md's rules).
FORBIDDEN: Dict[str, Set[str]] = {
    "score": {"models", "nn", "losses", "decode", "train"},   # score imports no model code
    "decode": {"train"},                                      # decode does not import train
}


@dataclass(frozen=True)
class Edge:
    """One internal import statement: ``src`` imports ``dst`` at ``path:line``."""

    src: str
    dst: str
    path: str
    line: int
    in_function: bool


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.depth = 0
        self.found: List[tuple] = []   # (target names, line, in_function)

    def _func(self, node) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _func

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for n in node.orelse:
                self.visit(n)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append(([a.name for a in node.names], node.lineno, self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            pkg = self.module.split(".")
            if not self.is_package:
                pkg = pkg[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([base] if base else []))
        # "from a.b import c": the module a.b.c when it is one, else a.b (_resolve's longest prefix).
        self.found.append(([f"{base}.{a.name}" for a in node.names], node.lineno, self.depth > 0))


def _resolve(names: Sequence[str], modules: Set[str]) -> List[str]:
    """The justkit modules a statement imports: each name's longest prefix that is a module."""
    out: List[str] = []
    for n in names:
        parts = n.split(".")
        for k in range(len(parts), 0, -1):
            m = ".".join(parts[:k])
            if m in modules:
                if m not in out:
                    out.append(m)
                break
    return out


def source_files(root: Path = ROOT) -> Dict[str, Path]:
    """Module name -> file: justkit's modules, and utils/*.py, egs/*/local/*.py as ``utils.x``, ``egs.r.local.x``."""
    files: Dict[str, Path] = {}
    for p in sorted((root / PACKAGE).rglob("*.py")):
        files[_module_name(p, root)] = p
    for p in sorted((root / "utils").glob("*.py")):
        files[f"utils.{p.stem}"] = p
    for p in sorted((root / "egs").glob("*/local/*.py")):
        if not p.is_symlink():
            files[_module_name(p, root)] = p
    return files


def collect(root: Path = ROOT) -> tuple:
    """``(modules, edges)``: justkit's module names and every internal import (scripts' included)."""
    files = source_files(root)
    modules = {m for m in files if m == PACKAGE or m.startswith(PACKAGE + ".")}
    edges: List[Edge] = []
    for mod, path in files.items():
        c = _Collector(mod, path.name == "__init__.py")
        c.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        for names, line, in_func in c.found:
            for dst in _resolve(names, modules):
                if dst != PACKAGE and dst != mod:
                    edges.append(Edge(mod, dst, str(path.relative_to(root)), line, in_func))
    return sorted(modules), edges


def area(module: str) -> str:
    """``justkit.models.onnx`` -> ``models``; ``utils.run`` -> ``utils``; ``egs.mls.local.x`` -> ``egs``."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return parts[0]
    return parts[1] if len(parts) > 1 else PACKAGE


def layer(module: str) -> Optional[int]:
    """The layer of ``module`` (its most specific LAYERS entry), None when it has none."""
    parts = module.split(".")
    rest = parts[1:] if parts[0] == PACKAGE else parts
    for k in range(len(rest), 0, -1):
        name = ".".join(rest[:k])
        for i, names in enumerate(LAYERS):
            if name in names:
                return i
    return None


def circles(modules: Sequence[str], edges: Sequence[Edge]) -> List[List[str]]:
    """Strongly connected components with a cycle (Tarjan), each sorted, largest first."""
    graph: Dict[str, Set[str]] = {m: set() for m in modules}
    for e in edges:
        if e.src in graph and e.dst in graph:
            graph[e.src].add(e.dst)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]

    def strong(v: str) -> None:   # recursion depth <= number of modules (~130)
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for m in sorted(graph):
        if m not in index:
            strong(m)
    return sorted(out, key=lambda c: (-len(c), c))


def upward(edges: Sequence[Edge]) -> List[tuple]:
    """``(edge, why)`` for every import that runs back up the layers or breaks a rule."""
    out = []
    for e in edges:
        a, b = area(e.src), area(e.dst)
        if b in FORBIDDEN.get(a, ()):
            out.append((e, f"{a} must not import {b}"))
            continue
        ra, rb = layer(e.src), layer(e.dst)
        if ra is None or rb is None:
            out.append((e, f"{e.src if ra is None else e.dst} has no layer in tools/import_graph.py LAYERS"))
        elif rb > ra:
            out.append((e, f"layer {ra} imports layer {rb}"))
    return out


def picture(root: Path = ROOT) -> dict:
    """The numbers and lists the report prints."""
    modules, edges = collect(root)
    lib = [e for e in edges if e.src in set(modules)]
    outside_bin = [e for e in lib if area(e.src) != "bin"]
    return {
        "modules": len(modules),
        "imports": len(lib),
        "module_pairs": len({(e.src, e.dst) for e in lib}),
        "in_function": sum(e.in_function for e in lib),
        "in_function_outside_bin": sum(e.in_function for e in outside_bin),
        "imports_outside_bin": len(outside_bin),
        "circles": circles(modules, lib),
        "upward": [{**asdict(e), "why": why} for e, why in upward(edges)],
        "edges": [asdict(e) for e in edges],
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edges", action="store_true", help="also list every internal import")
    ap.add_argument("--in_function", action="store_true", help="also list the imports inside functions")
    ap.add_argument("--json", action="store_true", help="print the picture as JSON")
    args = ap.parse_args(argv)
    p = picture()
    if args.json:
        print(json.dumps(p, indent=1))
    else:
        print(f"modules: {p['modules']} (justkit)")
        print(f"internal imports: {p['imports']} (statement, module) pairs, {p['module_pairs']} distinct module pairs; "
              f"inside functions: {p['in_function']} ({p['in_function_outside_bin']} of "
              f"{p['imports_outside_bin']} outside justkit/bin)")
        print(f"import circles: {len(p['circles'])}")
        for c in p["circles"]:
            print("  " + " <-> ".join(c))
        print(f"upward imports: {len(p['upward'])}")
        for u in p["upward"]:
            print(f"  {u['path']}:{u['line']} {u['src']} -> {u['dst']} ({u['why']})")
        if args.in_function or args.edges:
            print("imports inside functions (outside justkit/bin):")
            for e in p["edges"]:
                if e["in_function"] and area(e["src"]) not in ("bin", "utils", "egs") and e["src"].startswith(PACKAGE):
                    print(f"  {e['path']}:{e['line']} {e['src']} -> {e['dst']}")
        if args.edges:
            print("edges:")
            for e in p["edges"]:
                print(f"  {e['path']}:{e['line']} {e['src']} -> {e['dst']}{'  (in function)' if e['in_function'] else ''}")
    return 1 if p["circles"] or p["upward"] else 0


if __name__ == "__main__":
    sys.exit(main())
