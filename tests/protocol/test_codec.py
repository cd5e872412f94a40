"""The v2 wire format: round trips, golden bytes, and strict rejection."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fakerun import protocol as p

SAMPLES = [
    p.Hello(3, 1, 1, 4242, "job42", "t0k3n", {"RANK": "3"}),
    p.Welcome(8, 1795290905.25),
    p.Refused("wrong-token"),
    p.Contribute(3, "world", 7, "all_reduce", "avg", 0, "float32", [2.5, 1.0], "train_step", 5,
                 8030261248, 6.25),
    p.Release("world", 7, [2.25, 1.5], False, 1795290905.5),
    p.Telemetry(3, 10, "train", 97, 74, 655, 61234),
    p.Abort("watchdog", "world", 7, "all_reduce", 2, 600000, 600061, ""),
    p.Output(3, "stderr", ["[rank3]: Traceback (most recent call last):", ""]),
    p.Goodbye(3, 0, ""),
    p.Ack(),
    p.AgentHello(1, 8, 4242, "gpu-node-1", "job42", "t0k3n", "0123456789abcdef"),
    p.Events(['{"v":1,"event":"phase","name":"train","stage":"","step":0,"time":0.0}']),
    p.AgentReport(1, "failed", "rank 9 exited with code 1"),
]


def test_every_kind_is_sampled():
    assert {type(m) for m in SAMPLES} == set(p.REGISTRY.values())


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.KIND)
def test_round_trip(msg):
    assert p.decode(p.encode(msg)) == msg


def test_decoded_messages_are_whole_dataclasses():
    # decode fills __dict__ instead of running __init__: only sound while no
    # message needs a __post_init__.
    assert not [cls for cls in p.REGISTRY.values() if hasattr(cls, "__post_init__")]
    msg = p.decode(p.encode(SAMPLES[3]))
    assert type(msg) is p.Contribute and msg == SAMPLES[3] and repr(msg) == repr(SAMPLES[3])
    with pytest.raises(AttributeError):
        msg.seq = 8  # still frozen


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.KIND)
def test_any_key_order_decodes_alike(msg):
    # Our encoder's order takes a shortcut; any other order gets the full checks.
    body = {"v": 2, "kind": msg.KIND, **msg.__dict__}
    shuffled = dict(reversed(list(body.items())))
    assert p.decode(msgpack.packb(shuffled)) == msg


@pytest.mark.parametrize("msg", [m for m in SAMPLES if isinstance(m, p.Contribute)]
                         + [p.Contribute(0, "world", 1, "barrier", "", 0, "float32", [], "", 0, 0, 0.0)])
def test_encode_contribute_is_encode(msg):
    assert p.encode_contribute(*msg.__dict__.values()) == p.encode(msg)


@pytest.mark.parametrize("msg", [SAMPLES[4], p.Release("world", 1, [], True, 0.0)])
def test_encode_release_is_encode(msg):
    assert p.encode_release(*msg.__dict__.values()) == p.encode(msg)


def test_golden_bytes_v2():
    # Changing these bytes is a protocol change: bump VERSION (2: the Welcome's clock).
    assert p.encode(p.Welcome(8, 0.5)) == bytes.fromhex(
        "84a17602a46b696e64a777656c636f6d65aa776f726c645f73697a6508a36e6f77cb3fe0000000000000")
    assert p.encode(p.Release("world", 7, [0.5], True, 0.0)) == bytes.fromhex(
        "87a17602a46b696e64a772656c65617365a4636f6d6da5776f726c64a373657107a676616c75657391cb3fe0000000000000"
        "a473746f70c3a36e6f77cb0000000000000000")
    assert p.encode(p.Ack()) == msgpack.packb({"v": 2, "kind": "ack"})


@pytest.mark.parametrize(("frame", "reason"), [
    (b"\xc1", "undecodable"),
    (p.encode(SAMPLES[0])[:-3], "undecodable"),
    (msgpack.packb([1, 2, 3]), "not-a-map"),
    (msgpack.packb({"v": 3, "kind": "ack"}), "version"),
    (msgpack.packb({"kind": "ack"}), "version"),
    (msgpack.packb({"v": 2.0, "kind": "ack"}), "version"),  # == 2 in Python, not the integer 2 on the wire
    (msgpack.packb({"v": 1, "kind": "welcome", "world_size": 8}), "version"),  # a v1 peer's Welcome
    (msgpack.packb({"v": True, "kind": "ack"}), "version"),
    (msgpack.packb({"v": 2, "kind": "pickle"}), "unknown-kind"),
    (msgpack.packb({"v": 2, "kind": "welcome"}), "fields"),
    (msgpack.packb({"v": 2, "kind": "welcome", "world_size": 8, "x": 1}), "fields"),
    (msgpack.packb({"v": 2, "kind": "welcome", "world_size": "8", "now": 0.0}), "field-type"),
    (msgpack.packb({"v": 2, "kind": "welcome", "world_size": True, "now": 0.0}), "field-type"),
    (msgpack.packb({"v": 2, "kind": "release", "comm": "w", "seq": 1, "values": ["x"], "stop": False, "now": 0.0}), "field-type"),
    (msgpack.packb({"v": 2, "kind": "release", "comm": "w", "seq": 1, "values": [], "stop": 0, "now": 0.0}), "field-type"),
    (msgpack.packb({"v": 2, "kind": "output", "rank": 0, "stream": "stdout", "lines": ["ok", 1, None]}), "field-type"),
    (msgpack.packb({"v": 2, "kind": "events", "items": [{"event": "step"}]}), "field-type"),
    (msgpack.packb({"v": 2, "kind": "hello", "rank": 0, "local_rank": 0, "node_rank": 0, "pid": 1,
                    "run_id": "r", "token": "t", "env": {"A": [1, 2]}}), "field-type"),
    (msgpack.packb({1: 2}), "undecodable"),
    (msgpack.packb({"v": 2, "kind": "ack"}) + b"\x00", "undecodable"),
    (msgpack.packb(msgpack.ExtType(5, b"x")), "undecodable"),
    (b"\x00" * (p.MAX_MESSAGE_BYTES + 1), "oversize"),
])
def test_rejects(frame, reason):
    with pytest.raises(p.ProtocolError) as info:
        p.decode(frame)
    assert info.value.reason == reason


def test_ints_are_accepted_where_floats_are_expected():
    frame = msgpack.packb({"v": 2, "kind": "release", "comm": "w", "seq": 1, "values": [1, 2.0], "stop": False, "now": 0})
    assert p.decode(frame).values == [1.0, 2.0]


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_escape_as_other_errors(frame):
    with contextlib.suppress(p.ProtocolError):
        p.decode(frame)
