"""What a tool could inspect of a job carries no trace of fakerun (issue 18,
item 5): no file under the log dir or the output dir, and no rank's
/proc/<pid>/cmdline, names it; the default log dir is torch's."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from ..conftest import gone, wait_until

WORD = b"fakerun"


def traces(root: Path, *given: str) -> list[str]:
    """Every file under `root` whose name (below root) or bytes hold the
    word, any case, once what the test itself named (`given`: the runner's
    run ids, `fakerun-test-…`) is taken out."""
    def bare(data: bytes) -> bytes:
        for text in given:
            data = data.replace(text.encode(), b"")
        return data.lower()
    found = []
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root)).encode()
        if WORD in bare(name) or (path.is_file() and WORD in bare(path.read_bytes())):
            found.append(str(path.relative_to(root)))
    return found


def test_no_file_of_a_job_names_fakerun(runner, tmp_path):
    """A checkpointing job and a failing one (its error.json, its
    traceback), both teeing their streams into --log-dir."""
    out, logs = tmp_path / "out", tmp_path / "logs"
    ok = runner.run("--nproc", "2", "--max-steps", "10", "--speed", "0", "--seed", "6", "--tee", "3",
                    "--output-dir", str(out), "--log-dir", str(logs), "--output", "jsonl")
    assert ok.proc.returncode == 0, ok.stderr[-2000:]
    failed = runner.run("--nproc", "2", "--max-steps", "10", "--speed", "0", "--seed", "6", "--tee", "3",
                        "--scenario", "rank-crash", "--log-dir", str(logs), "--output", "jsonl")
    assert failed.proc.returncode == 1, failed.stderr[-2000:]
    assert list(logs.rglob("error.json")), "the failing rank wrote no error file"
    assert list(out.rglob("*.safetensors")) and list(logs.rglob("stderr.log"))
    assert traces(out) == [] and traces(logs, ok.marker, failed.marker) == []


def test_the_default_log_dir_is_torchs(runner, tmp_path):
    """Without --log-dir: $TMPDIR/torchelastic_<8>/<run id>_<8>/attempt_0/<local rank>/error.json
    (DefaultLogsSpecs, torch/distributed/elastic/multiprocessing/api.py)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    job = runner.run("--nproc", "2", "--max-steps", "2", "--speed", "0", "--output", "jsonl",
                     env={**os.environ, "TMPDIR": str(tmp)})
    assert job.proc.returncode == 0, job.stderr[-2000:]
    for started in job.of("rank_started"):
        path = Path(started["env"]["TORCHELASTIC_ERROR_FILE"])
        default, run, attempt, local, name = path.relative_to(tmp).parts
        assert default.startswith("torchelastic_") and len(default) == len("torchelastic_") + 8
        assert run.startswith(f"{job.marker}_") and len(run) == len(job.marker) + 9
        assert (attempt, local, name) == ("attempt_0", str(started["local_rank"]), "error.json")
    assert not list(tmp.glob("torchelastic_*"))  # removed at the end (torchrun leaves it)


def test_the_next_job_sweeps_the_default_log_dir_of_a_sigkilled_one(runner, tmp_path):
    """torchrun leaves its default log dir behind on every run; fakerun
    removes its own at the end, and a SIGKILLed launcher's at the next start."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"} | {"TMPDIR": str(tmp)}
    killed = runner.start("--nproc", "2", "--max-steps", "1000", "--speed", "1", "--output", "jsonl", env=env)
    pids = [e["pid"] for e in killed.wait_for_event("rank_started", count=2)]
    killed.kill(signal.SIGKILL)
    killed.wait(30)
    wait_until(lambda: all(gone(pid) for pid in pids), 30)
    (left,) = tmp.glob("torchelastic_*")
    job = runner.run("--nproc", "1", "--max-steps", "1", "--speed", "0", env=env)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert not left.exists() and not list(tmp.glob("torchelastic_*"))


@pytest.mark.parametrize(("flags", "files"), [((), []), (("--tee", "1"), ["stdout.log"]),
                                              (("--redirects", "2"), ["stderr.log"]),
                                              (("--tee", "1", "--redirects", "2"), ["stderr.log", "stdout.log"])])
def test_the_log_dir_holds_a_file_for_each_stream_torch_keeps(runner, tmp_path, flags, files):
    """DefaultLogsSpecs.reify: a folder for every local rank, a stream's file
    only when it is redirected or teed (torchrun's defaults: neither)."""
    logs = tmp_path / "logs"
    job = runner.run("--nproc", "2", "--max-steps", "2", "--speed", "0", "--log-dir", str(logs), *flags,
                     "train.py")
    assert job.proc.returncode == 0, job.stderr[-2000:]
    (run,) = logs.iterdir()
    for local in ("0", "1"):
        assert sorted(p.name for p in (run / "attempt_0" / local).iterdir()) == files
    if "stdout.log" in files:
        assert (run / "attempt_0" / "0" / "stdout.log").read_text()  # the rank's own lines


def test_a_rank_shows_a_real_workers_command_line(runner):
    """torch/distributed/run.py: `[PYTHON_EXEC or sys.executable] -u <script> <args>`."""
    pytest.importorskip("setproctitle")
    job = runner.start("--nproc", "2", "--max-steps", "1000", "--speed", "1", "--output", "jsonl",
                       "train.py", "--max_steps", "1000")
    try:
        started = job.wait_for_event("rank_started", count=2)
        pids = [e["pid"] for e in started]
        want = [sys.executable, "-u", "train.py", "--max_steps", "1000"]

        def titles() -> list[bytes] | None:
            seen = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids]
            return seen if all(b"train.py" in s for s in seen) else None  # set as the rank starts
        for pid, cmdline in zip(pids, wait_until(titles, 30), strict=True):
            assert WORD not in cmdline.lower(), cmdline
            assert cmdline == " ".join(want).encode() + b"\0"  # one argument: psutil splits it on spaces
            comm = Path(f"/proc/{pid}/comm").read_text()
            assert comm == os.path.basename(sys.executable)[:15] + "\n"
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert b"PATH=" in environ  # the environment it started with, still readable
    finally:
        job.kill(signal.SIGINT)
        job.wait(30)

