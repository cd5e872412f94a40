"""The endpoint's HTTP: Go net/http's framing as dcgm-exporter's server
sends it (server.go chunkWriter.writeHeader: the handler's X-Content-Type-
Options, then Date, Content-Length, Content-Type, Connection,
Transfer-Encoding), served from a poll loop like the job's, no thread; the
pod labels read inside a PyTorchJob's pod; the option's refusals."""

from __future__ import annotations

import socket
import time

import pytest
import zmq

from fakerun.cli.main import to_config
from fakerun.cli.parser import build_parser
from fakerun.cli.pod import pod_labels
from fakerun.dcgm import http
from fakerun.dcgm.server import MAX_CLIENTS, MetricsServer, PortTaken, probe
from fakerun.errors import UsageError

NOW = 1_796_683_467.5  # Mon, 07 Dec 2026 22:44:27 GMT
GET = http.Request("GET", "/metrics", "HTTP/1.1", True)


def test_a_large_body_is_one_chunk_and_a_small_one_has_its_length():
    body = b"# HELP x\n" * 400
    out, keep = http.respond(GET, 200, body, NOW)
    head, _, rest = out.partition(b"\r\n\r\n")
    assert head.decode().split("\r\n") == [
        "HTTP/1.1 200 OK", "X-Content-Type-Options: nosniff", "Date: Mon, 07 Dec 2026 22:44:27 GMT",
        "Content-Type: text/plain; charset=utf-8", "Transfer-Encoding: chunked"]
    assert rest == f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" and keep
    out, keep = http.respond(GET, 200, b"OK", NOW)
    assert out == (b"HTTP/1.1 200 OK\r\nX-Content-Type-Options: nosniff\r\nDate: Mon, 07 Dec 2026 22:44:27 GMT\r\n"
                   b"Content-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOK") and keep


def test_http_1_0_and_close_end_the_connection_and_head_has_no_body():
    body = b"x" * 5000
    out, keep = http.respond(http.parse(b"GET /metrics HTTP/1.0\r\nHost: a"), 200, body, NOW)
    assert out.startswith(b"HTTP/1.0 200 OK\r\n") and out.endswith(b"\r\n\r\n" + body) and not keep
    assert b"Content-Length" not in out and b"chunked" not in out  # the body ends with the connection
    out, keep = http.respond(http.parse(b"GET /metrics HTTP/1.1\r\nConnection: close"), 200, b"OK", NOW)
    assert b"\r\nConnection: close\r\n" in out and not keep
    out, keep = http.respond(http.parse(b"HEAD /metrics HTTP/1.1"), 200, body, NOW)
    assert out.endswith(b"\r\n\r\n") and b"chunked" not in out and keep
    assert http.parse(b"GET /metrics?x=1 HTTP/1.1").path == "/metrics" and http.route("/metrics", b"m") == (200, b"m")
    assert http.route("/", b"")[1].startswith(b"<html>") and http.route("/nope", b"") == (404, b"404 page not found\n")
    with pytest.raises(http.BadRequest):
        http.parse(b"\x16\x03\x01 garbage")


def serve_until(server: MetricsServer, client: socket.socket, done, timeout: float = 10.0) -> bytes:
    """The job loop's part: poll the server's sockets (and nothing else), serve the ready ones."""
    got, deadline = b"", time.monotonic() + timeout
    client.setblocking(False)
    while not done(got):
        assert time.monotonic() < deadline, got[-200:]
        ready = dict(zmq.zmq_poll(server.poll_items() + [(client.fileno(), zmq.POLLIN)], 100))
        server.serve(ready, time.monotonic())
        if client.fileno() in ready:
            chunk = client.recv(1 << 20)
            if not chunk:
                break
            got += chunk
    return got


def test_the_server_answers_on_the_loops_poll_and_keeps_the_connection():
    body = b"# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n" * 100
    server = MetricsServer("127.0.0.1", 0, lambda: body, lambda: NOW)
    try:
        with socket.create_connection(("127.0.0.1", server.bound_port), timeout=5) as client:
            for _ in range(2):  # the same connection twice, as Prometheus scrapes
                client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n")
                got = serve_until(server, client, lambda b: b.endswith(b"\r\n0\r\n\r\n"))
                assert got.split(b"\r\n\r\n", 1)[1] == f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
            assert len(server.clients) == 1
            client.sendall(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
            got = serve_until(server, client, lambda b: False)  # until the server closes it
            assert got.endswith(b"\r\n\r\nOK") and not server.clients
    finally:
        server.close()


def test_a_silent_client_is_dropped_and_no_more_than_the_cap_are_held():
    server = MetricsServer("127.0.0.1", 0, bytes, lambda: NOW)
    clients = [socket.create_connection(("127.0.0.1", server.bound_port), timeout=5) for _ in range(MAX_CLIENTS + 2)]
    try:
        deadline = time.monotonic() + 10
        while len(server.clients) < MAX_CLIENTS:
            assert time.monotonic() < deadline
            server.serve(dict(zmq.zmq_poll(server.poll_items(), 100)), time.monotonic())
        server.serve({server.listener.fileno(): zmq.POLLIN}, time.monotonic())
        assert len(server.clients) == MAX_CLIENTS  # the rest wait in the backlog
        assert server.listener.fileno() not in dict(server.poll_items())
        server.serve({}, time.monotonic() + 11)  # past net/http's 10 s ReadTimeout
        assert not server.clients
    finally:
        for c in clients:
            c.close()
        server.close()


def test_a_taken_port_is_one_line_naming_it():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortTaken) as err:
            MetricsServer("127.0.0.1", port, bytes, float)
        assert str(err.value) == f"--metrics-port {port} on 127.0.0.1: Address already in use"
        with pytest.raises(PortTaken, match="port must be 0-65535"):
            probe("127.0.0.1", [65536])
    assert isinstance(err.value, UsageError)


def test_the_pod_labels_need_a_pytorchjobs_pod_and_its_namespace(tmp_path):
    ns = tmp_path / "namespace"
    ns.write_text("ml-team\n")
    pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "HOSTNAME": "fakerun-demo-worker-0", "PET_NNODES": "2"}
    assert pod_labels(pod, ns) == (("container", "pytorch"), ("namespace", "ml-team"),
                                   ("pod", "fakerun-demo-worker-0"))
    assert pod_labels({k: v for k, v in pod.items() if k != "PET_NNODES"}, ns) == ()  # not a PyTorchJob's
    assert pod_labels({k: v for k, v in pod.items() if k != "KUBERNETES_SERVICE_HOST"}, ns) == ()
    assert pod_labels(pod, tmp_path / "none") == ()  # no namespace: no labels at all


def config(*argv: str, gpu: str = "NVIDIA H100 80GB HBM3"):
    return to_config(build_parser().parse_args([*argv, "--nproc", "2", "--max-steps", "3", "--gpu", gpu]), {})


def test_the_option_is_checked_before_anything_starts():
    assert config().metrics_listen is None
    assert config("--metrics-port", "9400").metrics_listen == 9400
    local = config("--metrics-port", "9400", "--nnodes", "2", "--node-rank", "1", "--lifeline", "1",
                   "--token", "t" * 32)
    assert local.metrics_listen == 9401  # node k of --nodes M serves PORT + k
    with pytest.raises(UsageError, match="--metrics-port must be in 1-65535, got 0"):
        config("--metrics-port", "0")
    with pytest.raises(UsageError, match="is not an NVIDIA GPU"):
        config("--metrics-port", "9400", gpu="AMD Instinct MI300X")
    with pytest.raises(UsageError, match="would serve port 65536"):
        config("--metrics-port", "65535", "--nnodes", "2", "--node-rank", "1", "--lifeline", "1",
               "--token", "t" * 32)
