"""Checkpoints on disk (--output-dir) and finding one to resume from.

Layout (Hugging Face Trainer's): `checkpoint-<step>/` with config.json,
model.safetensors.index.json, model-0000k-of-0000n.safetensors, optimizer.pt,
scheduler.pt, rng_state_<rank>.pth and trainer_state.json. Files are small
placeholders whose metadata records the sizes a real checkpoint would have
(the shards are valid safetensors files with no tensors).

A checkpoint is written into a temporary directory, fsynced, and renamed
into place; trainer_state.json is written last. So a kill at any moment
leaves either no `checkpoint-<step>` or a complete one, and `find` only
accepts directories whose trainer_state.json parses.
"""

from fakerun.checkpoint.reader import STATE, CheckpointError, Resume, find
from fakerun.checkpoint.store import STALE_S, sweep_stale, write
from fakerun.checkpoint.writer import CheckpointWriter

__all__ = ["STALE_S", "STATE", "CheckpointError", "CheckpointWriter", "Resume", "find", "sweep_stale",
           "write"]
