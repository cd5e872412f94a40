"""The version has one source, src/fakerun/version.py: the build reads it,
the command and the package report it, and the changelog agrees with it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import fakerun
from fakerun.cli.main import main
from fakerun.version import __version__

ROOT = Path(__file__).resolve().parents[2]


def test_the_build_reads_the_version_from_version_py() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fakerun.version.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_the_command_and_the_package_report_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"fakerun {__version__}\n"
    assert fakerun.__version__ == __version__


def test_the_changelogs_newest_release_is_this_version() -> None:
    """Keep a Changelog's headings: [Unreleased] first, then each release
    with its date, the newest being the version this tree reports. None
    released yet: the tree still says the first version."""
    headings = re.findall(r"^## (.*)$", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings[0] == "[Unreleased]"
    released = [m[1] for h in headings[1:] if (m := re.fullmatch(r"\[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}", h))]
    assert len(released) == len(headings) - 1, headings
    assert (released[0] if released else "0.1.0") == __version__
