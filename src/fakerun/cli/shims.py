"""`fakerun shims DIR`: executable `torchrun` and `nvidia-smi` in DIR, for
PATH. Each runs this fakerun installation (this interpreter, by its
absolute path, with this fakerun's package directory first on sys.path),
under the tool's own name, which is what makes fakerun answer as the tool.

A shim is written whole (a temporary file, then a rename); a file of that
name that is not a shim fakerun wrote is left alone and refused, as one
line (exit 1); a shim written before is replaced (it may name another
interpreter). Usage errors are one line, exit 2."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from fakerun.errors import ExitCode

TOOLS = ("torchrun", "nvidia-smi")
MARK = "# fakerun shim:"  # the line that tells a shim from a file of the user's
SHEBANG_MAX = 120  # a #! line's interpreter path: kernels before 5.1 read 127 bytes of the line
USAGE = "usage: fakerun shims DIR\n"
HELP = USAGE + """
Write executable `torchrun` and `nvidia-smi` into DIR (created if missing),
each running this fakerun installation. Put DIR first on PATH and tools that
call them get fakerun's torchrun and nvidia-smi:

  fakerun shims ~/.fakerun/bin && export PATH=~/.fakerun/bin:$PATH

A file of either name in DIR that is not such a shim is not replaced.
"""


def main(argv: list[str], stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    if argv in (["-h"], ["--help"]):
        stdout.write(HELP)
        return ExitCode.OK
    if len(argv) != 1 or argv[0].startswith("-"):
        stderr.write(f"fakerun shims: error: {USAGE.strip()} (see fakerun shims --help)\n")
        return ExitCode.USAGE
    folder = Path(argv[0]).expanduser().absolute()
    try:
        written = write(folder)
    except ShimError as exc:
        stderr.write(f"fakerun shims: {exc}\n")
        return ExitCode.FAILED
    stdout.write("".join(f"wrote {path}\n" for path in written))
    stdout.write(f"put them first on PATH: export PATH={shlex.quote(str(folder))}:$PATH\n")
    return ExitCode.OK


class ShimError(Exception):
    """Why no shim was written: one line."""


def write(folder: Path, python: str | None = None) -> list[Path]:
    """Both shims, or none: every name is checked before anything is written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ShimError(f"{folder}: {exc.strerror}") from None
    targets = [folder / tool for tool in TOOLS]
    for target in targets:
        if (target.exists() or target.is_symlink()) and not is_shim(target):
            raise ShimError(f"{target} exists and is not a fakerun shim: not replaced")
    for target in targets:
        _install(target, script(target.name, python or os.path.abspath(sys.executable)))
    return targets


def script(tool: str, python: str) -> str:
    """The shim's text: a Python script, as pip writes a console script
    (its interpreter on the #! line, or through sh where a #! line cannot
    hold the path), so that `ps` reads `python /dir/torchrun ...` as for
    torch's own entry point, and fakerun answers as `tool` (argv[0])."""
    package_root = str(Path(__file__).resolve().parents[2])  # the directory holding this fakerun
    body = (f"{MARK} {tool}, written by `fakerun shims`; writing them again replaces it.\n"
            f"import sys\nsys.path.insert(0, {package_root!r})\n"
            "from fakerun.__main__ import run\nsys.exit(run())\n")
    if len(python) <= SHEBANG_MAX and " " not in python:
        return f"#!{python}\n{body}"
    # pip's (distlib's) launcher for a long or spaced path: sh reads the first
    # lines and exec's the interpreter on this file, to which they are a string.
    return f"#!/bin/sh\n'''exec' {shlex.quote(python)} \"$0\" \"$@\"\n' '''\n{body}"


def is_shim(path: Path) -> bool:
    """A regular file with the shim's mark in its first lines."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            head = f.read(512).decode("utf-8", errors="replace").splitlines()
    except OSError:
        return False
    return any(line.startswith(MARK) for line in head[:4])


def _install(target: Path, text: str) -> None:
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise ShimError(f"{target.parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(temp, 0o755)
        os.replace(temp, target)
    except OSError as exc:
        raise ShimError(f"{target}: {exc.strerror}") from None
    finally:
        Path(temp).unlink(missing_ok=True)
