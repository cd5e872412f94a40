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
