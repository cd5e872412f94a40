"""The README's pictures (tools/pictures.py): made from real runs with no
terminal at all (a session of its own, no controlling tty, stdin and stdout
not terminals), as CI makes them, and the committed ones are current.
FAKERUN_REGEN_PICTURES=1 rewrites docs/pictures/ from this run."""

from __future__ import annotations

import html
import os
import re
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = str(ROOT / "tools" / "pictures.py")
PICTURES = ("live-view.svg", "theatre.svg", "plain-output.txt")
MADE_WITH = re.compile(r"<!-- tools/pictures\.py with rich (\S+) -->")


def on_screen(svg: str) -> list[str]:
    """The characters the picture shows, whatever rich's markup around them."""
    return [html.unescape(t) for t in re.findall(r"<text [^>]*>([^<]*)</text>", svg)]


def test_pictures_are_made_headless_and_current(runner, tmp_path):
    out = tmp_path / "pictures"
    job = runner.run("--out", str(out), command=[sys.executable, TOOL], new_session=True, timeout=180)
    assert job.proc.returncode == 0, job.stderr
    readme = (ROOT / "README.md").read_text()
    for name in PICTURES:
        made, committed = (out / name).read_text(), ROOT / "docs" / "pictures" / name
        if os.environ.get("FAKERUN_REGEN_PICTURES"):
            committed.write_text(made)
        old = committed.read_text()
        stale = f"{name} is stale: FAKERUN_REGEN_PICTURES=1 pytest {__file__}"
        if name.endswith(".txt"):
            assert "Step 10/20" in made and "fakerun" not in made
            assert made == old, stale
        elif MADE_WITH.search(old).group(1) == version("rich"):
            assert made == old, stale
        else:  # another rich writes other markup: the screen must still be the same
            assert on_screen(made) == on_screen(old), stale
        assert f"(docs/pictures/{name})" in readme
    assert all((out / name).read_text().startswith("<svg ") for name in PICTURES[:2])
