"""What the security of a job's links costs, each figure beside its baseline
measured in the same run, rounds interleaved.

1. Raw round trip, 8 ranks: bench.py's floor (forked DEALERs, a ROUTER,
   back-to-back all-ranks round trips of small msgpack) over ipc://, plain
   TCP, and TCP with CurveZMQ and the ZAP gate exactly as fakerun sets them
   up (fakerun.keys). Median cycle per run, then the median over rounds;
   ratio against ipc:// (what single-node jobs use, unencrypted in their
   0700 run directory).
2. A two-node job, end to end: `fakerun --nodes 2 --nproc 4 --speed 0
   --max-steps STEPS --no-theatre` (node 1's ranks reach node 0 over TCP):
   time to the first rank line on stdout and to the end of the run, for this
   checkout and (with --baseline-src DIR, e.g. a `git worktree` of the commit
   before the protection) for another, on the same machine in the same rounds.
3. One node, 8 ranks: the same two figures for `fakerun --nproc 8`.

Run: python bench/links.py [--rounds 5] [--steps 300] [--baseline-src DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench as core  # noqa: E402 - the floor's machinery, shared with bench.py

TRANSPORTS = ("ipc", "tcp", "curve")
ITERS = 3000


def child_raw(transport: str) -> dict[str, float]:
    plan = core.RawPlan(8, ITERS, transport=transport)
    stamps, _ = core.run_raw(plan, core.now() + 120, lambda: None)
    return core.cycle_figures(stamps)


def job_times(src: Path, args: list[str]) -> dict[str, float]:
    """From Popen to the first `[default` line, and to the exit."""
    env = {**os.environ, "PYTHONPATH": str(src), "FAKERUN_OPTS": ""}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fakerun", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    first = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if first is None and b"[default" in line:
            first = time.perf_counter() - start
    code = proc.wait(timeout=300)
    if code != 0 or first is None:
        raise RuntimeError(f"{args} in {src}: exit {code}, first rank line {first}")
    return {"first_line_s": first, "total_s": time.perf_counter() - start}


def raw_round(transport: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", transport], capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout)


def median_of(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--baseline-src", type=Path, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", choices=TRANSPORTS, help=argparse.SUPPRESS)
    ns = p.parse_args()
    if ns.child:
        print(json.dumps(child_raw(ns.child)))
        return 0
    sources = {"this": HERE.parent / "src"}
    if ns.baseline_src is not None:
        sources["baseline"] = ns.baseline_src.resolve()
    jobs = {"2x4": ["--nodes", "2", "--nproc", "4", "--no-theatre"], "1x8": ["--nproc", "8"]}
    raw: dict[str, list[dict[str, float]]] = {t: [] for t in TRANSPORTS}
    runs: dict[str, list[dict[str, float]]] = {f"{j}/{s}": [] for j in jobs for s in sources}
    for r in range(ns.rounds):
        print(f"round {r + 1}/{ns.rounds}", file=sys.stderr)
        for transport in TRANSPORTS:
            raw[transport].append(raw_round(transport))
        for job, args in jobs.items():
            for name, src in sources.items():
                runs[f"{job}/{name}"].append(job_times(
                    src, [*args, "--speed", "0", "--max-steps", str(ns.steps), "--seed", "7"]))
    result = {
        "raw_cycle_us": {t: median_of(rows, "cycle_median_ms") * 1e3 for t, rows in raw.items()},
        "raw_ratio_to_ipc": {t: median_of(rows, "cycle_median_ms") / median_of(raw["ipc"], "cycle_median_ms")
                             for t, rows in raw.items()},
        "jobs": {k: {"first_line_s": median_of(v, "first_line_s"), "total_s": median_of(v, "total_s")}
                 for k, v in runs.items()},
        "rounds": ns.rounds, "steps": ns.steps,
    }
    if ns.json:
        print(json.dumps(result))
        return 0
    print(f"8-rank raw round trip (median of {ns.rounds} runs of {ITERS}):")
    for t in TRANSPORTS:
        print(f"  {t:6} {result['raw_cycle_us'][t]:8.1f} µs   {result['raw_ratio_to_ipc'][t]:.2f}x ipc")
    print(f"fakerun jobs, --speed 0 --max-steps {ns.steps} (median of {ns.rounds}):")
    for key, fig in result["jobs"].items():
        print(f"  {key:14} first rank line {fig['first_line_s']:.3f} s   whole run {fig['total_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
