"""What a Trainer checkpoint's tokenizer files cost fakerun: for each shipped
tokenizer family and tokenizers series (0.19's merges as strings, 0.20 on as
pairs), in a fresh process each (cold, as a run's first save is): the time
to render save_pretrained's files (checkpoint/tokenizer.py), the peak memory
the rendering allocates (tracemalloc), what the process keeps after it (the
one-entry cache), and the time to write them as a checkpoint does
(checkpoint/store.py: temp dir, fsync, rename).

Run:
    .venv/bin/python bench/tokenizer_files.py            # 3 rounds
    .venv/bin/python bench/tokenizer_files.py --rounds 5
Figures are the median (min-max) over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

# (config, transformers version): each family once per merges form.
CASES = [("llama3-base", "4.46.3"), ("llama3-base", "4.44.2"), ("llama3_2-instruct", "5.0.0"),
         ("mistral-7b-v0_1", "4.46.3"), ("llama-2-hf", "4.46.3")]


def trial(config: str, version: str) -> dict[str, float]:
    """One cold rendering and write, in this process."""
    from fakerun.checkpoint import tokenizer
    from fakerun.checkpoint.store import write
    from fakerun.world import tokenizers

    start = time.perf_counter()
    files = tokenizer.files(tokenizers.named(config), version, is_local=False)
    rendered = time.perf_counter() - start
    tokenizer._rendered.cache_clear()  # once more under tracemalloc, which slows allocation: its memory
    tracemalloc.start()
    tokenizer.files(tokenizers.named(config), version, is_local=False)
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write(Path(tmp) / "checkpoint-1", files, last="tokenizer.json")
        written = time.perf_counter() - start
    return {"render_s": rendered, "peak_mib": peak / 2**20, "kept_mib": kept / 2**20, "write_s": written,
            "mb": sum(map(len, files.values())) / 1e6}


def figure(key: str, values: list[float]) -> str:
    return f"{key} {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trial", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial(*args.trial)))
        return 0
    for config, version in CASES:
        runs = [json.loads(subprocess.run([sys.executable, __file__, "--trial", config, version], check=True,
                                          capture_output=True, text=True, timeout=300).stdout)
                for _ in range(args.rounds)]
        print(f"{config} @ transformers {version}: " + ", ".join(figure(key, [r[key] for r in runs])
                                                                for key in runs[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
