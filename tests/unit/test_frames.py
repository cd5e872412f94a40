"""Every library frame of the rank-side tracebacks is the pinned version's:
data/frames.toml's frames (file, line, function, source line) checked
against the real sources. torch's: the PyPI wheels' files extracted under
/work/torchsrc/<version>/ (skipped where absent). transformers': the table
below, read from src/transformers/trainer.py of each PyPI wheel (the same
file as the tag vV's), for when its sources are not here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fakerun import texts
from fakerun.world.catalog import versions

TORCHSRC = Path("/work/torchsrc")
FRAME = re.compile(r'^  File "\{site\}/(?P<path>\S+)", line (?P<line>\d+), in (?P<func>\w+)\n    (?P<src>.*)$',
                   re.MULTILINE)
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


def frames(library: str, version: str) -> list[re.Match]:
    table = texts.load("frames")[library][version]
    found = [m for piece in table.values() for m in FRAME.finditer(piece)]
    assert found and sum(p.count('  File "') for p in table.values()) == len(found)
    return found


def enclosing_def(lines: list[str], at: int) -> str:
    """The function a line is in: the nearest `def` above it with less indentation."""
    indent = len(lines[at - 1]) - len(lines[at - 1].lstrip())
    for line in reversed(lines[:at - 1]):
        if not line.strip() or line.lstrip().startswith(("#", ")", "]")):
            continue
        if (depth := len(line) - len(line.lstrip())) < indent:
            if m := re.match(r"\s*def (\w+)\(", line):
                return m.group(1)
            indent = depth
    return ""


def pinned(library: str) -> list[str]:
    return sorted({getattr(v, library) for v in versions()})


def test_every_pinned_version_has_its_frames():
    data = texts.load("frames")
    for library in ("torch", "transformers"):
        assert sorted(data[library]) == pinned(library)


@pytest.mark.parametrize("version", pinned("torch"))
def test_torch_frames_are_the_wheels(version):
    root = TORCHSRC / version
    if not (root / "torch/_tensor.py").is_file():
        pytest.skip(f"torch {version}'s sources are not extracted under {root}")
    for m in frames("torch", version):
        lines = (root / m["path"]).read_text(encoding="utf-8").split("\n")
        line = int(m["line"])
        assert lines[line - 1].strip() == m["src"], (version, m.group())
        assert enclosing_def(lines, line) == m["func"], (version, m.group())


@pytest.mark.parametrize("version", pinned("transformers"))
def test_transformers_frames_are_the_tags(version):
    shown = {(version, m["path"], int(m["line"])): m["src"] for m in frames("transformers", version)}
    assert shown == {k: v for k, v in TRANSFORMERS.items() if k[0] == version}


def test_carets_sit_under_the_call():
    # CPython 3.11's carets start under the failing call and end with it (or with the line).
    for library, tables in texts.load("frames").items():
        for version, table in tables.items():
            for piece in table.values():
                lines = piece.split("\n")
                for above, line in zip(lines, lines[1:], strict=False):
                    if line.strip() and set(line.strip()) == {"^"}:
                        start = len(line) - len(line.lstrip())
                        assert start > 4 and len(line) <= len(above), (library, version, above)
                        assert above[start - 1] in " =(" and above[start] != " ", (library, version, above)
