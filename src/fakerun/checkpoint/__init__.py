"""Checkpoints on disk (--output-dir) and finding one to resume from.

Layout (Hugging Face Trainer's): `checkpoint-<step>/` with config.json,
model.safetensors (or model-0000k-of-0000n.safetensors and
model.safetensors.index.json), optimizer.pt, scheduler.pt,
rng_state_<rank>.pth and trainer_state.json, each with a real header and
schema (writer.py), plus the hidden `.resume.json` --resume reads.

A checkpoint is written into a temporary directory, fsynced, and renamed
into place; trainer_state.json is written last. So a kill at any moment
leaves either no `checkpoint-<step>` or a complete one, and `find` only
accepts directories whose trainer_state.json parses.
"""

from fakerun.checkpoint.reader import RESUME, STATE, CheckpointError, Resume, find
from fakerun.checkpoint.store import STALE_S, sweep_stale, write
from fakerun.checkpoint.writer import CheckpointWriter

__all__ = ["RESUME", "STALE_S", "STATE", "CheckpointError", "CheckpointWriter", "Resume", "find",
           "sweep_stale", "write"]
