"""A failed rank, from the record it leaves to the run's result, in one place.

torch.distributed.elastic.multiprocessing.errors keeps these together:
`@record` writes a worker's uncaught exception to TORCHELASTIC_ERROR_FILE,
`ProcessFailure` reads it back (or, without one, names the exit code), and
`ChildFailedError` reports the root cause, the earliest failure, and the
others. So do we: the rank writes with `write_record`, the launcher reads
with `read`, and picks the root cause and the run's exit code here. How the
report looks is a view's (render/torchrun/failure.py).
"""

from __future__ import annotations

import dataclasses
import json
import os

from fakerun.errors import ExitCode
from fakerun.events import Failure

ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"
# record's wrapper frame, as a traceback names it (data/torchrun.toml [script].record_frame)
RECORD_FRAME = "torch/distributed/elastic/multiprocessing/errors/__init__.py\", line"


def write_record(traceback_lines: list[str], now: float) -> None:
    """What torch's @record writes to TORCHELASTIC_ERROR_FILE for an
    uncaught exception (atomically: the launcher may read it any moment).
    Its py_callstack is traceback.format_exc() in record's wrapper: the
    frames from the wrapper's on, not the <module> frame above it."""
    path = os.environ.get(ERROR_FILE_ENV)
    if not path or not traceback_lines:
        return
    start = next((i for i, line in enumerate(traceback_lines)
                  if line and not line.startswith((" ", "Traceback"))), len(traceback_lines) - 1)
    body = {"message": {"message": "\n".join(traceback_lines[start:]),
                        "extraInfo": {"py_callstack": "\n".join(_from_wrapper(traceback_lines)) + "\n",
                                      "timestamp": str(int(now))}}}
    try:
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(body, handle)
        os.replace(tmp, path)
    except OSError:
        pass  # no error file: the failure report falls back to torch's "To enable traceback" line


def _from_wrapper(lines: list[str]) -> list[str]:
    """The traceback as record's wrapper sees it: its heading, then its own
    frame on (a traceback without it, as it is)."""
    at = next((i for i, line in enumerate(lines) if RECORD_FRAME in line), None)
    return lines if at is None else [lines[0], *lines[at:]]


def read(failure: Failure, error_file: str) -> Failure:
    """torch elastic's ProcessFailure: with an error file, its traceback and
    timestamp; without, `failure` as the exit code alone describes it."""
    try:
        with open(error_file, encoding="utf-8") as handle:
            extra = json.load(handle)["message"]["extraInfo"]
        return dataclasses.replace(failure, error_file=error_file, message=extra["py_callstack"],
                                   time=float(extra["timestamp"]))
    except (OSError, ValueError, KeyError, TypeError):
        return failure


def root_cause(failures: list[Failure]) -> tuple[Failure, list[Failure]]:
    """ChildFailedError's root cause and the rest: the earliest failure by
    whole-second timestamp, ties to the first observed (its failures dict
    keeps observation order: those seen before close() come first; ours
    are in rank order by then)."""
    root = min(failures, key=lambda f: (int(f.time), f.after_close))
    return root, [f for f in failures if f is not root]


def exit_code(stop_reason: str | None, failed: bool) -> int:
    """The launcher's exit: 141 when our reader went away, 1 when the job
    failed or was stopped for any other reason, a stop signal included (torch
    elastic's SignalException goes uncaught out of torchrun's main, and
    Python exits 1: torch/distributed/elastic/multiprocessing/api.py
    _terminate_process_handler, v2.3.1 to v2.13.0), else 0. Under --loop,
    fakerun's own screensaver, the launcher turns a signal's stop into
    128+N (launcher/job.py)."""
    if stop_reason == "output":
        return ExitCode.PIPE
    if stop_reason is not None or failed:
        return ExitCode.FAILED
    return ExitCode.OK
