"""torch elastic's ChildFailedError box (errors/__init__.py), exactly.

Rules: the rule width is min(60, max(len(title), longest line of any failure
block)); the root cause is [0], other failures are [1], [2]... in rank order;
`exitcode` is text["exitcode"]: in torch 2.13 it ends in "(pid: N) " or
"(pid: N)  (SIGNAME)", up to 2.9 in "(pid: N)".
"""

from __future__ import annotations

import signal
from datetime import tzinfo
from typing import Any

from fakerun.events import Failure
from fakerun.render.lines import elastic_time

MAX_WIDTH = 60


def failure_message(failure: Failure, text: dict[str, Any]) -> str:
    if failure.message:
        return failure.message
    if failure.exitcode < 0:
        return text["signal_traceback"].format(
            signum=-failure.exitcode, signame=_signame(-failure.exitcode), pid=failure.pid)
    return text["no_traceback"]


def failure_block(idx: int, failure: Failure, text: dict[str, Any], tz: tzinfo | None = None) -> list[str]:
    signame = f" ({_signame(-failure.exitcode)})" if failure.exitcode < 0 else ""
    message = failure_message(failure, text).replace("\n", "\n  ")
    return [
        f"[{idx}]:",
        f"  time      : {elastic_time(failure.time, tz)}",
        f"  host      : {failure.host}",
        f"  rank      : {failure.rank} (local_rank: {failure.local_rank})",
        text["exitcode"].format(exitcode=failure.exitcode, pid=failure.pid, signal_name=signame),
        f"  error_file: {failure.error_file}",
        *f"  traceback : {message}".split("\n"),
    ]


def failure_box(entrypoint: str, root: Failure, others: list[Failure],
                text: dict[str, Any], tz: tzinfo | None = None) -> list[str]:
    title = f"{entrypoint} FAILED"
    root_block = failure_block(0, root, text, tz)
    other_blocks = [failure_block(i, f, text, tz) for i, f in
                    enumerate(sorted(others, key=lambda f: f.rank), start=1)]
    longest = max(len(line) for block in [root_block, *other_blocks] for line in block)
    width = min(MAX_WIDTH, max(len(title), longest))
    others_lines = [line for block in other_blocks for line in block] or ["  <NO_OTHER_FAILURES>"]
    return [
        "=" * width, title, "-" * width,
        "Failures:", *others_lines,
        "-" * width,
        "Root Cause (first observed failure):", *root_block,
        "=" * width,
    ]


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "<N/A>"
