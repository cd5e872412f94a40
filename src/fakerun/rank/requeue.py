"""What Lightning's SLURM auto-requeue handler runs on global zero:
`scontrol requeue <job>`, as Lightning-AI/pytorch-lightning calls it at
2.4.0 to 2.6.5 (src/lightning/pytorch/trainer/connectors/signal_connector.py
_slurm_sigusr_handler_fn): subprocess.call of the argv; when that raises
FileNotFoundError (no `scontrol` on PATH) the same words again through the
shell, whose "not found" and exit status 127 are then the result. Its output
goes where the script's does (the rank's log file)."""

from __future__ import annotations

import subprocess

# Lightning waits as long as scontrol takes; ours is bounded so that a hung
# command never keeps the rank. scontrol's own RPC gives up well before
# (slurm.conf MessageTimeout, 10 s by default), saying so and exiting 1.
SCONTROL_TIMEOUT_S = 60.0
TIMED_OUT = 1  # scontrol's exit status for a failed request


def scontrol_requeue(job_id: str, timeout_s: float = SCONTROL_TIMEOUT_S) -> int:
    """The exit status of `scontrol requeue job_id` (negative: the signal that ended it)."""
    cmd = ["scontrol", "requeue", job_id]
    try:
        try:
            return subprocess.call(cmd, stdin=subprocess.DEVNULL, timeout=timeout_s)
        except FileNotFoundError:
            return subprocess.call(" ".join(cmd), shell=True, stdin=subprocess.DEVNULL, timeout=timeout_s)
    except subprocess.TimeoutExpired:  # call() has killed and reaped it
        return TIMED_OUT
