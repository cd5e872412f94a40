"""A private tmux server: its own socket in a fresh 0700 directory in the
user's runtime directory (runtime.py), no user configuration (-f /dev/null),
and none of an enclosing tmux's variables, so it works inside tmux and never
touches the user's own server.

Panes run launch scripts written into that directory rather than commands on
tmux's command line: environment values (a job token) reach no argv, and no
argument meets tmux's own parsing (an argument ending in ';' splits commands).
Each script deletes itself once the shell has opened it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fakerun.system import runtime
from fakerun.theatre.stage import Pane

CMD_TIMEOUT_S = 10.0
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes
NOT_OURS = ("TMUX", "TMUX_PANE")  # an enclosing tmux's; with them tmux refuses to nest
SHELL = "/bin/sh"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class Server:
    binary: str
    dir: Path
    env: dict[str, str]  # for our tmux commands, the attach client and (via the server) every pane

    @classmethod
    def create(cls, environ: Mapping[str, str]) -> Server:
        binary = shutil.which("tmux", path=environ.get("PATH", os.defpath))
        if binary is None:
            raise FileNotFoundError("tmux is not installed (not on PATH)")
        directory = Path(tempfile.mkdtemp(prefix="theatre-", dir=_parent(environ)))  # mode 0700
        env = {k: v for k, v in environ.items() if k not in NOT_OURS}
        return cls(binary, directory, env)

    @property
    def socket(self) -> Path:
        return self.dir / "tmux.sock"

    def argv(self, *commands: list[str]) -> list[str]:
        """One tmux invocation running `commands` in order (';'-separated)."""
        args = [self.binary, "-S", str(self.socket), "-f", "/dev/null"]
        for i, command in enumerate(commands):
            args += [";", *command] if i else command
        return args

    def cmd(self, *commands: list[str], check: bool = True) -> str:
        done = subprocess.run(self.argv(*commands), env=self.env, capture_output=True, text=True,
                              timeout=CMD_TIMEOUT_S, stdin=subprocess.DEVNULL)
        if check and done.returncode:
            raise RuntimeError(f"tmux {commands[0][0]} failed: {done.stderr.strip()}")
        return done.stdout

    def attach(self, session: str) -> subprocess.Popen:
        """The user's terminal becomes a client of the session (our stdio)."""
        return subprocess.Popen(self.argv(["attach-session", "-t", session]), env=self.env)

    def kill(self) -> None:
        self.cmd(["kill-server"], check=False)

    def launch_script(self, name: str, pane: Pane) -> list[str]:
        """The pane command that runs `pane.argv` with `pane.env` added."""
        lines = ['rm -f -- "$0"']
        for key, value in pane.env.items():
            if not ENV_NAME.fullmatch(key):
                raise ValueError(f"not an environment variable name: {key!r}")
            lines.append(f"export {key}={shlex.quote(value)}")
        lines.append(f"exec {shlex.join(pane.argv)}")
        return [SHELL, str(self._write(name, lines))]

    def watch_script(self, lifeline: Path) -> list[str]:
        """The pane command that ends this server once `lifeline` (a FIFO whose
        only writer is the theatre's process) reads EOF: the theatre died, even
        of SIGKILL. It ignores the SIGHUP of the server's end to finish the job."""
        tmux = shlex.join([self.binary, "-S", str(self.socket)])
        lines = ["trap '' HUP", f"cat {shlex.quote(str(lifeline))} >/dev/null 2>&1",
                 f"{tmux} kill-server >/dev/null 2>&1", f"rm -rf -- {shlex.quote(str(self.dir))}"]
        return [SHELL, str(self._write("lifeline", lines))]

    def _write(self, name: str, lines: list[str]) -> Path:
        path = self.dir / f"{name}.sh"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
        return path

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _parent(environ: Mapping[str, str]) -> Path:
    """The user's runtime dir, or the short per-user one when the socket's
    path would not fit in a socket name there (RuntimeDirError if unsafe)."""
    parent = runtime.ensure(runtime.runtime_dir(environ))
    if len(os.fsencode(parent)) > SOCKET_PATH_MAX - 40:
        parent = runtime.ensure(runtime.short_dir())
    return parent
