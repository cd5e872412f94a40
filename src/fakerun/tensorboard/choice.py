"""Whether a run writes TensorBoard event files, whose writer, on which rank,
and which option asked: each framework's own switch, or fakerun's
`--tensorboard DIR`, which turns the style's writer on with DIR as its
directory (the HF Trainer's logging_dir, Lightning's logger save_dir: the
Trainer's default_root_dir, Megatron's --tensorboard-dir, the default and
DeepSpeed styles' own writer).

The simulated environment has tensorboard installed exactly when a run asks
for event files: then the Trainer's `report_to="all"` (4.x's default) takes
it, Lightning's default logger is a TensorBoardLogger (no CSVLogger warning,
no metrics.csv), and Megatron's `--tensorboard-dir` finds
torch.utils.tensorboard. Otherwise nothing is installed, as the logs have
always said (Lightning's CSVLogger warning, training_args.bin's empty
report_to)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fakerun.checkpoint.training_args import report_to
from fakerun.errors import UsageError
from fakerun.world.megatron import launch_args

EXTRA = "pip install 'fakerun[tensorboard]'"
OWN = "own"  # fakerun's own set of tags: the default and DeepSpeed styles


@dataclass(frozen=True)
class Board:
    """The run's event writer: `kind` the framework's (hf, megatron,
    lightning, own), `rank` the global rank whose process writes, `logdir`
    the directory fakerun or the launch line fixes ("" for the framework's
    default, decided as the run goes), `option` what asked for it."""

    kind: str
    rank: int
    logdir: str
    option: str


def choose(style: str, script_args: tuple[str, ...], tensorboard: Path | None, world: int) -> Board | None:
    given = str(tensorboard) if tensorboard is not None else ""
    option = "--tensorboard"
    if style == "hf":
        if not given and "tensorboard" not in report_to(script_args):
            return None
        return Board("hf", 0, given, option if given else "--report_to tensorboard")
    if style == "megatron":
        # training/global_vars.py _set_tensorboard_writer: `args.rank == (args.world_size - 1)`.
        own = launch_args(script_args).get("tensorboard_dir")
        if not given and not isinstance(own, str):
            return None
        return Board("megatron", world - 1, given or str(own), option if given else "--tensorboard-dir")
    if not given:
        return None
    return Board("lightning" if style == "lightning" else OWN, 0, given, option)


def output_dir(style: str, given: Path | None, tensorboard: Path | None) -> Path | None:
    """The run's output directory. Lightning's default logger, a
    TensorBoardLogger once tensorboard is installed, saves under the Trainer's
    default_root_dir, and its version directory holds the checkpoints too
    (ModelCheckpoint's dirpath follows the first logger's save_dir): there
    --tensorboard DIR is that root, and another --output-dir contradicts it."""
    if style != "lightning" or tensorboard is None:
        return given
    if given is not None and given != tensorboard:
        raise UsageError(f"--tensorboard {tensorboard}: under Lightning it is the Trainer's default_root_dir "
                         f"(its logger's and checkpoints' root), and --output-dir says {given}")
    return tensorboard


def require(board: Board | None) -> None:
    """Event files need the tensorboard extra (its protobufs and record
    writer): asked for without it, one line before any rank starts. The
    import is the real one (no look-up that an installed but broken package
    would pass)."""
    if board is None:
        return
    try:
        import tensorboard.compat.proto.event_pb2  # noqa: F401
    except ImportError:
        raise UsageError(f"{board.option} needs the tensorboard extra: {EXTRA}") from None
