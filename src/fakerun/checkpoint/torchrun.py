"""The default style's checkpoints: the seeds' own training script, not the
HF Trainer. Its checkpoint lines (render/styles/pytorch.py) name the model's
shards, its optimizer state and its scheduler state, and so its directory
holds exactly those:

    checkpoint-<step>/  config.json and the weights as save_pretrained of the
                        pinned transformers writes them (model.safetensors, or
                        model-0000k-of-0000n.safetensors and the index: as many
                        shards as "Saving model shards: k/k" counts),
                        optimizer.pt, scheduler.pt (last: "Saving scheduler
                        state...")
    <output dir>/       at the end ("Exporting to SafeTensors format"):
                        config.json and the weights

No trainer state: --resume takes the step from the directory's name, the
model from config.json and the clock from scheduler.pt's mtime (the save's
time); the seed from the command line, whose curve is the checkpoint's own.
A checkpoint this style wrote before issue 20 is the HF Trainer's, with the
run's facts in a hidden `.resume.json`: read as the HF style reads it (its
seed wins).
"""

from __future__ import annotations

import stat
from pathlib import Path

from fakerun import events as ev
from fakerun.checkpoint import model_files, reader
from fakerun.checkpoint.layouts import Saving
from fakerun.checkpoint.model_files import CONFIG, ModelFiles
from fakerun.checkpoint.reader import (
    RESUME,
    TIME_MAX,
    Resume,
    checked,
    config_of,
    incomplete,
    latest,
    model_of,
    number,
    step_of,
)
from fakerun.checkpoint.store import write

LAST = "scheduler.pt"  # written last: its presence marks a complete checkpoint


class TorchrunWriter:
    """An event sink: each Checkpoint event's directory under `root`."""

    def __init__(self, saving: Saving) -> None:
        self.saving = saving
        self.model = ModelFiles(saving.ident, sparse=saving.sparse)
        self.lr = saving.ident.hyper.max_lr

    def saved_history(self, step: int) -> tuple[()]:
        return ()  # the script logs to the console only

    def event(self, e: ev.Event) -> None:
        if isinstance(e, ev.Step):
            self.lr = e.lr
        elif isinstance(e, ev.Checkpoint):
            files, sizes = self._model()
            files |= model_files.optimizer_files(self.model, self.saving.seed, e.step, self.lr)
            write(self.saving.root / f"checkpoint-{e.step}", files, sizes, mtime=e.time, last=LAST)
        elif isinstance(e, ev.Export):  # "Exporting to SafeTensors format": the weights and config
            model_files.export(self.saving.root, *self._model(), e.time)

    def _model(self) -> tuple[dict[str, bytes], dict[str, int]]:
        files, sizes = self.model.weights()
        return {**files, CONFIG: self.model.config()}, sizes

    def flush(self) -> None:
        """Each checkpoint is complete on disk when `event` returns."""


def find(path: Path) -> Resume:
    """`path` is a checkpoint-<step> directory, or the directory holding them
    (the latest complete one is taken)."""
    return latest(path, _load, lambda p: step_of(p.name) is not None)


def _load(path: Path) -> Resume:
    if (path / RESUME).exists():  # fakerun's before issue 20: the Trainer's layout, the run's facts beside it
        return reader.find(path)
    step = step_of(path.name) or 0
    if not 1 <= step <= 2**31 - 1:
        raise incomplete(path, path.name, "no step in its name")
    try:
        saved = (path / LAST).stat()
    except OSError as exc:
        raise incomplete(path, LAST, exc.strerror or type(exc).__name__) from None
    if not stat.S_ISREG(saved.st_mode):  # a FIFO would hang the script's torch.load, a directory fail it
        raise incomplete(path, LAST, "not a regular file")
    time = checked(path, f"{LAST}: mtime", saved.st_mtime, number(0, TIME_MAX), "a time before the year 9000")
    return Resume(step, float(time), path, model=model_of(config_of(path)))
