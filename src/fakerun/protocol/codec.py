"""The wire's codec: one msgpack map per message, {"v": 2, "kind": <kind>, <fields>...}.

`decode` validates everything it accepts (version, kind, exact field set,
field types, size) and raises ProtocolError otherwise, so the coordinator
can count a bad frame and carry on. No pickle, no msgpack extension types.

The fast paths live here, each with an equivalence test in
tests/protocol/test_codec.py: `encode_contribute` and `encode_release` make
the bytes `encode` would, and `decode`'s common case accepts exactly what
its full checks would.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack

from fakerun.protocol.messages import (
    MAX_ARRAY_LEN,
    MAX_MAP_LEN,
    MAX_MESSAGE_BYTES,
    MAX_STR_LEN,
    REGISTRY,
    VERSION,
    ProtocolError,
)


class Encoded(NamedTuple):
    """A reply already encoded (one encoding serves every rank). A tuple:
    built on the path from the last contribution to the release."""

    frame: bytes


def _checker(hint: Any) -> Any:
    """A function value -> (ok, value) for one annotation, built once: the
    coordinator decodes every message, so no typing introspection per call."""
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if item is float:
            return _float_list
        return lambda v: (isinstance(v, list) and all(type(x) is item for x in v), v)
    if origin is dict:
        return lambda v: (isinstance(v, dict) and all(type(k) is str and type(x) is str
                                                      for k, x in v.items()), v)
    if hint is float:
        return lambda v: (type(v) in (int, float), float(v)) if type(v) in (int, float) else (False, None)
    return lambda v: (type(v) is hint, v)  # int, str, bool: exact types (True is not an int here)


def _float_list(v: Any) -> tuple[bool, Any]:
    if not isinstance(v, list):
        return False, None
    if all(type(x) is float for x in v):
        return True, v
    ok = all(type(x) in (int, float) for x in v)
    return ok, [float(x) for x in v] if ok else None


@dataclass(frozen=True)
class _Spec:
    """How one kind is checked, derived once from its dataclass."""

    kind: str
    cls: type
    names: tuple[str, ...]
    checks: tuple[Any, ...]  # per field, its checker (the full path)
    order: tuple[str, ...]  # our encoder's keys: "v", "kind", then the fields
    exact: tuple[type, ...]  # the exact type of each value, in that order
    float_lists: tuple[int, ...]  # positions (in that order) of the list[float] fields
    containers: tuple[tuple[int, Any], ...]  # other containers: position and checker


def _spec(kind: str, cls: type) -> _Spec:
    names = tuple(f.name for f in dataclasses.fields(cls))
    hints = [typing.get_type_hints(cls)[n] for n in names]
    origins = [typing.get_origin(h) for h in hints]
    return _Spec(
        kind, cls, names, tuple(_checker(h) for h in hints), ("v", "kind", *names),
        (int, str, *(o if o in (list, dict) else h for h, o in zip(hints, origins, strict=True))),
        tuple(i + 2 for i, h in enumerate(hints) if h == list[float]),
        tuple((i + 2, _checker(h)) for i, (h, o) in enumerate(zip(hints, origins, strict=True))
              if o in (list, dict) and h != list[float]))


_SPECS = {kind: _spec(kind, cls) for kind, cls in REGISTRY.items()}
_BY_ORDER = {spec.order: spec for spec in _SPECS.values()}  # every kind has its own field names
_FLOAT = frozenset({float})


# One Packer per process, reused: packb builds (and mallocs a buffer for) a
# new one per call. Each process encodes from one thread only, and pack()
# resets the buffer after an error as after success.
_pack = msgpack.Packer(use_bin_type=True).pack


def encode(msg: Any) -> bytes:
    # A dataclass's __dict__ holds its fields in declaration order: the same
    # map, byte for byte, as naming each field.
    body: dict[str, Any] = {"v": VERSION, "kind": msg.KIND}
    body.update(msg.__dict__)
    return _pack(body)


def encode_contribute(rank: int, comm: str, seq: int, op: str, reduce_op: str, root: int, dtype: str,
                      values: list[float], tag: str, step: int, numel: int, sim_s: float) -> bytes:
    """encode(Contribute(...)), byte for byte, without building the dataclass
    first: every rank sends one per collective, and a frozen dataclass's
    __init__ costs as much as the packing."""
    return _pack({"v": VERSION, "kind": "contribute", "rank": rank, "comm": comm, "seq": seq, "op": op,
                  "reduce_op": reduce_op, "root": root, "dtype": dtype, "values": values, "tag": tag,
                  "step": step, "numel": numel, "sim_s": sim_s})


def encode_release(comm: str, seq: int, values: list[float], stop: bool, now: float) -> bytes:
    """encode(Release(...)), byte for byte, without the dataclass (one per collective)."""
    return _pack({"v": VERSION, "kind": "release", "comm": comm, "seq": seq, "values": values,
                  "stop": stop, "now": now})


def decode(frame: bytes) -> Any:
    """The message in `frame`, every field checked; ProtocolError otherwise.
    Every collective decodes 2N messages, each in a process that has just
    woken up with cold caches: the common case takes few, cheap steps."""
    if len(frame) > MAX_MESSAGE_BYTES:
        raise ProtocolError("oversize", f"{len(frame)} bytes")
    try:  # keywords spelt out: a **dict of them cost more than the unpacking
        body = msgpack.unpackb(frame, raw=False, strict_map_key=True, max_str_len=MAX_STR_LEN,
                               max_bin_len=0, max_array_len=MAX_ARRAY_LEN, max_map_len=MAX_MAP_LEN,
                               max_ext_len=0)
    except (msgpack.UnpackException, ValueError) as exc:
        raise ProtocolError("undecodable", type(exc).__name__) from None
    # The common case, decided mostly at C speed: a map in our own encoder's
    # key order whose every value has exactly its declared type (what
    # _checked would accept unchanged). Anything else gets the full checks.
    spec = _BY_ORDER.get(tuple(body)) if type(body) is dict else None
    if spec is None:
        return _checked(body)
    values = list(body.values())
    if values[0] != VERSION or values[1] != spec.kind or tuple(map(type, values)) != spec.exact:
        return _checked(body)
    for i in spec.float_lists:
        if not set(map(type, values[i])) <= _FLOAT:
            return _checked(body)
    for i, check in spec.containers:
        if not check(values[i])[0]:
            return _checked(body)
    del body["v"], body["kind"]
    msg = _new(spec.cls)
    _set(msg, "__dict__", body)  # see _instance
    return msg


def _checked(body: Any) -> Any:
    """Every check, each failure with its reason; converts ints where floats
    are declared."""
    if not isinstance(body, dict):
        raise ProtocolError("not-a-map")
    version = body.get("v")
    if type(version) is not int or version != VERSION:  # 2.0 compares equal to 2 (and True to 1)
        raise ProtocolError("version", repr(version))
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in REGISTRY:
        raise ProtocolError("unknown-kind", repr(kind)[:40])
    spec = _SPECS[kind]
    if body.keys() != set(spec.order):
        present = set(body) - {"v", "kind"}
        detail = f"missing={sorted(set(spec.names) - present)} extra={sorted(present - set(spec.names))[:5]}"
        raise ProtocolError("fields", detail)
    fields = {}
    for name, check in zip(spec.names, spec.checks, strict=True):
        ok, value = check(body[name])
        if not ok:
            raise ProtocolError("field-type", name)
        fields[name] = value
    return _instance(spec.cls, fields)


_new, _set = object.__new__, object.__setattr__


def _instance(cls: type, fields: dict[str, Any]) -> Any:
    """The message with `fields` (names in declaration order) as its
    __dict__. A frozen dataclass's __init__ sets each field through
    object.__setattr__, which cost more than the rest of decoding; this makes
    the same object (no message has a __post_init__)."""
    msg = _new(cls)
    _set(msg, "__dict__", fields)
    return msg
