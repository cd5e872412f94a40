"""--scenario NAME or FILE: an entry of the scenario catalog, or a TOML file
of the user's, read as other user files are (never blocking, a regular file,
64 KiB at most)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from fakerun.config.paths import short
from fakerun.system.files import read_regular
from fakerun.world.scenarios import Scenario, ScenarioError, build, catalog

__all__ = ["ScenarioError", "resolve"]

MAX_FILE_BYTES = 64 * 1024  # a scenario file is a few lines; a larger one is not one (nor read whole)


def resolve(name_or_path: str) -> Scenario:
    """A catalog name, or a path to a TOML file describing one scenario."""
    if name_or_path in catalog():
        return catalog()[name_or_path]
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or _there(path):
        try:  # a FIFO hung read_text for ever; /dev/null read as an empty scenario
            body = tomllib.loads(read_regular(path, MAX_FILE_BYTES).decode("utf-8"))
        except OSError as exc:
            raise ScenarioError(f"--scenario {short(name_or_path)}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"--scenario {short(name_or_path)}: {exc}") from None
        return build(path.stem, body, name_or_path)
    raise ScenarioError(f"unknown scenario {short(name_or_path)!r}; see --list-scenarios")


def _there(path: Path) -> bool:
    """Something is at `path`, or a stat says why it cannot tell (a name
    too long, a symlink loop): then the read says so."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


