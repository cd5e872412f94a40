"""The run's one clock. Simulated time advances with the work the ranks
report (the slowest rank, as blocking collectives make it), never with the
wall clock, so every timestamp, elapsed time, ETA and rate agrees."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo


class VirtualClock:
    def __init__(self, start: float, tz: tzinfo) -> None:
        self.start = start
        self.now = start
        self.tz = tz

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += max(0.0, seconds)
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
