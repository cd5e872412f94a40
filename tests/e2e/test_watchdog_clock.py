"""nccl-timeout at --speed 0 with NCCL's default 600 s watchdog: the wait
passes in simulated time, so the run ends at once (issue 21)."""

from __future__ import annotations

import re
from datetime import datetime

STAMP = re.compile(r"^\[default\d\]:\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] .*Step \d+/", re.M)
WATCHDOG = re.compile(r"\[E\d{3,4} (\d\d:\d\d:\d\d)\.\d{9} ProcessGroupNCCL\.cpp:607\] \[Rank 0\] Watchdog caught "
                      r"collective operation timeout: .*Timeout\(ms\)=600000\) ran for (\d+) milliseconds")


def test_nccl_timeout_unpaced_fires_in_simulated_time(runner):
    # On main this waited the wall's 600 s in silence: the timeout below fails it.
    job = runner.run("--nproc", "2", "--max-steps", "8", "--fail-step", "4", "--scenario", "nccl-timeout",
                     "--speed", "0", "--seed", "3", "--start-time", "2026-01-01T00:00:00", "--output", "plain",
                     timeout=30)
    assert job.proc.returncode == 1
    out = job.stdout + job.stderr
    last_step = datetime.fromisoformat(STAMP.findall(job.stdout)[-1])
    hms, ran_for = WATCHDOG.search(out).groups()  # glog's stamp has no year; the run stays on its first day
    fired = datetime.fromisoformat(f"{last_step.date()} {hms}")
    assert int(ran_for) > 600_000
    assert 600 <= (fired - last_step).total_seconds() < 700  # the printed clock shows the wait
    assert "  exitcode  : -6 (pid: " in job.stderr
