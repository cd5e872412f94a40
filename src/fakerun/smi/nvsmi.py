"""nvidia-smi's own command line, for tools that call it: `-L`,
`--query-gpu=... --format=csv[,noheader][,nounits]`, `--query-compute-apps=...`,
`-q [-d MEMORY,...]`, `-q -x`, `-i ID[,ID]`, `-l [SEC]`, `-lms MS`, and the table with
none of these. Both `--opt=value` and `--opt value` are read, as nvidia-smi
reads them. Errors are nvidia-smi's, on stdout, with its exit codes.

`tool`: run as the `nvidia-smi` shim (`fakerun shims`): with no job the
host's GPUs are idle (smi/idle.py), and nothing it prints names fakerun.
As `fakerun smi` (not a tool), no job is fakerun's one-line error, exit 1."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TextIO

from fakerun import texts
from fakerun.errors import ExitCode
from fakerun.smi import monitor, query, topo
from fakerun.smi.device import Device, host_gpus
from fakerun.smi.jobs import newest
from fakerun.smi.report import report, sections
from fakerun.smi.snapshot import Snapshot, SnapshotError
from fakerun.smi.table import table
from fakerun.smi.xmlreport import xml_report
from fakerun.system.runtime import RuntimeDirError
from fakerun.system.streams import silence

INVALID_ARGUMENT, NOT_SUPPORTED, NOT_FOUND, NO_DRIVER = 2, 3, 6, 9  # nvidia-smi's man page, RETURN VALUE
UNKNOWN_ERROR = 255
DEFAULT_LOOP_S = 5.0
OPTIONAL = "optional"  # -l takes a number, or none (DEFAULT_LOOP_S)
TOPO = (["topo", "-m"], ["topo", "--matrix"])  # the one topo view drawn

# spelling -> (key, takes a value)
_OPTIONS: dict[str, tuple[str, bool | str]] = {
    "-h": ("help", False), "--help": ("help", False),
    "-L": ("list", False), "--list-gpus": ("list", False),
    "-q": ("query", False), "--query": ("query", False),
    "-x": ("xml", False), "--xml-format": ("xml", False),
    "-d": ("display", True), "--display": ("display", True),
    "-i": ("id", True), "--id": ("id", True),
    "-l": ("loop", OPTIONAL), "--loop": ("loop", OPTIONAL),
    "-lms": ("loop_ms", True), "--loop-ms": ("loop_ms", True),
    "--query-gpu": ("query_gpu", True),
    "--query-compute-apps": ("query_apps", True),
    "--format": ("format", True),
}
# What only nvidia-smi takes: `fakerun smi` given one of these speaks nvidia-smi.
OWN = {"-L", "--list-gpus", "-q", "--query", "-x", "--xml-format", "-d", "--display", "-i", "--id",
       "-lms", "--loop-ms", "--query-gpu", "dmon", "pmon", "topo", "--query-compute-apps", "--format"}

Locate = Callable[[], "Snapshot | None"]


class Refused(Exception):
    """nvidia-smi's message (stdout) and exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message, self.status = message, status


@dataclass(frozen=True)
class Request:
    mode: str  # table, list, query_gpu, query_apps, query
    fields: list[query.Field] = dataclasses.field(default_factory=list)
    fmt: query.Format = query.Format()
    ids: tuple[str, ...] = ()
    display: tuple[str, ...] = ()
    every_s: float | None = None
    help: bool = False
    xml: bool = False  # -x: the query report as XML


def nvidia_smi(argv: list[str], stdout: TextIO = sys.stdout, environ: Any = os.environ) -> int:
    """The `nvidia-smi` shim: the newest running job's host, or the idle one."""
    return main(argv, stdout, sys.stderr, partial(_this_host, environ), tool=True)


def _this_host(environ: Any) -> Snapshot:
    """What nvidia-smi on this host sees: a job's GPUs, else idle ones. A
    runtime directory fakerun may not use shows no job, as no job can run there."""
    try:
        snap = newest(environ)
    except (SnapshotError, RuntimeDirError):
        snap = None
    if snap is not None:
        return snap
    from fakerun.smi import idle  # draws a node: only the shim needs it, only with no job

    return idle.snapshot(time.time())


def speaks(argv: list[str]) -> bool:
    """`fakerun smi` argv with an option only nvidia-smi has."""
    return any(arg.split("=", 1)[0] in OWN for arg in argv)


def main(argv: list[str], stdout: TextIO, stderr: TextIO, locate: Locate, tool: bool,
         sleep: Callable[[float], Any] = time.sleep) -> int:
    try:
        watch = _watch(argv)
        request = Request(mode="topo" if argv in TOPO else "watch") if watch or argv in TOPO else parse(argv)
        snap = locate()
        if snap is None:
            stderr.write("fakerun smi: no running fakerun job found\n")
            return ExitCode.FAILED
        if snap.vendor != "nvidia":
            raise Refused(_message("no_driver"), NO_DRIVER)
        if request.help:
            stdout.write(texts.load("nvidia_smi")["usage"]["help"].format(driver=snap.driver))
            return ExitCode.OK
        if request.mode == "topo":
            stdout.write("".join(line + "\n" for line in topo.matrix(host_gpus(snap), stdout.isatty())))
        elif watch:
            monitor.stream(watch, snap, stdout, locate, _chosen, sleep)
        else:
            return _run(request, snap, stdout, locate, sleep)
        return ExitCode.OK
    except Refused as refused:
        stdout.write(refused.message)
        stdout.flush()
        return refused.status
    except KeyboardInterrupt:
        return ExitCode.SIGINT
    except BrokenPipeError:  # `nvidia-smi -l 1 | head`: the reader left; so do we, quietly
        silence(stdout)
        return ExitCode.PIPE


def _watch(argv: list[str]) -> monitor.Watch | None:
    """`dmon ...` or `pmon ...`: the monitors' own options."""
    if argv[:1] and argv[0] in texts.load("nvidia_smi")["unmodelled"]["commands"] and argv not in TOPO:
        raise _unmodelled(argv[0])
    if argv[:1] not in (["dmon"], ["pmon"]):
        return None
    try:
        return monitor.parse(argv[0], argv[1:])
    except monitor.Bad as bad:
        raise Refused(_message("bad_option").format(option=bad.args[0]), INVALID_ARGUMENT) from None


def _run(request: Request, snap: Snapshot, out: TextIO, locate: Locate, sleep: Callable[[float], Any]) -> int:
    """Once, or every `every_s` until Ctrl+C (or, as `fakerun smi`, the job's end)."""
    first = True
    while True:
        devices = host_gpus(snap)
        _reachable(devices)
        lines = render(request, _chosen(devices, request.ids), len(devices), first)
        out.write("".join(line + "\n" for line in lines))
        out.flush()
        if request.every_s is None:
            return ExitCode.OK
        first = False
        sleep(request.every_s)
        found = locate()
        if found is None:
            return ExitCode.OK
        snap = found


def _reachable(devices: list[Device]) -> None:
    """A GPU fallen off the bus stops nvidia-smi at NVML's first question
    about it, whatever was asked (rwth-i6/returnn#1486, after Xid 79:
    "Unable to determine the device handle for GPU0000:03:00.0: Unknown
    Error"): NVML_ERROR_UNKNOWN, which nvidia-smi's man page's RETURN VALUE
    gives 255 ("Other error or internal driver error occurred")."""
    lost = next((d for d in devices if d.row.lost), None)
    if lost is not None:
        raise Refused(_message("gpu_lost").format(bus=lost.row.bus_id[4:]), UNKNOWN_ERROR)


def render(request: Request, devices: list[Device], count: int, first: bool = True) -> list[str]:
    fmt = dataclasses.replace(request.fmt, header=request.fmt.header and first)
    if request.mode == "list":
        return query.listing(devices)
    if request.mode == "query_gpu":
        return query.csv(request.fields, query.gpu_rows(devices, request.fields, count), fmt)
    if request.mode == "query_apps":
        return query.csv(request.fields, query.app_rows(devices, request.fields), fmt)
    if request.mode == "query":
        return xml_report(devices, count) if request.xml else report(devices, count, list(request.display))
    snap = devices[0].snap
    return table(dataclasses.replace(snap, gpus=[d.row for d in devices]))


def parse(argv: list[str]) -> Request:
    given = _options(argv)
    modes = [m for m in ("list", "query_gpu", "query_apps", "query") if m in given]
    if len(modes) > 1 or ("format" in given) != bool({"query_gpu", "query_apps"} & set(modes)) \
            or ("display" in given and modes != ["query"]) or ("xml" in given and modes != ["query"]) \
            or {"display", "xml"} <= set(given):  # -d "doesn't work with -u or -x flags" (nvidia-smi -h)
        raise _combination()
    mode = modes[0] if modes else "table"
    fields: list[query.Field] = []
    if mode in ("query_gpu", "query_apps"):
        table_name = "query_gpu" if mode == "query_gpu" else "query_apps"
        try:
            fields = query.fields(table_name, str(given[mode]))
        except query.BadField as bad:
            raise Refused(_message("bad_field").format(field=bad.field), INVALID_ARGUMENT) from None
    return Request(mode=mode, fields=fields, fmt=_format(given.get("format")),
                   ids=_ids(given.get("id")), display=_display(given.get("display")),
                   every_s=_every(given), help="help" in given, xml="xml" in given)


def _options(argv: list[str]) -> dict[str, str | bool]:
    given: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        word = argv[i]
        name, eq, inline = word.partition("=")
        if name not in _OPTIONS:
            raise _unmodelled(name) if name in texts.load("nvidia_smi")["unmodelled"]["options"] else \
                Refused(_message("bad_option").format(option=word), INVALID_ARGUMENT)
        key, takes = _OPTIONS[name]
        if eq:
            if not takes:
                raise Refused(_message("bad_option").format(option=word), INVALID_ARGUMENT)
            given[key] = inline
        elif takes is True:
            if i + 1 >= len(argv):
                raise _combination()
            i += 1
            given[key] = argv[i]
        elif takes == OPTIONAL and i + 1 < len(argv) and argv[i + 1].isdigit():
            i += 1
            given[key] = argv[i]
        else:
            given[key] = True
        i += 1
    return given


def _format(text: str | bool | None) -> query.Format:
    if text is None:
        return query.Format()
    items = [item.strip() for item in str(text).split(",")]
    if "csv" not in items or not set(items) <= {"csv", "noheader", "nounits"}:
        raise _combination()
    return query.Format(header="noheader" not in items, units="nounits" not in items)


def _ids(text: str | bool | None) -> tuple[str, ...]:
    if text is None:
        return ()
    ids = tuple(i.strip() for i in str(text).split(",") if i.strip())
    if not ids:
        raise _combination()
    return ids


def _display(text: str | bool | None) -> tuple[str, ...]:
    if text is None:
        return ()
    chosen = tuple(d.strip().upper() for d in str(text).split(","))
    if not set(chosen) <= set(sections()):
        raise _combination()
    return chosen


def _every(given: dict[str, str | bool]) -> float | None:
    if "loop_ms" in given:
        value, scale = given["loop_ms"], 1000.0
    elif "loop" in given:
        value, scale = given["loop"], 1.0
    else:
        return None
    if value is True:
        return DEFAULT_LOOP_S
    if not str(value).isdigit() or int(str(value)) <= 0:
        raise _combination()
    return int(str(value)) / scale


def _chosen(devices: list[Device], ids: tuple[str, ...]) -> list[Device]:
    """-i: GPUs by index, UUID, PCI bus id (full or without its domain) or serial."""
    if not ids:
        return devices
    chosen = []
    for wanted in ids:
        found = next((d for d in devices if _names(d, wanted.lower())), None)
        if found is None:
            raise Refused(_message("no_devices"), NOT_FOUND)
        if found not in chosen:
            chosen.append(found)
    return chosen


def _names(d: Device, wanted: str) -> bool:
    bus = d.row.bus_id.lower()
    return wanted in (str(d.row.index), d.uuid.lower(), bus, bus.split(":", 1)[1], bus[4:], (d.serial or "-"))


def _unmodelled(name: str) -> Refused:
    """A real option or command fakerun does not draw: "Not Supported", not "not recognized"."""
    return Refused(_message("unsupported").format(option=name), NOT_SUPPORTED)


def _combination() -> Refused:
    return Refused(_message("bad_combination"), INVALID_ARGUMENT)


def _message(key: str) -> str:
    return str(texts.load("nvidia_smi")["message"][key])
