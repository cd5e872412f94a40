"""`fakerun smi [--file PATH | --job RUN_ID] [--watch | -l SECONDS]
[--wait] [--hold] [--compact] [--nodes-from K]`: find a running job's
snapshot and print it, once or until the job ends (with --wait, from before
it starts; with --hold, until q after it ends: the theatre's dashboard;
with both, a --loop's next run of the job takes over the held table).
Every error is one line: exit 1 when there is no job to show, 2 for bad
arguments, 130 on Ctrl+C."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, TextIO

from fakerun.errors import ExitCode, FakerunError
from fakerun.smi import nvsmi
from fakerun.smi.jobs import Reader, Source, find, newest, read
from fakerun.smi.snapshot import Snapshot, SnapshotError
from fakerun.smi.table import compact, fit, table
from fakerun.system import outcome
from fakerun.system.runtime import RuntimeDirError
from fakerun.system.terminal import Keys, Screen

PROG = "fakerun smi"
NVIDIA_OPTIONS = ("nvidia-smi's own options print what nvidia-smi prints for node 0's GPUs: -L, "
                  "--query-gpu=FIELDS --format=csv[,noheader][,nounits], --query-compute-apps=FIELDS, "
                  "-q -d MEMORY,UTILIZATION,TEMPERATURE,POWER,CLOCK,PERFORMANCE,COMPUTE,PIDS, -i ID, "
                  "-l SEC, -lms MS. `fakerun shims DIR` installs them as `nvidia-smi`.")
PAGE_S = 4.0  # a page of a dashboard too small for every GPU stays this long
FOLLOW_S = 1.0  # a held table looks for the job's next run this often


Follow = Callable[[], "Source | None"]


class _Exit(FakerunError):
    def __init__(self, status: int) -> None:
        self.status = status


class _Parser(argparse.ArgumentParser):
    """Errors and --help go to the given streams and come back as an exit
    status: main() returns, it never raises SystemExit."""

    def __init__(self, out: TextIO, err: TextIO, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out, self.err = out, err

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            (self.err if file is sys.stderr else self.out).write(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self.err.write(message)
        raise _Exit(status)

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _node(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a node rank (0, 1, ...)")
    return int(text)


def build_parser(out: TextIO, err: TextIO) -> _Parser:
    p = _Parser(out, err, prog=PROG, description="A running fakerun job's GPUs, as nvidia-smi shows them "
                "(one table per node).", epilog=NVIDIA_OPTIONS)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--file", type=Path, metavar="PATH", help="a snapshot file (default: find the "
                       "running job's smi.json in your runtime directory, $XDG_RUNTIME_DIR/fakerun "
                       "or $TMPDIR/fakerun-UID)")
    where.add_argument("--job", metavar="RUN_ID", help="the running job with this run id")
    p.add_argument("--watch", action="store_true", help="redraw every second until the job ends (q quits)")
    p.add_argument("-l", "--loop", type=_positive, metavar="SECONDS",
                   help="redraw every SECONDS (implies --watch)")
    p.add_argument("--wait", action="store_true", help="wait for the job to start (implies --watch)")
    p.add_argument("--hold", action="store_true",
                   help="after the job ends, keep its last table until q, or with --wait until the "
                   "job's next run (--loop) starts (implies --watch)")
    p.add_argument("--compact", action="store_true", help="one summary line per node")
    p.add_argument("--nodes-from", type=_node, default=0, metavar="K", help="only nodes K and up")
    return p


def main(argv: list[str], stdout: TextIO = sys.stdout, environ: Any = os.environ,
         stderr: TextIO = sys.stderr, stdin: Any = sys.stdin) -> int:
    try:
        if nvsmi.speaks(argv):  # nvidia-smi's own options: its outputs
            return nvsmi.main(argv, stdout, stderr, partial(newest, environ), tool=False)
        args = build_parser(stdout, stderr).parse_args(argv)
        if args.watch or args.loop or args.wait or args.hold:
            screen = Screen(stdout)
            with Keys(stdin) as keys:
                try:
                    source = (_await(args, environ, screen, keys) if args.wait
                              else _locate(args, environ, stderr))
                    follow = partial(_next_run, args, environ) if args.wait and args.hold else None
                    while source is not None:
                        source = _watch(Reader(source), args, screen, keys, follow)
                    return ExitCode.OK
                finally:  # q, Ctrl+C or the end: the prompt starts on a line of its own
                    screen.leave()
        source = _locate(args, environ, stderr)
        snap = read(source)
        if snap is None:
            _fail(stderr, ExitCode.FAILED, "no running fakerun job found")
        Screen(stdout, in_place=False).draw(_frame(snap, args))
        return ExitCode.OK
    except _Exit as done:
        return done.status
    except (SnapshotError, RuntimeDirError) as exc:
        stderr.write(f"{PROG}: {exc}\n")
        return ExitCode.FAILED
    except KeyboardInterrupt:
        return ExitCode.SIGINT  # quietly, like watch(1)


def _fail(stderr: TextIO, status: int, message: str) -> NoReturn:
    stderr.write(f"{PROG}: {message}\n")
    raise _Exit(status)


def _locate(args: argparse.Namespace, environ: Any, stderr: TextIO) -> Source:
    """--file, or the newest running job (with --job: the one of that run id)."""
    if args.file is not None and not args.file.is_file():
        _fail(stderr, ExitCode.FAILED, f"{args.file}: no such snapshot file")
    found = find(environ, args.file, args.job)
    if not found:
        _fail(stderr, ExitCode.FAILED, "no running fakerun job found" + (f" with run id {args.job!r}"
                                                                     if args.job else ""))
    if len(found) > 1:
        stderr.write(f"{PROG}: {len(found)} running jobs; showing the newest, {found[-1][1]} "
                     f"(others: {', '.join(f[1] for f in found[:-1])}; pick one with --job)\n")
    return found[-1][2]


def _await(args: argparse.Namespace, environ: Any, screen: Screen, keys: Keys) -> Source | None:
    """Poll until the job shows up; None if q (or the terminal went) first."""
    what = f"job {args.job}" if args.job else "a fakerun job"
    while not (found := find(environ, args.file, args.job)):
        if (code := outcome.read(environ)) is not None:  # the theatre's job ended before we saw it
            return _last(screen, [], f"{what} failed (exit {code}) before its GPUs could be read",
                         keys, args.hold, None)
        screen.draw([f"{PROG}: waiting for {what} to start (q quits)"])
        if _quit(keys.wait(args.loop or 1.0)):
            return None
    return found[-1][2]


def _watch(reader: Reader, args: argparse.Namespace, screen: Screen, keys: Keys,
           follow: Follow | None) -> Source | None:
    """Redraw every interval until the job finishes or goes away, or q. Held
    after its end (--hold), `follow` may find the next run to watch."""
    every, run_id, lines = args.loop or 1.0, "", []
    while True:
        snap = reader.read()
        if snap is None:
            ended = f"job {run_id} ended" if run_id else "the job ended"
            return _last(screen, lines if screen.tty else [], ended, keys, args.hold, follow)  # not twice
        run_id = snap.run_id
        lines = _frame(snap, args, screen.size())
        if snap.finished:
            return _last(screen, lines, f"job {run_id} finished", keys, args.hold, follow)
        screen.draw(lines)
        if _quit(keys.wait(every)):
            return None


def _next_run(args: argparse.Namespace, environ: Any) -> Source | None:
    """A run of the awaited job that has not finished: under --loop, the
    job's next run (every node's agent starts it under the same run id)."""
    for _, _, source in reversed(find(environ, args.file, args.job)):
        snap = read(source)
        if snap is not None and not snap.finished:
            return source
    return None


def _quit(pressed: str | None) -> bool:
    """q, or the terminal is gone."""
    return pressed is None or "q" in pressed.lower()


def _last(screen: Screen, lines: list[str], message: str, keys: Keys, hold: bool,
          follow: Follow | None) -> Source | None:
    """The last frame with `message` under it (on a full screen, in its last
    row); held, until q or a run `follow` finds."""
    size = screen.size()
    shown = lines[:max(0, size.lines - 1)] if size else lines
    screen.draw([*shown, f"{PROG}: {message}" + (" (q quits)" if hold else "")])
    screen.leave()  # the shell's prompt goes below it
    while hold and keys.interactive and not _quit(keys.wait(FOLLOW_S if follow else 3600.0)):
        if follow is not None and (source := follow()) is not None:
            return source
    return None


def _frame(snap: Snapshot, args: argparse.Namespace, size: os.terminal_size | None = None) -> list[str]:
    """The tables (or --compact lines); on a terminal (`size`), fitted to it
    as watch(1) would, paging through what does not fit every PAGE_S."""
    nodes = range(args.nodes_from, sys.maxsize)
    shown = snap.only(nodes)
    if args.compact:
        lines = compact(snap, nodes)
        return [line[:size.columns] for line in lines[:size.lines]] if size else lines
    if not shown.gpus:
        return []
    if size is None:
        return table(shown)
    return fit(shown, size.columns, size.lines - 1, int(time.monotonic() // PAGE_S))
