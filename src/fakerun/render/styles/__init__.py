"""One module per style: the training script's own output in a framework's
conventions (--style). The torchrun layer (render/torchrun) wraps whichever
is chosen: launcher lines, NCCL lines and rank prefixes are torchrun's
whatever the script."""

from __future__ import annotations

import importlib
from datetime import tzinfo
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fakerun.events import Event, RunStarted
    from fakerun.render.lines import Line
    from fakerun.world.styles import Style


class ScriptRenderer(Protocol):
    """The training script's own lines for each event, and its banner."""

    barrier_first: bool  # its first collective is a barrier() with no device_ids
    leaves_process_group: bool  # it exits without destroy_process_group()

    def launched(self, launch: RunStarted) -> None:
        """The run's launch (its port and command line), before any event."""

    def lines(self, event: Event) -> list[Line]: ...

    def banner(self, when: float) -> list[Line]:
        """What the script prints once it knows the run it is (RunIdentity)."""


# Per style: the module (in this package) and class rendering the script's
# output; a style not named here is a plain PyTorch script's.
RENDERERS = {"torchrun": ("pytorch", "PytorchLines"), "hf": ("hf", "HfLines"),
             "megatron": ("megatron", "MegatronLines"), "deepspeed": ("deepspeed", "DeepSpeedLines"),
             "lightning": ("lightning", "LightningLines")}


def renderer_for(style: Style, width: int, tz: tzinfo | None) -> ScriptRenderer:
    """The renderer of the training script's own output, in `style`'s
    conventions (its module imported only when a run uses it)."""
    module, cls = RENDERERS[style.name]
    return getattr(importlib.import_module(f"fakerun.render.styles.{module}"), cls)(width, tz)
