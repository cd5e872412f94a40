"""Every random draw of a run: keyed by (seed, purpose...), so a rank, the
coordinator and a test all draw the same value, and one seed is one run."""

from __future__ import annotations

import hashlib
import math
import random


def rng(seed: int, *purpose: object) -> random.Random:
    # str seeds are hashed with SHA-512 by random.seed: stable across runs and
    # independent of PYTHONHASHSEED.
    return random.Random(":".join(str(p) for p in (seed, *purpose)))


# The largest |gauss| can draw: u1 is at least 2^-64 and |cos| at most 1 (the
# same expression as the draw's, so a bound built on it holds to the last bit).
GAUSS_MAX = math.sqrt(-2.0 * math.log(1 / 2**64))


def _units(seed: int, purpose: tuple[object, ...]) -> tuple[float, float]:
    """Two independent uniform draws keyed by (seed, purpose), from one BLAKE2b
    hash: u1 in (0, 1], u2 in [0, 1)."""
    key = f"{seed}:{':'.join(map(str, purpose))}".encode()
    digest = hashlib.blake2b(key, digest_size=16).digest()
    return (int.from_bytes(digest[:8], "little") + 1) / 2**64, int.from_bytes(digest[8:], "little") / 2**64


def gauss(seed: int, *purpose: object) -> float:
    """A standard normal draw keyed by (seed, purpose): Box-Muller over a
    BLAKE2b hash, ~10x cheaper than seeding a Random per draw (every rank
    draws several per step)."""
    u1, u2 = _units(seed, purpose)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def uniform(seed: int, *purpose: object) -> float:
    """A uniform draw in [0, 1) keyed by (seed, purpose), as cheap as gauss:
    for a spread with a hard bound (a duration's jitter, a process's lag)."""
    return _units(seed, ("uniform", *purpose))[1]
