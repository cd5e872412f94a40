"""The settings that decide what the real stack prints: torchrun's flags
(--tee, --redirects, --local-ranks-filter) and the environment variables
torch and NCCL read (NCCL_DEBUG, ...). A line the real stack prints only
under a setting is printed exactly when that setting is in effect.

fakerun's demo (`fakerun --nproc 8`, no training script) is itself expressed
as such settings, a job launched with `--tee 3` whose environment sets
NCCL_DEBUG=INFO: the ranks' environment shows them, and the user's own flags
and environment override them. A drop-in launch (a training script named, or
fakerun invoked as `torchrun`) starts from torchrun's defaults instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# What the demo sets where the user did not: the environment a job launched
# to show its NCCL set-up would have, and torchrun's --tee 3.
DEMO_ENV = (("NCCL_DEBUG", "INFO"),)
DEMO_TEE = 3
# The variables of the user's environment that change what torch or NCCL
# print (and so what fakerun prints): each is read once, here.
READ = ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS")


@dataclass(frozen=True)
class Flags:
    """torchrun's output flags as given on the command line (None: not given)."""

    tee: int | None = None
    redirects: int | None = None
    local_ranks: frozenset[int] | None = None


@dataclass(frozen=True)
class Settings:
    """The effective settings of one node's job."""

    tee: int = 0  # torchrun's Std: the rank streams shown with the prefix
    redirects: int = 0  # the rank streams kept off the console (log files only) unless teed
    local_ranks: frozenset[int] | None = None  # only these local ranks on the console
    environ: tuple[tuple[str, str], ...] = ()  # the READ variables as the ranks see them
    added: tuple[tuple[str, str], ...] = ()  # the demo's defaults, set in the ranks' environment

    def env(self, name: str) -> str | None:
        """A variable of the ranks' environment, as torch or NCCL reads it."""
        return dict(self.environ).get(name)

    def rank_env(self) -> dict[str, str]:
        """What the ranks' environment gets beyond the user's own."""
        return dict(self.added)


def resolve(flags: Flags, environ: Mapping[str, str], drop_in: bool) -> Settings:
    """The user's flags and environment first, then (unless `drop_in`) the demo's defaults."""
    added = () if drop_in else tuple((k, v) for k, v in DEMO_ENV if k not in environ)
    seen = {k: environ[k] for k in READ if k in environ} | dict(added)
    tee = flags.tee if flags.tee is not None else (0 if drop_in else DEMO_TEE)
    return Settings(tee, flags.redirects or 0, flags.local_ranks, tuple(sorted(seen.items())), added)


def demo() -> Settings:
    """The bare `fakerun` demo's settings in an environment that sets none."""
    return resolve(Flags(), {}, drop_in=False)
