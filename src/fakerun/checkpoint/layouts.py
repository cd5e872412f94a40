"""Whose checkpoint layout a run writes and resumes from: each style's
framework has its own (the HF Trainer's `checkpoint-N/`, Megatron's
`iter_NNNNNNN/`, DeepSpeed's `global_stepN/`, Lightning's
`lightning_logs/version_N/checkpoints/`), so a style names the module (in
this package) that writes its files and the one that finds them again.
A style not named here writes the HF Trainer's layout."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fakerun.checkpoint.reader import Resume
    from fakerun.events import Event
    from fakerun.world.identity import Identity


class CheckpointSink(Protocol):
    """An event sink writing a run's checkpoints (and what else the framework
    saves beside them) under its output directory."""

    def event(self, e: Event) -> None: ...

    def flush(self) -> None: ...


# Per style: (module, class) of its writer, (module, function) of its finder.
# The finder takes the path --resume names (a checkpoint, or the directory
# holding them) and returns the latest complete checkpoint as a Resume.
WRITERS = {"hf": ("writer", "CheckpointWriter")}
READERS = {"hf": ("reader", "find")}
DEFAULT = "hf"


def writer_for(style: str, root: Path, ident: Identity, seed: int, resumed: Resume | None,
               sparse: bool = False) -> CheckpointSink:
    """The writer of `style`'s layout under `root` (its module imported only
    when a run saves). `resumed`: the checkpoint this run carries on from."""
    module, cls = WRITERS.get(style, WRITERS[DEFAULT])
    history = resumed.history if resumed is not None else ()
    writer: Any = getattr(importlib.import_module(f"fakerun.checkpoint.{module}"), cls)
    return writer(root, ident, seed, history, sparse=sparse)  # type: ignore[no-any-return]


def find(style: str, path: Path) -> Resume:
    """The checkpoint `--resume path` names, read in `style`'s layout."""
    module, func = READERS.get(style, READERS[DEFAULT])
    found: Resume = getattr(importlib.import_module(f"fakerun.checkpoint.{module}"), func)(path)
    return found
