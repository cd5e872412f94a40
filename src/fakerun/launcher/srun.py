"""srun's one task per rank (cli/slurm.py): what changes for the agent when
the process srun started is the training script itself, with no torchrun.

The agent runs its task's one rank; what srun reports for the task is that
rank's exit, not torchrun's (torchrun exits 1 whatever its worker did)."""

from __future__ import annotations

from collections.abc import Iterable

from fakerun.errors import ExitCode


def task_exit(exitcodes: Iterable[int]) -> int:
    """The task's exit status as its one rank left it (`exitcodes`: the
    rank's, as the supervisor reaped it): its code, or 128+N for a rank a
    signal ended (a shell's and sbatch's way of writing it; srun's own
    "task N: Killed" line comes from srun itself)."""
    code = next(iter(exitcodes), None)
    if code is None:  # never reaped: it did not start
        return ExitCode.FAILED
    return ExitCode.of_signal(-code) if code < 0 else code
