"""The job token stays off every command line of a running job (what `ps`
shows every user), and the warning for --token leaves JSONL intact."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from ..conftest import job_processes, wait_until

NPROC = 2
NODES = 2
START_TIMEOUT_S = 60


def carrying(text: str) -> list[tuple[int, list[str]]]:
    """Every process whose command line shows `text`."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(text in arg for arg in cmdline):
            found.append((proc.pid, cmdline))
    return found


@pytest.mark.parametrize("how", ["--token-file", "--token"])
def test_no_process_of_a_local_cluster_shows_the_token(runner, tmp_path: Path, how: str):
    token = f"s3cret-{os.urandom(8).hex()}"
    if how == "--token-file":
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        given = ("--token-file", str(token_file))
    else:
        given = ("--token", token)
    # Paced, so the job is still running when every rank is up; stopped then.
    job = runner.start("--nodes", str(NODES), "--nproc", str(NPROC), "--no-theatre", *given,
                       "--max-steps", "100000", "--output", "jsonl", new_session=True)
    launcher_and_agents = 1 + NODES
    try:
        job.wait_for_event("rank_started", count=NODES * NPROC, timeout=START_TIMEOUT_S)
        wait_until(lambda: len(job_processes(job.marker)) >= launcher_and_agents + NODES * NPROC,
                   START_TIMEOUT_S)
        shown = [(pid, cmd) for pid, cmd in carrying(token) if pid != job.proc.pid]
    finally:
        if job.proc.poll() is None:
            job.kill(signal.SIGTERM)
        code = job.wait()
    assert not shown, shown  # only a --token given to the launcher is in its own command line
    assert code == 1, job.stderr[-2000:]  # torchrun's on a stop signal
    assert token not in job.stdout
    warnings = [line for line in job.stderr.splitlines() if "warning: --token" in line]
    assert len(warnings) == (how == "--token")  # the launcher's alone: the agents got no --token


def test_the_token_warning_leaves_jsonl_on_stdout_intact(runner):
    job = runner.run("--token", "s3cret", "--nproc", "1", "--max-steps", "2", "--speed", "0",
                     "--output", "jsonl")
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert job.stderr.startswith("fakerun: warning: --token is visible to other users")
    lines = job.stdout.splitlines()
    assert lines and all(json.loads(line) for line in lines)
