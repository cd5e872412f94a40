"""This node's kernel log, as rsyslog's kern.log holds it: each
KernelMessage the node's kernel logs (an NVRM Xid, a NIC's link going down
or up) as one line,

    Dec  2 10:43:35 worker4 kernel: [240314.528856] NVRM: Xid (PCI:0000:07:00): 48, ...

(the traditional file format, RSYSLOG_TraditionalFileFormat: the local time
to the second, the short host name, the facility's tag; then the kernel's own
printk stamp, "[%5lu.%06lu]" seconds since boot, as NVIDIA/gpu-operator#1146's
pasted syslog shows it). The node had been up world/hardware.uptime_at_start
when the job started; the job's clock moves the stamp on from there.

Written only with --log-dir, to <log-dir>/<host>/kern.log, and only once
the node's kernel has something to say: a healthy run leaves no file. Each
line goes out whole on an O_APPEND descriptor (a reader tailing it never sees
a torn line), appended to what an earlier run there left, as a node's log is."""

from __future__ import annotations

import os
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from fakerun import events as ev
from fakerun.render.metrics import append_whole
from fakerun.render.sinks import SinkFailed
from fakerun.system.files import open_regular
from fakerun.world.hardware import uptime_at_start

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")  # C locale's %b
FILE_NAME = "kern.log"


def syslog_line(when: datetime, host: str, uptime_s: float, text: str) -> str:
    """One kern.log line: rsyslog's "%b %e %H:%M:%S" stamp, the host, and
    the printk stamp (at least five digits of seconds, six of microseconds)."""
    micros = round(uptime_s * 1e6)
    stamp = f"{MONTHS[when.month - 1]} {when.day:2d} {when:%H:%M:%S}"
    return f"{stamp} {host.split('.')[0]} kernel: [{micros // 10**6:5d}.{micros % 10**6:06d}] {text}\n"


class KernelLog:
    """An EventSink: node `node`'s kern.log under `log_dir`, in time zone `tz`."""

    console = False
    clocked = False

    def __init__(self, log_dir: Path, node: int, tz: tzinfo | None) -> None:
        self.log_dir, self.node, self.tz = log_dir, node, tz
        self.ident: Any = None
        self.started: float | None = None  # the job's start on its clock: the first attempt's
        self.fd: int | None = None
        self.path: Path | None = None

    def event(self, e: ev.Event) -> None:
        if isinstance(e, ev.RunIdentity):
            self.ident = e.identity
        elif isinstance(e, ev.RunStarted) and self.started is None:
            self.started = e.time
        elif isinstance(e, ev.KernelMessage) and e.node_rank == self.node and self.ident is not None:
            self._write(e)

    def _write(self, e: ev.KernelMessage) -> None:
        host = self.ident.hosts[self.node]
        uptime = uptime_at_start(self.ident, self.node) + max(0.0, e.time - (self.started or e.time))
        line = syslog_line(datetime.fromtimestamp(e.time, self.tz), host, uptime, e.text)
        try:
            append_whole(self._open(host), line.encode())
        except OSError as exc:
            raise SinkFailed(f"kernel log {self.path}: {exc.strerror}") from None

    def _open(self, host: str) -> int:
        if self.fd is None:
            self.path = self.log_dir / host.split(".")[0] / FILE_NAME
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = open_regular(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        return self.fd

    def flush(self) -> None:
        """Every line is already in the kernel: nothing is buffered here."""

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
