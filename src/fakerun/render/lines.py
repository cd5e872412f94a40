"""A rendered line, and the log prefixes the imitated tools put on them.
Times are shown in the run's timezone (UTC arithmetic under --start-time),
so a fixed start prints the same on every machine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo

STDOUT = "stdout"
STDERR = "stderr"


@dataclass(frozen=True)
class Line:
    """One whole line of output. `rank` is the global rank that "printed" it,
    or None for the launcher's own lines."""

    text: str
    stream: str = STDOUT
    rank: int | None = None


def _at(when: float, tz: tzinfo | None) -> datetime:
    return datetime.fromtimestamp(when, tz)


def glog_prefix(level: str, when: float, record_id: int, where: str, tz: tzinfo | None = None) -> str:
    """torch._logging's prefix: `W1121 19:50:33.076000 10505 path.py:874] `.
    CPython's logging keeps whole milliseconds, so the last 3 digits are 0.
    `record_id`: the process id (torch 2.5+) or the thread id (2.3, 2.4)."""
    t = _at(when, tz)
    return f"{level}{t:%m%d %H:%M:%S}.{t.microsecond // 1000:03d}000 {record_id} {where}] "


def c10_stamp(when: float, tz: tzinfo | None = None) -> str:
    """c10 logging's time: month not zero-padded, nanosecond fraction."""
    t = _at(when, tz)
    nanos = int(round((when % 1) * 1e9)) % 1_000_000_000
    return f"{t.month * 100 + t.day} {t:%H:%M:%S}.{nanos:09d}"


def elastic_time(when: float, tz: tzinfo | None = None) -> str:
    """torch elastic failure time: isoformat(sep="_") cut to seconds."""
    return _at(int(when), tz).replace(tzinfo=None).isoformat(sep="_")


def stamp(when: float, tz: tzinfo | None = None) -> str:
    """The training script's own `[2026-01-30 14:23:15]` prefix."""
    return f"[{_at(when, tz):%Y-%m-%d %H:%M:%S}]"
