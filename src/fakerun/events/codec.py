"""Events as JSON objects: `to_dict` makes the JSONL contract's object of an
event (the views' JSONL and metrics file, and what node 0 sends the other
agents), `from_dict` the event back from one a peer sent (every field
checked: a peer is never trusted). Which events node 0 forwards, and which
copies a merged stream drops, are decided here too."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any

from fakerun.errors import FakerunError
from fakerun.events.kinds import (
    SCHEMA_VERSION,
    Checkpoint,
    Collective,
    Desync,
    Export,
    GpuStatus,
    HpcCheckpoint,
    KernelMessage,
    NcclStats,
    NodeLost,
    Phase,
    PortEvent,
    RankOutput,
    RankStarted,
    Rejected,
    RendezvousComplete,
    RendezvousTimeout,
    Requeued,
    Step,
    Summary,
    Validation,
    WaitingForNodes,
    WatchdogTimeout,
)


def to_dict(event: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"v": SCHEMA_VERSION, "event": event.NAME}
    for name, nested in _layout(type(event)):
        value = getattr(event, name)
        body[name] = _plain(value) if nested else value
    return body


PLAIN_HINTS = frozenset({"int", "float", "str", "bool", "list[int]", "list[str]", "list[float]",
                         "dict[str, int]", "dict[str, str]", "int | None", "float | None"})


@functools.cache
def _layout(cls: type) -> tuple[tuple[str, bool], ...]:
    """(field, may hold a dataclass): plain fields are copied as they are."""
    return tuple((f.name, str(f.type) not in PLAIN_HINTS) for f in dataclasses.fields(cls))


@functools.cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _plain(value: Any) -> Any:
    """Nested dataclasses become dicts; everything else is already JSON-able
    (a shallow walk: asdict's deep copy dominated the coordinator's time)."""
    if dataclasses.is_dataclass(value):
        return {name: _plain(getattr(value, name)) for name in _names(type(value))}
    if isinstance(value, (list, tuple)) and value and dataclasses.is_dataclass(value[0]):
        return [_plain(v) for v in value]
    return value


class EventError(FakerunError, ValueError):
    """An event object we refuse: unknown name, missing field, wrong type."""


def from_dict(body: dict[str, Any]) -> Any:
    """The inverse of to_dict for the events a coordinator forwards;
    every field is type-checked (a peer is never trusted)."""
    if not isinstance(body, dict) or body.get("v") != SCHEMA_VERSION:
        raise EventError("not a v1 event")
    cls = _WIRE.get(body.get("event"))  # type: ignore[arg-type]
    if cls is None:
        raise EventError(f"unknown event {str(body.get('event'))[:40]!r}")
    return _build(cls, {k: v for k, v in body.items() if k not in ("v", "event")})


def _build(cls: type, body: dict[str, Any]) -> Any:
    hints = _hints(cls)
    if not set(body) <= set(hints):
        raise EventError(f"{cls.__name__}: unknown fields {sorted(set(body) - set(hints))[:3]}")
    try:
        return cls(**{name: _convert(hints[name], value, name) for name, value in body.items()})
    except TypeError as exc:  # a required field is missing
        raise EventError(f"{cls.__name__}: {exc}") from None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(hint: Any, value: Any, name: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, name)
    if origin is list and isinstance(value, list):
        return [_convert(args[0], v, name) for v in value]
    if origin is tuple and args[1:] == (Ellipsis,) and isinstance(value, list):  # JSON has no tuples
        return tuple(_convert(args[0], v, name) for v in value)
    if origin is dict and isinstance(value, dict):
        return {_convert(args[0], k, name): _convert(args[1], v, name) for k, v in value.items()}
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _build(hint, value)
    if hint is float and type(value) in (int, float):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise EventError(f"field {name}: expected {hint}, got {type(value).__name__}")


# What node 0 forwards: the coordinator's and the timeline's events. Each
# agent makes its own run_started/run_identity and its own failure report.
_WIRE: dict[str, type] = {cls.NAME: cls for cls in (
    RankStarted, RendezvousComplete, RendezvousTimeout, RankOutput, Collective, Phase, Step, GpuStatus,
    NcclStats, Validation, Checkpoint, HpcCheckpoint, Requeued, Export, Summary, WatchdogTimeout, Desync,
    Rejected,
    WaitingForNodes, NodeLost, KernelMessage, PortEvent)}


def forwarded(event: Any) -> bool:
    """Whether node 0 sends this event to the other nodes' agents."""
    return _WIRE.get(getattr(event, "NAME", "")) is type(event)


# Of the kinds node 0 relays, the ones it ever sends (a rendezvous timeout is
# each agent's own). Where the agents' JSONL streams are merged into one
# (--nodes M --output jsonl), a relayed copy goes: each event comes once, from
# the agent that made it.
RELAYED = frozenset(_WIRE) - {RendezvousTimeout.NAME}


def relayed_copy(body: dict[str, Any], node: int) -> bool:
    """Whether `body`, an event in node `node`'s JSONL stream, is its copy
    of one of node 0's. Of the kinds both make, an agent's own names it in
    `reported_by` (its verdict on node 0, a rank's log after an internal error)."""
    return node != 0 and body.get("event") in RELAYED and body.get("reported_by", 0) != node
