"""Whose checkpoint layout a run writes and resumes from: each style's
framework has its own (the HF Trainer's `checkpoint-N/`, Megatron's
`iter_NNNNNNN/`, DeepSpeed's `global_stepN/`, Lightning's
`lightning_logs/version_N/checkpoints/`, the default style's own
`checkpoint-N/`), so a style names the module (in this package) that writes
its files and the one that finds them again. A style not named here writes
the HF Trainer's layout."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fakerun.checkpoint.reader import Resume
    from fakerun.events import Event
    from fakerun.world.identity import Identity
    from fakerun.world.trainer import TrainerArgs


class CheckpointSink(Protocol):
    """An event sink writing a run's checkpoints (and what else the framework
    saves beside them) under its output directory."""

    def event(self, e: Event) -> None: ...

    def flush(self) -> None: ...


# Per style: (module, class) of its writer, (module, function) of its finder.
# The finder takes the path --resume names (a checkpoint, or the directory
# holding them) and returns the latest complete checkpoint as a Resume.
WRITERS = {"hf": ("writer", "CheckpointWriter"), "torchrun": ("torchrun", "TorchrunWriter"),
           "deepspeed": ("deepspeed", "DeepSpeedWriter"), "lightning": ("lightning", "LightningWriter"),
           "megatron": ("megatron", "MegatronWriter")}
READERS = {"hf": ("reader", "find"), "torchrun": ("torchrun", "find"),
           "deepspeed": ("deepspeed_reader", "find"), "lightning": ("lightning", "find"),
           "megatron": ("megatron_reader", "find")}
DEFAULT = "hf"


@dataclass(frozen=True)
class Saving:
    """What a run's checkpoint writer is given: where, whose run, and the
    launch line the framework would save beside its weights (its arguments
    in training_args.bin, hparams.yaml, Megatron's `args`)."""

    root: Path
    ident: Identity
    seed: int
    resumed: Resume | None = None  # the checkpoint this run carries on from
    sparse: bool = False  # weight files of their true size, as holes
    entrypoint: str = "train.py"
    script_args: tuple[str, ...] = ()
    trainer: TrainerArgs | None = None  # the Trainer's arguments as the launch line gives them
    # fakerun's --tensorboard DIR ("" none): tensorboard is installed, so Lightning's default logger is
    # a TensorBoardLogger (no CSVLogger's metrics.csv) and the Trainer's arguments say so.
    tensorboard: str = ""


def writer_for(style: str, saving: Saving) -> CheckpointSink:
    """The writer of `style`'s layout (its module imported only when a run saves)."""
    module, cls = WRITERS.get(style, WRITERS[DEFAULT])
    writer: Any = getattr(importlib.import_module(f"fakerun.checkpoint.{module}"), cls)
    return writer(saving)  # type: ignore[no-any-return]


def find(style: str, path: Path) -> Resume:
    """The checkpoint `--resume path` names, read in `style`'s layout."""
    module, func = READERS.get(style, READERS[DEFAULT])
    found: Resume = getattr(importlib.import_module(f"fakerun.checkpoint.{module}"), func)(path)
    return found
