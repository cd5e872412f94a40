"""The `fakerun` command: argv (and the environment) to a planned RunConfig,
then one agent, or a local cluster of them (--nodes), or `fakerun smi`.
Every usage error is one line and exit 2."""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from fakerun.cli import slurm
from fakerun.cli.environment import (
    cluster_env,
    env_int,
    first,
    seed_for,
    warn_visible_token,
    with_env_options,
)
from fakerun.cli.launch_options import launch
from fakerun.cli.parser import DEFAULT_SCRIPT, GPUS_PER_NODE, build_parser, join_timeout
from fakerun.cli.pet import read_environment
from fakerun.cli.pod import pod_labels
from fakerun.config import limits
from fakerun.config import scenario as scenarios
from fakerun.config import script_args as scriptargs
from fakerun.config.options import Fault, RunConfig
from fakerun.config.plan import plan
from fakerun.errors import ExitCode, UsageError
from fakerun.system.signals import KilledBy, die_by
from fakerun.tensorboard import choice as tensorboard
from fakerun.world import identity, settings, styles
from fakerun.world import scenarios as scenario_catalog
from fakerun.world.topology import Topology


def to_config(ns: argparse.Namespace, environ: Mapping[str, str] | None = None,
              theatre: bool = False) -> RunConfig:
    """`theatre`: the local cluster plays in tmux panes (its jokes' rate)."""
    environ = os.environ if environ is None else environ
    env = cluster_env(ns, environ)
    drop_in = ns.training_script is not None or invoked_as_torchrun()
    topology = Topology(env.nnodes, env.task.per_node if env.task else ns.nproc_per_node, env.node_rank)
    entrypoint = ns.training_script or DEFAULT_SCRIPT
    launched = launch(ns)
    script = scriptargs.read(entrypoint, ns.training_script_args, environ)  # fakerun's options win over it
    script.check_world(topology.nproc_per_node, topology.nnodes)
    style = styles.parse(ns.style or script.style or styles.DEFAULT)
    output_dir = tensorboard.output_dir(style.name, first(ns.output_dir, script.output_dir), ns.tensorboard)
    config = plan(RunConfig(
        topology=topology,
        task=env.task.localid if env.task else None,
        requeue_job=env.requeue_job,
        master_addr=env.master_addr,
        master_port=env.master_port,
        master_port_given=env.port_given,
        rdzv_id=env.rdzv_id,
        token=env.token,
        token_file=env.token_file,
        token_job=env.token_job,
        node_timeout_s=ns.node_timeout,
        lifeline=first(ns.lifeline, env_int(environ, "FAKERUN_LIFELINE")),
        max_restarts=ns.max_restarts,
        max_steps=first(ns.max_steps, script.max_steps),
        seed=seed_for(ns.seed, env),
        speed=ns.speed,
        output=ns.output,
        log_dir=None if ns.log_dir == Path(os.devnull) else ns.log_dir,
        metrics_file=ns.metrics_file,
        tensorboard=ns.tensorboard,
        metrics_port=ns.metrics_port,
        metrics_addr=ns.metrics_addr,
        pod=pod_labels(environ),
        output_dir=output_dir,
        resume=first(ns.resume, script.resume),  # Megatron's --load resumes as --resume does
        sparse_checkpoints=ns.sparse_checkpoints,
        entrypoint=entrypoint,
        script_args=tuple(ns.training_script_args),
        launch=launched,
        collective_timeout_s=ns.collective_timeout,
        rdzv_timeout_s=first(ns.rdzv_timeout, join_timeout(ns.rdzv_conf), 900.0),
        shutdown_grace_s=first(ns.shutdown_timeout, ns.shutdown_grace),  # torch 2.13's name for it
        settings=slurm.task_settings(env.task, _settings(ns, environ, drop_in, launched.configs(
            entrypoint, first(ns.max_nnodes, topology.nnodes), topology.node_rank, ns.max_restarts,
            "" if ns.log_dir is None else str(ns.log_dir), topology.nproc_per_node == GPUS_PER_NODE))),
        fault=_fault(ns, topology),
        model=ns.model,
        gpu=ns.gpu,
        jokes=joke_rate(ns, drop_in, env.nnodes == 1, theatre),
        start_time=ns.start_time,
        exit_after_s=ns.exit_after_time,
        loop=ns.loop,
        style=style,
        asked=script.asked,
    ))
    # Event files need the extra: said now, before any rank starts.
    tensorboard.require(tensorboard.choose(config.style.name, config.script_args, config.tensorboard,
                                           config.topology.world_size))
    return slurm.named_hosts(config, env.hosts)


def _settings(ns: argparse.Namespace, environ: Mapping[str, str], drop_in: bool,
              launch_configs: tuple[tuple[str, str], ...]) -> settings.Settings:
    flags = settings.Flags(ns.tee, ns.redirects, ns.local_ranks_filter, ns.role, ns.log_line_prefix_template,
                           ns.log_dir == Path(os.devnull))
    resolved = settings.resolve(flags, environ, drop_in=drop_in)
    run_path_start = ns.start_method if ns.run_path else ""
    return dataclasses.replace(resolved, launch_configs=launch_configs, run_path_start=run_path_start)


def joke_rate(ns: argparse.Namespace, drop_in: bool, one_node: bool, theatre: bool) -> float:
    """Jokes only where nobody could take the run for a real job: always
    with --funny; rarely in the screen-saver --loop and the theatre, shown
    on a terminal; never in a drop-in launch, a pipe or a file (also the
    files a run writes beside the terminal: --metrics-file, --log-dir,
    --output-dir), or JSONL.
    A hand-launched job's nodes cannot see each other's terminals, so only a
    one-node --loop tosses the coin (the draw must be the same on every
    node); a local cluster's agents are told its rate (the hidden --jokes)."""
    if ns.jokes is not None:
        return ns.jokes
    if ns.funny:
        return identity.JOKES_ALWAYS
    files = ns.metrics_file or ns.tensorboard or ns.output_dir or ns.log_dir not in (None, Path(os.devnull))
    shown = not drop_in and not files and ns.output != "jsonl" and sys.stdout.isatty()
    return identity.JOKES_RARE if shown and ((ns.loop and one_node) or theatre) else identity.JOKES_NEVER


def invoked_as_torchrun() -> bool:
    """fakerun installed (or linked) as `torchrun`: a drop-in, with torchrun's defaults."""
    return invoked_as("torchrun")


def invoked_as(tool: str) -> bool:
    return os.path.basename(sys.argv[0]) == tool


def _fault(ns: argparse.Namespace, topology: Topology) -> Fault | None:
    scenario = scenarios.resolve(ns.scenario)
    if scenario.fault is None:
        return None
    rank = ns.fail_rank if ns.fail_rank is not None else min(1, topology.world_size - 1)
    return Fault(scenario.fault, rank, ns.fail_step, tuple(sorted(scenario.params.items())), scenario.recurs)


def _local_cluster(ns: argparse.Namespace, argv: list[str]) -> int:
    """`--nodes M`: M agents on this machine, in the theatre or merged."""
    given = build_parser().parse_args(argv)  # no PET_*: --nodes wins over PET_NNODES, PET_NODE_RANK
    if given.nnodes is not None or given.node_rank is not None:
        raise UsageError("--nodes starts every node here: leave out --nnodes and --node-rank")
    if ns.nodes < 1:
        raise UsageError(f"--nodes must be at least 1, got {ns.nodes}")
    ns.nnodes, ns.node_rank = ns.nodes, None
    from fakerun import theatre

    staged = not ns.no_theatre and ns.output != "jsonl" and theatre.available(sys.stdout, os.environ) is None
    config = to_config(ns, {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}, staged)
    limits.check(config.topology, nodes_here=ns.nodes)  # every node's ranks run on this machine
    if config.metrics_port is not None:  # node k takes port + k: all free, or no agent starts
        from fakerun.dcgm.server import probe

        probe(config.metrics_addr, [config.metrics_port + k for k in range(ns.nodes)])
    if not config.token:  # none given: the agents share a fresh one (in their environment)
        config = dataclasses.replace(config, token=secrets.token_hex(16))
    from fakerun.launcher import cluster

    agents = cluster.plan(argv, config, ns.nodes, os.getpid())
    if staged:
        tool = "rocm-smi" if config.identity.gpu.vendor == "amd" else "nvidia-smi"
        return theatre.run(cluster.stage(agents, config.run_id, tool))
    return cluster.Merged(agents, sys.stdout, sys.stderr, config.output == "jsonl").run()


def main(argv: list[str] | None = None) -> int:
    command_line = sys.argv[1:] if argv is None else argv
    if sys.stdout is None or sys.stderr is None:  # started with >&- or 2>&-: no reader, ever
        return ExitCode.PIPE  # quietly, as when one leaves: there is nowhere to say anything
    if command_line[:1] == ["smi"]:  # `fakerun smi`: a running job's GPUs, nvidia-smi style
        from fakerun.smi.command import main as smi_main

        # It puts the terminal in cbreak mode, and restores it on KeyboardInterrupt.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return smi_main(command_line[1:])
    if invoked_as("nvidia-smi"):  # `fakerun shims`' nvidia-smi (or a link of that name)
        from fakerun.smi.nvsmi import nvidia_smi

        signal.signal(signal.SIGINT, signal.default_int_handler)
        return nvidia_smi(command_line)
    if command_line[:1] == ["shims"]:  # `fakerun shims DIR`: torchrun and nvidia-smi for PATH
        from fakerun.cli import shims

        return shims.main(command_line[1:])
    parser = build_parser()
    args = with_env_options(command_line, os.environ, parser)
    ns = parser.parse_args([*read_environment(parser, os.environ), *args])  # PET_*: under the flags
    warn_visible_token(parser, command_line)
    if ns.list_scenarios:
        print(scenario_catalog.listing())
        return 0
    try:
        if ns.nodes is not None:
            return _local_cluster(ns, args)
        config = to_config(ns)
        limits.check(config.topology)
    except UsageError as exc:
        print(f"fakerun: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    from fakerun.launcher.agent import Launcher  # zmq/psutil are not needed for --help or usage errors
    from fakerun.render.sinks import SinkFailed

    try:
        return Launcher(config).run()
    except KilledBy as exc:  # torchrun's way with a signal it does not take (launcher/srun.py)
        die_by(exc.signum)
    except KeyboardInterrupt:  # before the launcher's own handler is in place
        return 130
    except SinkFailed as exc:  # e.g. --metrics-file vanished between the check and the open
        print(f"fakerun: error: {exc}", file=sys.stderr)
        return 1
