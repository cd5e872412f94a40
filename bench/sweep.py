"""The start-up sweep against a dead job's oversized leftovers.

A job dir in a scratch runtime directory whose launcher is dead, holding
LEFTOVERS empty directories (default 100,000: what a killed run's rank logs
or a buggy script could leave), then `RunDir.sweep()` timed until nothing is
left: the first call is what one start-up pays, the count is how many
start-ups it takes to clear it all.

    python bench/sweep.py [LEFTOVERS]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fakerun.system.rundir import OWNER, RunDir
from fakerun.system.runtime import ensure, runtime_dir


def main(leftovers: int) -> None:
    scratch = tempfile.mkdtemp(prefix="fakerun-sweep-bench-")
    environ = {"TMPDIR": scratch}
    try:
        dead = ensure(runtime_dir(environ)) / "job-dead"
        dead.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait(10)
        (dead / OWNER).write_text(f"{proc.pid}\n")
        for i in range(leftovers):
            os.mkdir(dead / str(i))
        os.sync()
        times = []
        while any(runtime_dir(environ).iterdir()):
            start = time.monotonic()
            RunDir.sweep(environ)
            times.append(time.monotonic() - start)
        print(f"{leftovers} leftover dirs: first sweep {times[0] * 1000:.0f} ms, slowest "
              f"{max(times) * 1000:.0f} ms; cleared after {len(times)} sweeps ({sum(times):.1f} s in all)")
    finally:
        shutil.rmtree(Path(scratch), ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
