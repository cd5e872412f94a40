"""Standard streams whose reader went away."""

from __future__ import annotations

import os
from typing import TextIO


def silence(stream: TextIO) -> None:
    """Point a dead stream's descriptor at /dev/null, so that neither a later
    flush nor the interpreter's final one fails (exit 120) with a traceback
    (the recipe of Python's docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not backed by a descriptor (tests, the API): nothing will flush it at exit
