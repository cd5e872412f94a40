"""The two loggers of a DeepSpeed script: DeepSpeed's own (logging's record
on stdout, with the file:line:function each pinned version logs from, read
from data/style-deepspeed.toml) and the script's loguru on stderr."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from fakerun import texts
from fakerun.render.lines import STDERR, STDOUT, Line


def ds_stamp(when: float, tz: tzinfo | None) -> str:
    """logging's default asctime: a comma, whole milliseconds."""
    t = datetime.fromtimestamp(when, tz)
    return f"[{t:%Y-%m-%d %H:%M:%S},{t.microsecond // 1000:03d}]"


def loguru_stamp(when: float, tz: tzinfo | None) -> str:
    t = datetime.fromtimestamp(when, tz)
    return f"{t:%Y-%m-%d %H:%M:%S}.{t.microsecond // 1000:03d}"


def style_data() -> dict[str, Any]:
    return texts.load("style-deepspeed")


def closest(version: str, known: dict[str, Any]) -> str:
    """The version itself, else the closest older one the data knows."""
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split(".") if p.isdigit())
    older = [k for k in known if parts(k) <= parts(version)]
    return max(older, key=parts) if older else min(known, key=parts)


def version_table(version: str) -> dict[str, Any]:
    """Where this version logs from, and its other differences."""
    known = style_data()["versions"]
    return known[closest(version, known)]


class DeepSpeedLog:
    """Both loggers, once `v` holds the pinned version's table."""

    def __init__(self, tz: tzinfo | None) -> None:
        self.tz = tz
        self.v: dict[str, Any] = {}

    def log(self, when: float, where: str, message: str, rank: int = 0) -> list[Line]:
        """DeepSpeed's logger, `[time] [INFO] [file:line:func] message`; one
        record of several lines is prefixed on its first only."""
        text = f"{ds_stamp(when, self.tz)} [INFO] [{self.v[where]}] {message}"
        return [Line(part, STDOUT, rank) for part in text.split("\n")]

    def dist(self, when: float, message: str, rank: int = 0) -> list[Line]:
        """log_dist(message, ranks=[...]): the record's site is logging.py's."""
        return self.log(when, "log_dist", f"[Rank {rank}] {message}", rank)

    def script(self, when: float, message: str) -> list[Line]:
        """The script's own log_dist(..., ranks=[0]) over loguru (stderr)."""
        where = style_data()["loguru"]["where"]
        return [Line(f"{loguru_stamp(when, self.tz)} | INFO     | {where} - [Rank 0] {message}", STDERR, 0)]
