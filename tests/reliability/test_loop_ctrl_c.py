"""Ctrl+C under --loop, at seeded moments of a fast loop: inside a run, and in
the gap between one run's end and the next run's ranks (a run at --speed 0
lasts ~60 ms, so the moments cover every part of a cycle). Every one ends
the loop: exit 130, the signal reported, nothing left, within the bound of
the other Ctrl+C tests. Half the jobs start as a script's `cmd &` does, with
SIGINT ignored at exec.

Then the same at exact places in the code rather than moments in time (see
signal_probe): points spread over the gap between two runs and over a run.

Issue 16 item 4 (a `kill -INT $!` lost once in 15, the loop running on) was
not reproduced inside fakerun: 3,226 exact points (every line event of the
first 1,075 of the gap, every launcher line and every first-seen line of the
rest, every 10th line event of a whole run) all ended the loop with 130. The
one window that loses it is before fakerun's code runs: `cmd &` in a script
starts the interpreter with SIGINT ignored, and a SIGINT in its start-up
(~50 ms) is discarded by the kernel; the loop then runs on until SIGTERM
(README, Limits)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import fakerun
from tests.conftest import Runner, job_processes
from tests.reliability import signal_probe
from tests.reliability.conftest import rng, seed_note, side_by_side
from tests.reliability.test_ctrl_c import EXIT_BOUND_S, EXIT_TIMEOUT_S

RUNS = 24
SIDE_BY_SIDE = 8
CYCLE_S = 0.08  # a little more than one --speed 0 run of 3 steps


# As `fakerun ... &` in a script starts it: a shell without job control starts
# a background command with SIGINT and SIGQUIT ignored (what the issue's
# `kill -INT $!` met). exec keeps the pid and the ignored dispositions.
AS_BACKGROUND_JOB = [sys.executable, "-c", "import os, signal, sys; "
                     "[signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)]; "
                     "os.execv(sys.executable, [sys.executable, '-m', 'fakerun', *sys.argv[1:]])"]


def ctrl_c_in_the_loop(runner: Runner, i: int) -> float:
    r = rng(f"loop-ctrl-c:{i}")
    args = ["--nproc", "2", "--max-steps", "3", "--speed", "0", "--loop", "--output", "jsonl",
            "--seed", str(r.randrange(10_000))]
    job = runner.start(*args, command=AS_BACKGROUND_JOB if i % 2 == 0 else None)
    job.wait_for_event("run_finished", count=r.randint(1, 3))
    time.sleep(r.uniform(0, CYCLE_S))  # the injected moment, not a wait for state
    job.kill(signal.SIGINT)  # to the launcher alone, as `kill -INT $!` sends it
    sent = time.monotonic()
    code = job.wait(EXIT_TIMEOUT_S)
    took = time.monotonic() - sent
    where = f"Ctrl+C in loop run {i} ({' '.join(args)}{', SIGINT ignored at exec' if i % 2 == 0 else ''}; " \
        f"{seed_note()})"
    assert code == 130, f"{where}: exit {code}\n{job.stderr[-2000:]}"
    assert took <= EXIT_BOUND_S, f"{where}: {took:.1f} s from SIGINT to exit"
    assert not job_processes(job.marker), f"{where}: processes left"
    assert job.of("shutdown", signal=signal.SIGINT), where
    last = job.events()[-1]
    assert (last["event"], last.get("exit_code")) == ("run_finished", 130), where
    return took


def test_ctrl_c_at_seeded_moments_of_a_fast_loop(runner: Runner) -> None:
    took = side_by_side(lambda i: ctrl_c_in_the_loop(runner, i), RUNS, SIDE_BY_SIDE)
    print(f"Ctrl+C under --loop, {RUNS} moments: median {statistics.median(took):.2f} s, "
          f"max {max(took):.2f} s")


# -- the same, at exact places in the code ------------------------------------
# A moment in time lands wherever the scheduler puts it; these land on a line.
# signal_probe runs the launcher in its own process under a trace function and
# sends the signal there: at every line of the code between two runs (the
# launcher's run and cycle, a job's start, loop, finish and teardown, the fork)
# that the gap reaches, the first time it does after a run's last rank is
# reaped (a hundred-odd lines, as calibration finds them); at drawn
# line events of that gap (to the next run's first poll, calibrated first:
# ~7,900 line events today) and of a whole run; and one point each for the
# other stop signals.
POINTS_IN_GAP = 12
POINTS_IN_RUN = 8
OTHER_STOPS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
PROBE_TIMEOUT_S = 120.0


def probe(*argv: str) -> list[dict]:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(fakerun.__file__).parents[1]), str(root)])}
    done = subprocess.run([sys.executable, "-m", "tests.reliability.signal_probe", *argv], cwd=root, env=env,
                          capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_stop_signal_at_every_line_between_runs_and_drawn_points() -> None:
    calibration = {o["marker"]: o for o in probe("--calibrate")}
    lengths = {marker: o["gap"] for marker, o in calibration.items()}
    assert all(lengths.values()), lengths
    lines = calibration["reaped"]["reached"]  # each line of the code between runs that the gap reaches
    assert set(lines) <= set(signal_probe.lines_between_runs()) and len(lines) >= 60, lines
    r, sigint = rng("loop-signal-points"), int(signal.SIGINT)
    points = [[0, line, "reaped", sigint] for line in lines]
    points += [[r.randint(0, 1), r.randrange(lengths["reaped"] + 20), "reaped", sigint] for _ in range(POINTS_IN_GAP)]
    points += [[r.randint(0, 1), r.randrange(lengths["loop"]), "loop", sigint] for _ in range(POINTS_IN_RUN)]
    points += [[0, r.randrange(lengths["reaped"]), "reaped", int(sig)] for sig in OTHER_STOPS]
    halves = [points[0::2], points[1::2]]
    outcomes = [o for half in side_by_side(lambda i: probe(json.dumps(halves[i])), 2) for o in half]
    assert len(outcomes) == len(points)
    bad = [o for o in outcomes if not signal_probe.Outcome(**o).ok()]
    assert not bad, f"{len(bad)} of {len(points)} points ({seed_note()}):\n" + "\n".join(map(json.dumps, bad))
    print(f"stop signal at {len(points)} points of the loop's code ({len(lines)} lines between runs; gap "
          f"{lengths['reaped']} line events, run {lengths['loop']}): every one ended the loop")
