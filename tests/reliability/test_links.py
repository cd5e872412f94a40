"""Attacks on a job's TCP links by another local user without the token.

Node 0's coordinator listens on a TCP port that every user of the machine
can reach, and node 1 dials whatever holds that port. Each test runs the
attack as uid 65534 (tests/other_user.py) against a job run as root:

- a flood of 4 MB frames from four sockets must not grow node 0;
- a listener squatting the port must capture no byte of the token from
  node 1, and node 1 must not take it for node 0 (nothing it sends shows);
- sockets that claim the identities `agent-1` and `rank-N` first must not
  keep the real peers out.

The flood's ten seconds are spent waiting (the attacker sends, node 0 is
sampled): they run side by side with the module's other tests, each
attack on a port of its own, and the flood test, the module's last,
checks what they found (see flood_meanwhile).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest
import zmq

from fakerun import events as ev
from fakerun import protocol as p
from fakerun.config.options import free_port
from tests.conftest import Job, Runner, parse_events, wait_until
from tests.other_user import Attacker, needs_root, start_as_other_user, start_in_child

pytestmark = needs_root
TOKEN = "5ec2e7d0c0ffee0123456789abcdef42"
FLOOD_S = 10.0
FRAME = 4_000_000  # what the attack on the old code sent: under its 4 MiB transport limit
GROWTH_LIMIT = 50 * 2**20
INJECTED = "*** INJECTED BY ANOTHER LOCAL USER ***"


def _dealers(ctx: zmq.Context, port: int, identities: list[bytes],
             watch: int = 0) -> list[tuple[zmq.Socket, zmq.Socket | None]]:
    """A DEALER per identity dialling node 0's port, each with a monitor of
    the `watch` events (attached before it dials, or its first are lost)."""
    socks = []
    for identity in identities:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, identity)
        sock.setsockopt(zmq.SNDHWM, 4)  # the attacker's own memory stays small
        sock.setsockopt(zmq.RECONNECT_IVL, 5)
        sock.setsockopt(zmq.LINGER, 0)
        monitor = sock.get_monitor_socket(watch) if watch else None
        sock.connect(f"tcp://127.0.0.1:{port}")
        socks.append((sock, monitor))
    return socks


def flood(port: int, seconds: float) -> int:
    """Four sockets sending 4 MB frames as fast as node 0 takes them."""
    ctx = zmq.Context()
    socks = [sock for sock, _ in _dealers(ctx, port, [b"flood-%d" % i for i in range(4)])]
    payload = b"\x00" * FRAME
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for sock in socks:
            try:
                sock.send(payload, zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                time.sleep(0.001)
    ctx.destroy(linger=0)
    return sent


def squat_identities(port: int, identities: list[str], ready_fd: int, seconds: float) -> int:
    """Claim `identities` at node 0's port before the real peers come, and
    hold them, saying hello as each; the frames that came back (none
    without the token). Writes to `ready_fd` once every socket's first
    handshake has ended, either way."""
    ctx = zmq.Context()
    handshakes = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                  | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    pairs = _dealers(ctx, port, [i.encode() for i in identities], handshakes)
    socks = [sock for sock, _ in pairs]
    pending = {monitor for _, monitor in pairs}
    got = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for monitor in [m for m in pending if m.poll(0)]:
            monitor.recv_multipart()
            pending.discard(monitor)
            if not pending:
                os.write(ready_fd, b"!")
        for sock in socks:
            if sock.poll(5):
                sock.recv()
                got += 1
            with contextlib.suppress(zmq.Again):
                sock.send(b"hello, I am " + sock.getsockopt(zmq.IDENTITY), zmq.NOBLOCK)
    ctx.destroy(linger=0)
    return got


def _greeting(mechanism: bytes, as_server: bool) -> bytes:
    """A ZMTP 3.0 greeting (RFC 23): signature, version, mechanism, as-server, filler."""
    return (b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + mechanism.ljust(20, b"\x00")
            + bytes([as_server]) + b"\x00" * 31)


NULL_READY = b"\x04\x1c\x05READY\x0bSocket-Type\x00\x00\x00\x06ROUTER"


def _told_to_stop(stop_fd: int) -> bool:
    return bool(select.select([stop_fd], [], [], 0)[0])


def raw_squatter(sock_fd: int, mechanism: str, seconds: float, stop_fd: int) -> str:
    """On the (already bound) port: answer every connection as a ZMTP
    server of `mechanism` would begin, and keep whatever the peer sends,
    for `seconds` or until told to stop (the victim has exited)."""
    listener = socket.socket(fileno=sock_fd)
    listener.settimeout(0.2)
    captured = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not _told_to_stop(stop_fd):
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(0.5)
            conn.sendall(_greeting(mechanism.encode(), True) + (NULL_READY if mechanism == "NULL" else b""))
            while True:
                try:
                    data = conn.recv(65536)
                except (TimeoutError, OSError):
                    break
                if not data:
                    break
                captured += data
    return captured.hex()


def zmq_squatter(port: int, seconds: float, stop_fd: int) -> list[str]:
    """Node 0's port, taken first by a ROUTER that answers any hello with a
    Welcome and a line for the victim's screen; the frames it received
    (for `seconds`, or until told to stop)."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(f"tcp://127.0.0.1:{port}")
    heard = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not _told_to_stop(stop_fd):
        if not router.poll(50):
            continue
        peer, frame = router.recv_multipart()[:2]
        heard.append(frame.hex())
        router.send_multipart([peer, p.encode(p.Welcome(4, time.time()))])
        line = ev.RankOutput(0, "stdout", [INJECTED])
        router.send_multipart([peer, p.encode(p.Events([json.dumps(ev.to_dict(line))]))])
    ctx.destroy(linger=0)
    return heard


def _agent(job, node: int) -> psutil.Process:
    """The launcher of node `node` under a `--nodes` job (its ranks, forked
    from it, share its command line: it is the child of the job's process)."""
    def find() -> psutil.Process | None:
        for child in psutil.Process(job.proc.pid).children():
            if f"--node-rank {node} " in " ".join(child.cmdline()) + " ":
                return child
        return None
    return wait_until(find, 20)


def _node1(runner, port: int):
    """Node 1 alone, dialling `port`, where no node 0 of ours listens."""
    return runner.start("--nnodes", "2", "--node-rank", "1", "--nproc", "2", "--master-port", str(port),
                        "--rdzv-timeout", "3", "--max-steps", "3", "--speed", "0",
                        env={**os.environ, "FAKERUN_TOKEN": TOKEN, "FAKERUN_OPTS": ""})


@contextlib.contextmanager
def _stop_pipe() -> Iterator[tuple[int, Callable[[], None]]]:
    """A squatter's stop: the end it watches, and what tells it to stop (once
    node 1 has exited, there is no one left to squat for)."""
    stop_r, stop_w = os.pipe()
    try:
        yield stop_r, lambda: os.write(stop_w, b"!")
    finally:
        os.close(stop_r)
        os.close(stop_w)


@pytest.mark.parametrize("mechanism", ["NULL", "CURVE"])
def test_a_port_squatter_gets_no_byte_of_the_token(runner, mechanism):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    with _stop_pipe() as (stop_fd, stop):
        attacker = start_as_other_user(raw_squatter, listener.fileno(), mechanism, 4.0, stop_fd)
        listener.close()  # the attacker holds its own copy
        job = _node1(runner, port)
        code = job.wait(30)
        stop()
        captured = bytes.fromhex(attacker.wait(10) or "")
    assert captured, "node 1 never dialled the squatted port"
    for secret in (TOKEN.encode(), bytes.fromhex(TOKEN)):
        assert secret not in captured, f"the token went to the squatter ({mechanism} greeting)"
    assert b"agent_hello" not in captured
    assert code != 0, "node 1 ran as if the squatter were node 0"


def test_a_zmq_squatter_cannot_pose_as_node_0(runner):
    port = free_port()
    with _stop_pipe() as (stop_fd, stop):
        attacker = start_as_other_user(zmq_squatter, port, 4.0, stop_fd)
        wait_until(lambda: _listening(port), 10)
        job = _node1(runner, port)
        code = job.wait(30)
        stop()
        heard = attacker.wait(10)
    assert heard == [], "node 1 talked to the squatter"
    assert INJECTED not in job.stdout + job.stderr
    assert code != 0


def _listening(port: int) -> bool:
    return any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
               for c in psutil.net_connections("tcp4"))


def test_identities_taken_first_do_not_keep_the_real_peers_out(runner):
    port = free_port()
    node = ("--nnodes", "2", "--nproc", "2", "--master-port", str(port), "--max-steps", "3", "--speed", "0",
            "--node-timeout", "10", "--output", "jsonl")
    env = {**os.environ, "FAKERUN_TOKEN": TOKEN, "FAKERUN_OPTS": ""}
    node0 = runner.start(*node, "--node-rank", "0", env=env)
    wait_until(lambda: _listening(port), 20)
    # Node 1's agent and ranks (ranks 2 and 3), and one of node 0's own.
    ready, ready_w = os.pipe()
    attacker = start_as_other_user(squat_identities, port, ["agent-1", "rank-2", "rank-3", "rank-0"],
                                   ready_w, 20.0)
    os.close(ready_w)
    try:
        assert select.select([ready], [], [], 10)[0], "the attacker's sockets never met node 0"
        node1 = runner.start(*node, "--node-rank", "1", "--rdzv-id", node0.marker, env=env)
        assert node1.wait(40) == 0, node1.stderr[-2000:]
        assert node0.wait(40) == 0, node0.stderr[-2000:]
    finally:
        answers = attacker.stop()
        os.close(ready)
    assert answers in (0, None)


# -- the flood, side by side with the tests above ---------------------------
FLOOD_TEST = "test_a_flood_of_big_frames_does_not_grow_node_0"


def watch_the_flood(job: Job, port: int) -> dict[str, Any]:
    """In a child of the test process: once every node's agent and rank has
    joined, the attacker floods node 0's port for FLOOD_S while node 0's
    memory is sampled. What node 0 held before, its peak, and the frames
    the attacker's sockets took. (Not the job's Popen here, which is the
    parent's: the job is watched through its pids and its output.)"""
    node0 = _agent(job, 0)

    def joined() -> bool:
        text = job.stdout
        return any(e["event"] == "rendezvous" for e in parse_events(text[:text.rfind("\n") + 1]))

    wait_until(joined, 30)
    start_rss = node0.memory_info().rss
    attacker = start_as_other_user(flood, port, FLOOD_S)
    peak, end = start_rss, time.monotonic() + FLOOD_S
    while time.monotonic() < end:
        try:
            peak = max(peak, node0.memory_info().rss)
        except psutil.NoSuchProcess:  # the job has ended (a zombie too)
            break
        time.sleep(0.05)  # a sampling interval, not a wait for state
    sent = attacker.wait(FLOOD_S + 10)  # frames its sockets took: their queues, if not node 0
    return {"start_rss": start_rss, "peak": peak, "sent": sent}


@pytest.fixture(scope="module", autouse=True)
def flood_meanwhile(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runner, Job, Attacker] | None]:
    """The flood, started with the module's first test when the flood test
    is to run: its job, and the child watching it."""
    if FLOOD_TEST not in {item.name for item in request.session.items}:
        yield None
        return
    runner = Runner(tmp_path_factory.mktemp("flood"))
    port = free_port()
    # ~320 s of simulated work (Llama-3.2-3B on L40S, seed 5): ~16 s at --speed 20, through the flood.
    job = runner.start("--nodes", "2", "--nproc", "2", "--no-theatre", "--master-port", str(port),
                       "--max-steps", "4", "--seed", "5", "--speed", "20", "--output", "jsonl")
    watcher = start_in_child(watch_the_flood, job, port)
    try:
        yield runner, job, watcher
    finally:
        with contextlib.suppress(ChildProcessError):  # reaped already, by the test's wait
            if watcher.alive():
                watcher.stop()
        runner.cleanup()


def test_a_flood_of_big_frames_does_not_grow_node_0(flood_meanwhile):
    runner, job, watcher = flood_meanwhile
    found = watcher.wait(FLOOD_S + 60)  # None: the watcher failed (its traceback is on stderr)
    assert found is not None, job.stderr[-2000:]
    assert job.wait(60) == 0, job.stderr[-2000:]
    assert not runner.leftovers(), "processes of the job left behind"
    growth = found["peak"] - found["start_rss"]
    print(f"flood: {found['sent']} frames of {FRAME} bytes queued to send; node 0 grew {growth / 2**20:.1f} MiB")
    assert growth <= GROWTH_LIMIT, f"node 0 grew by {growth / 2**20:.0f} MiB under the flood"
    assert [e["exit_code"] for e in job.of("run_finished")] == [0, 0]
