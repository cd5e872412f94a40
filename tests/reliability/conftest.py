"""The reliability tier: faults injected at seeded-random moments.

Every random choice (which rank, which moment, which bytes) comes from
`rng(name)`, seeded by $FAKERUN_RELIABILITY_SEED (default 7): a failure
names its seed, and the same seed picks the same moments again (where the
signal then lands still depends on the machine's timing).
"""

from __future__ import annotations

import os
import random

SEED = int(os.environ.get("FAKERUN_RELIABILITY_SEED", "7"))


def rng(name: str) -> random.Random:
    """An RNG of its own for each use, so adding a draw elsewhere changes nothing here."""
    return random.Random(f"{SEED}:{name}")


def seed_note() -> str:
    return f"FAKERUN_RELIABILITY_SEED={SEED}"
