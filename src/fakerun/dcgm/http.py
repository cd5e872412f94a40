"""What dcgm-exporter's Go HTTP server sends back, byte for byte: its
routes (pkg/dcgmexporter/server.go at 3.3.8-3.6.0: /metrics, /health, and
an index page at /; gorilla/mux's 404 elsewhere) and Go net/http's framing
(server.go chunkWriter.writeHeader): the handler's own header first (it sets
X-Content-Type-Options: nosniff), then Date, Content-Length, the sniffed
Content-Type, Connection and Transfer-Encoding. A body the handler's 2048-byte
buffer holds gets a Content-Length; a larger one is chunked (HTTP/1.1: one
chunk, the handler writes it whole) or ends with the connection (HTTP/1.0)."""

from __future__ import annotations

import time
from dataclasses import dataclass

BUFFER = 2048  # net/http bufferBeforeChunkingSize
REQUEST_MAX = 1 << 20  # net/http DefaultMaxHeaderBytes
TEXT = "text/plain; charset=utf-8"  # what http.DetectContentType makes of the scrape, "OK" and a 404
HTML = "text/html; charset=utf-8"
INDEX = b"""<html>
			<head><title>GPU Exporter</title></head>
			<body>
			<h1>GPU Exporter</h1>
			<p><a href="./metrics">Metrics</a></p>
			</body>
			</html>"""
NOT_FOUND = b"404 page not found\n"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    version: str  # "HTTP/1.1"
    keep_alive: bool  # the connection stays open after the response


class BadRequest(ValueError):
    """Not an HTTP request: net/http answers 400 and closes."""


def parse(head: bytes) -> Request:
    """A request's head (up to its blank line); the query string is no part of the route."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise BadRequest("malformed request line") from None
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(f"unsupported protocol {version[:20]!r}")
    fields = (line.partition(":") for line in lines[1:] if line)
    headers = {k.strip().lower(): v.strip() for k, _, v in fields}
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
    return Request(method, target.split("?", 1)[0], version, keep)


def route(path: str, metrics: bytes) -> tuple[int, bytes]:
    if path == "/metrics":
        return 200, metrics
    if path == "/health":
        return 200, b"OK"
    if path == "/":
        return 200, INDEX
    return 404, NOT_FOUND


def respond(req: Request, status: int, body: bytes, now: float) -> tuple[bytes, bool]:
    """The response's bytes and whether the connection stays open after it."""
    small = len(body) <= BUFFER
    head = req.method == "HEAD"
    chunked = not small and not head and req.version == "HTTP/1.1"
    keep = req.keep_alive and (small or chunked or head)
    lines = [f"{req.version} {status} {'OK' if status == 200 else 'Not Found'}",
             "X-Content-Type-Options: nosniff", f"Date: {http_date(now)}"]
    if small and (not head or body):
        lines.append(f"Content-Length: {len(body)}")
    lines.append(f"Content-Type: {HTML if body.startswith(b'<html') else TEXT}")
    if not keep and req.version == "HTTP/1.1":
        lines.append("Connection: close")
    elif keep and req.version == "HTTP/1.0":
        lines.append("Connection: keep-alive")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if head:
        return out, keep
    if chunked:
        return out + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n", keep
    return out + body, keep


def http_date(now: float) -> str:
    """net/http's TimeFormat, "Mon, 07 Dec 2026 22:40:00 GMT", in English
    whatever the locale (its appendTime spells the names itself, as here)."""
    t = time.gmtime(now)
    day = "MonTueWedThuFriSatSun"[3 * t.tm_wday:][:3]
    month = "JanFebMarAprMayJunJulAugSepOctNovDec"[3 * t.tm_mon - 3:][:3]
    return f"{day}, {t.tm_mday:02d} {month} {t.tm_year} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
