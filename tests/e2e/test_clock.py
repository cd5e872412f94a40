"""The run's clock is the wall's (issue 19): at --speed 1 every printed time
is the time it is printed at, and every printed step time the time between
two step lines; at --speed N simulated time runs N times as fast, from the
real start.

Each line of the job's stdout and stderr is timed as this test first sees
it in the job's output files (polled every 20 ms), so a line's observed time
is at most a poll late. A seeds'-layout stamp is cut to the second: the
moment it names lies within the second after it.
"""

from __future__ import annotations

import re
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime

from tests.conftest import Job

STAMP = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\]")  # the seeds' layout: [2026-01-30 14:23:15]
GLOG = re.compile(r"^[IWE](\d{4} \d\d:\d\d:\d\d\.\d{6}) ")  # torchrun's glog prefix: W0130 14:23:15.123000
STEP_HEADER = re.compile(r"\| Step (\d+)/\d+$")
STEP_TIME = re.compile(r"\bStep: (\d+\.\d\d)s\b")  # where the layout's width puts it
POLL_S = 0.02
# Little work a step: Llama-3.2-1B on eight H100s steps in ~1.1 s (seed 1),
# so several step lines come within the first 20 s (init is ~15.7 s); a run
# of 60 steps logs each one.
SHORT_STEPS = ("--nproc", "8", "--model", "Llama-3.2-1B", "--gpu", "NVIDIA H100 80GB HBM3", "--seed", "1",
               "--max-steps", "60", "--output", "plain")


@dataclass
class Seen:
    """A job's output lines, each with the wall time it first appeared."""

    job: Job
    lines: list[tuple[float, str]] = field(default_factory=list)
    _read: dict[str, int] = field(default_factory=lambda: {"out": 0, "err": 0})

    def poll(self) -> None:
        now = time.time()
        for name, path in (("out", self.job.out_path), ("err", self.job.err_path)):
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1  # whole lines only: a write may end mid-line
            if end > self._read[name]:
                text = data[self._read[name]:end].decode(errors="replace")
                self.lines += [(now, line) for line in text.splitlines()]
                self._read[name] = end

    def steps(self) -> list[tuple[float, int]]:
        """(seen, step) of each step header."""
        return [(t, int(m.group(1))) for t, line in self.lines if (m := STEP_HEADER.search(line))]


def watch(seen: list[Seen], until: float, enough: object = None) -> None:
    """Poll every job's output until `until` (wall) and, if given, `enough()`."""
    while time.time() < until or (enough is not None and not enough()):
        for s in seen:
            s.poll()
        assert time.time() < until + 60, "the jobs never showed what the test waits for"
        time.sleep(POLL_S)


def stop_and_drain(seen: Seen) -> None:
    """Ctrl+C, as a user ends the demo (torchrun's exit 1), then the rest of the lines."""
    seen.job.kill(signal.SIGINT)
    assert seen.job.wait(30) == 1
    seen.poll()


def stamped(seen: Seen) -> list[tuple[float, float, float]]:
    """(seen, earliest, latest) of every stamped line: the moment its stamp
    names lies in [earliest, latest]."""
    out = []
    for t, line in seen.lines:
        if m := STAMP.search(line):
            at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()  # the run's (local) zone
            out.append((t, at, at + 1.0))
        elif m := GLOG.search(line):
            year = datetime.fromtimestamp(t).year
            at = datetime.strptime(f"{year}{m.group(1)}", "%Y%m%d %H:%M:%S.%f").timestamp()
            out.append((t, at, at + 0.001))
    return out


def step_gaps(seen: Seen) -> list[tuple[float, int, float]]:
    """(wall seconds between two step lines, the steps they are apart, the
    later one's printed step time), for step lines with only steps between
    them (an epoch's end validates and saves in between)."""
    gaps, last, between, pending = [], None, False, None
    for t, line in seen.lines:
        if head := STEP_HEADER.search(line):
            pending, between = (t, int(head.group(1)), None if between else last), False
        elif (took := STEP_TIME.search(line)) and pending is not None:
            t, step, previous = pending
            if previous is not None:
                gaps.append((t - previous[0], step - previous[1], float(took.group(1))))
            last, pending = (t, step), None
        elif "[Validation]" in line or "[Checkpoint]" in line:
            between = True
    return gaps


def assert_step_times(gaps: list[tuple[float, int, float]], speed: float = 1.0) -> None:
    """The wall time between two step lines is the printed step time (/
    speed): exactly for consecutive steps, within the MFU's jitter (2.5 %,
    physics.mfu) for the steps between two lines logged further apart."""
    wrong = [(wall, apart, printed) for wall, apart, printed in gaps
             if abs(wall - apart * printed / speed) > 0.25 / speed + (apart - 1) * 0.08 * printed / speed]
    assert not wrong, f"step times unlike the wall time between step lines: {wrong}"


def assert_wall_clock(seen: Seen, tolerance: float = 1.0) -> None:
    lines = stamped(seen)
    assert len(lines) >= 10, seen.lines[:20]
    late = [(t, lo) for t, lo, hi in lines if not lo - tolerance <= t <= hi + tolerance]
    assert not late, f"{len(late)} stamps off the wall clock by more than {tolerance} s: {late[:5]}"


def test_at_speed_1_every_printed_time_is_the_wall_clock(runner):
    """The default demo for 20 s (whatever its draw's step time), and beside
    it a job of short steps, so that several step lines come in that time:
    every stamp within a second of the wall, every step time the wall time
    since the last step line."""
    demo = Seen(runner.start("--nproc", "8"))
    short = Seen(runner.start(*SHORT_STEPS))
    watch([demo, short], time.time() + 20, enough=lambda: len(short.steps()) >= 5)
    for job in (demo, short):
        stop_and_drain(job)
    for job in (demo, short):
        assert_wall_clock(job)  # also the launcher's teardown lines, after the Ctrl+C
    gaps = step_gaps(short)
    assert len(gaps) >= 4 and all(apart == 1 for _, apart, _ in gaps)
    assert_step_times(gaps + step_gaps(demo))


def test_at_speed_4_the_clock_runs_four_times_the_wall_from_the_real_start(runner):
    launched = time.time()
    job = Seen(runner.start(*SHORT_STEPS, "--speed", "4"))
    watch([job], launched, enough=lambda: len(job.steps()) >= 8)
    stop_and_drain(job)
    lines = stamped(job)
    # The clock starts at the launcher's start (its first glog line, to the
    # millisecond), which is the real time then: after its interpreter's.
    start = min(lo for _, lo, hi in lines if hi - lo < 0.01)
    assert launched - 0.001 <= start <= launched + 2.0
    # Every later stamp names that start plus four times the wall time
    # since: within a second, or a quarter second of wall.
    off = [(t, lo) for t, lo, hi in lines if not lo - 1.0 <= start + 4 * (t - start) <= hi + 1.0]
    assert not off and len(lines) >= 10, off[:5]
    gaps = step_gaps(job)
    assert len(gaps) >= 5 and all(apart == 1 for _, apart, _ in gaps)
    assert_step_times(gaps, speed=4)
