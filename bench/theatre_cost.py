"""What the theatre costs to leave running.

`fakerun --nodes 2 --nproc 8` (speed 1) in a 200x50 terminal (an outer tmux
server standing in for the user's terminal emulator): CPU over --window
seconds of real time, as % of one core, of the whole theatre: 2 x 8 ranks,
2 agents, the nvidia-smi dashboard, the theatre's own tmux server and its
attach client (target <= 5 %). The outer terminal is reported apart: a real
terminal emulator would pay that, not fakerun. Beside it, in the same rounds,
a baseline: `fakerun --nproc 16` (one node, the rich view) in the same
terminal, and the ratio theatre / baseline.

Medians over --rounds interleaved rounds, (min-max) beside them.
Run: python bench/theatre_cost.py [--rounds 3] [--window 30] [--json]
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from run_cost import summary, window_args  # bench/ is the script's own directory

FAKERUN = [sys.executable, "-m", "fakerun"]
SETTLE_S = 8.0  # start-up, rendezvous and init are not what we measure
READY_TIMEOUT_S = 60.0
ROLES = ("ranks", "agents", "theatre", "dashboard", "tmux", "other")


def argv_of(proc: psutil.Process | None) -> list[str]:
    try:
        return proc.cmdline() if proc is not None else []
    except psutil.Error:  # gone meanwhile
        return []


def role_of(proc: psutil.Process, marker: str) -> str:
    """Ranks are forked from their agent (or launcher), so they share its argv."""
    argv = argv_of(proc)
    if argv[:1] and Path(argv[0]).name.startswith("tmux"):
        return "tmux"
    if "smi" in argv:
        return "dashboard"
    if marker not in " ".join(argv):
        return "other"
    if "--nodes" in argv:
        return "theatre"  # `fakerun --nodes`: it runs the show and waits
    try:
        parent = proc.parent()
    except psutil.Error:
        parent = None
    return "ranks" if argv_of(parent) == argv else "agents"


def processes(marker: str) -> list[psutil.Process]:
    """The job's processes: those naming the marker, and all their descendants."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if marker in " ".join(proc.info["cmdline"] or []):
            found[proc.pid] = proc
            try:
                found.update({c.pid: c for c in proc.children(recursive=True)})
            except psutil.Error:
                continue
    return list(found.values())


def cpu_of(procs: list[psutil.Process]) -> dict[int, float]:
    times = {}
    for proc in procs:
        try:
            t = proc.cpu_times()
            times[proc.pid] = t.user + t.system
        except psutil.Error:
            continue
    return times


@contextmanager
def terminal(command: list[str], marker: str) -> Iterator[psutil.Process]:
    """`command` in a 200x50 outer tmux; yields the outer server's process."""
    socket = f"fakerun-bench-{marker[-8:]}"
    tmpdir = tempfile.mkdtemp(prefix="fb-")  # short: the theatre's socket lives here
    shell = f"env TERM=xterm-256color TMPDIR={shlex.quote(tmpdir)} {shlex.join(command)}; sleep 600"
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    subprocess.run(["tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "200",
                    "-y", "50", shell], check=True, timeout=10, env=env)
    pid = int(subprocess.run(["tmux", "-L", socket, "display-message", "-p", "#{pid}"], capture_output=True,
                             text=True, check=True, timeout=10, env=env).stdout)
    try:
        yield psutil.Process(pid)
    finally:
        subprocess.run(["tmux", "-L", socket, "send-keys", "-t", "t", "C-c"], timeout=10, env=env)
        deadline = time.monotonic() + 30
        while processes(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=10, env=env)
        for proc in processes(marker):
            proc.kill()
        shutil.rmtree(tmpdir, ignore_errors=True)


def measure(args: list[str], window: float) -> dict[str, float]:
    """% of one core per role over `window` s, once the job is training."""
    marker = f"fakerun-bench-{uuid.uuid4().hex[:12]}"
    with terminal([*FAKERUN, "--rdzv-id", marker, "--max-steps", "100000", *args], marker) as outer:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len([p for p in processes(marker) if "fakerun" in " ".join(argv_of(p))]) < 16:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the job did not start within {READY_TIMEOUT_S:g} s")
            time.sleep(0.5)
        time.sleep(SETTLE_S)
        procs = processes(marker)
        roles = {p.pid: role_of(p, marker) for p in procs}
        before, outer_before, t0 = cpu_of(procs), cpu_of([outer]), time.monotonic()
        time.sleep(window)
        after, outer_after, elapsed = cpu_of(procs), cpu_of([outer]), time.monotonic() - t0
    share = dict.fromkeys(ROLES, 0.0)
    for pid, spent in after.items():
        if pid in before:
            share[roles[pid]] += 100.0 * (spent - before[pid]) / elapsed
    share["total"] = sum(share[r] for r in ROLES)
    outer_spent = outer_after.get(outer.pid, 0.0) - outer_before.get(outer.pid, 0.0)
    share["outer terminal"] = 100.0 * outer_spent / elapsed
    share["processes"] = len(procs)
    return share


def main() -> int:
    ns = window_args(__doc__)
    if shutil.which("tmux") is None:
        print("theatre_cost: tmux is not installed", file=sys.stderr)
        return 2
    runs: dict[str, list[dict[str, float]]] = {"theatre": [], "baseline": []}
    for _ in range(ns.rounds):
        runs["theatre"].append(measure(["--nodes", "2", "--nproc", "8"], ns.window))
        runs["baseline"].append(measure(["--nproc", "16"], ns.window))
    result = {name: {k: summary([r[k] for r in rs]) for k in rs[0]} for name, rs in runs.items()}
    result["ratio"] = summary([t["total"] / b["total"] for t, b in zip(runs["theatre"], runs["baseline"],
                                                                        strict=True)])
    if ns.json:
        print(json.dumps(result))
        return 0
    print(f"CPU over {ns.window:g} s of real time, % of one core ({ns.rounds} rounds, median (min-max)):")
    for name, label in (("theatre", "--nodes 2 --nproc 8 (theatre)"), ("baseline", "--nproc 16 (one pane)")):
        r = result[name]
        parts = ", ".join(f"{k} {r[k]['median']:.2f}" for k in ROLES if r[k]["max"] > 0)
        print(f"  {label:<32} total {r['total']['median']:5.2f} % ({r['total']['min']:.2f}-"
              f"{r['total']['max']:.2f})  [{parts}; {int(r['processes']['median'])} processes]")
        print(f"  {'':<32} outer terminal {r['outer terminal']['median']:.2f} %")
    verdict = "PASS" if result["theatre"]["total"]["median"] <= 5.0 else "MISS"
    print(f"  theatre / baseline = {result['ratio']['median']:.2f}x; target theatre <= 5 %: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
