"""JSONL: one strict-JSON object per event on stdout."""

from __future__ import annotations

import json
import math
from typing import Any, TextIO

from .. import events as ev
from .console import OutputClosed, silence


def strict(value: Any) -> Any:
    """Strict JSON has no NaN/Infinity: encode them as the strings
    "NaN", "Infinity", "-Infinity" (what JavaScript's String() gives)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


# json.dumps with options builds a JSONEncoder per call: one event per
# collective made that a visible share of the coordinator's time.
_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def dumps(event: Any) -> str:
    body = ev.to_dict(event)
    try:
        return _encode(body)
    except ValueError:  # a NaN or an infinity somewhere: spell it out
        return _encode(strict(body))


class JsonlSink:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def event(self, event: Any) -> None:
        try:
            self.stream.write(dumps(event) + "\n")
        except OSError:  # EPIPE, or EIO from a hung-up terminal
            silence(self.stream)
            raise OutputClosed("stdout") from None

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            silence(self.stream)
            raise OutputClosed("stdout") from None
