"""Every library frame of the rank-side tracebacks is the pinned version's:
data/frames.toml's frames (file, line, enclosing function, source line and
CPython 3.11's carets under the call) checked against the real sources, where
they are on this machine (each skipped where absent):
- torch: the PyPI wheels' files, extracted under /work/torchsrc/<version>/;
- deepspeed, megatron-core, lightning: the projects' git history at the
  version's tag, fetched under /work/.mirror (deepspeedai/DeepSpeed vV,
  NVIDIA/Megatron-LM core_vV, Lightning-AI/pytorch-lightning V), and
  PyPI's lightning wheel for a version whose tag the mirror lacks;
- transformers (too big a repository to fetch here): the TRANSFORMERS table
  below, read from src/transformers/trainer.py of each PyPI wheel."""

from __future__ import annotations

import ast
import re
import subprocess
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from fakerun import texts
from fakerun.world.catalog import versions

TORCHSRC = Path("/work/torchsrc")
MIRRORS = Path("/work/.mirror")
WHEELS = Path("/opt/pypi/files")
FRAME = re.compile(r'^  File "\{(?:site|cwd)\}/(?P<path>\S+)", line (?P<line>\d+), in (?P<func>\S+)\n'
                   r'    (?P<src>.*)(?:\n(?P<carets> +\^+))?$', re.MULTILINE)
# (version, file, line) -> the source line, as read from transformers-V-py3-none-any.whl.
TRANSFORMERS = {
    ("4.42.4", "transformers/trainer.py", 1932): "return inner_training_loop(",
    ("4.42.4", "transformers/trainer.py", 2268): "tr_loss_step = self.training_step(model, inputs)",
    ("4.42.4", "transformers/trainer.py", 3324): "self.accelerator.backward(loss, **kwargs)",
    ("4.44.2", "transformers/trainer.py", 1938): "return inner_training_loop(",
    ("4.44.2", "transformers/trainer.py", 2279): "tr_loss_step = self.training_step(model, inputs)",
    ("4.44.2", "transformers/trainer.py", 3349): "self.accelerator.backward(loss, **kwargs)",
    ("4.46.3", "transformers/trainer.py", 2123): "return inner_training_loop(",
    ("4.46.3", "transformers/trainer.py", 2481): "tr_loss_step = self.training_step(model, inputs, num_items_in_batch)",
    ("4.46.3", "transformers/trainer.py", 3612): "self.accelerator.backward(loss, **kwargs)",
    ("5.0.0", "transformers/trainer.py", 2174): "return inner_training_loop(",
    ("5.0.0", "transformers/trainer.py", 2536): "tr_loss_step = self.training_step(model, inputs, num_items_in_batch)",
    ("5.0.0", "transformers/trainer.py", 3837): "self.accelerator.backward(loss, **kwargs)",
}


@cache
def git_show(repo: str, ref: str, path: str) -> str | None:
    gitdir = MIRRORS / repo / "repo"
    if not gitdir.is_dir():
        return None
    done = subprocess.run(["git", f"--git-dir={gitdir}", "show", f"{ref}:{path}"], capture_output=True,
                          text=True, timeout=60, check=False)
    return done.stdout if done.returncode == 0 else None


@cache
def wheel_file(name: str, path: str) -> str | None:
    wheel = WHEELS / name
    if not wheel.is_file():
        return None
    with zipfile.ZipFile(wheel) as zipped:
        return zipped.read(path).decode() if path in zipped.namelist() else None


def torch_source(version: str, path: str) -> str | None:
    file = TORCHSRC / version / path
    return file.read_text(encoding="utf-8") if file.is_file() else None


def lightning_source(version: str, path: str) -> str | None:
    return (git_show("Lightning-AI+pytorch-lightning", version, f"src/{path}")
            or wheel_file(f"lightning-{version}-py3-none-any.whl", path))


def megatron_source(version: str, path: str) -> str | None:
    # Megatron runs from its checkout: the traceback's script is pretrain_gpt.py.
    return git_show("NVIDIA+Megatron-LM", f"refs/tags/core_v{version}", path.replace("{entrypoint}", "pretrain_gpt.py"))


SOURCES: dict[str, Callable[[str, str], str | None]] = {
    "torch": torch_source,
    "deepspeed": lambda version, path: git_show("deepspeedai+DeepSpeed", f"v{version}", path),
    "lightning": lightning_source,
    "megatron": megatron_source,
}


# The frames of each library's tables that are its own: the others are the
# training script's (ours) or an unpinned library's, and torch's within a
# framework's pieces are named pieces of torch's tables.
OWN = {"torch": ("torch/",), "transformers": ("transformers/",), "deepspeed": ("deepspeed/",), "lightning": ("lightning/",),
       "megatron": ("megatron/", "{entrypoint}")}


@cache
def parsed(library: str, version: str, path: str) -> tuple[str | None, ast.Module | None]:
    source = SOURCES[library](version, path)
    return source, (ast.parse(source) if source is not None else None)


def frames(library: str, version: str) -> list[re.Match]:
    table = texts.load("frames")[library][version]
    found = [m for piece in table.values() for m in FRAME.finditer(piece)]
    assert sum(p.count('  File "') for p in table.values()) == len(found)  # every frame in the form
    return found


def enclosing(tree: ast.Module, line: int) -> str:
    """The innermost function whose definition holds the line."""
    holders = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
               and n.lineno <= line <= n.end_lineno]
    return max(holders, key=lambda n: n.lineno).name if holders else "<module>"


def carets(source: str, tree: ast.Module, line: int) -> str | None:
    """CPython 3.11's caret line under a frame: under the call the frame is in
    (the outermost that starts on the line), to its end or the line's; none
    when that covers the whole line."""
    raw = source.split("\n")[line - 1]
    stripped, lead = raw.strip(), len(raw) - len(raw.lstrip())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.lineno == line]
    call = min(calls, key=lambda n: (n.col_offset, -n.end_lineno, -n.end_col_offset))
    end = call.end_col_offset if call.end_lineno == line else lead + len(stripped)
    if end - call.col_offset >= len(stripped):
        return None
    return " " * (4 + call.col_offset - lead) + "^" * (end - call.col_offset)


def pinned(library: str) -> list[str]:
    return sorted({getattr(v, library) for v in versions()})


def test_every_pinned_version_has_its_frames():
    data = texts.load("frames")
    for library in ("torch", "transformers", "deepspeed", "megatron", "lightning"):
        assert sorted(data[library]) == pinned(library), library


@pytest.mark.parametrize("library,version", [(lib, v) for lib in SOURCES for v in pinned(lib)
                                             if v in texts.load("frames").get(lib, {})])
def test_frames_are_the_versions_sources(library, version):
    checked = 0
    for m in frames(library, version):
        path = m["path"]
        if not path.startswith(OWN[library]):
            continue  # the script's own frames (ours), or an unpinned library's (torchmetrics)
        source, tree = parsed(library, version, path)
        if source is None:
            pytest.skip(f"{library} {version}'s {path} is not on this machine")
        line = int(m["line"])
        assert source.split("\n")[line - 1].strip() == m["src"], m.group()
        assert enclosing(tree, line) == m["func"], m.group()
        assert carets(source, tree, line) == m["carets"], m.group()
        checked += 1
    assert checked


@pytest.mark.parametrize("version", pinned("transformers"))
def test_transformers_frames_are_the_wheels(version):
    shown = {(version, m["path"], int(m["line"])): m["src"] for m in frames("transformers", version)}
    assert shown == {k: v for k, v in TRANSFORMERS.items() if k[0] == version}


KEYS = ("crash", "oom", "peer_lost", "interrupt", "interrupt_init", "interrupt_validation", "interrupt_checkpoint",
        "interrupt_export")
SIZES = {k: "1 GiB" for k in ("device", "total", "free", "in_use", "allocated", "unallocated", "tried", "peer",
                              "port")}


@pytest.mark.parametrize("style", ["torchrun", "hf", "deepspeed", "megatron", "lightning"])
@pytest.mark.parametrize("row", versions(), ids=lambda row: row.torch)
def test_every_failure_shows_the_pinned_versions_frames(style, row):
    """Each traceback a style prints, for each row of versions.txt: every torch
    frame and every frame of the style's library is that version's (as its
    table has it), and nothing is left unformatted."""
    from dataclasses import replace

    from fakerun.config.options import RunConfig, Topology
    from fakerun.config.plan import plan
    from fakerun.rank.faults import STYLE_LIBRARY, script_text
    from fakerun.world import styles

    config = plan(RunConfig(Topology(1, 2), seed=5, max_steps=3))
    config = replace(config, style=styles.parse(style), identity=replace(config.identity, versions=row))
    data = texts.load("frames")
    tables = {"torch": data["torch"][row.torch]}
    if (library := STYLE_LIBRARY.get(style)) is not None:
        tables[library] = data[library][getattr(row, library)]
    for key in KEYS:
        text = script_text(config, key, **SIZES)
        assert "{" not in text and "}" not in text, (key, text)
        for library, table in tables.items():
            known = "\n".join(table.values())
            shown = [m for m in FRAME.finditer(text.replace(f"/opt/conda/lib/python{row.python}/site-packages",
                                                            "{site}")) if m["path"].startswith(OWN[library])]
            assert all(m.group() in known for m in shown if m["path"] in known), (key, library)
