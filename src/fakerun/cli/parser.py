"""The command line's parser: torchrun's options (both spellings) and
fakerun's own, and the types that turn each into a value or one line of
usage error."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn

from fakerun.cli.launch_options import add_launch_options
from fakerun.config.options import OUTPUTS, parse_duration
from fakerun.config.paths import check_name
from fakerun.errors import ExitCode, UsageError
from fakerun.version import __version__
from fakerun.world.settings import StdMap

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
commands:
  fakerun smi [OPTIONS]  the running job's GPUs as nvidia-smi shows them (also -L,
                         --query-gpu=... --format=csv, -q -d ..., -i, -l; see fakerun smi --help)
  fakerun shims DIR      write `torchrun` and `nvidia-smi` into DIR, for PATH
exit codes: 0 success, 1 a rank failed or a stop signal (SIGINT, SIGTERM,
SIGHUP, SIGQUIT) ended the job, as torchrun; 2 usage error; 141 output
closed (e.g. piped into `head`); under --loop, 128+N for signal N.
environment:
  FAKERUN_TOKEN  the job's token across nodes, out of sight of `ps` (see --token-file)
  FAKERUN_OPTS   options read before the command line's own
  PET_<OPTION>   a torchrun option's value, e.g. PET_NNODES=2 (as torchrun; flags win)
  LOGLEVEL       torchrun's log level (default WARNING; ERROR hides its warnings, INFO adds its agent's)
  TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE  the tee prefix (see --log-line-prefix-template)
  NCCL_DEBUG     INFO shows NCCL's set-up lines (the demo sets it)
the demo (no training script named) runs as if launched with --tee 3 and
NCCL_DEBUG=INFO; name a training script (or run fakerun as `torchrun`) to
start from torchrun's defaults: no tee, no NCCL_DEBUG.
examples:
  fakerun --nproc 8
  fakerun --nproc-per-node 4 --max-steps 50 --speed 0 --output jsonl train.py --lr 3e-4
  fakerun --nproc-per-node 8 train.py --model_name_or_path meta-llama/Llama-3.1-8B \\
      --per_device_train_batch_size 4 --fsdp "full_shard auto_wrap" --max_steps 20 --output_dir out"""


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
    t.add_argument(*_options("--nnodes"), dest="nnodes", type=_nnodes, default=None, action=_NodeRange,
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
    t.add_argument(*_options("--tee", "-t"), dest="tee", type=_std, default=None, metavar="STD",
                   help="streams of the ranks written to their log files and shown on the console with "
                        "the [<role><local rank>]: prefix: 0 none, 1 stdout, 2 stderr, 3 both, or per "
                        "local rank as 0:1,1:2 (default: 0, as torchrun, when a training script is named; "
                        "the demo's 3)")
    t.add_argument(*_options("--redirects", "-r"), dest="redirects", type=_std, default=None, metavar="STD",
                   help="streams of the ranks written only to their log files, not the console, unless "
                        "teed (default 0)")
    t.add_argument(*_options("--role"), dest="role", default=None, metavar="NAME",
                   help="the workers' role: ROLE_NAME in their environment, and the tee prefix's "
                        "(default 'default')")
    t.add_argument(*_options("--log-line-prefix-template"), dest="log_line_prefix_template", default=None,
                   metavar="TEMPLATE",
                   help="the tee prefix, with ${role_name}, ${rank} and ${local_rank} (torch 2.14's "
                        "option; wins over $TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE; default "
                        "'[${role_name}${local_rank}]:')")
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
    add_launch_options(t)
    p.set_defaults(max_nnodes=None)  # --nnodes MIN:MAX's MAX, as torchrun's launch configs show it
    t.add_argument("--output-dir", type=_path, default=None, metavar="DIR",
                   help="write checkpoints there (checkpoint-<step>/, atomically)")
    t.add_argument("--resume", nargs="?", type=_resume, const="latest", default=None, metavar="PATH",
                   help="continue from the latest checkpoint in --output-dir, or from PATH")
    t.add_argument("--metrics-file", type=_path, default=None, metavar="PATH",
                   help="training metrics as JSONL, a line per step/eval/event, never torn")
    t.add_argument("--tensorboard", type=_path, default=None, metavar="DIR",
                   help="TensorBoard event files in DIR, as the style's framework writes them (needs "
                        "pip install 'fakerun[tensorboard]')")
    f = p.add_argument_group("fakerun options")
    f.add_argument("--sparse-checkpoints", action="store_true",
                   help="write each safetensors shard at its true size, the weights a hole (sparse file) "
                        "where the file system keeps holes; default: headers only")
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
    f.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve this node's GPUs on PORT as NVIDIA's dcgm-exporter does (its default "
                        "counters at /metrics, for Prometheus); with --nodes M, node k serves PORT+k")
    f.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR",
                   help="the address --metrics-port listens on (default 127.0.0.1; 0.0.0.0: every "
                        "interface, as with --master-addr)")
    f.add_argument("--node-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long another node may stay silent before it counts as lost (default 30)")
    f.add_argument("--lifeline", type=int, default=None, help=argparse.SUPPRESS)
    f.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="training steps (default: drawn from the seed, 400-800)")
    f.add_argument("--seed", type=int, default=None, metavar="S",
                   help="seed of the whole run (default: random)")
    f.add_argument("--speed", type=float, default=1.0, metavar="X",
                   help="pacing: 1 is real time (printed times are the wall clock, and a job takes "
                        "its real step time: --model Llama-3.1-405B --nnodes 16 takes minutes a step), "
                        "N runs N times faster, 0 no pacing at all; else 0.001 to 1e6 (default 1)")
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
                   help="GPU by nvidia-smi name, e.g. 'NVIDIA H100 80GB HBM3', or AMD's as torch names it, "
                        "'AMD Instinct MI300X' (one node) (default: drawn)")
    f.add_argument("--funny", action="store_true",
                   help="genact-style joke models and datasets, always (without it: now and then under "
                        "--loop or in the theatre, on a terminal; never in a drop-in)")
    # Not the user's: a local cluster tells its agents the rate of jokes it decided (main.joke_rate).
    f.add_argument("--jokes", type=float, default=None, help=argparse.SUPPRESS)
    f.add_argument("--start-time", default=None, metavar="ISO",
                   help="simulated start time; with --seed and --speed 0, output is byte-identical")
    f.add_argument("--exit-after-time", type=_duration, default=None, metavar="DURATION",
                   help="end training after this much wall time (90s, 5m, 1h30m), then validate, "
                        "checkpoint, export and summarise")
    f.add_argument("--loop", action="store_true",
                   help="start a fresh run after each one (screen-saver mode) until Ctrl+C")
    f.add_argument("--collective-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="NCCL watchdog timeout for one collective (default 600)")
    # Not torchrun's: a test's, so that a rank deaf to SIGTERM costs it less than the default 5 s.
    f.add_argument("--shutdown-grace", type=float, default=5.0, help=argparse.SUPPRESS)
    f.add_argument("--rdzv-timeout", type=float, default=None, metavar="SECONDS",
                   help="how long to wait for every rank to join (default 900)")
    f.add_argument("--scenario", default="healthy", metavar="NAME|FILE.toml",
                   help="a failure (or health) scenario from the catalog, or a TOML file (default healthy)")
    f.add_argument("--list-scenarios", action="store_true", help="list the scenarios and exit")
    f.add_argument("--fail-rank", type=int, default=None, metavar="R",
                   help="global rank that fails in a fault scenario (default 1)")
    f.add_argument("--fail-step", type=int, default=None, metavar="S",
                   help="step at which it fails (default: half way)")
    p.add_argument("training_script", nargs="?", default=None,
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
    directory); os.devnull keeps no log files (fakerun's rank logs then live
    in the run directory, removed at the end, as without --log-dir) and
    leaves every rank stream on the console (the config's settings say so)."""
    if text == os.devnull:
        return Path(os.devnull)
    return None if text == "" else _path(text)


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


class _NodeRange(argparse.Action):
    """--nnodes: `nnodes` is the MIN the job starts with, `max_nnodes` its MAX."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        namespace.nnodes, namespace.max_nnodes = values  # type: ignore[misc]


def _nnodes(text: str) -> tuple[int, int]:
    """N, or an elastic MIN:MAX: the job starts with MIN nodes (fakerun's
    rendezvous is static: it never waits for more to join)."""
    low, _, high = text.partition(":")
    try:
        low_n, high_n = int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN:MAX, got {text!r}") from None
    if low_n > high_n:
        raise argparse.ArgumentTypeError(f"MIN must not exceed MAX, got {text!r}")
    return low_n, high_n


def _std(text: str) -> StdMap:
    """torchrun's Std: 0 none, 1 stdout, 2 stderr, 3 both; or a per-local-rank mapping `0:1,1:2`."""
    try:
        return StdMap.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ranks(text: str) -> frozenset[int]:
    try:
        return frozenset(int(r) for r in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected local ranks like 0,3, got {text!r}") from None


def parse_endpoint(text: str | None) -> tuple[str | None, int | None]:
    """--rdzv-endpoint HOST[:PORT]."""
    if not text:
        return None, None
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        return host.strip("[]"), int(port) if port else None
    except ValueError:
        raise UsageError(f"--rdzv-endpoint must be HOST[:PORT], got {text!r}") from None


def join_timeout(conf: str) -> float | None:
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
