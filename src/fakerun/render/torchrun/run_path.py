"""A --run-path worker's failure as torchrun logs it. run.py's run_script_path
is a function entrypoint, so elastic runs the workers as torch.multiprocessing
spawn children (MultiprocessContext); on a failure spawn.py's join raises
ProcessExitedException (no error file of spawn's: a signal or an exit code) or
ProcessRaisedException (the worker's pickled traceback), and _poll logs it with
logger.exception (torch/distributed/elastic/multiprocessing/api.py, torch
v2.3.1 to v2.13.0; data/torchrun.toml [frames] has each version's lines).
"""

from __future__ import annotations

import signal
from typing import Any

from fakerun.events import Failure


def poll_traceback(root: Failure, text: dict[str, Any], frames: dict[str, Any], site: str) -> str:
    """_poll's logger.exception traceback for the root cause: raised when
    the worker left a traceback (its error file's), else exited."""
    if root.message:
        spawn_line = frames["spawn_raised"]
        raise_line = "raise ProcessRaisedException(msg, error_index, failed_process.pid)"
        # spawn's own heading leads the worker's traceback: record's callstack from its frame on.
        callstack = root.message.split("\n", 1)[1]
        error = text["run_path_raised"].format(index=root.local_rank, site=site, callstack=callstack,
                                               **frames)
    else:
        exited = root.exitcode >= 0
        spawn_line = frames["spawn_exited" if exited else "spawn_signaled"]
        raise_line = "raise ProcessExitedException("
        how = f"exit code {root.exitcode}" if exited else f"signal {_signame(-root.exitcode)}"
        error = text["run_path_exited"].format(index=root.local_rank, how=how)
    return text["run_path_poll"].format(site=site, spawn_line=spawn_line, raise_line=raise_line,
                                        error=error, poll_join=frames["poll_join"])


def _signame(signum: int) -> str:
    # spawn.py join: signal.Signals(-exitcode).name, else "<Unknown signal N>"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"<Unknown signal {signum}>"
