"""What a whole simulated run costs on this machine.

1. Wall time of `fakerun --nproc 8 --speed 0 --max-steps 1000` through every
   phase (target <= 3 s), beside the same run with --max-steps 1 (start-up,
   init, validation, checkpoint, export and teardown without the steps).
2. CPU of a real-time `fakerun --nproc 8` (speed 1) over a window, launcher
   + coordinator + ranks together (target <= 3 % of one core; real torchrun's
   idle 8-rank tree measured 2.2 %), in plain mode (stdout to a pipe) and in
   the rich view (stdout a pseudo-terminal), beside a floor: 8 forked
   processes blocked in a ZeroMQ recv under a ROUTER polling once a second.

Medians over --rounds interleaved rounds, (min-max) beside them.
Run: python bench/run_cost.py [--rounds 3] [--window 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import psutil

FAKERUN = [sys.executable, "-m", "fakerun"]
FLOOR = r"""
import os, sys, time, zmq
n = 8
pids = []
for i in range(n):
    pid = os.fork()
    if pid == 0:
        ctx = zmq.Context(); s = ctx.socket(zmq.DEALER); s.connect("ipc://" + sys.argv[1])
        s.send(b"hi"); s.recv(); os._exit(0)
    pids.append(pid)
ctx = zmq.Context(); r = ctx.socket(zmq.ROUTER); r.bind("ipc://" + sys.argv[1])
print("ready", flush=True)
while True:
    if r.poll(1000):
        r.recv_multipart()
"""


def wall_of(args: list[str], timeout: float = 120) -> float:
    start = time.perf_counter()
    subprocess.run([*FAKERUN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, timeout=timeout)
    return time.perf_counter() - start


def tree_cpu(root: psutil.Process) -> float:
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def cpu_percent(start: Callable[[], subprocess.Popen], window: float, settle: float) -> float:
    """CPU of the whole process tree over `window` s, after `settle` s."""
    proc = start()
    try:
        root = psutil.Process(proc.pid)
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:  # start-up is not what we measure
            time.sleep(0.2)
        before, t0 = tree_cpu(root), time.monotonic()
        time.sleep(window)
        return 100.0 * (tree_cpu(root) - before) / (time.monotonic() - t0)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def start_plain() -> subprocess.Popen:
    return subprocess.Popen([*FAKERUN, "--nproc", "8", "--max-steps", "100000", "--output", "plain"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def start_rich() -> subprocess.Popen:
    """The rich view on a pseudo-terminal whose output a thread drains."""
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="160")
    proc = subprocess.Popen([*FAKERUN, "--nproc", "8", "--max-steps", "100000"], stdin=slave,
                            stdout=slave, stderr=slave, start_new_session=True, env=env)
    os.close(slave)
    threading.Thread(target=_drain, args=(master,), daemon=True).start()
    return proc


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 65536):
                break
        except OSError:
            break
    os.close(fd)


def start_floor() -> subprocess.Popen:
    sock = os.path.join(FLOOR_DIR, "floor.sock")
    proc = subprocess.Popen([sys.executable, "-c", FLOOR, sock], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    proc.stdout.readline()
    return proc


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


FLOOR_DIR = tempfile.mkdtemp(prefix="fakerun-bench-")


def main() -> int:
    try:
        return _main()
    finally:
        shutil.rmtree(FLOOR_DIR, ignore_errors=True)


def window_args(doc: str | None) -> argparse.Namespace:
    """--rounds, --window and --json: the options of every CPU-window bench."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=float, default=30.0)
    p.add_argument("--json", action="store_true")
    return p.parse_args()


def _main() -> int:
    ns = window_args(__doc__)
    walls: dict[str, list[float]] = {"1000 steps": [], "1 step": []}
    cpus: dict[str, list[float]] = {"plain": [], "rich": [], "floor": []}
    for _ in range(ns.rounds):
        walls["1000 steps"].append(wall_of(["--nproc", "8", "--speed", "0", "--max-steps", "1000"]))
        walls["1 step"].append(wall_of(["--nproc", "8", "--speed", "0", "--max-steps", "1"]))
        cpus["floor"].append(cpu_percent(start_floor, ns.window, 2.0))
        cpus["plain"].append(cpu_percent(start_plain, ns.window, 5.0))
        cpus["rich"].append(cpu_percent(start_rich, ns.window, 5.0))
    result = {"wall_s": {k: summary(v) for k, v in walls.items()},
              "cpu_percent_of_one_core": {k: summary(v) for k, v in cpus.items()},
              "rounds": ns.rounds, "window_s": ns.window}
    if ns.json:
        print(json.dumps(result))
        return 0
    w = result["wall_s"]
    print(f"--speed 0, 8 ranks, all phases ({ns.rounds} rounds):")
    for k, v in w.items():
        print(f"  {k:>10}: {v['median']:.2f} s ({v['min']:.2f}-{v['max']:.2f})")
    verdict = "PASS" if w["1000 steps"]["median"] <= 3.0 else "MISS"
    print(f"  target 1000 steps <= 3 s: {verdict}")
    print(f"CPU over {ns.window:g} s of a real-time 8-rank run (% of one core):")
    c = result["cpu_percent_of_one_core"]
    for k, v in c.items():
        print(f"  {k:>10}: {v['median']:.2f} % ({v['min']:.2f}-{v['max']:.2f})")
    print(f"  plain - floor: {c['plain']['median'] - c['floor']['median']:.2f} points; "
          f"target plain <= 3 %: {'PASS' if c['plain']['median'] <= 3.0 else 'MISS'}; "
          f"rich <= 3 %: {'PASS' if c['rich']['median'] <= 3.0 else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
