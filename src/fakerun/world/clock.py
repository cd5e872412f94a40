"""The run's one clock. Simulated time advances with the work the ranks
report (the slowest rank, as blocking collectives make it), so every
timestamp, elapsed time, ETA and rate agrees.

At --speed N (N > 0) the ranks pace their work so that simulated time runs
N times as fast as the wall clock from the launch (rank/pacing.py); where
no work is simulated (a rendezvous wait, a teardown, the gap between two
--loop runs) the clock runs on with the wall at that rate, so a launcher line
is stamped when it happens. At --speed 0 the wall never enters it: the same
arguments print the same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo


class VirtualClock:
    """`now`: the latest time the run has shown; `base`: the simulated time
    the ranks' work counts from (the last collective's release, or the
    Welcome). They differ only at --speed > 0, after the launcher read the
    wall between two collectives."""

    def __init__(self, start: float, tz: tzinfo, speed: float = 0.0,
                 wall: Callable[[], float] = time.monotonic) -> None:
        self.start = start
        self.now = self.base = start
        self.tz = tz
        self.speed = speed
        self.wall = wall
        self._anchor = (wall(), start)  # (wall, simulated): the launch, unless a Welcome moved it

    def __call__(self) -> float:
        """The run's time at this moment: at --speed > 0 never behind what
        the wall says (a launcher line is stamped when it is written)."""
        if self.speed:
            wall, simulated = self._anchor
            self.now = max(self.now, simulated + (self.wall() - wall) * self.speed)
        return self.now

    def rebase(self) -> float:
        """The ranks' work counts from here (the Welcome that starts it)."""
        self.base = self()
        return self.base

    def advance(self, seconds: float) -> float:
        """A collective completed `seconds` of simulated work after the last
        one: never back behind a time already shown, and never counting the
        wall that went by during that work a second time."""
        self.now = self.base = max(self.now, self.base + max(0.0, seconds))
        return self.now

    def reach(self, when: float, anchor: bool = False) -> float:
        """Another node's clock, which is the run's, says `when`: follow it;
        `anchor`: and go on with the wall from there (its Welcome)."""
        self.now = self.base = max(self.now, when)
        if anchor:
            self._anchor = (self.wall(), self.now)
        return self.now

    def datetime(self, when: float | None = None) -> datetime:
        return datetime.fromtimestamp(self.now if when is None else when, self.tz)


# The run's clock goes on from the start (checkpoints, ETAs, a --loop of runs)
# and every stamp it prints must stay a date datetime can show (year 9999 at
# most): 9999-12-31 failed in the launcher after the ranks were forked.
FIRST_YEAR, LAST_YEAR = 1970, 8999
# So one run may last as long as the calendar has left after the latest start:
# from the end of LAST_YEAR to datetime's last day (999 years).
RUN_SPAN_S = (datetime(9999, 12, 31, tzinfo=UTC) - datetime(LAST_YEAR + 1, 1, 1, tzinfo=UTC)).total_seconds()
YEAR_S = 365.25 * 86400


def parse_start(text: str) -> tuple[float, tzinfo]:
    """--start-time: ISO 8601; without an offset it is shown as given (UTC
    arithmetic), so a fixed start prints the same on every machine."""
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--start-time {text!r} is not an ISO 8601 time "
                         "(e.g. 2026-01-30T14:23:15)") from None
    if not FIRST_YEAR <= stamp.year <= LAST_YEAR:
        raise ValueError(f"--start-time {text!r}: the year must be between {FIRST_YEAR} and {LAST_YEAR}")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp(), stamp.tzinfo


def local_now() -> tuple[float, tzinfo]:
    now = datetime.now().astimezone()
    return now.timestamp(), now.tzinfo
