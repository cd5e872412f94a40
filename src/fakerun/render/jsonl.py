"""JSONL: one strict-JSON object per event on stdout."""

from __future__ import annotations

import dataclasses
import json
import math
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, TextIO

from fakerun import events as ev
from fakerun.render.sinks import OutputClosed
from fakerun.system.streams import silence


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
    if type(event) is ev.Collective and _COLLECTIVE_SHAPE:
        line = _collective_line(event)
        if line is not None:
            return line
    body = ev.to_dict(event)
    try:
        return _encode(body)
    except ValueError:  # a NaN or an infinity somewhere: spell it out
        return _encode(strict(body))


class JsonlSink:
    """An EventSink: each event as one JSON line on stdout."""

    console = True
    clocked = False

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def event(self, event: ev.Event) -> None:
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

    def close(self) -> None:
        """stdout is the caller's: nothing to close."""


# The `collective` event comes once per collective, the hottest line of all:
# it is written straight from its fields, byte for byte what to_dict +
# json.dumps give (tests compare the two), whenever they have exactly their
# declared types. Should the event's fields change, the general path takes over.
_COLLECTIVE_SHAPE = ev.SCHEMA_VERSION == 1 and ev.Collective.NAME == "collective" and tuple(
    (f.name, str(f.type)) for f in dataclasses.fields(ev.Collective)) == (
    ("comm", "str"), ("op", "str"), ("seq", "int"), ("count", "int"), ("dtype", "str"),
    ("ranks", "list[int]"), ("duration_us", "int"), ("tag", "str"), ("numel", "int"),
    ("wall_us", "int | None"), ("wait_us", "int"))
_STR4, _INT5, _INTS = (str,) * 4, (int,) * 5, frozenset({int})


def _collective_line(e: ev.Collective) -> str | None:
    strs = (e.comm, e.op, e.dtype, e.tag)
    ints = (e.seq, e.count, e.duration_us, e.numel, e.wait_us)
    ranks, wall = e.ranks, e.wall_us
    if tuple(map(type, strs)) != _STR4 or tuple(map(type, ints)) != _INT5 or type(ranks) is not list \
            or not set(map(type, ranks)) <= _INTS or not (wall is None or type(wall) is int):
        return None
    comm, op, dtype, tag = map(_quote, strs)
    return (f'{{"v":1,"event":"collective","comm":{comm},"op":{op},"seq":{e.seq},"count":{e.count},'
            f'"dtype":{dtype},"ranks":[{",".join(map(int.__repr__, ranks))}],'
            f'"duration_us":{e.duration_us},"tag":{tag},"numel":{e.numel},'
            f'"wall_us":{"null" if wall is None else wall},"wait_us":{e.wait_us}}}')
