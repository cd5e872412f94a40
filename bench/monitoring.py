"""What monitoring costs a running job: the DCGM endpoint scraped (and any
other monitoring flags, e.g. --tensorboard DIR, given with --extra).

A real-time `fakerun --nproc 8` (speed 1, one seed, model and GPU for every
run, a --max-steps it does not reach in the window), CPU of its whole process tree
(launcher, coordinator, 8 ranks) over --window seconds after start-up,
without and with `--metrics-port` while a client scrapes /metrics every
--every seconds (Prometheus's default is 15 s: 1 s is harder). The scraper's
own CPU is Prometheus's, not the job's, and is not counted. Interleaved
rounds; the cost is each round's monitored run minus its own baseline, in
cores (target <= 0.01 core, issue 22), and the ratio monitored / baseline.

Medians over --rounds rounds, (min-max) beside them.
Run: python bench/monitoring.py [--rounds 5] [--window 30] [--every 1] [--json]
     [--extra "--tensorboard /tmp/tb"]
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from run_cost import cpu_percent, summary  # bench/ is the script's own directory

FAKERUN = [sys.executable, "-m", "fakerun"]
# A small model's short steps (0.26 s) make the most events a second for the endpoint's sink.
RUN = ["--nproc", "8", "--max-steps", "100000", "--seed", "5", "--gpu", "NVIDIA H100 80GB HBM3",
       "--model", "Llama-3.2-1B", "--output", "plain"]
SETTLE_S = 10.0  # start-up and init (training starts ~4 s in) are not what we measure
TARGET_CORES = 0.01


def options() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--window", type=float, default=30.0)
    p.add_argument("--every", type=float, default=1.0, help="seconds between scrapes (default 1)")
    p.add_argument("--extra", default="", help="more flags for the monitored run, e.g. '--tensorboard DIR'")
    p.add_argument("--json", action="store_true")
    return p.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(extra: list[str]) -> subprocess.Popen:
    return subprocess.Popen([*FAKERUN, *RUN, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def scraped(extra: list[str], every: float, counts: list[int],
            threads: list[threading.Thread]) -> subprocess.Popen:
    """The monitored run, and a scraper on a thread until it ends; `counts` gets the scrapes made."""
    port = free_port()
    proc = start([*extra, "--metrics-port", str(port)])

    def scrape() -> None:
        done = 0
        while proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                    done += bool(reply.read())
            except OSError:
                pass  # not listening yet, or gone
            time.sleep(every)
        counts.append(done)

    threads.append(threading.Thread(target=scrape, daemon=True))
    threads[-1].start()
    return proc


def main() -> int:
    ns = options()
    extra = shlex.split(ns.extra)
    base, monitored, deltas, scrapes = [], [], [], []
    threads: list[threading.Thread] = []
    for _ in range(ns.rounds):
        b = cpu_percent(lambda: start([]), ns.window, SETTLE_S) / 100.0
        m = cpu_percent(lambda: scraped(extra, ns.every, scrapes, threads), ns.window, SETTLE_S) / 100.0
        base.append(b)
        monitored.append(m)
        deltas.append(m - b)
    for t in threads:
        t.join(10)
    result = {"cores": {"baseline": summary(base), "monitored": summary(monitored), "cost": summary(deltas)},
              "ratio": summary([m / b for m, b in zip(monitored, base, strict=True)]),
              "scrapes_per_run": summary([float(s) for s in scrapes] or [0.0]),
              "rounds": ns.rounds, "window_s": ns.window, "every_s": ns.every, "extra": ns.extra}
    if ns.json:
        print(json.dumps(result))
        return 0
    c = result["cores"]
    print(f"CPU of a real-time 8-rank run over {ns.window:g} s, {ns.rounds} interleaved rounds (cores):")
    for name, label in (("baseline", "baseline"), ("monitored", f"+ --metrics-port {ns.extra}".rstrip())):
        print(f"  {label:>28}: {c[name]['median']:.4f} ({c[name]['min']:.4f}-{c[name]['max']:.4f})")
    r, s = result["ratio"], result["scrapes_per_run"]
    print(f"  {'cost (monitored - baseline)':>28}: {c['cost']['median']:+.4f} core "
          f"({c['cost']['min']:+.4f}..{c['cost']['max']:+.4f}); ratio {r['median']:.3f} "
          f"({r['min']:.3f}-{r['max']:.3f}); {s['median']:.0f} scrapes a run, one every {ns.every:g} s")
    verdict = "PASS" if c["cost"]["median"] <= TARGET_CORES else "MISS"
    print(f"  target cost <= {TARGET_CORES} core: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
