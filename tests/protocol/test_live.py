"""Malformed and unauthorised frames sent to a live job's coordinator are
rejected and counted; the job finishes normally."""

from __future__ import annotations

import msgpack
import zmq

from fakerun import protocol as p
from tests.conftest import SHORT_STEPS

BAD_FRAMES = {
    "undecodable": [b"\xc1\xc1garbage", p.encode(p.Ack())[:-1] + b"\xff\xff"],
    "not-a-map": [msgpack.packb("hello")],
    "oversize": [b"\x00" * (p.MAX_MESSAGE_BYTES + 1024)],
    "unknown-kind": [msgpack.packb({"v": 2, "kind": "exec", "cmd": "rm -rf /"})],
    "version": [msgpack.packb({"v": 99, "kind": "ack"})],
    "not-joined": [p.encode(p.Goodbye(0, 0, ""))],
}


def test_garbage_to_a_live_coordinator(runner):
    # ~160 s of simulated work (2.2 s steps): ~2 s of wall, live when the intruder comes.
    job = runner.start("--nproc", "4", "--max-steps", "40", *SHORT_STEPS, "--speed", "80", "--output", "jsonl")
    started = job.wait_for_event("rank_started", 4)
    job.wait_for_event("step")
    endpoint = started[0]["env"]["FAKERUN_COORDINATOR"]
    ctx = zmq.Context()
    try:
        intruder = _connect(ctx, endpoint, b"intruder")
        for frames in BAD_FRAMES.values():
            for frame in frames:
                intruder.send(frame)
        intruder.send_multipart([b"two", b"frames"])
        for _ in range(500):  # a small flood
            intruder.send(b"\x00\x01\x02")
        # Last on the same connection (so after everything above): a
        # well-formed hello with the wrong token. Its answer proves the
        # coordinator has handled every earlier frame.
        intruder.send(p.encode(p.Hello(1, 1, 0, 1, job.marker, "not-the-token", {})))
        assert intruder.poll(10_000), "a refused hello gets an answer"
        assert p.decode(intruder.recv()) == p.Refused("wrong-token")
        assert job.wait() == 0
    finally:
        ctx.destroy(linger=0)

    finished = job.events()[-1]
    assert finished["event"] == "run_finished" and finished["exit_code"] == 0
    assert [s["step"] for s in job.of("step")] == list(range(1, 41))
    rejected = finished["rejected"]
    for reason, frames in BAD_FRAMES.items():
        assert rejected.get(reason, 0) >= len(frames), (reason, rejected)
    assert rejected["frames"] == 1 and rejected["wrong-token"] == 1
    assert rejected["undecodable"] >= 2 + 500
    # Each reason is reported once, then only counted.
    reported = [e["reason"] for e in job.of("rejected")]
    assert sorted(reported) == sorted(set(reported))
    assert "rejected a message from 'intruder': undecodable" in job.stderr


def _connect(ctx: zmq.Context, endpoint: str, identity: bytes) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(endpoint)
    return sock


def test_a_peer_gone_during_its_handshake_is_not_a_refused_one(tmp_path):
    """A rank killed before its handshake finished (a job stopped as it
    starts) broke no protocol: it is not counted as a peer refused in the
    handshake (it was, as `handshake`, one run in five of a full disk)."""
    import socket
    import time

    from fakerun.protocol.transport import RouterSocket

    ctx = zmq.Context()
    path = tmp_path / "c.sock"
    router = RouterSocket(ctx, [f"ipc://{path}"])
    try:
        greeting = b"\xff" + b"\x00" * 7 + b"\x01\x7f\x03\x00NULL"  # ZMTP 3.0's, cut short
        for cut in (0, 10, len(greeting)):
            with socket.socket(socket.AF_UNIX) as peer:
                peer.connect(str(path))
                peer.sendall(greeting[:cut])
        deadline = time.monotonic() + 1.0  # the monitor's events, were there any, come within it
        refused = 0
        while time.monotonic() < deadline:
            refused += router.refused()
            time.sleep(0.05)
        assert refused == 0
    finally:
        router.close()
        ctx.destroy(linger=0)
