"""A rendered line, and the log prefixes the imitated tools put on them.
Times are shown in the run's timezone (UTC arithmetic under --start-time),
so a fixed start prints the same on every machine."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

STDOUT = "stdout"
STDERR = "stderr"
# The layout's width with the rank prefix: 80 columns where no terminal says
# otherwise (a pipe, a file), the terminal's own up to 200 (wider, the lines
# stop growing: a 300-column bar or box row reads worse, not better).
DEFAULT_COLUMNS, MAX_COLUMNS = 80, 200


@dataclass(frozen=True)
class Line:
    """One write of output, most often a whole line. `rank` is the global
    rank that "printed" it, or None for the launcher's own lines. `end` is
    what follows `text` in the stream: a progress bar's redraw is `\r` and
    the bar with no newline after it (tqdm's status printer). `pause`: the
    writer goes on only later (a bar's redraws within one event, 0.1 s and
    more apart), so that torchrun's tee reads up to here first."""

    text: str
    stream: str = STDOUT
    rank: int | None = None
    end: str = "\n"
    pause: bool = False


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


def cells(text: str) -> int:
    """Columns `text` takes on a terminal: wide (CJK) characters two, combining
    marks none, everything else (the box-drawing characters, '━', '°') one."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def fit(parts: Sequence[str], width: int, first: str = "", rest: str | None = None,
        sep: str = " | ") -> list[str]:
    """`parts` joined with `sep` into as few lines as fit `width` columns:
    the first line starts with `first`, the next ones with `rest` (default
    the same). A line breaks only between parts, so a part is never cut;
    the separator at a break is dropped (a part that reads on, "+ 3.1 GB",
    carries its own sign and takes sep=" ")."""
    rest = first if rest is None else rest
    lines: list[str] = []
    current = ""
    for part in parts:
        lead = rest if lines else first
        candidate = f"{current}{sep}{part}" if current else part
        if current and cells(lead + candidate) > width:
            lines.append(lead + current)
            candidate = part
        current = candidate
    lines.append((rest if lines else first) + current)
    return [line.rstrip() for line in lines]
