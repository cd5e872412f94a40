"""Text templates imitating other tools, loaded from package data."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any


@cache
def load(name: str) -> dict[str, Any]:
    """Parse data/<name>.toml once; a malformed file names itself."""
    source = resources.files("fakerun").joinpath("data", f"{name}.toml")
    try:
        return tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RuntimeError(f"fakerun/data/{name}.toml: {exc}") from None


def optional(name: str) -> dict[str, Any]:
    """data/<name>.toml, or nothing when there is no such file."""
    if not resources.files("fakerun").joinpath("data", f"{name}.toml").is_file():
        return {}
    return load(name)


# data/torchrun.toml's tables that differ by torch version.
TORCHRUN_TABLES = ("lines", "frames", "logger", "loglevel", "text", "failures")


@cache
def torchrun(torch: str | None) -> dict[str, dict[str, Any]]:
    """What torchrun of torch `torch` ("2.5.1") prints: data/torchrun.toml's
    tables (captured from 2.13), each overridden by that version's
    [torch."2.5"] table (chosen by major.minor). None, or a version with no
    table, prints 2.13's. The launcher's views and the ranks (whose
    tracebacks pass through torch's own frames) read the same tables."""
    data = load("torchrun")
    own = data["torch"].get(minor(torch), {})
    return {name: {**data[name], **own.get(name, {})} for name in TORCHRUN_TABLES}


def minor(torch: str | None) -> str:
    """The MAJOR.MINOR key of a torch version's tables ("2.5.1" -> "2.5")."""
    return ".".join((torch or "").split(".")[:2])
