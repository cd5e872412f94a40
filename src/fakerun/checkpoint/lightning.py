"""What a Lightning script writes under its Trainer's default_root_dir
(--output-dir), as the pinned lightning release does
(Lightning-AI/pytorch-lightning at tags 2.4.0, 2.5.0 and 2.6.5, the newest
tag mirrored for the 2.6.6 pin):

    lightning_logs/version_N/config.yaml      (a LightningCLI script's only)
    lightning_logs/version_N/hparams.yaml
    lightning_logs/version_N/metrics.csv
    lightning_logs/version_N/checkpoints/epoch=E-step=S.ckpt

- The logger is the default one a Trainer makes when neither tensorboard nor
  tensorboardX is installed: CSVLogger(save_dir=default_root_dir)
  (trainer/connectors/logger_connector/logger_connector.py configure_logger,
  which warns so on screen); version_N is the next free number under
  lightning_logs (fabric/loggers/csv_logs.py _get_next_version), found once
  at launch (launcher/build.py logger_version) and given to the writer and
  the screen's v_num alike in RunStarted. With fakerun's --tensorboard,
  tensorboard is installed and the default logger a TensorBoardLogger in the
  same version directory (its _get_next_version alike): the same
  hparams.yaml, no metrics.csv, its event files fakerun/tensorboard's.
- config.yaml: LightningCLI's SaveConfigCallback, at fit's setup (cli.py):
  the fit config as jsonargparse dumps it (config_yaml).
- hparams.yaml: the LightningModule's save_hyperparameters(), written at fit
  start (loggers/utilities.py _log_hyperparams; core/saving.py
  save_hparams_to_yaml, yaml.dump's sorted block style).
- metrics.csv: a row per logging step (`train_loss`, at every
  log_every_n_steps optimizer steps, `step` = the steps done before it) and
  per validation (`val_loss`), each with the 0-based `epoch`; written when a
  logged step hits flush_logs_every_n_steps (100) and at the end
  (CSVLogger.log_metrics, finalize), with the sorted union of the keys as its
  header and "" where a row has no value (csv.DictWriter). A tailing reader
  sees exactly what it would see of the real file at each moment.
- The .ckpt: torch.save of Trainer.dump_checkpoint's dict
  (trainer/connectors/checkpoint_connector.py: the same keys at every pinned
  tag), saved by the default ModelCheckpoint (callbacks/model_checkpoint.py:
  dirpath `<log_dir>/checkpoints`, filename `{epoch}-{step}`, save_top_k=1,
  so the file of the previous save goes when the next is written). Tensors
  cannot be plain data (checkpoint/torchsave.py): the weights' state_dict and
  the optimizer's moments are left out, and ModelCheckpoint's kth_value
  (a tensor) with them.
- --resume (or LightningCLI's --ckpt_path) reads a .ckpt, or the latest one
  under a directory: its global_step, and the run's model and seed from the
  module's hparams; the save's time is the file's mtime, which the writer
  sets to the run's clock at the save. Nothing hidden is written. A real
  Lightning .ckpt reads too: every class its pickle names is replaced by an
  inert stand-in (_Opaque), so nothing of it is imported or run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakerun import events as ev
from fakerun.checkpoint import lightning_hpc, tensorsave, torchsave
from fakerun.checkpoint.layouts import Saving
from fakerun.checkpoint.reader import MAX_STEP, SEED_MAX, CheckpointError, Resume
from fakerun.checkpoint.store import write_file
from fakerun.system.files import read_regular
from fakerun.world import draws, styles
from fakerun.world.tensors import DTYPES, layout

LOGS = "lightning_logs"  # CSVLogger(name="lightning_logs")
INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"
ARCHIVE = "archive"  # the folder of a torch.save into a buffer
CKPT_MAX = 64 << 20  # a .ckpt of plain data is a few hundred kB; a real one's weights are not read
FLUSH_EVERY = 100  # CSVLogger(flush_logs_every_n_steps=100)
# The default ModelCheckpoint's state_key (model_checkpoint.py state_key, Callback._generate_state_key).
CHECKPOINT_KEY = ("ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, "
                  "'every_n_epochs': 1, 'train_time_interval': None}")
# torch.optim.AdamW(self.parameters(), lr=...)'s defaults.
BETAS, EPS, WEIGHT_DECAY = (0.9, 0.999), 1e-08, 0.01
# torch.amp.GradScaler's defaults ("16-mixed" only: bf16-mixed has no scaler state to save).
SCALER = {"init_scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000}
_VERSION_DIR = re.compile(r"version_(\d+)")
_CKPT = re.compile(r"epoch=(\d+)-step=(\d+)(?:-v\d+)?\.ckpt")


def next_version(logs: Path) -> int:
    """_get_next_version: one more than the highest version_<digits> directory, else 0."""
    with contextlib.suppress(OSError):
        found = [int(m.group(1)) for p in logs.iterdir()
                 if (m := _VERSION_DIR.fullmatch(p.name)) and m.group(1).isascii() and p.is_dir()]
        return max(found) + 1 if found else 0
    return 0


def slurm_version(environ: Mapping[str, str]) -> int | None:
    """The version Lightning's default TensorBoardLogger is given (a
    CSVLogger is given none): SLURMEnvironment.job_id()
    (fabric/plugins/environments/slurm.py at 2.4.0-2.6.x), $SLURM_JOB_ID as
    int() reads it; None outside Slurm, in a job named `bash` or
    `interactive`, or for an id int() refuses."""
    if environ.get("SLURM_JOB_NAME") in ("bash", "interactive") or "SLURM_JOB_ID" not in environ:
        return None
    try:
        return int(environ["SLURM_JOB_ID"])
    except ValueError:
        return None


def ckpt_name(epoch: int, step: int) -> str:
    """ModelCheckpoint's default filename `{epoch}-{step}`, metric names inserted."""
    return f"epoch={epoch}-step={step}.ckpt"


def module_args(saving: Saving) -> dict[str, Any]:
    """The script's LightningModule's __init__ arguments, in its signature's order."""
    h = saving.ident.hyper
    return {"model_name_or_path": saving.ident.model.name, "learning_rate": h.max_lr,
            "warmup_steps": h.warmup_steps, "seed": saving.seed}


def config_yaml(saving: Saving) -> bytes:
    """What LightningCLI's SaveConfigCallback saves as <log_dir>/config.yaml
    (cli.py at 2.4.0-2.6.5): the fit subcommand's whole config with
    skip_none=False under the `# lightning.pytorch==V` dump header, in the
    parser's order: seed_everything, the Trainer's every parameter (the
    script's trainer_defaults, less callbacks, then the line's --trainer.*),
    the module's and the DataModule's arguments, the optimizer and scheduler
    groups LightningCLI adds (auto_configure_optimizers), fit's ckpt_path."""
    i, h, args = saving.ident, saving.ident.hyper, saving.script_args
    given = styles.lightning_cli_values(args)
    # The script's own max_steps, unless the line bounds the run by epochs instead.
    steps = {} if "max_epochs" in given else {"max_steps": h.total_steps}
    script = {**steps, "strategy": "ddp", "devices": i.nproc, "num_nodes": i.nnodes,
              "precision": styles.LIGHTNING_SCRIPT_PRECISION[i.gpu.precision],
              "log_every_n_steps": h.log_every, "accumulate_grad_batches": h.grad_accum}
    params = styles.TRAINER + (styles.TRAINER_2_6 if _minor(i.versions.lightning) >= (2, 6) else ())
    trainer = {name: _parsed(given[name]) if name in given else script.get(name, default)
               for name, default in params}
    top = styles.lightning_cli_values(args, "--")
    seed = _parsed(top.get("seed_everything", "true"))
    data = {"dataset_name": i.dataset.name, "seq_len": h.seq_len, "batch_size": h.micro_batch}
    body = {"seed_everything": 0 if seed is True else seed, "trainer": trainer, "model": module_args(saving),
            "data": data, "optimizer": None, "lr_scheduler": None, "ckpt_path": top.get("ckpt_path") or None}
    return f"# lightning.pytorch=={i.versions.lightning}\n".encode() + _yaml_block(body, 0).encode()


def _parsed(text: str) -> Any:
    """A value as jsonargparse types it: int, float, bool, null, a list of ints, else a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none", ""):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    items = text.strip("[]").split(",")
    if text.startswith("[") and all(x.strip().isdigit() for x in items):
        return [int(x) for x in items]
    return text


def _yaml_block(body: dict[str, Any], indent: int) -> str:
    """yaml.dump(sort_keys=False)'s block style, two spaces a level, lists unindented under their key."""
    pad, out = " " * indent, []
    for key, value in body.items():
        if isinstance(value, dict):
            out.append(f"{pad}{key}:\n{_yaml_block(value, indent + 2)}")
        elif isinstance(value, list):
            out.append(f"{pad}{key}:\n" + "".join(f"{pad}- {_yaml_scalar(v)}\n" for v in value))
        else:
            out.append(f"{pad}{key}: {_yaml_scalar(value)}\n")
    return "".join(out)


def _minor(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2])


def hparams(saving: Saving) -> dict[str, Any]:
    """The script's LightningModule hyper-parameters (self.save_hyperparameters()).
    A module LightningCLI makes carries how it was made (cli.py _InstantiatorFn,
    core/mixins/hparams_mixin.py _given_hyperparameters_context, 2.3 on)."""
    made = {"_instantiator": INSTANTIATOR} if styles.lightning_cli(saving.script_args) else {}
    return {**made, **module_args(saving)}


@dataclass
class _Metrics:
    """CSVLogger's _ExperimentWriter: rows kept until a save writes them."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        for key in row:
            if key not in self.keys:
                self.keys.append(key)
        self.keys.sort()

    def text(self) -> bytes:
        """The whole file as it stands after a save (a header change rewrites it all)."""
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=self.keys)
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue().encode()


class LightningWriter:
    """An event sink: the version directory of one fit under `saving.root`."""

    def __init__(self, saving: Saving) -> None:
        self.saving = saving
        self.ident = saving.ident
        # version_N: the launch's (RunStarted.logger_version, which the screen's v_num shows).
        self.dir = saving.root / LOGS / "version_0"
        self.metrics = _Metrics()
        self.lr = self.ident.hyper.max_lr
        self.saved: Path | None = None  # the top-1 checkpoint of this version, removed at the next save
        self.evaluations = 0  # validations run in this fit (the val loop's batch progress)

    def event(self, e: ev.Event) -> None:
        h = self.ident.hyper
        if isinstance(e, ev.RunStarted):
            self.dir = self.saving.root / LOGS / f"version_{e.logger_version}"
        elif isinstance(e, ev.Phase) and e.name == "train":  # SaveConfigCallback.setup, then _log_hyperparams
            if styles.lightning_cli(self.saving.script_args):
                write_file(self.dir / "config.yaml", config_yaml(self.saving), e.time)
            write_file(self.dir / "hparams.yaml", yaml_dump(hparams(self.saving)), e.time)
        elif isinstance(e, ev.Step):
            self.lr = e.lr
            row = logged(e, h.log_every)
            if row is not None:
                self._log(row, e.time)
            if e.stopped:  # saved at once (training_epoch_loop.py _save_loggers_on_train_batch_end)
                self._flush(e.time)
        elif isinstance(e, ev.Validation):
            self.evaluations += 1
            self._log(logged(e, h.log_every) or {}, e.time)
        elif isinstance(e, ev.Checkpoint):
            self._save(e)
        elif isinstance(e, ev.HpcCheckpoint):
            self._hpc_save(e)
        elif isinstance(e, ev.Phase) and e.name == "export":  # trainer.fit returned: the logger's finalize
            self._flush(e.time)

    def flush(self) -> None:
        """Each file is complete on disk when `event` returns."""

    def saved_history(self, step: int) -> tuple[dict[str, Any], ...]:
        """A .ckpt keeps no log history (the Trainer's trainer_state.json does)."""
        return ()

    def _log(self, row: dict[str, Any], when: float) -> None:
        self.metrics.log(row)
        if (row["step"] + 1) % FLUSH_EVERY == 0:
            self._flush(when)

    def _flush(self, when: float) -> None:
        if self.metrics.rows and not self.saving.tensorboard:  # a TensorBoardLogger writes no CSV
            write_file(self.dir / "metrics.csv", self.metrics.text(), when)

    def _save(self, e: ev.Checkpoint) -> None:
        epoch = (max(1, e.step) - 1) // self.ident.hyper.steps_per_epoch
        path = self.dir / "checkpoints" / ckpt_name(epoch, e.step)
        serial = tensorsave.serialization_id(draws.rng(self.saving.seed, "serialization_id", e.step))
        # Lightning's _atomic_save (fabric/utilities/cloud_io.py) torch.saves into a BytesIO: the
        # archive's folder is then "archive" (caffe2/serialize/inline_container.cc), not the file's stem.
        dump = self._dump(e.step, epoch, self._checkpoint_state(path))
        write_file(path, torchsave.archive(ARCHIVE, dump, serial, self.ident.versions.torch), e.time)
        if self.saved is not None and self.saved != path:  # save_top_k=1: _remove_checkpoint
            with contextlib.suppress(FileNotFoundError):
                self.saved.unlink()
        self.saved = path

    def _hpc_save(self, e: ev.HpcCheckpoint) -> None:
        """The SLURM auto-requeue handler: every logger's finalize (CSVLogger
        saves metrics.csv), then trainer.save_checkpoint(hpc_ckpt_N.ckpt) of
        the same dict, which the default ModelCheckpoint neither names nor
        rotates (its state says what it last saved)."""
        self._flush(e.time)
        path = lightning_hpc.save_path(self.saving.root)
        serial = tensorsave.serialization_id(draws.rng(self.saving.seed, "serialization_id", e.step, "hpc"))
        state = (self._checkpoint_state(self.saved) if self.saved is not None
                 else self._checkpoint_state(self.dir / "checkpoints" / "none", saved=False))
        dump = self._dump(e.step, e.epoch - 1, state, epoch_done=False)
        write_file(path, torchsave.archive(ARCHIVE, dump, serial, self.ident.versions.torch), e.time)

    def _dump(self, step: int, epoch: int, callback: dict[str, Any],
              epoch_done: bool = True) -> dict[str, Any]:
        """Trainer.dump_checkpoint's dict, its keys in its order."""
        checkpoint = {"epoch": epoch, "global_step": step,
                      "pytorch-lightning_version": self.ident.versions.lightning,
                      "state_dict": {}, "loops": self._loops(step, epoch, epoch_done),
                      "callbacks": {CHECKPOINT_KEY: callback},
                      "optimizer_states": [self._optimizer()], "lr_schedulers": [self._scheduler(step)]}
        # MixedPrecision("16-mixed").state_dict(): the GradScaler's (bf16-mixed and the others have none).
        if styles.lightning_precision(self.saving.script_args, self.ident.gpu.precision) == "16-mixed":
            checkpoint["MixedPrecision"] = _scaler(step)
        return {**checkpoint, "hparams_name": "kwargs", "hyper_parameters": hparams(self.saving)}

    def _loops(self, step: int, epoch: int, epoch_done: bool = True) -> dict[str, Any]:
        """Trainer's loops' state_dicts (loops/loop.py _Loop.state_dict: each
        loop's own state, then its progress trackers and child loops by
        attribute, keys prefixed with their path), as they stand in
        on_train_epoch_end: the epoch processed, not yet completed; inside
        the epoch (`epoch_done` False: an auto-requeue save) not processed
        either (fit_loop.py on_advance_end counts it processed once the
        epoch loop has run)."""
        h = self.ident.hyper
        in_epoch = step - epoch * h.steps_per_epoch
        batches = _progress(step * h.grad_accum, in_epoch * h.grad_accum, processed=True)
        batches["is_last_batch"] = in_epoch == h.steps_per_epoch
        steps = _progress(step, in_epoch)
        val = self.evaluations * h.eval_batches
        val_batches = {**_progress(val, h.eval_batches if val else 0, processed=True),
                       "is_last_batch": val > 0}
        epochs = _progress(epoch + 1, epoch + 1, processed=True)
        epochs["total"]["completed"] = epochs["current"]["completed"] = epoch
        if not epoch_done:
            epochs["total"]["processed"] = epochs["current"]["processed"] = epoch
        zero_grad = _progress(step, in_epoch, started=True)
        idle = {**_progress(0, 0, processed=True), "is_last_batch": False}
        fit = {"state_dict": {}, "epoch_loop.state_dict": {"_batches_that_stepped": step},
               "epoch_loop.batch_progress": batches, "epoch_loop.scheduler_progress": steps,
               "epoch_loop.automatic_optimization.state_dict": {},
               "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {"step": steps,
                                                                                  "zero_grad": zero_grad}},
               "epoch_loop.manual_optimization.state_dict": {},
               "epoch_loop.manual_optimization.optim_step_progress": _progress(0, 0),
               "epoch_loop.val_loop.state_dict": {}, "epoch_loop.val_loop.batch_progress": val_batches,
               "epoch_progress": epochs}
        predict = {"state_dict": {}, "batch_progress": _progress(0, 0, processed=True)}
        return {"fit_loop": fit, "validate_loop": {"state_dict": {}, "batch_progress": idle},
                "test_loop": {"state_dict": {}, "batch_progress": idle}, "predict_loop": predict}

    def _checkpoint_state(self, path: Path, saved: bool = True) -> dict[str, Any]:
        """ModelCheckpoint.state_dict with no monitor: best_model_path is the
        file being saved (set before the save), "" before its first save;
        kth_value, a tensor, left out."""
        best = str(path.absolute()) if saved else ""
        return {"monitor": None, "best_model_score": None, "best_model_path": best,
                "current_score": None, "dirpath": str(path.parent.absolute()), "best_k_models": {},
                "kth_best_model_path": "", "last_model_path": ""}

    def _optimizer(self) -> dict[str, Any]:
        """AdamW's state_dict: one group of every parameter; the moments (tensors) left out."""
        count = len(layout(self.ident.model, DTYPES[self.ident.gpu.precision][0]).tensors)
        group = {"lr": self.lr, "betas": BETAS, "eps": EPS, "weight_decay": WEIGHT_DECAY, "amsgrad": False,
                 "foreach": None, "maximize": False, "capturable": False, "differentiable": False,
                 "fused": None, "initial_lr": self.ident.hyper.max_lr, "params": list(range(count))}
        return {"state": {}, "param_groups": [group]}

    def _scheduler(self, step: int) -> dict[str, Any]:
        """LambdaLR.state_dict (torch/optim/lr_scheduler.py), stepped once per
        optimizer step (the script's `"interval": "step"`)."""
        base = self.ident.hyper.max_lr
        return {"base_lrs": [base], "last_epoch": step, "verbose": False, "_step_count": step + 1,
                "_get_lr_called_within_step": False, "_last_lr": [self.lr], "lr_lambdas": [None]}


def _progress(total: int, current: int, started: bool = False, processed: bool = False) -> dict[str, Any]:
    """A _Progress's asdict: `total` and `current` trackers (ready and
    completed; started with _StartedTracker; processed with _ProcessedTracker)."""
    def tracker(n: int) -> dict[str, int]:
        out = {"ready": n, "completed": n}
        if started or processed:
            out["started"] = n
        if processed:
            out["processed"] = n
        return out
    return {"total": tracker(total), "current": tracker(current)}


def _scaler(step: int) -> dict[str, Any]:
    """GradScaler.state_dict after `step` steps without an overflow: the
    scale doubles every growth_interval steps."""
    grown, tracker = divmod(step, int(SCALER["growth_interval"]))
    return {"scale": SCALER["init_scale"] * 2.0 ** grown, "growth_factor": SCALER["growth_factor"],
            "backoff_factor": SCALER["backoff_factor"], "growth_interval": SCALER["growth_interval"],
            "_growth_tracker": tracker}


def logged(e: ev.Step | ev.Validation, log_every: int) -> dict[str, Any] | None:
    """The row the script's self.log calls give its logger at this event
    (None: not a logging step): `train_loss` every log_every_n_steps, and at
    a stopping step (the Timer's max_time, as the style has it) whatever the
    interval (logger_connector.py should_update_logs); `val_loss` at each
    validation; the 0-based `epoch` the logger connector adds, and `step`,
    the optimizer steps done before it (_batches_that_stepped)."""
    if isinstance(e, ev.Validation):
        return {"epoch": e.epoch - 1, "step": e.step - 1, "val_loss": float32(e.val_loss)}
    if e.step % log_every == 0 or e.stopped:
        return {"epoch": e.epoch - 1, "step": e.step - 1, "train_loss": float32(e.loss)}
    return None


def float32(value: float) -> float:
    """What `tensor.item()` of a float32 metric gives (CSVLogger's _handle_value)."""
    if not math.isfinite(value):
        return value
    return float(struct.unpack("f", struct.pack("f", value))[0])


def yaml_dump(body: dict[str, Any]) -> bytes:
    """yaml.dump of flat scalars (PyYAML's defaults: sorted keys, block
    style, floats as its representer writes them: `2.0e-05`, `0.0003`)."""
    return "".join(f"{key}: {_yaml_scalar(body[key])}\n" for key in sorted(body)).encode()


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value).lower()
        return text.replace("e", ".0e") if "." not in text and "e" in text else text
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z_./][\w./=-]*", value):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


# -- resuming ---------------------------------------------------------------
def find(path: Path) -> Resume:
    """`path` is a .ckpt, or a directory holding them (a default_root_dir, its
    lightning_logs, a version_N or its checkpoints): the one of the most steps."""
    if path.is_file():
        return _load(path)
    if not path.is_dir():
        raise CheckpointError(f"--resume {path}: no such file or directory")
    found = sorted(_checkpoints(path), key=lambda p: (_step_of(p), _version_of(p)), reverse=True)
    for candidate in found:
        try:
            return _load(candidate)
        except CheckpointError:
            continue  # not one of ours to read: the one before
    raise CheckpointError(f"--resume {path}: no epoch=<E>-step=<S>.ckpt under it")


def _checkpoints(path: Path) -> list[Path]:
    patterns = ("*.ckpt", "checkpoints/*.ckpt", "version_*/checkpoints/*.ckpt",
                f"{LOGS}/version_*/checkpoints/*.ckpt")
    return [p for pattern in patterns for p in path.glob(pattern) if _CKPT.fullmatch(p.name)]


def _step_of(path: Path) -> int:
    m = _CKPT.fullmatch(path.name)
    return int(m.group(2)) if m and m.group(2).isascii() else -1


def _version_of(path: Path) -> int:
    m = _VERSION_DIR.fullmatch(path.parent.parent.name)
    return int(m.group(1)) if m and m.group(1).isascii() else -1


class _Opaque(dict[Any, Any]):
    """What any class or function a pickle names becomes here: called
    (REDUCE), made (NEWOBJ) or given state (BUILD), it keeps only the items
    set on it (SETITEMS). So a real .ckpt (its tensors rebuilt by torch._utils,
    its state_dict an OrderedDict, its hparams an AttributeDict) reads without
    importing or running anything of its, and its plain fields (global_step,
    the module's hparams) come through."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        pass


class _PlainData(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _Opaque

    def persistent_load(self, pid: Any) -> Any:
        return _Opaque()  # a tensor's storage: not read


def _load(path: Path) -> Resume:
    try:
        data = read_regular(path, CKPT_MAX)
        mtime = os.stat(path).st_mtime
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            pkl = next(i for i in zf.infolist()
                       if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1)
            if pkl.file_size > CKPT_MAX:  # a compressed entry can say more than the file holds
                raise ValueError(pkl.filename)
            body = _PlainData(io.BytesIO(zf.read(pkl))).load()
    except OSError as exc:
        raise _bad(path, exc.strerror or type(exc).__name__) from None
    except (zipfile.BadZipFile, StopIteration, pickle.UnpicklingError, EOFError, ValueError, RecursionError,
            IndexError, TypeError, KeyError, AttributeError, MemoryError, NotImplementedError):
        raise _bad(path, "not a checkpoint torch.save wrote") from None
    if not isinstance(body, dict):
        raise _bad(path, "not a dict")
    step = body.get("global_step")
    if type(step) is not int or not 1 <= step <= MAX_STEP:
        raise _bad(path, f"global_step should be a whole number from 1 to {MAX_STEP}")
    params = body.get("hyper_parameters")
    params = params if isinstance(params, dict) else {}
    seed, model = params.get("seed"), params.get("model_name_or_path")
    seed = seed if type(seed) is int and -SEED_MAX < seed < SEED_MAX else None
    return Resume(step, mtime, path, seed, model if isinstance(model, str) else None)


def _bad(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"--resume {path}: not a Lightning checkpoint ({why})")
