"""Checkpoints on disk (--output-dir) and finding one to resume from, in
each style's framework's layout (layouts.py): the HF Trainer's
`checkpoint-<step>/` (writer.py, reader.py), the default style's own
(torchrun.py), and the other frameworks' in their own modules. Every file is
one the framework writes, with a real header and schema; nothing else.

A checkpoint is written into a temporary directory, fsynced, and renamed
into place, its marking file last (store.py). So a kill at any moment
leaves either no `checkpoint-<step>` or a complete one, and a finder only
accepts directories whose marking file is there.
"""

from fakerun.checkpoint.reader import RESUME, STATE, CheckpointError, Resume, find
from fakerun.checkpoint.store import STALE_S, sweep_stale, write
from fakerun.checkpoint.writer import CheckpointWriter

__all__ = ["RESUME", "STALE_S", "STATE", "CheckpointError", "CheckpointWriter", "Resume", "find",
           "sweep_stale", "write"]
