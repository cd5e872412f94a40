"""Ctrl+C at any moment: SIGINT to the job's process group, as a terminal
sends it, at seeded-random moments of launch, init, training, checkpoint and
shutdown. Every run ends with exit 1 (torchrun's: its SignalException goes
uncaught), no traceback of ours, and no process left; the ranks' own
`[rankN]: … KeyboardInterrupt` tracebacks are the act, as torch's workers
print them.

Ten runs per moment (50 in all), every fifth one a `--nodes 2` cluster, side
by side: the jobs mostly sleep (they are paced), so running them side by
side keeps the tier's wall time down without changing what each one sees.
In two lanes: the twenty aimed at the checkpoint and the export wait
seconds for their phase, asleep, all at once; meanwhile the thirty others
(a start-up's CPU, then a moment within a second or two) go SHORT_AT_ONCE
at a time.
From the signal to the exit takes at most EXIT_BOUND_S: less than the
shutdown grace after which a rank deaf to SIGINT would be SIGKILLed (under
--nodes, NODES_EXIT_BOUND_S: an agent may still be starting its interpreter
when the signal comes, and takes it once its handlers are in place).
"""

from __future__ import annotations

import collections
import math
import re
import shlex
import shutil
import signal
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fakerun.checkpoint import layouts
from fakerun.cli.main import to_config
from fakerun.cli.parser import build_parser
from fakerun.world import physics as sim
from tests.conftest import FAKERUN, SHORT_JOB, Runner, job_processes, wait_until
from tests.reliability.conftest import rng, seed_note, side_by_side
from tests.theatre.test_tmux import DONE, FOOTER, Tmux

RUNS_PER_MOMENT = 10
SHORT_AT_ONCE = 6
EXIT_TIMEOUT_S = 15.0  # SIGINT to exit, including the ranks' teardown
EXIT_BOUND_S = 4.0
NODES_EXIT_BOUND_S = 6.0
# torchrun's own SignalException traceback and the ranks' `[rankN]: `
# KeyboardInterrupt are part of the act; a frame of fakerun's code, or a
# KeyboardInterrupt of a process of ours, anywhere in the output (JSONL
# escapes the quotes) is a bug.
OUR_TRACEBACK = re.compile(r'File \\?"[^"]*/fakerun/|(?<!\]: )KeyboardInterrupt')
OWN_INTERRUPT = re.compile(r"(?<!\]: )KeyboardInterrupt")  # not a rank's `[rankN]: KeyboardInterrupt`
EXIT_INTERNAL = 70  # a rank's own crash (rank.py), never a simulated fault


@dataclass(frozen=True)
class Moment:
    """Wait for `event` (with `fields`), then a random delay in [0, `delay`) s."""

    event: str
    delay: float
    max_steps: int
    fields: tuple[tuple[str, Any], ...] = ()
    checkpoints: bool = False
    speed: float = 16.0


# --speed 1 is real time: a job of short phases (Llama-3.2-1B on H100s, any
# seed) at --speed 16: init ~0.95 s, a step 0.06-1.2 s, the checkpoint ~0.6 s
# (written at the end of its phase); the export's 3.6 s at --speed 4, 0.9 s
# (after one step: up to ~20 s of wall before it at that speed).
# Delays stay inside the phase they aim at: at most half its wall time, as
# the job's physics gives it (phase_wall), the rest for seeing its event.
PACED = (*SHORT_JOB, "--speed", "16")
MOMENTS = {
    "launch": Moment("run_started", 0.05, 8),  # forking, hello, rendezvous
    "init": Moment("rendezvous", 0.85, 8),
    "training": Moment("step", 0.6, 10, (("step", 1),)),
    "checkpoint": Moment("phase", 1.3, 2, (("name", "checkpoint"),), checkpoints=True),
    "shutdown": Moment("phase", 1.1, 1, (("name", "export"),), checkpoints=True, speed=4.0),
}


def phase_wall(args: list[str], moment: str) -> float:
    """Wall seconds of the phase `moment` aims at in this job: its simulated
    time (physics) over the job's --speed (inf: no bound but the moment's)."""
    config = to_config(build_parser().parse_args(args), environ={})
    ident = config.identity
    simulated = {"init": sum(sim.init_seconds(ident).values()),
                 "training": (config.steps - 1) * sim.compute_seconds(ident, 1),
                 "checkpoint": sim.checkpoint_seconds(ident), "shutdown": sim.export_seconds(ident)}
    return simulated.get(moment, math.inf) / config.speed


def landed_in(events: list[dict[str, Any]]) -> str:
    """The phase the launcher was in when it took the signal."""
    phase = "launch"
    for e in events:
        if e["event"] == "shutdown":
            return phase
        if e["event"] == "phase":
            phase = e["name"]
    return "after the run"


def ctrl_c_once(runner: Runner, name: str, i: int) -> tuple[str, float]:
    moment, r = MOMENTS[name], rng(f"ctrl-c:{name}:{i}")
    nodes = ["--nodes", "2", "--no-theatre", "--nproc", "2"] if i % 5 == 4 else ["--nproc", str(r.randint(2, 4))]
    args = [*nodes, *SHORT_JOB, "--speed", f"{moment.speed:g}", "--max-steps", str(moment.max_steps),
            "--seed", str(r.randrange(10_000)), "--output", "jsonl"]
    out = runner.tmp_path / f"{name}-{i}"
    if moment.checkpoints:
        args += ["--output-dir", str(out)]
    job = runner.start(*args, new_session=True)
    job.wait_for_event(moment.event, timeout=60, **dict(moment.fields))
    time.sleep(r.uniform(0, min(moment.delay, 0.5 * phase_wall(args, name))))  # the injected moment
    job.killpg(signal.SIGINT)
    sent = time.monotonic()
    where = f"Ctrl+C in {name} run {i} ({' '.join(args)}; {seed_note()})"
    code = job.wait(EXIT_TIMEOUT_S)
    took = time.monotonic() - sent
    assert code == 1, f"{where}: exit {code}\n{job.stderr[-3000:]}"
    assert took <= (NODES_EXIT_BOUND_S if "--nodes" in args else EXIT_BOUND_S), \
        f"{where}: {took:.1f} s from SIGINT to exit"
    assert not job_processes(job.marker), f"{where}: processes left"
    output = job.stdout + job.stderr
    assert not OUR_TRACEBACK.search(output), f"{where}:\n{output[-3000:]}"
    events = job.events()
    assert not job.of("rank_exited", exitcode=EXIT_INTERNAL), where
    assert events[-1]["event"] == "run_finished", where
    assert {e["exit_code"] for e in job.of("run_finished")} == {1}, where  # every node's
    assert job.of("shutdown", signal=2), where
    assert_whole_checkpoints(out)
    return landed_in(events), took


def assert_whole_checkpoints(out: Path) -> None:
    """Interrupted or not, every checkpoint saved is complete (the default
    style's layout: checkpoint/torchrun.py), and no temporary directory of a
    save is left behind."""
    if not out.exists():
        return
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], list(out.iterdir())
    for saved in out.glob("checkpoint-*"):
        assert layouts.find("torchrun", saved).step == int(saved.name.split("-")[1])


def test_ctrl_c_at_50_random_moments(runner):
    runs = [(name, i) for name in reversed(MOMENTS) for i in range(RUNS_PER_MOMENT)]  # longest first
    lanes = [[run for run in runs if MOMENTS[run[0]].checkpoints],
             [run for run in runs if not MOMENTS[run[0]].checkpoints]]
    at_once = [len(lanes[0]), SHORT_AT_ONCE]
    results = side_by_side(lambda lane: side_by_side(lambda k: ctrl_c_once(runner, *lanes[lane][k]),
                                                     len(lanes[lane]), at_once[lane]), len(lanes))
    runs, done = [run for lane in lanes for run in lane], [r for lane in results for r in lane]
    landed = [(name, phase) for (name, _), (phase, _) in zip(runs, done, strict=True)]
    print(f"Ctrl+C to exit: median {statistics.median(t for _, t in done):.2f} s, "
          f"max {max(t for _, t in done):.2f} s")
    aimed = {"launch": {"launch", "init"}, "init": {"init"}, "training": {"train"},
             "checkpoint": {"checkpoint"}, "shutdown": {"export", "summary"}}
    for name in MOMENTS:
        phases = sorted(phase for aimed_at, phase in landed if aimed_at == name)
        print(f"Ctrl+C aimed at {name}: landed in {phases}")
        # Timing noise may push a few out of their phase, but most must land where aimed.
        assert sum(phase in aimed[name] for phase in phases) >= RUNS_PER_MOMENT // 2, (name, phases)


def test_ctrl_c_as_the_job_exits(runner):
    """In the last milliseconds, after the run's summary: either the launcher
    takes the signal (1, as torchrun), or the run is already over and it exits 0, or
    it dies of the signal on its way out (a shell shows 130 for that too).
    Never a traceback, never a process left."""
    def once(i: int) -> int:
        r = rng(f"ctrl-c:exit:{i}")
        nodes = ["--nodes", "2", "--no-theatre"] if i % 4 == 3 else []
        job = runner.start(*nodes, "--nproc", "2", "--speed", "0", "--max-steps", "2", "--output", "jsonl",
                           new_session=True)
        job.wait_for_event("summary")
        time.sleep(r.uniform(0, 0.05))
        job.killpg(signal.SIGINT)
        code = job.wait(EXIT_TIMEOUT_S)
        where = f"Ctrl+C as run {i} {' '.join(nodes)} exits ({seed_note()})"
        assert not job_processes(job.marker), where
        output = job.stdout + job.stderr
        assert not OUR_TRACEBACK.search(output), f"{where}:\n{output[-3000:]}"
        finished = {e["exit_code"] for e in job.of("run_finished")}
        if code == 1:
            assert finished <= {0, 1}, where  # a node may have finished before it took the signal
        else:
            assert code in (0, -signal.SIGINT) and finished == {0}, (where, code)
        return code

    codes = side_by_side(once, 8, 4)
    print(f"Ctrl+C as the job exits: exit codes {sorted(codes)}")


def test_ctrl_c_while_fakerun_starts(runner):
    """In its first 0.3 s: Python starting, fakerun importing, parsing, forking.
    Exit 130 with nothing printed by us while fakerun starts (a
    KeyboardInterrupt before the launcher's handlers, as torchrun's own
    start), 1 once the launcher takes it (as torchrun). Before any of
    fakerun's code runs, the interpreter is on its own (see pythons_own)."""
    def once(i: int) -> str:
        r = rng(f"ctrl-c:start:{i}")
        nodes = ["--nodes", "2", "--no-theatre"] if i % 4 == 3 else []
        job = runner.start(*nodes, "--nproc", "2", *PACED, "--max-steps", "8", "--output", "jsonl",
                           new_session=True)
        time.sleep(r.uniform(0, 0.3))  # the injected moment
        job.killpg(signal.SIGINT)
        code = job.wait(EXIT_TIMEOUT_S)
        where = f"Ctrl+C as run {i} {' '.join(nodes)} starts ({seed_note()})"
        assert not job_processes(job.marker), where
        output = job.stdout + job.stderr
        if code in (1, -signal.SIGINT) and pythons_own(output):
            return "python's start"
        assert not OUR_TRACEBACK.search(output), f"{where}:\n{output[-3000:]}"
        started = bool(job.of("run_started"))
        assert code == 1 if started else code in (1, 130), (where, code, output[-3000:])
        return "fakerun's start" if not started else "the run"

    landed = side_by_side(once, 12, 4)
    print(f"Ctrl+C while starting: landed in {dict(collections.Counter(landed))}")
    assert landed.count("python's start") <= len(landed) // 2, landed  # most land in fakerun's time


def pythons_own(output: str) -> bool:
    """CPython's answer to a SIGINT before any of fakerun's code runs: killed
    outright with nothing printed (a shell shows 130 for that too), or a
    KeyboardInterrupt through its own start-up alone (importing `site`, or
    `runpy` looking for `fakerun`: "Fatal Python error: init_import_site",
    "Could not import runpy module"), no frame of fakerun's in it."""
    frames = [line for line in output.splitlines() if line.lstrip().startswith('File "')]
    return not output or (OWN_INTERRUPT.search(output) is not None and not any("/fakerun/" in f for f in frames))


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_ctrl_c_in_a_terminal_gives_it_back(runner):
    """The rich view in tmux, Ctrl+C typed at a random moment of training:
    exit 1 (torchrun's), the cursor visible again, the live footer gone."""
    marker = runner.new_marker()
    cmd = shlex.join([*FAKERUN, "--rdzv-id", marker, "--nproc", "3", "--max-steps", "100000", *PACED])
    term = Tmux(100, 30)
    term.start(f"env -u NO_COLOR TERM=xterm-256color {cmd}; echo {DONE} rc=$?; sleep 120")
    try:
        wait_until(lambda: any(FOOTER.search(x) for x in term.screen()), 60)
        assert not term.cursor_visible()  # the live view hides it while it draws
        time.sleep(rng("ctrl-c:terminal").uniform(0, 1.5))  # the injected moment
        term.cmd("send-keys", "-t", "t", "C-c")
        wait_until(lambda: any(DONE in x for x in term.screen()), EXIT_TIMEOUT_S)
        screen = term.screen(joined=True)
        assert any(x.strip().endswith(f"{DONE} rc=1") for x in screen), screen
        # The terminal's own processes (tmux, the shell) carry the marker too.
        assert not [p for p in job_processes(marker)
                    if DONE not in " ".join(p.info["cmdline"]) and not p.name().startswith("tmux")]
        assert term.cursor_visible()
        before = [x for x in screen[:next(i for i, x in enumerate(screen) if DONE in x)] if x.strip()]
        assert not any(FOOTER.search(x) for x in before), "the footer must be gone after Ctrl+C"
        assert "got signal: 2" in before[-1], before[-3:]  # torchrun's last words, then the prompt
    finally:
        term.kill()
