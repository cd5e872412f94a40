"""A rendered line, and the log prefixes the imitated tools put on them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

STDOUT = "stdout"
STDERR = "stderr"


@dataclass(frozen=True)
class Line:
    """One whole line of output. `rank` is the global rank that "printed" it,
    or None for the launcher's own lines."""

    text: str
    stream: str = STDOUT
    rank: int | None = None


def glog_prefix(level: str, when: float, pid: int, where: str) -> str:
    """torch._logging's prefix: `W1121 19:50:33.076000 10505 path.py:874] `.
    CPython's logging keeps whole milliseconds, so the last 3 digits are 0."""
    stamp = datetime.fromtimestamp(when)
    millis = stamp.microsecond // 1000
    return f"{level}{stamp:%m%d %H:%M:%S}.{millis:03d}000 {pid} {where}] "


def c10_stamp(when: float) -> str:
    """c10 logging's time: month not zero-padded, nanosecond fraction."""
    stamp = datetime.fromtimestamp(when)
    nanos = int(round((when % 1) * 1e9)) % 1_000_000_000
    return f"{stamp.month * 100 + stamp.day} {stamp:%H:%M:%S}.{nanos:09d}"


def elastic_time(when: float) -> str:
    """torch elastic failure time: isoformat(sep="_") cut to seconds."""
    return datetime.fromtimestamp(int(when)).isoformat(sep="_")
