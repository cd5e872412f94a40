"""What the run's launch says to Megatron: the script's own flags, where it
saves and what it loads, its cadences and its checkpoint format; and the
lines load_checkpoint prints (megatron/training/checkpointing.py at each
pinned core_v0.X.0: _load_base_checkpoint, load_checkpoint)."""

from __future__ import annotations

import dataclasses
import posixpath
from dataclasses import dataclass
from typing import Any

from fakerun import events as ev
from fakerun.render.styles.megatron_args import Cadence
from fakerun.world import physics as sim
from fakerun.world.identity import Identity
from fakerun.world.megatron import DIST, TRACKER, CheckpointFormat, checkpoint_format, is_launch, launch_args
from fakerun.world.megatron_shapes import Shapes

CHECKPOINT_VERSION = 3.0  # generate_state_dict's state_dict['checkpoint_version']
LOAD_BANDWIDTH = 2.5e9  # bytes/s a node reads a checkpoint at
LOAD_SHARE = 0.8  # of the model and optimizer's set-up, at most, the load takes


@dataclass(frozen=True)
class Launch:
    given: dict[str, Any]  # the launch line's flags (launch_args)
    cadence: Cadence
    save: str  # --save: the run's checkpoint root
    fmt: CheckpointFormat
    load: str | None  # --load (or where --resume found the checkpoint)
    resumed_step: int  # 0: nothing loaded
    launched: bool = False  # a Megatron launch line (else a run fakerun drew)

    @classmethod
    def of(cls, ident: Identity, started: ev.RunStarted | None) -> Launch:
        """fakerun's --output-dir is --save (over the launch line's own, as
        fakerun's options win: the files go there), and its --resume --load
        where the launch line has none."""
        given = launch_args(started.args) if started else {}
        if started is not None and started.tensorboard:  # fakerun's --tensorboard DIR is --tensorboard-dir
            given = {**given, "tensorboard_dir": started.tensorboard}
        launched = started is not None and is_launch(started.entrypoint, given)
        out = started.output_dir if started else ""  # fakerun's --output-dir wins, as where the files go
        save = str(out or given.get("save") or f"checkpoints/{ident.slug}")
        resumed = started.resumed_from if started else ""
        load = given.get("load") or (_root(resumed, save) if resumed else None)
        fmt = checkpoint_format(ident.versions.megatron, given, ident.parallel.zero >= 1)
        return cls(given, Cadence.of(ident.hyper, launched), save, fmt, str(load) if load else None,
                   started.resumed_step if started else 0, launched)

    def shapes(self, ident: Identity, data: dict[str, Any]) -> Shapes:
        """The model as Megatron builds it, with sequence parallelism as the
        launch line asks (--sequence-parallel, off unless given)."""
        flag = self.given.get("sequence_parallel") is True if self.launched else None
        return dataclasses.replace(Shapes.of(ident, data), sequence_parallel_flag=flag)

    def args(self, version: str) -> dict[str, Any]:
        """Its flags in the arguments block, with the save and load directories
        and the checkpoint format as validate_args leaves them (0.8 has no
        --ckpt-format: --use-dist-ckpt and --dist-ckpt-format)."""
        fmt = {"use_dist_ckpt": self.fmt.dist, "ckpt_fully_parallel_save": self.fmt.fully_parallel}
        if int(version.split(".")[1]) < 9:
            fmt["dist_ckpt_format"] = self.fmt.name if self.fmt.dist else DIST
        else:
            fmt["ckpt_format"] = self.fmt.name
        return {**self.given, "save": self.save, **({"load": self.load} if self.load else {}), **fmt}


def _root(path: str, save: str) -> str:
    """The --load directory of the checkpoint the run resumes: the one holding
    iter_NNNNNNN (and the tracker), or the save directory a restart's
    checkpoint is in; else the path --resume gave."""
    parent, _, tail = path.rstrip("/").rpartition("/")
    parent = parent or "."
    return parent if tail.startswith("iter_") or parent == save.rstrip("/") else path.rstrip("/")


def load_seconds(ident: Identity, launch: Launch, setup_s: float) -> float:
    """The load-checkpoint timer: the checkpoint's bytes read at a node's
    bandwidth (physics' save bandwidth), within the model and optimizer's
    set-up that it is part of; nothing loaded, nothing read."""
    if not launch.resumed_step:
        return 0.0
    read_s = sum(sim.checkpoint_bytes(ident).values()) / (LOAD_BANDWIDTH * ident.nnodes)
    return min(read_s, LOAD_SHARE * setup_s)


def load_lines(launch: Launch, ident: Identity) -> list[str]:
    """What rank 0 prints while loading (--load). No checkpoint there: the
    warning, and a start from random. 0.8 and 0.9 say the model-parallel
    ranks from 0 (`[ t 0, p 0 ]`), 0.10 on as `[ t 1/2, p 1/2 ]`."""
    minor = int(ident.versions.megatron.split(".")[1])
    if launch.load is None:
        return []
    if not launch.resumed_step:
        space = " " if minor < 9 else ""  # 0.8's format string ends in a space
        return [f"WARNING: could not find the metadata file {posixpath.join(launch.load, TRACKER)}{space}",
                "    will not load any checkpoints and will start from random"]
    p, step = ident.parallel, launch.resumed_step
    infix = "distributed " if launch.fmt.dist else ""
    where = "[ t 0, p 0 ]" if minor < 10 else f"[ t 1/{p.tp}, p 1/{p.pp} ]"
    return [f" loading {infix}checkpoint from {launch.load} at iteration {step}",
            f" checkpoint version {CHECKPOINT_VERSION}",
            f"  successfully loaded checkpoint from {launch.load} {where} at iteration {step}"]
