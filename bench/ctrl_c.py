"""How long Ctrl+C takes to end a big job.

For each --nproc (default 64, 256, 1024), --runs times: start
`fakerun --nproc N --speed 0 --max-steps 100000 --output jsonl`, wait until
every rank is up (the first step: a step is a collective of all of them),
send SIGINT to the launcher alone (as `kill -INT` does; a terminal's Ctrl+C
goes to the ranks too, which only makes their end come sooner), and time

  exit: from the signal until the launcher has exited,
  gone: from the signal until no process of the job is left (every rank
        pid gone or a zombie, and the launcher reaped),

checking that the exit code is 1 (torchrun's on a stop signal). Prints median (min-max) of each over the
runs, and the load average seen. With --baseline-src DIR (the src/ of a
`git worktree` of another commit) the same runs of that code alternate with
this checkout's, so that both meet the same moments of a shared machine. The
machine this runs on is shared and noisy: read the medians, and believe a
difference under ~15 % only when it holds over several invocations.

Run: python bench/ctrl_c.py [--nproc 64 256 1024] [--runs 5] [--speed 0]
                            [--baseline-src DIR] [--json]
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
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
UP_TIMEOUT_S = 120.0
END_TIMEOUT_S = 60.0


def first_step(path: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline, seen, tail = time.monotonic() + timeout, 0, b""
    while time.monotonic() < deadline:
        with open(path, "rb") as handle:
            handle.seek(seen)
            chunk = handle.read()
        seen += len(chunk)
        if b'"event":"step"' in tail + chunk:
            return
        tail = chunk[-32:]
        if proc.poll() is not None:
            raise RuntimeError(f"fakerun exited {proc.returncode} before its first step")
        time.sleep(0.05)
    raise RuntimeError(f"no step within {timeout} s")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def once(nproc: int, speed: str, src: Path) -> dict[str, float]:
    marker = f"bench-ctrl-c-{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "PYTHONPATH": str(src)}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.jsonl")
        with open(out, "wb") as fo:
            proc = subprocess.Popen([sys.executable, "-m", "fakerun", "--nproc", str(nproc), "--speed", speed,
                                     "--max-steps", "100000", "--output", "jsonl", "--rdzv-id", marker],
                                    stdout=fo, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
        try:
            first_step(out, proc, UP_TIMEOUT_S)
            ranks = [p.pid for p in psutil.Process(proc.pid).children()]
            load = os.getloadavg()[0]
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            code = proc.wait(END_TIMEOUT_S)
            exited = time.monotonic() - sent
            left = set(ranks)
            while left and time.monotonic() - sent < END_TIMEOUT_S:
                left = {pid for pid in left if not _gone(pid)}
                if left:
                    time.sleep(0.005)
            gone = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if left:
        raise RuntimeError(f"{len(left)} ranks still running {END_TIMEOUT_S} s after SIGINT")
    return {"code": code, "exit": exited, "gone": max(gone, exited), "ranks": len(ranks), "load": load}


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):5.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--speed", default="0")
    p.add_argument("--baseline-src", type=Path, default=None)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    sources = {"this": HERE.parent / "src"}
    if a.baseline_src is not None:
        sources["baseline"] = a.baseline_src.resolve()
    runs: dict[str, dict[int, list[dict[str, float]]]] = {s: {n: [] for n in a.nproc} for s in sources}
    for r in range(a.runs):
        print(f"round {r + 1}/{a.runs}", file=sys.stderr)
        for nproc in a.nproc:
            for name, src in sources.items():
                runs[name][nproc].append(once(nproc, a.speed, src))
    result = {name: {nproc: {"exit_median": statistics.median(r["exit"] for r in rows),
                             "gone_median": statistics.median(r["gone"] for r in rows),
                             "codes": sorted({r["code"] for r in rows}), "runs": rows}
                     for nproc, rows in by_nproc.items()} for name, by_nproc in runs.items()}
    if a.json:
        print(json.dumps(result, indent=1))
    else:
        for nproc in a.nproc:
            for name in sources:
                rows = runs[name][nproc]
                loads = [r["load"] for r in rows]
                print(f"--nproc {nproc:5d} {name:8}: exit {summary([r['exit'] for r in rows])}, "
                      f"all gone {summary([r['gone'] for r in rows])}, exit codes "
                      f"{result[name][nproc]['codes']}, load {min(loads):.0f}-{max(loads):.0f}", flush=True)
    return 0 if all(v["codes"] == [1] for by in result.values() for v in by.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
