"""The multi-pane terminal theatre: one tmux pane per node agent, a
dashboard, and (when the nodes don't all fit) a summary of the rest, on a
private tmux server the user's terminal attaches to.

    reason = available(sys.stdout, os.environ)
    code = run(Stage(nodes=[...], dashboard=..., summary=..., name=...), os.environ)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import TextIO

from fakerun.theatre.layout import MIN_SIZE, Size
from fakerun.theatre.show import run
from fakerun.theatre.stage import Pane, Stage

__all__ = ["MIN_SIZE", "Pane", "Size", "Stage", "available", "run"]


def available(stdout: TextIO, environ: Mapping[str, str]) -> str | None:
    """None if the theatre can run here; else why it can't."""
    if shutil.which("tmux", path=environ.get("PATH", os.defpath)) is None:
        return "tmux is not installed (not on PATH)"
    try:
        fd = stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return "stdout is not a terminal"
    if not os.isatty(fd):
        return "stdout is not a terminal"
    if environ.get("TERM", "dumb") in ("", "dumb"):
        return "the terminal is dumb (TERM=dumb or unset)"
    cols, rows = os.get_terminal_size(fd)
    if cols < MIN_SIZE.cols or rows < MIN_SIZE.rows:
        return f"the terminal is {cols}x{rows}; the theatre needs at least {MIN_SIZE.cols}x{MIN_SIZE.rows}"
    return None
