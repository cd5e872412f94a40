"""A LightningCLI script's arguments (`train.py fit --trainer.max_steps 500
--model.learning_rate 3e-4 --ckpt_path ...`), read as the Trainer takes them
(Lightning-AI/pytorch-lightning src/lightning/pytorch/trainer/trainer.py,
Trainer.__init__, at 2.4.0, 2.5.0 and 2.6.5).

Every `--trainer.<name>` must be one of Trainer.__init__'s parameters
(TRAINER_ARGS): LightningCLI's jsonargparse parser stops
the script on any other (`Unrecognized arguments: ...`), and on a value of
the wrong type; so do we, in one line (exit 2). `--model.*` and `--data.*`
belong to the script's own classes: only the learning rate is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fakerun.config.strategy_args import flag
from fakerun.errors import UsageError
from fakerun.world import styles
from fakerun.world.jobs import Cadence

# Trainer.__init__'s parameters (the union over the pinned releases: which one
# the script runs is drawn after its arguments are read).
TRAINER_ARGS = frozenset(name for name, _ in (*styles.TRAINER, *styles.TRAINER_2_6))
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
NONE = ("null", "none", "~")
LEARNING_RATES = ("model.learning_rate", "model.lr")
LOG_EVERY_DEFAULT = 50  # Trainer(log_every_n_steps=50)


class LightningArgsError(UsageError):
    """An argument LightningCLI's parser (or the Trainer) refuses; one line."""


@dataclass(frozen=True)
class TrainerArgs:
    """What the launch line sets of the Trainer (None: the script's own choice)."""

    max_steps: int | None = None
    max_epochs: int | None = None
    grad_accum: int | None = None
    log_every: int | None = None
    lr: float | None = None
    root_dir: Path | None = None
    ckpt_path: str | None = None
    devices: int | None = None
    num_nodes: int | None = None
    cadence: Cadence | None = None

    def check_world(self, nproc: int, nnodes: int) -> None:
        """TorchElasticEnvironment.validate_settings (fabric/plugins/environments/
        torchelastic.py): devices x num_nodes must be torchrun's world size; every
        rank's Trainer raises this ValueError otherwise."""
        devices = nproc if self.devices is None else self.devices
        nodes = nnodes if self.num_nodes is None else self.num_nodes
        if devices * nodes != nproc * nnodes:
            raise LightningArgsError(
                "training script argument --trainer.devices/--trainer.num_nodes: You set "
                f"`devices={devices}` and `num_nodes={nodes}` in Lightning, but the product "
                f"({devices} * {nodes}) does not match the world size ({nproc * nnodes}). "
                "(every rank's Trainer raises it)")


def is_cli(args: list[str]) -> bool:
    """A LightningCLI launch line: `fit` first, or its namespaced arguments."""
    return styles.lightning_cli(args)


def read(args: list[str]) -> TrainerArgs:
    _refuse_unknown(args)
    _check_precision(args)
    max_steps = _int(args, "trainer.max_steps")
    max_epochs = _int(args, "trainer.max_epochs")
    return TrainerArgs(
        max_steps=max_steps if max_steps is not None and max_steps > 0 else None,  # -1: no limit
        max_epochs=max_epochs if max_epochs is not None and max_epochs > 0 else None,
        grad_accum=_int(args, "trainer.accumulate_grad_batches", least=1),
        log_every=_int(args, "trainer.log_every_n_steps", least=1),
        lr=next((v for v in (_float(args, k) for k in LEARNING_RATES) if v is not None), None),
        root_dir=Path(root) if (root := flag(args, "trainer.default_root_dir")) else None,
        ckpt_path=flag(args, "ckpt_path") or None,
        devices=_devices(args), num_nodes=_int(args, "trainer.num_nodes", least=1),
        cadence=cadence(args))


def cadence(args: list[str]) -> Cadence:
    """When the Trainer validates and the default ModelCheckpoint saves.
    trainer.py / training_epoch_loop.py _should_check_val_fx: an int
    val_check_interval counts training batches, a float a share of the
    epoch's (1.0: its last batch), on every check_val_every_n_epoch-th epoch;
    limit_val_batches 0 turns validation (and the sanity check) off.
    model_checkpoint.py _should_save_on_train_epoch_end: with validation
    once an epoch (or none), the checkpoint is saved in on_train_epoch_end
    (also when max_steps ends an epoch early); else after each validation."""
    interval = _number(args, "trainer.val_check_interval")
    every_n = _int(args, "trainer.check_val_every_n_epoch", least=1, nullable=True)
    every_n = 1 if flag(args, "trainer.check_val_every_n_epoch") is None else every_n
    limit = _number(args, "trainer.limit_val_batches")
    validates = limit is None or limit > 0
    share = limit if isinstance(limit, float) and limit != 1.0 else None
    once_an_epoch = interval is None or (isinstance(interval, float) and interval == 1.0)
    on_epoch_end = not validates or (once_an_epoch and every_n == 1)
    checkpointing = _bool(args, "trainer.enable_checkpointing")
    saves = checkpointing is None or checkpointing
    return Cadence(
        eval_micro=interval if isinstance(interval, int) else None,
        eval_share=interval if isinstance(interval, float) and interval != 1.0 else None,
        eval_epochs=(every_n or 1) if once_an_epoch else None, eval_at_end=False,
        eval_batches=limit if isinstance(limit, int) else (0 if not validates else None),
        eval_batches_share=share,
        save_steps=None if saves else 0, save_epochs=1 if saves and on_epoch_end else None,
        save_after_eval=saves and not on_epoch_end, save_at_end=saves and on_epoch_end)


def _refuse_unknown(args: list[str]) -> None:
    for k, token in enumerate(args):
        name = token.partition("=")[0].removeprefix("--trainer.") if token.startswith("--trainer.") else None
        if name is not None and name.split(".")[0].rstrip("+") not in TRAINER_ARGS:
            bare = "=" in token or k + 1 >= len(args) or args[k + 1].startswith("--")
            value = [] if bare else [args[k + 1]]
            shown = " ".join([token, *value])
            raise LightningArgsError(f"training script argument {token.partition('=')[0]}: Unrecognized "
                                     f"arguments: {shown} (LightningCLI's parser refuses it)")


def _check_precision(args: list[str]) -> None:
    """Trainer(precision=...)'s Literal type: refused otherwise, as jsonargparse does."""
    value = flag(args, "trainer.precision")
    if value is not None and value not in (*styles.LIGHTNING_PRECISIONS, *styles.LIGHTNING_PRECISION_ALIASES):
        raise _refused("trainer.precision", value, "one of " + ", ".join(
            (*styles.LIGHTNING_PRECISIONS, *styles.LIGHTNING_PRECISION_ALIASES)))


def _refused(key: str, value: str, want: str) -> LightningArgsError:
    shown = value if len(value) <= 40 else value[:20] + "..." + value[-8:]
    return LightningArgsError(f"training script argument --{key} {shown!r}: expected {want} "
                              "(LightningCLI's parser refuses it)")


def _int(args: list[str], key: str, least: int | None = None, nullable: bool = False) -> int | None:
    value = flag(args, key)
    if value is None or (nullable and value.lower() in NONE):
        return None
    try:
        number = int(value)
    except ValueError:
        raise _refused(key, value, "a whole number") from None
    if least is not None and number < least:
        raise _refused(key, value, f"a whole number of at least {least}")
    return number


def _float(args: list[str], key: str) -> float | None:
    value = flag(args, key)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise _refused(key, value, "a number") from None
    if not number >= 0 or number == float("inf"):  # torch.optim refuses a negative rate; NaN fails too
        raise _refused(key, value, "a finite number, at least 0")
    return number


def _number(args: list[str], key: str) -> int | float | None:
    """Optional[Union[int, float]]: `1` is one batch, `1.0` the whole epoch."""
    value = flag(args, key)
    if value is None or value.lower() in NONE:
        return None
    try:
        number: int | float = int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            raise _refused(key, value, "an int or a float") from None
    if not 0 <= number < float("inf") or (isinstance(number, float) and number > 1.0):
        raise _refused(key, value, "a count of batches, or a share of them from 0.0 to 1.0")
    return number


def _bool(args: list[str], key: str) -> bool | None:
    value = flag(args, key)
    if value is None:
        return None
    if value.lower() in TRUE or value == "":
        return True
    if value.lower() in FALSE:
        return False
    raise _refused(key, value, "true or false")


def _devices(args: list[str]) -> int | None:
    """An int, -1 or "auto" (every GPU of the node: none to check), or a list of indices."""
    value = flag(args, "trainer.devices")
    if value is None or value.lower() in ("auto", "-1"):
        return None
    indices = [v for v in value.strip("[]").split(",") if v.strip()]
    if value.startswith("[") or len(indices) > 1:
        if not all(v.strip().isdigit() for v in indices):
            raise _refused("trainer.devices", value, "a count, a list of GPU indices or 'auto'")
        return len(indices)
    return _int(args, "trainer.devices", least=1)
