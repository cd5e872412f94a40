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


def test_a_run_path_worker_fails_as_a_spawn_child_of_torchrun(runner, tmp_path):
    """torchrun --run-path (a torch 2.13 capture, tests/unit/test_run_path_failure.py):
    the failing worker prints nothing of its own, spawn's join terminates the other,
    _poll logs the failure with spawn's traceback, then the ChildFailedError report."""
    job = runner.run("--seed", "5", "--speed", "0", "--output", "plain", "--nproc-per-node", "2",
                     "--scenario", "rank-crash", "--fail-step", "1", "--max-steps", "2",
                     "--run-path", "train.py", env=clean_env(), cwd=tmp_path)
    assert job.proc.returncode == 1, job.stderr[-2000:]
    err = job.stderr.splitlines()
    assert not [line for line in err if line.startswith("[rank")], job.stderr[-3000:]
    logged = [(line[0], line.split("] ", 1)[1]) for line in err if re.match(r"[WE]\d{4} ", line)][4:]
    messages = [text for _, text in logged]
    assert re.fullmatch(r"Terminating process \d+ via signal SIGTERM", messages[0]), messages
    assert re.fullmatch(r"failed \(exitcode: 1\) local_rank: 1 \(pid: \d+\) of fn: run_script_path "
                        r"\(start_method: spawn\)", messages[1]), messages
    poll = messages[2:]
    assert poll[:7] == ["Traceback (most recent call last):", poll[1], "    self._pc.join(-1)", poll[3],
                        "    raise ProcessRaisedException(msg, error_index, failed_process.pid)",
                        "torch.multiprocessing.spawn.ProcessRaisedException: ", ""]
    assert poll[7:9] == ["-- Process 1 terminated with the following error:", "Traceback (most recent call last):"]
    runpy = [text for text in poll if "<frozen runpy>" in text or "in <module>" in text]
    assert [t.split(", in ")[1] for t in runpy] == ["run_path", "_run_module_code", "_run_code", "<module>"]
    assert runpy[-1].startswith('  File "train.py", line ')
    assert "run_script_path FAILED" in job.stderr
    box = job.stderr.split("Root Cause (first observed failure):")[1]
    assert "  File \"train.py\", line " in box and "in run_script_path" in box
