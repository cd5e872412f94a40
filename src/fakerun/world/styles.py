"""The output dialect of a run: `--style NAME[@VERSION]`.

A style pins the framework's version, and with it the whole software set
(PyTorch, NCCL, CUDA, driver: one row of data/versions.txt), so every line of
the run agrees on what it is running. The framework also holds the training
state its own way (world/memory.py: ZeRO, DDP, Megatron's TP x PP), which the
job's memory plan follows; the rest of the simulation is the same whatever
the style.
"""

from __future__ import annotations

from dataclasses import dataclass

from fakerun.errors import UsageError
from fakerun.world import catalog

DEFAULT = "torchrun"
# Per style: the versions.txt column naming its framework version, and the
# version a bare name means.
FRAMEWORKS: dict[str, tuple[str, str]] = {
    "torchrun": ("torch", ""), "hf": ("transformers", "4.46"), "megatron": ("megatron", "0.10"),
    "deepspeed": ("deepspeed", "0.14"), "lightning": ("lightning", "2.5"),
}


# What a LightningCLI script's launch line holds: its `fit` subcommand, or
# arguments under its namespaces (src/lightning/pytorch/cli.py).
LIGHTNING_CLI = ("--trainer.", "--model.", "--data.", "--ckpt_path", "--seed_everything", "--optimizer",
                 "--lr_scheduler")


def lightning_cli(args: list[str] | tuple[str, ...]) -> bool:
    """The script parses its arguments with LightningCLI."""
    return args[:1] in (["fit"], ("fit",)) or any(a.startswith(LIGHTNING_CLI) for a in args)


class StyleError(UsageError):
    """A --style we do not have; the message is one line."""


@dataclass(frozen=True)
class Style:
    name: str = DEFAULT
    version: str = ""  # as asked for: "4.46", "5"; "" = any (torchrun) or the default

    @property
    def pinned(self) -> bool:
        """The style fixes the software set (else the seed draws it)."""
        return bool(self.version or FRAMEWORKS[self.name][1])

    def versions(self) -> tuple[catalog.Versions, ...]:
        """The software sets this style may run with (one, for a pinned framework)."""
        column, default = FRAMEWORKS[self.name]
        wanted = self.version or default
        rows = catalog.versions()
        if not wanted:
            return tuple(r for r in rows if r.drawn == "yes")
        chosen = tuple(r for r in rows if _matches(getattr(r, column), wanted))
        return chosen[:1]

    def __str__(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


def parse(text: str) -> Style:
    name, _, version = text.partition("@")
    if name not in FRAMEWORKS:
        raise StyleError(f"--style must be one of {', '.join(FRAMEWORKS)} (optionally @VERSION), "
                         f"got {text!r}")
    style = Style(name, version)
    if version and not style.versions():
        column = FRAMEWORKS[name][0]
        known = ", ".join(sorted({getattr(r, column) for r in catalog.versions()}))
        raise StyleError(f"--style {text}: no {column} {version} here; known: {known}")
    return style


def _matches(full: str, wanted: str) -> bool:
    """"4.46" names 4.46.3, "5" names 5.0.0: whole dotted components only."""
    return full.split(".")[:len(wanted.split("."))] == wanted.split(".")
