"""What node 0 tells the user to run on a node that has not joined yet."""

from __future__ import annotations

import shlex

from fakerun.config.options import RunConfig


def join_command(config: RunConfig, node: int, token: str) -> str:
    """What to run on node `node` to join this job (node 0's hint). The
    token rides in the environment, out of `ps`."""
    prefix, options = _join_token(config, token)
    args = ["fakerun", "--nnodes", str(config.topology.nnodes),
            "--nproc-per-node", str(config.topology.nproc_per_node), "--node-rank", str(node),
            "--master-addr", config.master_addr, "--master-port", str(config.master_port),
            "--rdzv-id", config.run_id, "--seed", str(config.seed)]
    for flag, value in (("--max-steps", config.max_steps), ("--model", config.model),
                        ("--gpu", config.gpu), ("--start-time", config.start_time),
                        ("--style", str(config.style))):
        if value is not None:
            args += [flag, str(value)]
    if config.speed != 1.0:
        args += ["--speed", f"{config.speed:g}"]
    return prefix + shlex.join([*args, *options, config.entrypoint, *config.script_args])


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
