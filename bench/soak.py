"""Soak: does a long real-time --loop run stay flat, and does Ctrl+C still end it?

`fakerun --nodes 2 --nproc 8 --loop --max-steps 10 --no-theatre --output plain
--model Llama-3.2-1B --gpu "NVIDIA H100 80GB HBM3"`
(speed 1, stdout to /dev/null) for --duration seconds of real time (default
600): run after run on one simulated cluster, each with its 16 fresh ranks.
Every second, the RSS and CPU time of every process of the job: the
`--nodes` launcher, its two agents (which live through every run), and the
ranks of the run under way. Then SIGINT to the job's process group, as a
terminal's Ctrl+C, and its exit code (130) and any process left (0).

Reported per process: RSS at the start of its window, at its end, its
maximum, the growth (end - start, max - start); for the launcher and the
agents, which live through every run, least-squares slopes in MiB/min over
the window and over its last half (warm-up, such as caches filling,
flattens out; a leak keeps its slope); the ranks of each run as one row
(the worst of them), and across the runs the slope of each whole run's
most RSS (a rank lives one run, ~35 s, rising as it loads, evaluates and
saves: a slope within its life says where those fell, not whether it
leaks; what a leak in the agent passes on by fork makes each run's ranks
larger than the last's). The job's CPU as % of one core (median of the
1-second samples, and over the whole window). The window starts SETTLE_S
after the first run's ranks are up: start-up is not what a soak measures.
The launcher's and the agents' open file descriptors and threads too: the
most in the window's first half and in its last (a socket, file or thread
left behind by each run shows as more in the last).
Targets: no process grows by more than FLAT_MIB; neither the launcher nor
an agent at more than FLAT_SLOPE MiB/min over the last half, nor the runs'
ranks from run to run; no launcher or agent holds more descriptors or
threads in the last half than in the first; CPU <= 5 % of one core (the
theatre's target for 2 x 8 ranks, bench/theatre_cost.py); after Ctrl+C,
exit 130 and no process left.

RSS is what the soak judges, and it is a fair judge since the agents give
their freed heap back between runs (fakerun/system/heap.py): before that,
node 0's agent grew ~2 MiB in 600 s of glibc's free memory while its live
heap (Python's allocated blocks, malloc's bytes in use) grew by tens of KB.
Should RSS move again, look at the live heap before the code: a probe of
gc.collect(), mallinfo2() and sys._debugmallocstats() at each run's end.

Run: python bench/soak.py [--duration 600] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import psutil

from run_cost import summary  # bench/ is the script's own directory
from theatre_cost import argv_of, cpu_of, processes

FAKERUN = [sys.executable, "-m", "fakerun"]
# A small model on H100s: at real time (--speed 1) a drawn two-node job may be a
# big model whose weights take minutes to load and save, two runs in the
# window; a soak wants run after run (each of these ~35 s).
SOAKED = ["--nodes", "2", "--nproc", "8", "--loop", "--max-steps", "10", "--no-theatre", "--output", "plain",
          "--model", "Llama-3.2-1B", "--gpu", "NVIDIA H100 80GB HBM3"]
RANKS = 16
SETTLE_S = 10.0
RUN_GAP_S = 5.0
READY_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 60.0
FLAT_MIB = 2.0
FLAT_SLOPE = 0.1  # MiB/min: 6 MiB an hour
CPU_TARGET = 5.0
MIB = 1024 * 1024


@dataclass
class Track:
    """One process over the window: (seconds, RSS MiB) samples."""

    pid: int
    role: str
    label: str
    samples: list[tuple[float, float]] = field(default_factory=list)
    handles: list[tuple[int, int]] = field(default_factory=list)  # (fds, threads), launcher and agents

    def figures(self) -> dict[str, float | int | str | list[int] | None]:
        rss = [r for _, r in self.samples]
        half = len(self.handles) // 2
        return {"role": self.role, "label": self.label, "pid": self.pid, "samples": len(rss),
                "first_s": round(self.samples[0][0], 1),
                "lifetime_s": round(self.samples[-1][0] - self.samples[0][0], 1),
                "start_mib": rss[0], "end_mib": rss[-1], "max_mib": max(rss),
                "growth_mib": rss[-1] - rss[0], "max_growth_mib": max(rss) - rss[0],
                "slope_mib_per_min": slope(self.samples),
                # warm-up (caches filling) flattens out; a leak keeps its slope
                "last_half_slope_mib_per_min": slope(self.samples[len(self.samples) // 2:]),
                "handles_first_half": _most(self.handles[:half]),
                "handles_last_half": _most(self.handles[half:])}


def _most(handles: list[tuple[int, int]]) -> list[int] | None:
    """The most descriptors, and the most threads, of these samples."""
    return [max(f for f, _ in handles), max(t for _, t in handles)] if handles else None


def slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares MiB per minute."""
    minutes, rss = [t / 60 for t, _ in samples], [r for _, r in samples]
    return statistics.linear_regression(minutes, rss).slope if len(set(minutes)) > 1 else 0.0


def tree(root: psutil.Process) -> dict[int, tuple[psutil.Process, str, str]]:
    """The job's processes by pid, with role and label: the launcher, its
    agents (--nodes), and the ranks each forked."""
    found = {root.pid: (root, "launcher", "launcher")}
    try:
        children = root.children()
    except psutil.Error:
        return found
    for child in children:
        try:
            grandchildren = child.children()
        except psutil.Error:
            continue
        argv = argv_of(child)
        if "--node-rank" in argv:  # an agent, and the ranks it forked
            node = int(argv[argv.index("--node-rank") + 1])
            found[child.pid] = (child, "agents", f"agent {node}")
            found.update(_ranks(grandchildren, node * len(grandchildren)))
    if not any(role == "agents" for _, role, _ in found.values()):  # one node: the launcher forks them
        found.update(_ranks(children, 0))
    return found


def _ranks(procs: list[psutil.Process], first: int) -> dict[int, tuple[psutil.Process, str, str]]:
    """Forked one after the other in local-rank order: their pids are in that order too."""
    in_order = sorted(procs, key=lambda p: p.pid)
    return {p.pid: (p, "ranks", f"rank {first + i}") for i, p in enumerate(in_order)}


def rss_of(proc: psutil.Process) -> float | None:
    try:
        return proc.memory_info().rss / MIB
    except psutil.Error:
        return None


def handles_of(proc: psutil.Process) -> tuple[int, int] | None:
    try:
        return proc.num_fds(), proc.num_threads()
    except psutil.Error:
        return None


def wait_for_ranks(root: psutil.Process, job: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while sum(role == "ranks" for _, role, _ in tree(root).values()) < RANKS:
        if job.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the job's {RANKS} ranks did not start (exit {job.poll()})")
        time.sleep(0.5)


def soak(argv: list[str], duration: float) -> dict:
    marker = f"fakerun-soak-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryFile() as err:
        job = subprocess.Popen([*FAKERUN, "--rdzv-id", marker, *argv], stdout=subprocess.DEVNULL,
                               stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            result = measure(psutil.Process(job.pid), job, duration)
        finally:
            result_exit = stop(job)
        err.seek(0)
        tail = err.read().decode(errors="replace").splitlines()[-5:]
    left = [p for p in processes(marker) if _alive(p)]
    return {**result, **result_exit, "leftovers": len(left), "stderr_tail": tail,
            "command": ["fakerun", *argv]}


def measure(root: psutil.Process, job: subprocess.Popen, duration: float) -> dict:
    wait_for_ranks(root, job)
    time.sleep(SETTLE_S)
    tracks: dict[int, Track] = {}
    cpu_samples: list[float] = []
    first: dict[int, float] = {}  # each process's CPU seconds when first sampled, and last
    latest: dict[int, float] = {}
    before: dict[int, float] = {}
    start = last = time.monotonic()
    while (now := time.monotonic()) - start < duration and job.poll() is None:
        procs = tree(root)
        times = cpu_of([p for p, _, _ in procs.values()])
        if before:  # % of one core since the last sample, by the processes in both
            spent = sum(times[pid] - before[pid] for pid in times if pid in before)
            cpu_samples.append(100.0 * spent / max(now - last, 1e-3))
        for pid, seconds in times.items():
            first.setdefault(pid, seconds)
        latest.update(times)
        for pid, (proc, role, label) in procs.items():
            rss = rss_of(proc)
            if rss is not None:
                tracks.setdefault(pid, Track(pid, role, label)).samples.append((now - start, rss))
            held = handles_of(proc) if role != "ranks" else None  # a rank lives one run: nothing to pile up
            if rss is not None and held is not None:
                tracks[pid].handles.append(held)
        before, last = times, now
        time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
    elapsed = last - start
    whole = sum(latest[pid] - first[pid] for pid in latest)
    return {"duration_s": round(elapsed, 1), "samples": len(cpu_samples),
            "processes": [t.figures() for t in sorted(tracks.values(), key=_order)],
            "cpu_percent_of_one_core": {**summary(cpu_samples), "whole": 100.0 * whole / max(elapsed, 1e-3)}}


def stop(job: subprocess.Popen) -> dict:
    """Ctrl+C as a terminal sends it; how long until the job is gone."""
    if job.poll() is not None:
        return {"exit_code": job.returncode, "shutdown_s": None}
    os.killpg(job.pid, signal.SIGINT)
    sent = time.monotonic()
    try:
        code = job.wait(EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        code = job.wait(10)
    return {"exit_code": code, "shutdown_s": round(time.monotonic() - sent, 2)}


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _order(track: Track) -> tuple[int, int]:
    return {"launcher": 0, "agents": 1, "ranks": 2}[track.role], track.pid


def verdicts(result: dict) -> dict[str, bool]:
    lasting = [p for p in result["processes"] if p["role"] != "ranks"]
    return {
        "flat": all(p["max_growth_mib"] <= FLAT_MIB for p in result["processes"])
        and all(abs(p["last_half_slope_mib_per_min"]) <= FLAT_SLOPE for p in lasting)
        and slope(run_peaks(result)) <= FLAT_SLOPE,
        "handles": all(_held_no_more(p) for p in result["processes"] if p["role"] != "ranks"),
        "cpu": result["cpu_percent_of_one_core"]["median"] <= CPU_TARGET,
        "ctrl_c": result["exit_code"] == 130 and result["leftovers"] == 0,
    }


def _held_no_more(process: dict) -> bool:
    first, last = process["handles_first_half"], process["handles_last_half"]
    return first is None or last is None or all(b <= a for a, b in zip(first, last, strict=True))


def runs(processes: list[dict]) -> list[list[dict]]:
    """The ranks by run: a run's ranks start within a second, several
    seconds after the last run's; a gap of RUN_GAP_S starts another run."""
    ranks = sorted((p for p in processes if p["role"] == "ranks"), key=lambda p: p["first_s"])
    out: list[list[dict]] = []
    for p in ranks:
        if not out or p["first_s"] - out[-1][0]["first_s"] > RUN_GAP_S:
            out.append([])
        out[-1].append(p)
    return out


def run_peaks(result: dict) -> list[tuple[float, float]]:
    """(start, most RSS of its ranks) of each run that ended inside the
    window: the one Ctrl+C cut short has not reached its peak."""
    end = result["duration_s"] - RUN_GAP_S
    return [(run[0]["first_s"], max(p["max_mib"] for p in run)) for run in runs(result["processes"])
            if all(p["first_s"] + p["lifetime_s"] < end for p in run)]


def rows(processes: list[dict]) -> list[dict]:
    """The launcher and agents one row each; the ranks one row per run, the
    worst figure of its ranks in each column: the most growth (a rank's
    last sample, as it exits, may be far below its first)."""
    out = [p for p in processes if p["role"] != "ranks"]
    for n, run in enumerate(runs(processes), 1):
        worst = {key: max(p[key] for p in run) for key in ("growth_mib", "max_growth_mib")}
        out.append({"label": f"run {n}", "pid": f"{len(run)}x", "start_mib": statistics.median(
            p["start_mib"] for p in run), "end_mib": statistics.median(p["end_mib"] for p in run),
            "max_mib": max(p["max_mib"] for p in run), **worst,
            "slope_mib_per_min": None, "last_half_slope_mib_per_min": None})
    return out


def _slope(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"  # none: a rank's life is one run (run_peaks)


def _pair(handles: list[int] | None) -> str:
    return "-" if handles is None else f"{handles[0]}, {handles[1]}"


def report(result: dict) -> None:
    cpu = result["cpu_percent_of_one_core"]
    ok = verdicts(result)
    print(f"soak: {' '.join(result['command'])}")
    print(f"  {result['duration_s']:g} s of real time, {result['samples']} samples, "
          f"{len(result['processes'])} processes")
    print(f"  {'process':<10} {'pid':>7} {'start':>7} {'end':>7} {'max':>7} {'growth':>7} "
          f"{'max-start':>9} {'MiB/min':>8} {'last half':>9}   RSS in MiB")
    for p in rows(result["processes"]):
        print(f"  {p['label']:<10} {p['pid']:>7} {p['start_mib']:>7.1f} {p['end_mib']:>7.1f} "
              f"{p['max_mib']:>7.1f} {p['growth_mib']:>+7.2f} {p['max_growth_mib']:>+9.2f} "
              f"{_slope(p['slope_mib_per_min']):>8} {_slope(p['last_half_slope_mib_per_min']):>9}")
    peaks = run_peaks(result)
    if peaks:
        print(f"  ranks, the most RSS of each whole run: {min(m for _, m in peaks):.1f}-"
              f"{max(m for _, m in peaks):.1f} MiB over {len(peaks)} runs, {slope(peaks):+.3f} MiB/min")
    print(f"  RSS flat (growth <= {FLAT_MIB:g} MiB; launcher, agents over the last half and the runs' ranks "
          f"run to run: slope <= {FLAT_SLOPE:g} MiB/min): {'PASS' if ok['flat'] else 'MISS'}")
    held = "; ".join(f"{p['label']} {_pair(p['handles_first_half'])} -> {_pair(p['handles_last_half'])}"
                     for p in result["processes"] if p["role"] != "ranks")
    print(f"  fds, threads (the most in the first half -> the last): {held}: "
          f"{'PASS' if ok['handles'] else 'MISS'}")
    print(f"  CPU, % of one core: median {cpu['median']:.2f} ({cpu['min']:.2f}-{cpu['max']:.2f} per "
          f"second), {cpu['whole']:.2f} over the window; target <= {CPU_TARGET:g} %: "
          f"{'PASS' if ok['cpu'] else 'MISS'}")
    print(f"  Ctrl+C: exit {result['exit_code']} after {result['shutdown_s']} s, {result['leftovers']} "
          f"processes left: {'PASS' if ok['ctrl_c'] else 'MISS'}")
    if not ok["ctrl_c"]:
        print("  stderr: " + "\n          ".join(result["stderr_tail"]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of real time (default 600)")
    p.add_argument("--json", action="store_true")
    ns = p.parse_args()
    result = soak(SOAKED, ns.duration)
    result["verdicts"] = verdicts(result)
    if ns.json:
        print(json.dumps(result))
    else:
        report(result)
    return 0 if all(result["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
