"""The Export event's file list is what the style's writer leaves in the
output directory: a parser comparing the JSONL `export` event's `files` with
the directory finds them equal, for every style (the Trainer's tokenizer
files and training_args.bin included: trainer.py `_save` at v4.42.4 to
v5.0.0 writes them after the model's)."""

from __future__ import annotations

import dataclasses
from datetime import UTC

import pytest

from fakerun import events as ev
from fakerun.checkpoint import layouts
from fakerun.checkpoint.layouts import Saving
from fakerun.checkpoint.training_args import written
from fakerun.coordinator.timeline import Completed, Timeline
from fakerun.protocol import tags
from fakerun.world.clock import VirtualClock
from fakerun.world.identity import build
from fakerun.world.trainer import TrainerArgs

# (style, model, transformers, the launch line's script arguments): a model with a
# tokenizer (Llama 3's, with its chat template), one with Llama 2's SentencePiece
# tokenizer.model, one whose Trainer saves none; 4.x's and 5.x's file sets; a line
# whose training_args.bin fakerun cannot say (--no_cuda: neither written nor listed); --fsdp's.
CASES = [
    ("hf", "Llama-3.2-1B", "4.46.3", ("--output_dir", "out")),
    ("hf", "Llama-3.2-1B", "5.0.0", ("--output_dir", "out")),
    ("hf", "Llama-2-7b-hf", "4.42.4", ("--output_dir", "out")),
    ("hf", "Qwen2.5-3B", "4.44.2", ("--output_dir", "out")),
    ("hf", "Llama-3.2-1B", "4.46.3", ("--output_dir", "out", "--no_cuda")),
    ("hf", "Llama-3.2-1B", "4.46.3", ("--output_dir", "out", "--fsdp", "full_shard auto_wrap")),
    ("torchrun", "Llama-3.2-1B", "4.46.3", ()),
    ("deepspeed", "Llama-3.2-1B", "4.46.3", ()),
    ("megatron", "Llama-3.2-1B", "4.46.3", ()),
    ("lightning", "Llama-3.2-1B", "4.46.3", ()),
]


def export_event(ident, style: str, script_args: tuple[str, ...], trainer: TrainerArgs | None) -> ev.Export:
    """The event as the coordinator makes it, with the launcher's flag (launcher/build.py)."""
    args = written(ident.versions.transformers, script_args, trainer)
    timeline = Timeline(ident, VirtualClock(1_700_000_000.0, UTC), style=style, training_args=args)
    done = Completed(tags.EXPORT, "barrier", ident.hyper.total_steps, 0, {0: 1.0, 1: 1.0}, {}, [], 0)
    events, _, _ = timeline.on_collective(done)
    (export,) = [e for e in events if isinstance(e, ev.Export)]
    return export


@pytest.mark.parametrize(("style", "model", "transformers", "script_args"), CASES)
def test_the_events_files_are_the_files_on_disk(tmp_path, style, model, transformers, script_args):
    ident = build(3, 1, 2, model=model)
    ident = dataclasses.replace(ident, versions=dataclasses.replace(ident.versions, transformers=transformers))
    trainer = TrainerArgs() if style == "hf" else None
    export = export_event(ident, style, script_args, trainer)
    saving = Saving(tmp_path, ident, 3, script_args=script_args, trainer=trainer)
    layouts.writer_for(style, saving).event(dataclasses.replace(export, path=f"{tmp_path}/"))
    on_disk = sorted(p.name for p in tmp_path.iterdir())
    assert sorted(export.files) == on_disk
    assert len(set(export.files)) == len(export.files)
    if style == "hf" and model != "Qwen2.5-3B":
        assert "tokenizer.json" in export.files
    if style == "hf":
        assert ("training_args.bin" in export.files) == ("--no_cuda" not in script_args)
