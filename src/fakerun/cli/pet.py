"""torchrun's options read from the environment: each takes `PET_<DEST>`
(its dest upper-cased, e.g. PET_NPROC_PER_NODE) as its default, as torchrun's
`env` and `check_env` actions do (torch/distributed/argparse_util.py, the
same in every pinned torch), so a flag on the command line wins over it.
This is how a Kubeflow PyTorchJob's pods tell torchrun their place in the job.

One pass over the built parser, not an action per option: any torchrun
option the parser has (whoever adds it) reads its variable, if data/
torchrun_env.txt lists its dest as torchrun's. fakerun's own options read no
PET_ variable (torchrun has none for them): $FAKERUN_OPTS is theirs."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fakerun.errors import UsageError

PREFIX = "PET_"
FLAG = "check_env"  # the action of torchrun's flags; "env" for options that take a value


@dataclass(frozen=True)
class TorchrunOption:
    dest: str
    action: str  # env or check_env
    versions: tuple[str, ...]  # the torch versions whose torchrun has it

    @property
    def variable(self) -> str:
        return PREFIX + self.dest.upper()


@cache
def torchrun_options() -> dict[str, TorchrunOption]:
    """data/torchrun_env.txt: torchrun's options that read PET_, by dest."""
    text = resources.files("fakerun").joinpath("data", "torchrun_env.txt").read_text(encoding="utf-8")
    options = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            dest, action, versions = (field.strip() for field in line.split("|"))
            options[dest] = TorchrunOption(dest, action, tuple(versions.split()))
    return options


def read_environment(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> list[str]:
    """Each torchrun option's PET_ variable (when set), as the command line
    that would give it, to go before the user's own: argparse keeps the last
    value, so a flag typed wins, and the option's own action runs (a default
    would skip it: `--nnodes MIN:MAX` fills two fields). A bad value is one
    usage line naming the variable (torchrun's check_env raises a traceback
    on a flag's)."""
    known = torchrun_options()
    given: list[str] = []
    for action in parser._actions:  # argparse has no public list of its actions
        option = known.get(action.dest)
        if option is None or not action.option_strings or option.variable not in environ:
            continue
        value, flag = environ[option.variable], max(action.option_strings, key=len)
        if action.nargs == 0:
            given += [flag] if _flag(option.variable, value, parser) else []
        else:
            _check(parser, action, option.variable, value)
            given.append(f"{flag}={value}")
    return given


def _flag(variable: str, value: str, parser: argparse.ArgumentParser) -> bool:
    """check_env: `bool(int(value))`, so "1", " 2 " and "-1" set the flag,
    "0" does not; "", "true" or "yes" are not numbers."""
    try:
        return bool(int(value))
    except ValueError:
        parser.error(f"${variable}={value!r}: expected a number (0: off, else on), as torchrun reads it")


def _check(parser: argparse.ArgumentParser, action: argparse.Action, variable: str, value: str) -> None:
    """The value as the option's type and choices take it, or one usage line
    that names the variable rather than the flag nobody typed."""
    try:
        converted = action.type(value) if callable(action.type) else value
    except (argparse.ArgumentTypeError, UsageError) as exc:
        parser.error(f"${variable}: {str(exc).strip()}")
    except (TypeError, ValueError):  # a plain type such as int, as argparse words it
        parser.error(f"${variable}: invalid {getattr(action.type, '__name__', '')} value: {value!r}")
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(repr, action.choices))
        parser.error(f"${variable}: invalid choice {value!r} (choose from {choices})")
