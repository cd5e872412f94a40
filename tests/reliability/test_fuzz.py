"""Fuzzing a live job's coordinator: a seeded generator sends random bytes,
truncated and padded messages, well-formed msgpack of the wrong shape, wrong
versions, tokens and run ids, oversize frames, multipart messages and a
flood, while the job trains. The job finishes normally with every step, and
every frame is counted once in `run_finished.rejected`.

More attacks go around the counted connection: a frame too big for the
transport (libzmq drops that peer before the coordinator sees it), a raw
socket writing garbage instead of a ZMTP greeting (libzmq may take it for a
ZMTP 1.0 peer and pass its "frames" on) and a hundred short-lived peers
sending random bytes: counted, but not by us. So the reasons no random
bytes can produce are checked exactly, the rest at least.
"""

from __future__ import annotations

import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import zmq

from fakerun import protocol as p
from tests.conftest import SHORT_STEPS
from tests.protocol.test_live import _connect
from tests.reliability.conftest import rng, seed_note

STEPS = 24
PER_KIND = 40  # frames of each generated kind
FLOOD = 20_000
OVERSIZE = 3
PEERS = 100
# Reasons that random bytes cannot produce (short of a 1 in 2^32 chance).
EXACT = {"not-joined", "wrong-token", "wrong-run-id", "fields", "field-type", "unknown-kind", "oversize"}

VALID = [
    p.Contribute(0, "world", 3, "all_reduce", "sum", 0, "float32", [1.5], "loss", 3, 1, 0.1),
    p.Telemetry(1, 3, "train", 90, 60, 300, 1000),
    p.Output(2, "stdout", ["hello"]),
    p.Goodbye(0, 0, ""),
    p.Ack(),
    p.Release("world", 3, [1.0], False, 2.0),
    p.AgentReport(1, "alive", ""),
]


def body_of(msg: Any) -> dict[str, Any]:
    return msgpack.unpackb(p.encode(msg))


def wrong_value(value: Any) -> Any:
    """A value of another type than `value`'s: a number for a string and a
    string for anything else."""
    return 12345 if isinstance(value, str) else "not-a-number"


def truncated(r: random.Random) -> bytes:
    frame = p.encode(r.choice(VALID))
    return frame[:r.randrange(1, len(frame))]


def padded(r: random.Random) -> bytes:
    return p.encode(r.choice(VALID)) + r.randbytes(r.randint(1, 16))


def missing_or_extra_field(r: random.Random) -> bytes:
    body = body_of(r.choice(VALID))
    fields = [k for k in body if k not in ("v", "kind")]
    if fields and r.random() < 0.5:
        del body[r.choice(fields)]
    else:
        body[f"extra_{r.randrange(100)}"] = r.random()
    return msgpack.packb(body)


def wrong_field_type(r: random.Random) -> bytes:
    body = body_of(r.choice([m for m in VALID if len(body_of(m)) > 2]))
    name = r.choice([k for k in body if k not in ("v", "kind")])
    body[name] = wrong_value(body[name])
    return msgpack.packb(body)


def not_a_map(r: random.Random) -> bytes:
    return msgpack.packb(r.choice([[1, 2, 3], "hello", 7, 2.5, None, True, [{"v": 2, "kind": "ack"}]]))


def wrong_version(r: random.Random) -> bytes:
    body = body_of(r.choice(VALID))
    body["v"] = r.choice([0, 1, 99, -1, "2", None, [2]])  # 1: a v1 peer (before the Welcome had a clock)
    return msgpack.packb(body)


def unknown_kind(r: random.Random) -> bytes:
    kind = r.choice(["exec", "", "HELLO", "x" * 200, 42, None])
    return msgpack.packb({"v": 2, "kind": kind, "cmd": "rm -rf /"})


def not_joined(r: random.Random) -> bytes:
    """A well-formed message of any kind but hello, from a peer that never joined."""
    return p.encode(r.choice(VALID))


def bombs(r: random.Random) -> bytes:
    """Decoder traps: deep nesting, a huge claimed array, non-string keys."""
    return r.choice([b"\x91" * 5000 + b"\x00", b"\xdd\xff\xff\xff\xff", msgpack.packb({1: 2}),
                     b"\xc1", b""])


def hello(token: str, run_id: str) -> Callable[[random.Random], bytes]:
    return lambda r: p.encode(p.Hello(r.randrange(4), 0, 0, 1, run_id, token, {"RANK": "0"}))


def random_bytes(r: random.Random) -> bytes:
    return r.randbytes(r.randint(1, 512))


def generators(run_id: str) -> dict[str, tuple[Callable[[random.Random], bytes], str | None]]:
    """Each kind of frame, and the reason it must be counted under (None: any)."""
    return {
        "random": (random_bytes, None),
        "truncated": (truncated, "undecodable"),
        "padded": (padded, "undecodable"),
        "bombs": (bombs, None),
        "fields": (missing_or_extra_field, "fields"),
        "field-type": (wrong_field_type, "field-type"),
        "not-a-map": (not_a_map, "not-a-map"),
        "version": (wrong_version, "version"),
        "unknown-kind": (unknown_kind, "unknown-kind"),
        "not-joined": (not_joined, "not-joined"),
        "wrong-token": (hello("not-the-token", run_id), "wrong-token"),
        "wrong-run-id": (hello("not-the-token", "another-job"), "wrong-run-id"),
    }


def fuzz_frames(r: random.Random, run_id: str) -> Iterator[tuple[str | None, list[bytes]]]:
    """(expected reason, message parts), shuffled, then the flood."""
    plan = [(name, gen, reason) for name, (gen, reason) in generators(run_id).items()
            for _ in range(PER_KIND)]
    plan += [("oversize", lambda r: b"\x00" * (p.MAX_MESSAGE_BYTES + r.randint(1, 4096)), "oversize")
             ] * OVERSIZE
    plan += [("frames", lambda r: [b"two", r.randbytes(8)], "frames")] * PER_KIND
    r.shuffle(plan)
    for _, gen, reason in plan:
        frame = gen(r)
        yield reason, frame if isinstance(frame, list) else [frame]
    for _ in range(FLOOD):
        yield None, [r.randbytes(r.randint(1, 8))]


def side_attacks(ctx: zmq.Context, endpoint: str, r: random.Random) -> None:
    """A frame over the transport's limit (the peer is dropped), a raw
    connection that never speaks ZMTP, and a crowd of short-lived peers."""
    big = _connect(ctx, endpoint, b"giant")
    big.send(b"\x00" * (p.TRANSPORT_MAX_BYTES + 1))
    for i in range(PEERS):
        peer = _connect(ctx, endpoint, b"peer-%d" % i)
        peer.send(random_bytes(r))
        peer.close(linger=100)
    path = endpoint.removeprefix("ipc://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(5)
        raw.connect(path)
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + r.randbytes(4096))


def refusals(sock: zmq.Socket, count: int) -> Counter[str]:
    """The answers to `count` refused hellos, by reason; the last answer is
    the last hello's."""
    reasons: Counter[str] = Counter()
    for _ in range(count):
        assert sock.poll(20_000), f"the coordinator stopped answering after {reasons} ({seed_note()})"
        answer = p.decode(sock.recv())
        assert isinstance(answer, p.Refused), answer
        reasons[answer.reason] += 1
    assert answer == p.Refused("wrong-token")
    return reasons


def test_fuzzing_a_live_coordinator(runner):
    # ~120 s of simulated work (2.7 s steps): ~3 s of wall.
    job = runner.start("--nproc", "3", "--max-steps", str(STEPS), *SHORT_STEPS, "--speed", "40", "--output", "jsonl")
    started = job.wait_for_event("rank_started", 3)
    job.wait_for_event("step")
    endpoint = started[0]["env"]["FAKERUN_COORDINATOR"]
    assert endpoint.startswith("ipc://")
    r = rng("fuzz")
    sent: Counter[str | None] = Counter()
    ctx = zmq.Context()
    try:
        side_attacks(ctx, endpoint, r)
        start = time.monotonic()
        intruder = _connect(ctx, endpoint, b"intruder")
        for reason, parts in fuzz_frames(r, job.marker):
            intruder.send_multipart(parts)
            sent[reason] += 1
        # Last on the same connection: its answer proves every frame before it was handled.
        intruder.send(p.encode(p.Hello(1, 1, 0, 1, job.marker, "last-wrong-token", {})))
        sent["wrong-token"] += 1
        answers = refusals(intruder, sent["wrong-token"] + sent["wrong-run-id"])
        assert answers == Counter({"wrong-token": sent["wrong-token"], "wrong-run-id": sent["wrong-run-id"]})
        fuzzed = time.monotonic() - start
        assert job.wait() == 0, job.stderr[-2000:]
    finally:
        ctx.destroy(linger=0)

    finished = job.events()[-1]
    assert finished["event"] == "run_finished" and finished["exit_code"] == 0
    assert [s["step"] for s in job.of("step")] == list(range(1, STEPS + 1))
    rejected = finished["rejected"]
    where = (rejected, dict(sent), seed_note())
    assert sum(rejected.values()) >= sum(sent.values()), where
    for reason, count in sent.items():
        if reason in EXACT:
            assert rejected.get(reason, 0) == count, where  # each frame counted once
        elif reason is not None:
            assert rejected.get(reason, 0) >= count, where
    # Each reason is reported once, then only counted: a flood is not a flood of output.
    reported = [e["reason"] for e in job.of("rejected")]
    assert sorted(reported) == sorted(rejected)
    assert job.stderr.count("rejected a message from") == len(rejected)
    print(f"fuzz: {sum(sent.values())} frames in {fuzzed:.2f} s, rejected {dict(sorted(rejected.items()))}")
