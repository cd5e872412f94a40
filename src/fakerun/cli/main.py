"""Command line: torchrun's options plus fakerun's own. No logic beyond
turning argv into a RunConfig; every error is one line and exit 2."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import re
import secrets
import shlex
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from fakerun.config import limits, tokens
from fakerun.config import scenario as scenarios
from fakerun.config import script_args as scriptargs
from fakerun.config.options import OUTPUTS, Fault, RunConfig, free_port, new_seed, parse_duration
from fakerun.config.paths import check_name
from fakerun.config.plan import plan
from fakerun.errors import ExitCode, UsageError
from fakerun.version import __version__
from fakerun.world import scenarios as catalog
from fakerun.world import styles
from fakerun.world.topology import Topology

OPTS_ENV = "FAKERUN_OPTS"
DEFAULT_SCRIPT = "train.py"
GPUS_PER_NODE = 8  # the simulated node's, for --nproc-per-node gpu/auto
DEFAULT_MASTER_PORT = 29500

DESCRIPTION = """\
fakerun: a GPU-free stand-in for torchrun. It starts one process per simulated
GPU with torchrun's worker environment, runs real blocking collectives through
a coordinator, and prints what a torchrun training job prints.
The training script is never executed; its arguments, where they use the
common spellings (transformers' --model_name_or_path, --per_device_train_batch_size,
--max_steps, --output_dir ...; Megatron's --num-layers, --train-iters ...),
shape the simulated job."""

EPILOG = """\
exit codes: 0 success, 1 a rank failed, 2 usage error, 130 SIGINT,
143 SIGTERM, 141 output closed (e.g. piped into `head`).
environment:
  FAKERUN_TOKEN  the job's token across nodes, out of sight of `ps` (see --token-file)
  FAKERUN_OPTS   options read before the command line's own
examples:
  fakerun --nproc 8
  fakerun --nproc-per-node 4 --max-steps 50 --speed 0 --output jsonl train.py --lr 3e-4
  fakerun --nproc-per-node 2 train.py --model_name_or_path meta-llama/Llama-3.1-8B \
      --per_device_train_batch_size 4 --max_steps 20 --output_dir out"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _options(*names: str) -> list[str]:
    """torchrun accepts both --dash-names and --underscore_names."""
    spelled = []
    for name in names:
        spelled.append(name)
        if "-" in name[2:]:
            spelled.append("--" + name[2:].replace("-", "_"))
    return spelled


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fakerun", description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"fakerun {__version__}")
    t = p.add_argument_group("torchrun options")
    t.add_argument(*_options("--nproc-per-node", "--nproc"), dest="nproc_per_node", type=_nproc,
                   default=GPUS_PER_NODE, metavar="N",
                   help="worker processes (simulated GPUs) per node: a number, or gpu/auto (the node's "
                        f"{GPUS_PER_NODE} GPUs) or cpu (its CPU count) (default {GPUS_PER_NODE})")
    t.add_argument(*_options("--nnodes"), dest="nnodes", type=_nnodes, default=None,
                   metavar="M", help="number of nodes, one fakerun per node; an elastic MIN:MAX starts "
                                     "with MIN (default 1; $SLURM_NNODES)")
    t.add_argument("--standalone", action="store_true",
                   help="a single-node job on a free local port (overrides --nnodes and the master)")
    t.add_argument(*_options("--rdzv-backend"), dest="rdzv_backend", default="static", metavar="NAME",
                   help="c10d, static, etcd: fakerun's rendezvous is always node 0's coordinator")
    t.add_argument(*_options("--rdzv-endpoint"), dest="rdzv_endpoint", default=None, metavar="HOST[:PORT]",
                   help="node 0's address for the rendezvous (as --master-addr/--master-port)")
    t.add_argument(*_options("--rdzv-conf"), dest="rdzv_conf", default="", metavar="K=V,...",
                   help="rendezvous settings; join_timeout (seconds) is honoured as --rdzv-timeout")
    t.add_argument(*_options("--tee", "-t"), dest="tee", type=_std, default=3, metavar="STD",
                   help="streams of the ranks shown with the [defaultN]: prefix: 0 none, 1 stdout, "
                        "2 stderr, 3 both (default 3: fakerun always tees; 0 shows them bare)")
    t.add_argument(*_options("--redirects", "-r"), dest="redirects", type=_std, default=0, metavar="STD",
                   help="streams of the ranks sent only to --log-dir, not the console, unless teed")
    t.add_argument(*_options("--local-ranks-filter"), dest="local_ranks_filter", type=_ranks, default=None,
                   metavar="R,R", help="show only these local ranks' output on the console")
    t.add_argument(*_options("--node-rank"), dest="node_rank", type=int, default=None, metavar="K",
                   help="rank of this node, in [0, nnodes) (default 0; $SLURM_NODEID)")
    t.add_argument(*_options("--master-addr"), dest="master_addr", default=None, metavar="HOST",
                   help="address of node 0; node 0 listens there for the other nodes (default "
                        "$MASTER_ADDR, the first host of $SLURM_JOB_NODELIST, or 127.0.0.1)")
    t.add_argument(*_options("--master-port"), dest="master_port", type=int, default=None,
                   metavar="PORT", help="port on node 0 (default $MASTER_PORT; a free port on one "
                                        "node, 29500 across nodes)")
    t.add_argument(*_options("--rdzv-id"), dest="rdzv_id", default=None, metavar="ID",
                   help="job id; becomes TORCHELASTIC_RUN_ID (default $SLURM_JOB_ID)")
    t.add_argument(*_options("--max-restarts"), dest="max_restarts", type=int, default=0,
                   metavar="K", help="restarts of a failed worker group (default 0)")
    t.add_argument(*_options("--log-dir"), dest="log_dir", type=_log_dir, default=None,
                   metavar="DIR", help="write each rank's stdout/stderr in torchrun's layout (as torchrun: "
                                       "'' is none given, /dev/null keeps no log files)")
    t.add_argument("--output-dir", type=_path, default=None, metavar="DIR",
                   help="write checkpoints there (checkpoint-<step>/, atomically)")
    t.add_argument("--resume", nargs="?", type=_resume, const="latest", default=None, metavar="PATH",
                   help="continue from the latest checkpoint in --output-dir, or from PATH")
    t.add_argument("--metrics-file", type=_path, default=None, metavar="PATH",
                   help="training metrics as JSONL, a line per step/eval/event, never torn")
    f = p.add_argument_group("fakerun options")
    f.add_argument("--nodes", type=int, default=None, metavar="M",
                   help="simulate M nodes on this machine: one agent each, in tmux panes on a "
                        "terminal (see --no-theatre)")
    f.add_argument("--no-theatre", action="store_true",
                   help="with --nodes: every node's output in one stream, each line prefixed "
                        "with its host, instead of tmux panes")
    secret = f.add_mutually_exclusive_group()
    secret.add_argument("--token", default=None, metavar="SECRET",
                        help="the job's shared secret across nodes; other users see it in `ps`: "
                             "prefer --token-file or $FAKERUN_TOKEN (default $FAKERUN_TOKEN; under "
                             "Slurm, derived from the job id and your secret in "
                             "~/.config/fakerun/secret ($XDG_CONFIG_HOME), made on first use; else "
                             "node 0 makes one and prints it)")
    secret.add_argument("--token-file", type=_path, default=None, metavar="PATH",
                        help="read the token from the first line of PATH, a file only you can read "
                             "(chmod 600)")
    f.add_argument("--node-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long another node may stay silent before it counts as lost (default 30)")
    f.add_argument("--lifeline", type=int, default=None, help=argparse.SUPPRESS)
    f.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="training steps (default: drawn from the seed, 400-800)")
    f.add_argument("--seed", type=int, default=None, metavar="S",
                   help="seed of the whole run (default: random)")
    f.add_argument("--speed", type=float, default=1.0, metavar="X",
                   help="pacing: 1 normal, 2 twice as fast, 0 no pacing at all; else 0.001 to 1e6 "
                        "(default 1)")
    f.add_argument("--output", choices=OUTPUTS, default="auto",
                   help="auto (rich on a terminal, plain otherwise), plain, rich, or jsonl events")
    f.add_argument("--style", default=None, metavar="NAME[@VERSION]",
                   help="whose output conventions the training script follows: torchrun (the seeds' "
                        "layout), hf (transformers Trainer; hf@4.46 default, hf@5), megatron (@0.10), "
                        "deepspeed (@0.14), lightning (@2.5); the version pins PyTorch, NCCL and CUDA to "
                        "match. Default: inferred from the script's arguments (--model_name_or_path: hf; "
                        "--num-layers or pretrain_*.py: megatron; --deepspeed: deepspeed; --trainer.*: "
                        "lightning), else torchrun")
    f.add_argument("--model", default=None, metavar="NAME",
                   help="model by name, e.g. Llama-3.1-8B (default: drawn from the seed)")
    f.add_argument("--gpu", default=None, metavar="NAME",
                   help="GPU by nvidia-smi name, e.g. 'NVIDIA H100 80GB HBM3' (default: drawn)")
    f.add_argument("--funny", action="store_true", help="genact-style joke models and datasets")
    f.add_argument("--start-time", default=None, metavar="ISO",
                   help="simulated start time; with --seed and --speed 0, output is byte-identical")
    f.add_argument("--exit-after-time", type=_duration, default=None, metavar="DURATION",
                   help="end training after this much wall time (90s, 5m, 1h30m), then validate, "
                        "checkpoint, export and summarise")
    f.add_argument("--loop", action="store_true",
                   help="start a fresh run after each one (screen-saver mode) until Ctrl+C")
    f.add_argument("--collective-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="NCCL watchdog timeout for one collective (default 600)")
    f.add_argument("--rdzv-timeout", type=float, default=None, metavar="SECONDS",
                   help="how long to wait for every rank to join (default 900)")
    f.add_argument("--scenario", default="healthy", metavar="NAME|FILE.toml",
                   help="a failure (or health) scenario from the catalog, or a TOML file (default healthy)")
    f.add_argument("--list-scenarios", action="store_true", help="list the scenarios and exit")
    f.add_argument("--fail-rank", type=int, default=None, metavar="R",
                   help="global rank that fails in a fault scenario (default 1)")
    f.add_argument("--fail-step", type=int, default=None, metavar="S",
                   help="step at which it fails (default: half way)")
    p.add_argument("training_script", nargs="?", default=DEFAULT_SCRIPT,
                   help="recorded as the entrypoint, never executed (default train.py)")
    p.add_argument("training_script_args", nargs=argparse.REMAINDER,
                   help="arguments of the training script")
    return p


def _path(text: str) -> Path:
    """A path option's value: named, and in text (an empty one was the
    working directory, which nobody names so)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got ''")
    try:
        check_name("", text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).strip()) from None
    return Path(text)


def _log_dir(text: str) -> Path | None:
    """torchrun's --log-dir: '' is as if none were given (a temporary
    directory), os.devnull keeps no log files (fakerun's rank logs then live
    in the run directory, removed at the end, as without --log-dir)."""
    return None if text in ("", os.devnull) else _path(text)


def _resume(text: str) -> str:
    return text if text == "latest" else str(_path(text))


def _nproc(text: str) -> int:
    """torchrun's --nproc-per-node: a count, or what the node has."""
    if text in ("gpu", "auto"):
        return GPUS_PER_NODE
    if text == "cpu":
        return os.cpu_count() or 1
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, gpu, auto or cpu, got {text!r}") from None


def _nnodes(text: str) -> int:
    """N, or an elastic MIN:MAX: the job starts with MIN nodes (fakerun's
    rendezvous is static: it never waits for more to join)."""
    low, _, high = text.partition(":")
    try:
        low_n, high_n = int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN:MAX, got {text!r}") from None
    if low_n > high_n:
        raise argparse.ArgumentTypeError(f"MIN must not exceed MAX, got {text!r}")
    return low_n


def _std(text: str) -> int:
    """torchrun's Std: 0 none, 1 stdout, 2 stderr, 3 both."""
    if text not in ("0", "1", "2", "3"):
        raise argparse.ArgumentTypeError(f"expected 0, 1, 2 or 3 (per-rank mappings are not supported), "
                                         f"got {text!r}")
    return int(text)


def _ranks(text: str) -> frozenset[int]:
    try:
        return frozenset(int(r) for r in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected local ranks like 0,3, got {text!r}") from None


def _endpoint(text: str | None) -> tuple[str | None, int | None]:
    """--rdzv-endpoint HOST[:PORT]."""
    if not text:
        return None, None
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        return host.strip("[]"), int(port) if port else None
    except ValueError:
        raise UsageError(f"--rdzv-endpoint must be HOST[:PORT], got {text!r}") from None


def _join_timeout(conf: str) -> float | None:
    """--rdzv-conf's join_timeout, the one setting a static rendezvous has."""
    for item in filter(None, conf.split(",")):
        key, _, value = item.partition("=")
        if key.strip() == "join_timeout":
            try:
                return float(value)
            except ValueError:
                raise UsageError(f"--rdzv-conf join_timeout must be seconds, got {value!r}") from None
    return None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None


def to_config(ns: argparse.Namespace, environ: Mapping[str, str] | None = None) -> RunConfig:
    environ = os.environ if environ is None else environ
    env = cluster_env(ns, environ)
    topology = Topology(env.nnodes, ns.nproc_per_node, env.node_rank)
    script = scriptargs.read(ns.training_script, ns.training_script_args)  # fakerun's options win over it
    return plan(RunConfig(
        topology=topology,
        master_addr=env.master_addr,
        master_port=env.master_port,
        master_port_given=env.port_given,
        rdzv_id=env.rdzv_id,
        token=env.token,
        token_file=env.token_file,
        token_job=env.token_job,
        node_timeout_s=ns.node_timeout,
        lifeline=_first(ns.lifeline, _env_int(environ, "FAKERUN_LIFELINE")),
        max_restarts=ns.max_restarts,
        max_steps=_first(ns.max_steps, script.max_steps),
        seed=_seed(ns.seed, env),
        speed=ns.speed,
        output=ns.output,
        log_dir=ns.log_dir,
        metrics_file=ns.metrics_file,
        output_dir=_first(ns.output_dir, script.output_dir),
        resume=ns.resume,
        entrypoint=ns.training_script,
        script_args=tuple(ns.training_script_args),
        collective_timeout_s=ns.collective_timeout,
        rdzv_timeout_s=_first(ns.rdzv_timeout, _join_timeout(ns.rdzv_conf), 900.0),
        tee=ns.tee,
        redirects=ns.redirects,
        local_ranks_filter=ns.local_ranks_filter,
        fault=_fault(ns, topology),
        model=ns.model,
        gpu=ns.gpu,
        funny=ns.funny,
        start_time=ns.start_time,
        exit_after_s=ns.exit_after_time,
        loop=ns.loop,
        style=styles.parse(ns.style or script.style or styles.DEFAULT),
        asked=script.asked,
    ))


def _seed(seed: int | None, env: ClusterEnv) -> int:
    """Nodes started alike (e.g. by srun) must draw the same run: across
    nodes, the default seed comes from the job id."""
    if seed is not None:
        return seed
    if env.nnodes > 1 and env.rdzv_id:
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


def cluster_env(ns: argparse.Namespace, environ: Mapping[str, str]) -> ClusterEnv:
    slurm_job = environ.get("SLURM_JOB_ID") or None
    # Hashed (the seed, a Slurm job's token) before RunConfig checks the run id: text first.
    for what, value in (("--rdzv-id", ns.rdzv_id), ("$SLURM_JOB_ID", slurm_job)):
        if value is not None and not _is_text(value):
            raise UsageError(f"{what} {value!r}: not valid UTF-8")
    if ns.standalone:  # torchrun: one node, a free local port, whatever else is set
        return ClusterEnv(1, 0, "127.0.0.1", _master_port(None, 1, ns.start_time), False,
                          _first(ns.rdzv_id, slurm_job), ns.token or "")
    nnodes = _first(ns.nnodes, _env_int(environ, "SLURM_NNODES"), 1)
    node_rank = _first(ns.node_rank, _env_int(environ, "SLURM_NODEID"), 0)
    nodelist = environ.get("SLURM_JOB_NODELIST", "")
    rdzv_host, rdzv_port = _endpoint(ns.rdzv_endpoint)
    addr = _first(ns.master_addr, rdzv_host, environ.get("MASTER_ADDR") or None,
                  first_host(nodelist) if nodelist else None, "127.0.0.1")
    port = _first(ns.master_port, rdzv_port, _env_int(environ, "MASTER_PORT"))
    token, token_job = _token(ns, environ, slurm_job if nnodes > 1 else None)
    token_file = ns.token_file.absolute() if ns.token_file is not None else None
    return ClusterEnv(nnodes, node_rank, addr, _master_port(port, nnodes, ns.start_time),
                      port is not None, _first(ns.rdzv_id, slurm_job), token, token_file, token_job)


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


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit()):  # '²' is a digit to str.isdigit, not to int()
        raise UsageError(f"${name}={value!r}: expected a number")
    return int(value)


def first_host(nodelist: str) -> str:
    """The first host of a Slurm hostlist: `gpu[003-005,9],cpu1` -> `gpu003`."""
    head = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?", nodelist.strip())
    prefix, ranges = head.group(1), head.group(2)  # the pattern matches any text
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "")


def _master_port(port: int | None, nnodes: int, start_time: str | None) -> int:
    """A free port like torchrun's on one node; across nodes (or under
    --start-time, whose output must not depend on which port was free)
    torchrun's default 29500, which every node can agree on."""
    if port is not None:
        return port
    return DEFAULT_MASTER_PORT if start_time or nnodes > 1 else free_port()


def _fault(ns: argparse.Namespace, topology: Topology) -> Fault | None:
    scenario = scenarios.resolve(ns.scenario)
    if scenario.fault is None:
        return None
    rank = ns.fail_rank if ns.fail_rank is not None else min(1, topology.world_size - 1)
    return Fault(scenario.fault, rank, ns.fail_step, tuple(sorted(scenario.params.items())))


def _local_cluster(ns: argparse.Namespace, argv: list[str]) -> int:
    """`--nodes M`: M agents on this machine, in the theatre or merged."""
    if ns.nnodes is not None or ns.node_rank is not None:
        raise UsageError("--nodes starts every node here: leave out --nnodes and --node-rank")
    if ns.nodes < 1:
        raise UsageError(f"--nodes must be at least 1, got {ns.nodes}")
    ns.nnodes = ns.nodes
    config = to_config(ns, {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")})
    limits.check(config.topology, nodes_here=ns.nodes)  # every node's ranks run on this machine
    if not config.token:  # none given: the agents share a fresh one (in their environment)
        config = dataclasses.replace(config, token=secrets.token_hex(16))
    from fakerun.launcher import cluster

    agents = cluster.plan(argv, config, ns.nodes, os.getpid())
    if not ns.no_theatre and config.output != "jsonl":
        from fakerun import theatre

        if theatre.available(sys.stdout, os.environ) is None:
            return theatre.run(cluster.stage(agents, config.run_id))
    return cluster.Merged(agents, sys.stdout, sys.stderr, config.output == "jsonl").run()


def _with_env_options(args: list[str], environ: Mapping[str, str],
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
    """The training script named among `options`, if any (the parser's
    default script is lifted for the look, so `train.py` itself shows)."""
    parser.set_defaults(training_script=None)
    try:
        return parser.parse_known_args(options)[0].training_script
    finally:
        parser.set_defaults(training_script=DEFAULT_SCRIPT)


def _warn_visible_token(parser: argparse.ArgumentParser, command_line: list[str]) -> None:
    """--token on the command line itself (not in $FAKERUN_OPTS, which `ps`
    does not show) hands the secret to every user of the machine."""
    if parser.parse_known_args(command_line)[0].token is not None:
        print("fakerun: warning: --token is visible to other users (ps); "
              "use --token-file PATH or $FAKERUN_TOKEN", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    command_line = sys.argv[1:] if argv is None else argv
    if sys.stdout is None or sys.stderr is None:  # started with >&- or 2>&-: no reader, ever
        return ExitCode.PIPE  # quietly, as when one leaves: there is nowhere to say anything
    if command_line[:1] == ["smi"]:  # `fakerun smi`: a running job's GPUs, nvidia-smi style
        from fakerun.smi import main as smi_main

        # It puts the terminal in cbreak mode, and restores it on KeyboardInterrupt.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return smi_main(command_line[1:])
    parser = build_parser()
    args = _with_env_options(command_line, os.environ, parser)
    ns = parser.parse_args(args)
    _warn_visible_token(parser, command_line)
    if ns.list_scenarios:
        print(catalog.listing())
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
    except KeyboardInterrupt:  # before the launcher's own handler is in place
        return 130
    except SinkFailed as exc:  # e.g. --metrics-file vanished between the check and the open
        print(f"fakerun: error: {exc}", file=sys.stderr)
        return 1
