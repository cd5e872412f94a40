"""The house's import rules: each part imports only the parts below it, and
no module imports itself back through others.

Read statically from the source (every import statement, also those inside
functions and TYPE_CHECKING blocks), and checked once more at run time for
the rules that cost most when broken: what a forked rank and the coordinator
load."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "fakerun"

# Every part may import these: they import nothing of ours.
BASE = {"errors", "version"}
# Part -> the parts it may import (itself always). Lower parts never reach up.
ALLOWED: dict[str, set[str]] = {
    "texts": set(),
    "version": set(),
    "errors": set(),
    "events": set(),
    "world": set(),
    "system": set(),
    "protocol": set(),
    "checkpoint": {"world", "system", "events"},
    "config": {"world", "system", "checkpoint"},
    "coordinator": {"protocol", "events", "world"},
    "failures": {"events"},
    "rank": {"protocol", "world", "config", "system", "texts", "failures"},
    "render": {"events", "world", "texts", "system"},
    "smi": {"render", "events", "world", "texts", "system"},
    "dcgm": {"smi", "events", "world", "texts"},
    "theatre": {"system"},
    "tensorboard": {"events", "world", "system", "texts", "checkpoint", "render"},
    "launcher": {"failures", "config", "checkpoint", "coordinator", "dcgm", "events", "protocol", "rank", "render",
                 "smi", "system", "tensorboard", "texts", "theatre", "world"},
    "cli": {"version", "config", "dcgm", "launcher", "render", "smi", "system", "tensorboard", "theatre", "world"},
    "api": {"cli"},
    "pytest_plugin": {"api"},  # pytest's entry point: the API loads when a test asks for the fixture
    "__main__": {"cli"},
    "fakerun": {"api", "version"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def part(module: str) -> str:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else bits[0]


def imported(path: Path) -> Iterator[str]:
    """The fakerun modules `path` imports: `from pkg import mod` names the
    module, `from mod import name` the module holding the name."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "fakerun")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            if base.split(".")[0] != "fakerun":
                continue
            for alias in node.names:
                child = f"{base}.{alias.name}"
                yield child if child in MODULES else base


GRAPH = {name: sorted(set(imported(path)) - {name}) for name, path in MODULES.items()}


def test_every_import_names_a_module_of_ours() -> None:
    unknown = {(m, t) for m, targets in GRAPH.items() for t in targets if t not in MODULES}
    assert not unknown


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_part_imports_only_the_parts_below_it(module: str) -> None:
    mine = part(module)
    wrong = [t for t in GRAPH[module] if part(t) not in {mine, *BASE} and part(t) not in ALLOWED[mine]]
    assert not wrong, f"{module} ({mine}) may import only {sorted(ALLOWED[mine])}"


def test_every_part_has_rules() -> None:
    assert {part(m) for m in MODULES} == set(ALLOWED)


def test_no_import_circles() -> None:
    circles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in GRAPH[module]:
            if state.get(target) == 1:
                circles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    assert not circles


def loaded_by(module: str) -> set[str]:
    """Every module a fresh interpreter has loaded after importing `module`."""
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=True, env={"PYTHONPATH": str(SRC)})
    return set(out.stdout.split())


def test_a_rank_never_loads_the_coordinator_the_views_or_the_launcher() -> None:
    loaded = loaded_by("fakerun.rank.process")
    assert {part(m) for m in loaded if m.startswith("fakerun.")}.isdisjoint(
        {"coordinator", "render", "launcher", "smi", "theatre", "cli"})
    assert not {"rich", "psutil"} & {m.split(".")[0] for m in loaded}


def test_the_coordinator_never_loads_zmq_the_views_or_rich() -> None:
    loaded = loaded_by("fakerun.coordinator.core") | loaded_by("fakerun.coordinator.timeline")
    assert {part(m) for m in loaded if m.startswith("fakerun.")}.isdisjoint(
        {"render", "launcher", "rank", "smi", "theatre", "cli"})
    assert not {"rich", "zmq", "psutil"} & {m.split(".")[0] for m in loaded}


def test_the_views_never_load_the_wire() -> None:
    loaded = loaded_by("fakerun.render.renderer")
    assert {part(m) for m in loaded if m.startswith("fakerun.")}.isdisjoint(
        {"protocol", "coordinator", "launcher", "rank"})
    assert "zmq" not in {m.split(".")[0] for m in loaded}
