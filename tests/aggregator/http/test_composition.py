"""Composition runs one way: pieces never import the composer, and no import cycle
joins the HTTP toolkit, the API routes, Link, Plaid and the console
(docs/architecture.md, "Composition").

Two views of the same rule. The static one parses every module of ``aggregator/`` and
follows its imports, function-level ones included (a lazy import is still a
dependency) but not those under ``if TYPE_CHECKING:`` (never executed). The dynamic one
imports each piece in a fresh interpreter and reads ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
COMPOSER = "aggregator.http.app"
#: The packages among which no cycle may exist.
LAYERS = ("aggregator.http", "aggregator.link", "aggregator.plaid", "aggregator.console")
#: The pieces' HTTP entry modules: what only the composer may put together.
ROUTES_AND_WIRING = ("aggregator.link.routes", "aggregator.link.wiring",
                     "aggregator.plaid.routes", "aggregator.plaid.wiring", "aggregator.console")
#: Each piece's entry module, and what it must not pull in besides the composer. The
#: domain modules below them (``aggregator.plaid.sync`` under the sync job, say) are
#: shared freely; another piece's routes and wiring are not.
PIECES: dict[str, tuple[str, ...]] = {
    "aggregator.http.routes": ROUTES_AND_WIRING,
    "aggregator.http.docs": ROUTES_AND_WIRING,
    "aggregator.link.routes": ("aggregator.console", "aggregator.plaid.routes",
                               "aggregator.plaid.wiring"),
    "aggregator.link.wiring": ("aggregator.console", "aggregator.link.routes",
                               "aggregator.plaid.routes", "aggregator.plaid.wiring"),
    "aggregator.plaid.routes": ("aggregator.console", "aggregator.link.routes",
                                "aggregator.plaid.wiring"),
    "aggregator.plaid.wiring": ("aggregator.console", "aggregator.link.routes",
                                "aggregator.link.wiring", "aggregator.plaid.routes"),
    "aggregator.console": ("aggregator.link", "aggregator.plaid.routes",
                           "aggregator.plaid.wiring"),
}


@cache
def modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "aggregator").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child):
            for other in child.orelse:
                yield from _statements(other)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _statements(child)


@cache
def imports(module: str) -> frozenset[str]:
    """The modules of ours that ``module``'s own statements import."""
    known = modules()
    path = known[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in _statements(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package
            for _ in range(node.level - 1):
                anchor = anchor.rpartition(".")[0]
            base = f"{anchor}.{base}" if base else anchor
        for alias in node.names:  # `from pkg import mod` imports pkg.mod
            out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return frozenset(out & known.keys())


def reachable(start: str) -> set[str]:
    """What importing ``start`` runs, including each module's parent packages."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parents = [module.rsplit(".", n)[0] for n in range(1, module.count("."))]
        todo.extend([*imports(module), *(p for p in parents if p in modules())])
    return seen


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(modules()):
        if root in index:
            continue
        work = [(root, iter(sorted(imports(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(imports(nxt)))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def test_the_walk_sees_the_composer_reach_every_piece() -> None:
    """Proves the walker reads real edges (a walker that saw none would pass the rest)."""
    assert set(PIECES) <= reachable(COMPOSER)


def test_no_import_cycle_joins_the_http_link_plaid_or_console_modules() -> None:
    tangled = [c for c in cycles() if any(_in(m, LAYERS) for m in c)]
    assert tangled == []


@pytest.mark.parametrize("piece", sorted(PIECES))
def test_a_piece_never_imports_the_composer_by_its_imports(piece: str) -> None:
    pulled = reachable(piece)
    assert COMPOSER not in pulled
    assert sorted(m for m in pulled if _in(m, PIECES[piece])) == []


@pytest.mark.parametrize("piece", sorted(PIECES))
def test_a_piece_imported_in_a_fresh_interpreter_leaves_the_composer_out(piece: str) -> None:
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({piece!r})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('aggregator'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    loaded = json.loads(done.stdout)
    assert piece in loaded
    assert COMPOSER not in loaded
    assert sorted(m for m in loaded if _in(m, PIECES[piece])) == []
