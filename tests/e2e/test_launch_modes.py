"""torchrun's -m and --no-python launch lines, and port 0, run end to end
(issue 21): what the failure report, the tracebacks, the agent's INFO lines
and the workers' command lines show."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.e2e.test_simulation import clean_env


def test_a_module_fails_as_python_m_shows_it_on_the_free_port_port_0_picked(runner, tmp_path):
    job = runner.run("--seed", "5", "--speed", "0", "--output", "plain", "--nproc-per-node", "2",
                     "--rdzv-endpoint", "localhost:0", "--scenario", "rank-crash", "--fail-step", "2", "--max-steps", "4",
                     "-m", "pkg.train", env=clean_env() | {"LOGLEVEL": "INFO"}, cwd=tmp_path)
    assert job.proc.returncode == 1, job.stderr[-2000:]
    err = job.stderr
    # launcher/api.py _get_entrypoint_name: the interpreter's first argument that is no option.
    assert "pkg.train FAILED" in err
    # python -m's traceback: runpy's frames (CPython 3.11), then the module's file.
    frames = [line.split("]: ", 1)[-1] for line in err.splitlines() if "<frozen runpy>" in line or "in <module>" in line]
    assert frames[:3] == ['  File "<frozen runpy>", line 198, in _run_module_as_main',
                          '  File "<frozen runpy>", line 88, in _run_code',
                          '  File "/workspace/pkg/train.py", line 236, in <module>'], err[-3000:]
    port = re.search(r"master_addr=localhost\n.*master_port=(\d+)", err)
    assert port is not None and 0 < int(port.group(1)) < 65536, err[:3000]


def test_a_no_python_worker_runs_as_the_executable_itself(runner):
    """run.py config_from_args: `cmd = args.training_script` under --no-python."""
    pytest.importorskip("setproctitle")
    job = runner.start("--nproc", "2", "--max-steps", "1000", "--speed", "1", "--output", "jsonl",
                       "--no-python", "./train.sh", "--max_steps", "1000")
    try:
        pids = [e["pid"] for e in job.wait_for_event("rank_started", count=2)]

        def titles() -> list[bytes] | None:
            seen = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids]
            return seen if all(b"train.sh" in s for s in seen) else None  # set as the rank starts
        assert wait_until(titles, 30) == [b"./train.sh --max_steps 1000\0"] * 2
        assert [Path(f"/proc/{pid}/comm").read_text() for pid in pids] == ["train.sh\n"] * 2
    finally:
        job.kill(signal.SIGINT)
        job.wait(30)
