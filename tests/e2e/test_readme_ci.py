"""The README's GitHub Actions example: its scenario step's script, run as
the runner's bash runs it, passes against this checkout's fakerun."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import Runner

README = Path(__file__).resolve().parents[2] / "README.md"


def workflow() -> str:
    section = README.read_text().split("### In GitHub Actions", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def run_scripts(yaml: str) -> list[str]:
    """Each `run: |` block's script, as YAML's literal block gives it to bash."""
    scripts = []
    for match in re.finditer(r"^( *)(?:- )?run: \|\n((?:\1  .*\n|\n)+)", yaml, re.MULTILINE):
        scripts.append(textwrap.dedent(match[2]))
    return scripts


def bin_dir(tmp_path: Path) -> Path:
    """`fakerun` and `python` on PATH as a pip install would put them, for
    this interpreter and this checkout's code."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "fakerun").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fakerun "$@"\n')
    (bin_ / "fakerun").chmod(0o755)
    (bin_ / "python").symlink_to(sys.executable)
    return bin_


def test_the_readme_workflows_scenario_step_passes(runner: Runner, tmp_path: Path) -> None:
    (script,) = run_scripts(workflow())
    assert "--scenario rank-crash" in script and "python - <<'EOF'" in script
    marker = runner.new_marker()  # the job's run id, so the runner finds anything left of it
    env = {**os.environ, "PATH": f"{bin_dir(tmp_path)}:{os.environ['PATH']}", "FAKERUN_OPTS": f"--rdzv-id {marker}"}
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "root cause: rank 1 exit code 1"
