"""How the theatre tells its dashboard that the job it waits for has ended.

A job that fails within the dashboard's first poll (`fakerun smi --wait`,
once a second) is gone, run directory and snapshot with it, before the
dashboard ever found it: it went on saying "waiting for job … to start"
under the failure banner. The theatre knows every node's exit status; it
writes the job's code into a file of its private directory, named to the
dashboard pane alone by an environment variable (never an argv)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

OUTCOME_ENV = "FAKERUN_JOB_OUTCOME"


def write(path: Path, code: int) -> None:
    """Atomically: the dashboard polls it and must never read half a number."""
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(f"{code}\n")
    os.replace(temp, path)


def read(environ: Mapping[str, str]) -> int | None:
    """The ended job's exit code, or None while it runs (or outside the theatre)."""
    where = environ.get(OUTCOME_ENV)
    if not where:
        return None
    try:
        return int(Path(where).read_text().strip())
    except (OSError, ValueError):
        return None
