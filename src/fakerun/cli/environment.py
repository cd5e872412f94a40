"""Where options come from besides the command line: $FAKERUN_OPTS, and a
cluster's environment (Slurm's variables, torchrun's MASTER_ADDR/PORT), with
the job's token. The command line wins over all of them."""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakerun.cli import slurm
from fakerun.cli.parser import DEFAULT_MASTER_PORT, parse_endpoint
from fakerun.config import tokens
from fakerun.config.options import free_port, new_seed
from fakerun.errors import ExitCode, UsageError

OPTS_ENV = "FAKERUN_OPTS"
def seed_for(seed: int | None, env: ClusterEnv) -> int:
    """Nodes started alike (e.g. by srun) must draw the same run: across
    nodes, the default seed comes from the job id."""
    if seed is not None:
        return seed
    if (env.nnodes > 1 or env.task is not None) and env.rdzv_id:  # several agents
        return int(hashlib.sha256(env.rdzv_id.encode()).hexdigest()[:8], 16) % 2**31
    return new_seed()


@dataclass(frozen=True)
class ClusterEnv:
    """Where this agent stands in the job: flags first, then torchrun's and
    Slurm's variables, then single-node defaults."""

    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    port_given: bool
    rdzv_id: str | None
    token: str
    token_file: Path | None = None  # where the token was read from
    token_job: str | None = None  # the Slurm job id the token was derived from
    task: slurm.SrunTask | None = None  # srun's one task per rank: this process is that rank's
    hosts: tuple[str, ...] = ()  # the nodes' names, where Slurm gives them
    requeue_job: str | None = None  # under one task a rank: the job Lightning's SLURMEnvironment requeues


def cluster_env(ns: argparse.Namespace, environ: Mapping[str, str]) -> ClusterEnv:
    slurm_job = environ.get("SLURM_JOB_ID") or None
    # Hashed (the seed, a Slurm job's token) before RunConfig checks the run id: text first.
    for what, value in (("--rdzv-id", ns.rdzv_id), ("$SLURM_JOB_ID", slurm_job)):
        if value is not None and not _is_text(value):
            raise UsageError(f"{what} {value!r}: not valid UTF-8")
    if ns.standalone:  # torchrun: one node, a free local port, whatever else is set
        return ClusterEnv(1, 0, "127.0.0.1", _master_port(None, 1, ns.start_time), False,
                          first(ns.rdzv_id, slurm_job), ns.token or "")
    task = slurm.srun_task(environ)
    slurm.check_flags(ns.nnodes, ns.node_rank, task)
    nnodes = task.nnodes if task else first(ns.nnodes, env_int(environ, "SLURM_NNODES"), 1)
    node_rank = first(ns.node_rank, env_int(environ, "SLURM_NODEID"), 0)
    variable, nodelist = slurm.nodelist(environ)
    rdzv_host, rdzv_port = parse_endpoint(ns.rdzv_endpoint)
    # torchrun's get_rdzv_endpoint: a --rdzv-endpoint (or $PET_RDZV_ENDPOINT) names node 0 over
    # --master-addr/--master-port ($PET_MASTER_ADDR, which a PyTorchJob's pods always have).
    addr = first(rdzv_host, ns.master_addr, environ.get("MASTER_ADDR") or None)
    if addr is None:  # the node list is read only when it decides: torchrun never reads it
        addr = slurm.first_host(variable, nodelist) if nodelist.strip() else "127.0.0.1"
    port = first(rdzv_port, ns.master_port, env_int(environ, "MASTER_PORT"))
    agents = task.ntasks if task else nnodes  # the processes that rendezvous with node 0's coordinator
    token, token_job = _token(ns, environ, slurm_job if agents > 1 else None)
    token_file = ns.token_file.absolute() if ns.token_file is not None else None
    return ClusterEnv(nnodes, node_rank, addr, _master_port(port, agents, ns.start_time),
                      port is not None, first(ns.rdzv_id, slurm_job), token, token_file, token_job,
                      task, slurm.node_names(variable, nodelist, nnodes, strict=task is not None),
                      slurm.requeue_job(environ) if task is not None else None)


def _token(ns: argparse.Namespace, environ: Mapping[str, str],
           slurm_job: str | None) -> tuple[str, str | None]:
    """The job's token, and the Slurm job id if it was derived from one:
    --token or --token-file, $FAKERUN_TOKEN, then the nodes of a Slurm job
    derive one; else none (node 0 makes one)."""
    if ns.token is not None:
        return ns.token, None
    if ns.token_file is not None:
        return tokens.read_token_file(ns.token_file), None
    if environ.get("FAKERUN_TOKEN"):
        return environ["FAKERUN_TOKEN"], None
    if slurm_job:
        return tokens.slurm_token(slurm_job, environ), slurm_job
    return "", None


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are no UTF-8, from argv or the environment
        return False
    return True


def first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def env_int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit()):  # '²' is a digit to str.isdigit, not to int()
        raise UsageError(f"${name}={value!r}: expected a number")
    return int(value)


def _master_port(port: int | None, nnodes: int, start_time: str | None) -> int:
    """A free port like torchrun's on one node; across nodes (or under
    --start-time, whose output must not depend on which port was free)
    torchrun's default 29500, which every node can agree on."""
    if port == 0 and nnodes > 1:  # torchrun's other nodes would knock on port 0
        raise UsageError("port 0 (pick a free port) is for one node: the other nodes cannot know "
                         "which port node 0 picked")
    if port:  # 0: a free one, as a c10d TCPStore binds port 0 (torchrun's --rdzv-endpoint HOST:0)
        return port
    return DEFAULT_MASTER_PORT if start_time or nnodes > 1 else free_port()


def with_env_options(args: list[str], environ: Mapping[str, str],
                      parser: argparse.ArgumentParser) -> list[str]:
    """$FAKERUN_OPTS goes before the command line's own options (which win):
    the way to choose a scenario, seed or speed when fakerun stands in for
    torchrun under a launch line that cannot change."""
    try:
        options = shlex.split(environ.get(OPTS_ENV, ""))
    except ValueError as exc:
        parser.exit(ExitCode.USAGE, f"fakerun: error: ${OPTS_ENV}: {exc}\n")
    script = _script_in(options, parser)
    if script is not None:  # it would turn the whole command line into the script's arguments
        parser.exit(ExitCode.USAGE, f"fakerun: error: ${OPTS_ENV} takes options only, not a training "
                                f"script ({script!r}): name the script on the command line\n")
    return [*options, *args]


def _script_in(options: list[str], parser: argparse.ArgumentParser) -> str | None:
    """The training script named among `options`, if any."""
    return parser.parse_known_args(options)[0].training_script


def warn_visible_token(parser: argparse.ArgumentParser, command_line: list[str]) -> None:
    """--token on the command line itself (not in $FAKERUN_OPTS, which `ps`
    does not show) hands the secret to every user of the machine."""
    if parser.parse_known_args(command_line)[0].token is not None:
        print("fakerun: warning: --token is visible to other users (ps); "
              "use --token-file PATH or $FAKERUN_TOKEN", file=sys.stderr)
