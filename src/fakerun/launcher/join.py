"""What node 0 tells the user to run on a node that has not joined yet."""

from __future__ import annotations

import shlex
import socket

from fakerun.config.options import RunConfig

# IPv4's wildcard: node 0 binds tcp://<master-addr>:P, so --master-addr
# 0.0.0.0 (or --rdzv-endpoint 0.0.0.0:P) listens on every interface, e.g. a
# pod's, while the other nodes connect to a name (a Service's). Asked for,
# never assumed: the default stays the one resolved address.
ANY_ADDRESS = "0.0.0.0"


def join_command(config: RunConfig, node: int, token: str) -> str:
    """What to run on node `node` to join this job (node 0's hint). The
    token rides in the environment, out of `ps`."""
    prefix, options = _join_token(config, token)
    args = ["fakerun", "--nnodes", str(config.topology.nnodes),
            "--nproc-per-node", str(config.topology.nproc_per_node), "--node-rank", str(node),
            "--master-addr", reachable(config.master_addr), "--master-port", str(config.master_port),
            "--rdzv-id", config.run_id, "--seed", str(config.seed)]
    for flag, value in (("--max-steps", config.max_steps), ("--model", config.model),
                        ("--gpu", config.gpu), ("--start-time", config.start_time),
                        ("--style", str(config.style))):
        if value is not None:
            args += [flag, str(value)]
    if config.speed != 1.0:
        args += ["--speed", f"{config.speed:g}"]
    return prefix + shlex.join([*args, *options, config.entrypoint, *config.script_args])


def reachable(master_addr: str, hostname: str | None = None) -> str:
    """The address another node connects to: node 0 listening on every
    interface (--master-addr 0.0.0.0) is reached by this host's name, not
    by the wildcard, which on the other node would mean itself."""
    if master_addr != ANY_ADDRESS:
        return master_addr
    return hostname if hostname is not None else socket.gethostname()


def _join_token(config: RunConfig, token: str) -> tuple[str, list[str]]:
    """How a joining node gets the token: (an environment prefix, options).
    Node 0's output often lands in logs others read, so it shows the token
    only if node 0 made it up (nowhere else to learn it); a token that has a
    home is named by it."""
    if config.token_file is not None:
        return "", ["--token-file", str(config.token_file)]
    if config.token_job is not None:  # the node derives it from your secret, as node 0 did
        return f"SLURM_JOB_ID={shlex.quote(config.token_job)} ", []
    if config.token:
        return 'FAKERUN_TOKEN="$FAKERUN_TOKEN" ', []  # yours: set it there as here
    return f"FAKERUN_TOKEN={shlex.quote(token)} ", []
