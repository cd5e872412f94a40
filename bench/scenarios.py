"""Wall time of the whole scenario catalog, as a CI job would run it.

Every scenario at --speed 0 with 8 ranks (default run length, drawn from the
seed), through the public API (`fakerun.run`), each in a fresh process.
`nccl-timeout` runs with --collective-timeout 1 and `hang` is ended by the
caller's 2 s timeout, as a CI job testing its own timeouts would. Target: the
whole catalog <= 30 s. Baseline in the same run: `healthy` alone.

Run: python bench/scenarios.py [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import fakerun
from fakerun.world import scenarios

HANG_TIMEOUT_S = 2.0


def run_one(name: str) -> tuple[float, int | str]:
    options = {"nproc": 8, "speed": 0, "seed": 11, "scenario": name}
    if name == "nccl-timeout":
        options["collective_timeout"] = 1
    start = time.perf_counter()
    try:
        result = fakerun.run(timeout=HANG_TIMEOUT_S if name == "hang" else 120, **options)
        outcome: int | str = result.exit_code
    except fakerun.FakerunTimeout:
        outcome = "killed by the caller's timeout"
    return time.perf_counter() - start, outcome


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    ns = p.parse_args()
    names = list(scenarios.catalog())
    times: dict[str, list[float]] = {n: [] for n in names}
    outcomes: dict[str, int | str] = {}
    totals = []
    for _ in range(ns.rounds):
        total = 0.0
        for name in names:
            seconds, outcomes[name] = run_one(name)
            times[name].append(seconds)
            total += seconds
        totals.append(total)
    med = {n: statistics.median(v) for n, v in times.items()}
    result = {"rounds": ns.rounds, "per_scenario_s": med, "outcome": outcomes,
              "total_s": {"median": statistics.median(totals), "min": min(totals), "max": max(totals)},
              "baseline_healthy_s": med["healthy"]}
    if ns.json:
        print(json.dumps(result))
        return 0
    print(f"scenario catalog, 8 ranks, --speed 0, {ns.rounds} rounds (median per scenario):")
    for name in names:
        ratio = med[name] / med["healthy"]
        print(f"  {name:<13} {med[name]:6.2f} s  ({ratio:.2f}x healthy)  exit {outcomes[name]}")
    t = result["total_s"]
    verdict = "PASS" if t["median"] <= 30 else "MISS"
    print(f"  whole catalog: {t['median']:.1f} s ({t['min']:.1f}-{t['max']:.1f}); target <= 30 s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
