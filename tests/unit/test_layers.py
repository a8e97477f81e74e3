"""Imports flow one way (style.md, "The shape of the code" 1-2): a static walk of every module.

Every ``import`` and ``from ... import`` of every module of the package is read with :mod:`ast`,
including imports inside functions and under ``if TYPE_CHECKING:`` (a type-only upward import is
still an upward dependency). Each rule is one test that lists *every* violation it finds.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

import kstream

PACKAGE = "kstream"
ROOT = Path(kstream.__file__).resolve().parent

# Lower may be imported by higher or equal, never the other way round. A module missing here
# fails test_every_module_has_a_layer: a new module needs a deliberate place.
LAYERS: dict[str, int] = {
    # 0: vocabulary
    "kstream.errors": 0,
    "kstream.types": 0,
    "kstream.naming": 0,
    # 1: settings, codecs, envelope, policies
    "kstream.config": 1,
    "kstream.codecs": 1,
    "kstream.headers": 1,
    "kstream.retry": 1,
    "kstream.context": 1,
    "kstream.schemas": 1,
    "kstream.avro": 1,
    "kstream.metrics": 1,
    "kstream.tracing": 1,
    "kstream.logs": 1,
    # 2: the broker port and its adapters
    "kstream.kafka": 2,
    # 3: what is declared and stored (batch and limits: design.md s.8 / style.md, not written yet)
    "kstream.topology": 3,
    "kstream.trash": 3,
    "kstream.trash_store": 3,
    "kstream.graph": 3,
    "kstream.lag": 3,
    "kstream.provision": 3,
    "kstream.acls": 3,
    "kstream.loader": 3,
    "kstream.batch": 3,
    "kstream.limits": 3,
    "kstream.shares": 3,
    "kstream.dev": 3,
    "kstream.txns": 3,
    "kstream.avro_topics": 3,
    "kstream.faust_agent": 3,
    "kstream.workflows": 3,  # declaration, state, the pure decide(); steps wrap handlers
    # 4: the processing runtime
    "kstream.runtime": 4,
    "kstream.workflows.engine": 4,  # the orchestrator at run time
    # 5: the composition root, and the test driver (a composition root on the in-memory broker)
    "kstream.app": 5,
    "kstream.testing": 5,
    "kstream.testing.memory": 2,  # the in-memory adapter of the broker port
    # 6: the CLI
    "kstream.cli": 6,
    "kstream.api": 6,  # the HTTP API: like the CLI, an edge (the CLI's `serve` starts it)
    "kstream.console": 6,  # the operator console: pages over the API's view and the stores
}

# Third-party clients each live behind one module (or folder).
ONLY_IN: dict[str, tuple[str, ...]] = {
    # The registry client ships in confluent-kafka too; its adapter sits next to the Kafka one.
    "confluent_kafka": ("kstream.kafka.confluent", "kstream.kafka.registry"),
    "fastavro": ("kstream.codecs",),
    "orjson": ("kstream.codecs",),
    "click": ("kstream.cli",),
    "prometheus_client": ("kstream.metrics",),
    "opentelemetry": ("kstream.tracing",),
    "starlette": ("kstream.api", "kstream.console"),
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (an internal module, or a third-party dotted name)
    line: int
    statement: str  # e.g. "from kstream import headers"
    via_package_init: bool = False  # ``from kstream import X`` / ``import kstream``


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p
        for p in sorted(ROOT.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _internal(name: str) -> bool:
    return _within(name, PACKAGE)


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The longest known module that ``name`` starts with (``kstream.a.B`` -> ``kstream.a``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return name


def _imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                stmt = f"import {alias.name}"
                target = _resolve(alias.name, modules) if _internal(alias.name) else alias.name
                found.append(Import(module, target, node.lineno, stmt, via_package_init=alias.name == PACKAGE))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            stmt = f"from {'.' * node.level}{node.module or ''} import ..."
            if not _internal(source):
                found.append(Import(module, source, node.lineno, stmt))
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:  # ``from kstream.kafka import port``: the submodule itself
                    found.append(Import(module, sub, node.lineno, f"from {source} import {alias.name}"))
                else:
                    found.append(Import(module, _resolve(source, modules), node.lineno,
                                        f"from {source} import {alias.name}", via_package_init=source == PACKAGE))
    return found


@functools.cache
def _all_imports() -> tuple[Import, ...]:
    modules = _modules()
    return tuple(imp for name, path in modules.items() for imp in _imports_of(name, path, modules))


def _layer(module: str) -> int | None:
    matches = [prefix for prefix in LAYERS if _within(module, prefix)]
    return LAYERS[max(matches, key=len)] if matches else None


def _where(imp: Import) -> str:
    return f"{_modules()[imp.module].relative_to(ROOT.parent)}:{imp.line}: {imp.statement}"


def _internal_edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in _modules()}
    for imp in _all_imports():
        if _internal(imp.target) and imp.target in graph:
            graph[imp.module].add(imp.target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with a cycle (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_path(sorted(c), graph) for c in components]


def _cycle_path(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through the component's first module, for a readable message."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return [*component, start]


def _fail_on(violations: list[str], rule: str) -> None:
    assert not violations, f"{len(violations)} violation(s) of: {rule}\n" + "\n".join(sorted(violations))


# -- the walker sees what it must (so the rules below cannot pass vacuously) -------------------


def test_the_walker_finds_module_level_function_level_and_submodule_imports() -> None:
    edges = _internal_edges()
    assert {"kstream", "kstream.topology", "kstream.runtime.processor", "kstream.cli.main"} <= edges.keys()
    assert "kstream.errors" in edges["kstream.topology"]
    assert "kstream.headers" in edges["kstream.runtime.processor"], "from kstream import headers is an edge to kstream.headers"
    assert "kstream.dev.broker" in edges["kstream.cli.common"], "an import inside a function counts"
    third_party = {(i.module, i.target.split(".")[0]) for i in _all_imports() if not _internal(i.target)}
    assert ("kstream.kafka.confluent", "confluent_kafka") in third_party


def test_find_cycles_names_every_cycle() -> None:
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": set(), "d": {"d"}, "e": {"f"}, "f": {"g"}, "g": {"e"}}
    assert sorted(find_cycles(graph)) == [["a", "b", "a"], ["d", "d"], ["e", "f", "g", "e"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


# -- the rules -------------------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    missing = [m for m in _modules() if m != PACKAGE and _layer(m) is None]
    _fail_on([f"{m} ({_modules()[m].relative_to(ROOT.parent)}) is in no layer: add it to LAYERS" for m in missing],
             "every module has a layer")


def test_imports_flow_downward() -> None:
    violations = []
    for imp in _all_imports():
        if imp.module == PACKAGE or not _internal(imp.target) or imp.target == PACKAGE:
            continue
        mine, theirs = _layer(imp.module), _layer(imp.target)
        if mine is not None and theirs is not None and theirs > mine:
            violations.append(f"{_where(imp)}  ({imp.module} is layer {mine}, {imp.target} is layer {theirs})")
    _fail_on(violations, "a module imports only modules of its own or a lower layer")


def test_no_import_cycles() -> None:
    cycles = find_cycles(_internal_edges())
    _fail_on([" -> ".join(c) for c in cycles], "no import cycles between modules")


def test_nothing_outside_the_cli_imports_the_cli() -> None:
    violations = [
        _where(imp) for imp in _all_imports()
        if _within(imp.target, "kstream.cli") and not _within(imp.module, "kstream.cli")
    ]
    _fail_on(violations, "nothing imports kstream.cli except kstream.cli")


@pytest.mark.parametrize("client", sorted(ONLY_IN))
def test_each_third_party_client_is_imported_in_one_place(client: str) -> None:
    allowed = ONLY_IN[client]
    violations = [
        _where(imp) for imp in _all_imports()
        if imp.target.split(".")[0] == client and not any(_within(imp.module, a) for a in allowed)
    ]
    _fail_on(violations, f"{client} is imported only in {', '.join(allowed)}")


def test_inside_the_package_nothing_imports_from_the_package_init() -> None:
    """``from kstream import Topology`` / ``import kstream`` inside kstream: import from the defining
    module instead. ``from kstream import headers`` names a submodule (its defining module) and
    is an edge to ``kstream.headers``, so it is allowed."""
    violations = [_where(imp) for imp in _all_imports() if imp.module != PACKAGE and imp.via_package_init]
    _fail_on(violations, "inside the package, never import from kstream/__init__")


def test_the_package_init_only_re_exports() -> None:
    # Given kstream/__init__.py
    path = _modules()[PACKAGE]
    tree = ast.parse(path.read_text())
    exported = set(kstream.__all__)
    violations = []
    # Then it holds a docstring, imports from kstream modules, and __all__; nothing else
    for i, stmt in enumerate(tree.body):
        where = f"{path.relative_to(ROOT.parent)}:{stmt.lineno}"
        if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            continue
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            continue
        internal = isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and _within(stmt.module or "", PACKAGE)
        if isinstance(stmt, ast.ImportFrom) and internal and stmt.module != PACKAGE:
            violations += [f"{where}: imports {a.name} but does not export it" for a in stmt.names
                           if (a.asname or a.name) not in exported]
            continue
        if isinstance(stmt, ast.Assign) and [getattr(t, "id", None) for t in stmt.targets] == ["__all__"]:
            continue
        violations.append(f"{where}: {ast.unparse(stmt).splitlines()[0]}")
    _fail_on(violations, "kstream/__init__.py only re-exports")
