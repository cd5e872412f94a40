"""Shared helpers: run fakerun as a subprocess and prove nothing is left.

Every job gets a unique `--rdzv-id` marker. Ranks are forked, so they keep
the launcher's argv: scanning for the marker finds the job's whole process
tree, whatever re-parented what.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

FAKERUN = [sys.executable, "-m", "fakerun"]
DEFAULT_TIMEOUT = 60.0
# A job of short phases whatever the seed draws: Llama-3.2-1B on H100s (~15 s
# of start-up, a step of 1-19 s of simulated time by seed and ranks, a
# checkpoint ~10 s, the export ~4 s); with seed 0 a step of 2.2 s on 4 ranks.
# --speed 1 is real time (a drawn job's step takes 10-60 s), so a test that
# needs a run going mid-way runs one of these at the --speed that gives it the
# wall time it needs.
SHORT_JOB = ("--model", "Llama-3.2-1B", "--gpu", "NVIDIA H100 80GB HBM3")
SHORT_STEPS = ("--seed", "0", *SHORT_JOB)


def job_processes(*markers: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line carries one of
    `markers`, or whose stdout or stderr is a file whose path does: a rank
    shows a real worker's command line (`python -u train.py ...`), and
    writes to files under `<run id>_<random>/` (in the log dir, or in the
    private run dir for the streams torchrun would not keep), the run id
    being the marker (--rdzv-id).

    Every e2e test scans twice or more (the runner's teardown, polls for a
    job gone): read from /proc, the status only of the processes that match
    (psutil.process_iter(["cmdline", "status"]) took 46 ms a scan of 122
    processes on the shared test machine, this 16 ms). Each one found
    carries `info` as process_iter's do: its cmdline and status."""
    found = []
    for pid in psutil.pids():
        cmdline = _cmdline(pid)
        if cmdline is None:
            continue
        seen = " ".join([*cmdline, *_std_targets(pid)])
        if not any(marker in seen for marker in markers):
            continue
        try:
            proc = psutil.Process(pid)
            status = proc.status()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if status != psutil.STATUS_ZOMBIE:
            proc.info = {"cmdline": cmdline, "status": status}
            found.append(proc)
    return found


def _cmdline(pid: int) -> list[str] | None:
    """As psutil reads it (psutil/_pslinux.py, Process.cmdline: the
    arguments split at NULs; a process that rewrote its title, at spaces);
    None if gone or unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            data = f.read().decode(errors="surrogateescape")
    except OSError:
        return None
    if not data:  # a zombie, a kernel thread
        return []
    sep = "\0" if data.endswith("\0") else " "
    args = data.removesuffix(sep).split(sep)
    return data.removesuffix(sep).split(" ") if sep == "\0" and len(args) == 1 and " " in data else args


def _std_targets(pid: int) -> list[str]:
    targets = []
    for fd in (1, 2):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # gone, not ours, or closed
            continue
    return targets


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its parent counts)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Poll `predicate` until it is truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def parse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@dataclass
class Job:
    """A fakerun launched in the background, output going to files."""

    proc: subprocess.Popen
    marker: str
    out_path: Path
    err_path: Path

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The events out so far. While the job runs, a last line without its
        newline is still being written (a buffered write can end mid-line):
        not an event yet. Once it has ended, every line counts."""
        running = self.proc.poll() is None
        text = self.stdout
        return parse_events(text[:text.rfind("\n") + 1] if running else text)

    def of(self, name: str, /, **fields: Any) -> list[dict[str, Any]]:
        """Events named `name` whose `fields` have the given values."""
        return [e for e in self.events()
                if e["event"] == name and all(e.get(k) == v for k, v in fields.items())]

    def wait_for_event(self, name: str, /, count: int = 1, timeout: float = 30,
                       **fields: Any) -> list[dict[str, Any]]:
        """Poll until `count` such events are out; fail at once if the job
        ended without them."""
        def seen() -> list[dict[str, Any]] | None:
            ended = self.proc.poll() is not None
            found = self.of(name, **fields)
            if len(found) >= count:
                return found
            if ended:
                pytest.fail(f"the job ended ({self.proc.returncode}) without {count} {name} {fields}: "
                            f"{self.stderr[-2000:]}")
            return None
        return wait_until(seen, timeout)

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def killpg(self, sig: int) -> None:
        """To the launcher's whole process group, as a terminal sends Ctrl+C
        (the job must have been started with `new_session=True`)."""
        os.killpg(self.proc.pid, sig)


class Runner:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.markers: list[str] = []
        self.jobs: list[Job] = []

    def new_marker(self) -> str:
        marker = f"fakerun-test-{uuid.uuid4().hex[:12]}"
        self.markers.append(marker)
        return marker

    def start(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
              new_session: bool = False, command: list[str] | None = None, script_marker: bool = False,
              marker: str | None = None, **popen: Any) -> Job:
        """`new_session`: the launcher leads a process group of its own, as a
        shell's foreground job does. `command` replaces `python -m fakerun`;
        `popen` goes to Popen as it is (e.g. a preexec_fn setting rlimits).
        `script_marker`: the marker is the training script's argument (after
        `args`, which then name no script), not --rdzv-id, for a run id that
        must come from elsewhere ($SLURM_JOB_ID). `marker`: one new_marker()
        gave, for nodes of one job, whose launch lines must agree."""
        marker = marker or self.new_marker()  # unique: threads may start jobs side by side
        name = f"{marker}-{len(self.jobs)}"  # nodes of one job share the marker, not their output
        out, err = self.tmp_path / f"{name}.out", self.tmp_path / f"{name}.err"
        argv = [*args, "train.py", f"--test-marker={marker}"] if script_marker else ["--rdzv-id", marker, *args]
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen([*(command or FAKERUN), *argv], stdout=fo, stderr=fe,
                                    stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                    start_new_session=new_session, **popen)
        job = Job(proc, marker, out, err)
        self.jobs.append(job)
        return job

    def run(self, *args: str, timeout: float = DEFAULT_TIMEOUT, **start: Any) -> Job:
        job = self.start(*args, **start)
        try:
            job.wait(timeout)
        except subprocess.TimeoutExpired:
            job.proc.kill()
            raise
        return job

    def leftovers(self) -> list[psutil.Process]:
        return job_processes(*self.markers) if self.markers else []

    def cleanup(self, left: list[psutil.Process] | None = None) -> None:
        """Kills what is left of the jobs. `left`: what a scan made after
        every launcher had exited found (no launcher is then left to start
        anything: not scanned again)."""
        for job in self.jobs:
            if job.proc.poll() is None:
                job.proc.kill()
                job.proc.wait(10)
        for proc in self.leftovers() if left is None else left:
            proc.send_signal(signal.SIGKILL)


@pytest.fixture
def runner(tmp_path: Path):
    """Runs fakerun jobs; after the test, asserts none of their processes
    is left (and kills any that are, so one leak cannot poison the rest)."""
    r = Runner(tmp_path)
    yield r
    left = None
    try:
        for job in r.jobs:
            if job.proc.poll() is None:
                pytest.fail(f"launcher {job.proc.pid} still running after the test")
        # The launcher reaps every rank before it exits: no grace period here.
        left = r.leftovers()
        assert not left, f"processes of the job left behind: {left}"
    finally:
        r.cleanup(left)

