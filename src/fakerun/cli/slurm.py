"""Slurm's node lists, read as Slurm writes them.

`SLURM_JOB_NODELIST` and `SLURM_STEP_NODELIST` are in Slurm's hostlist
syntax (`gpu[003-005,9],cpu1`, `node[01-04]-ib`, `rack[1-2]-node[01-04]`):
python-hostlist (the package `scontrol show hostnames` is usually replaced
by in Python launchers) expands it, with Slurm's zero padding, suffixes,
several bracket groups and comma lists mixing ranges and names."""

from __future__ import annotations

import hostlist

from fakerun.errors import UsageError


def hosts(variable: str, nodelist: str) -> list[str]:
    """The hosts of `$variable` (its value `nodelist`), in Slurm's order,
    or a UsageError saying in one line what is wrong with it."""
    try:
        names = hostlist.expand_hostlist(nodelist.strip())
    except hostlist.BadHostlist as exc:
        raise UsageError(f"${variable}={nodelist!r}: not a Slurm host list ({exc})") from None
    if not names or any(not name.strip() for name in names):
        raise UsageError(f"${variable}={nodelist!r}: names no host")
    return names


def first_host(variable: str, nodelist: str) -> str:
    """The job's first host, where node 0 (SLURM_NODEID 0) runs: Slurm
    numbers a job's nodes in its node list's order."""
    return hosts(variable, nodelist)[0]
