"""Run configuration: the validated, frozen description of one job.

Everything here is checked before any process starts, so a bad value is a
one-line usage error (exit 2) rather than a half-started job.
"""

from __future__ import annotations

import errno
import os
import random
import re
import secrets
import socket
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fakerun.errors import UsageError
from fakerun.system.files import check_regular
from fakerun.world.catalog import CatalogError
from fakerun.world.clock import RUN_SPAN_S, YEAR_S
from fakerun.world.identity import Asked
from fakerun.world.styles import Style
from fakerun.world.topology import Topology

OUTPUTS = ("auto", "plain", "rich", "jsonl")
# A paced run sleeps simulated time / speed: below a thousandth of real time
# nobody watches (a 1 s step takes 17 minutes), and 1e-300 overflowed the
# ranks' sleeps; above a million times real time pacing is no pacing.
MIN_SPEED, MAX_SPEED = 1e-3, 1e6
# Real pretraining runs take up to ~1M optimizer steps (Llama 3 405B: 15.6T
# tokens at 16M a batch). The loss-spike table every rank draws up front
# grows with the run's length: 0.6 MiB and 0.05 s per rank at this bound,
# 6 MiB and 0.23 s at ten times it (and a hang before the first step at 1e13).
MAX_STEPS = 1_000_000
PID_MAX = 1 << 22  # Linux's largest kernel.pid_max
# Strings every rank sends in its hello, so that they also fit a directory
# name and the wire (a longer one made the hello undecodable: no rank could
# join, a 900 s rendezvous wait). torchrun names a directory after the run id
# (`<id>_<8 random>`, at most 255 bytes); a DNS host name has at most 253
# characters (RFC 1035); a token is a line of a --token-file, read up to 4 KiB.
MAX_RUN_ID, MAX_HOST, MAX_TOKEN = 246, 253, 4096
# Tokens in one optimizer step (global batch x sequence). The largest batches
# of real pretraining are 16M tokens (Llama 3 405B) to 63M (DeepSeek-V3);
# 2^32 is 68 times that, and exactly what fakerun's largest job (2^17 ranks)
# takes at the largest micro batch (8) and sequence (4096) it plans by itself.
# Beyond it, `--gradient_accumulation_steps 99999999999` made each step a
# simulated century, which the coordinator refused: a 600 s watchdog wait.
MAX_TOKENS_PER_STEP = 1 << 32
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


@dataclass(frozen=True)
class Fault:
    """An injected fault: `kind` happens on `rank` at `step` (None: half way)."""

    kind: str
    rank: int
    step: int | None = None
    params: tuple[tuple[str, float], ...] = ()

    def param(self, name: str) -> float:
        return dict(self.params)[name]


@dataclass(frozen=True)
class RunConfig:
    topology: Topology
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    master_port_given: bool = False
    rdzv_id: str | None = None
    max_restarts: int = 0
    max_steps: int | None = None  # None: the run's identity decides
    seed: int = 0
    speed: float = 1.0
    output: str = "auto"
    log_dir: Path | None = None
    metrics_file: Path | None = None
    output_dir: Path | None = None
    resume: str | None = None  # "latest" (in --output-dir) or a checkpoint/output directory
    entrypoint: str = "train.py"
    script_args: tuple[str, ...] = ()
    collective_timeout_s: float = 600.0
    rdzv_timeout_s: float = 900.0
    shutdown_grace_s: float = 5.0
    fault: Fault | None = None
    model: str | None = None
    gpu: str | None = None
    funny: bool = False
    start_time: str | None = None
    exit_after_s: float | None = None
    loop: bool = False
    token: str = ""  # the job's shared secret: needed by every node (--token / FAKERUN_TOKEN)
    # Where the other nodes find the token, so that node 0's join hint need not print it:
    token_file: Path | None = None  # --token-file
    token_job: str | None = None  # the Slurm job id it was derived from (with the per-user secret)
    node_timeout_s: float = 30.0  # how long another node may stay silent before it is lost
    lifeline: int | None = None  # a pid whose exit ends this agent (the local cluster's parent)
    style: Style = field(default_factory=Style)  # whose output conventions the run follows
    asked: Asked = field(default_factory=Asked)  # what the training script's arguments fix
    tee: int = 3  # torchrun's Std: the rank streams shown on the console with the [defaultN]: prefix
    redirects: int = 0  # the rank streams kept off the console (log files only) unless teed
    local_ranks_filter: frozenset[int] | None = None  # only these local ranks on the console
    run_id: str = field(default="")
    identity: Any = None  # identity.Identity, built from the fields above
    resume_from: Any = None  # checkpoint.Resume, found from `resume`

    def __post_init__(self) -> None:
        _check_port(self.master_port)
        if self.max_restarts < 0:
            raise UsageError(f"--max-restarts must be >= 0, got {self.max_restarts}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.max_steps is not None and self.max_steps > MAX_STEPS:
            raise UsageError(f"--max-steps {self.max_steps}: more steps than real runs take "
                              f"(at most {MAX_STEPS})")
        if self.lifeline is not None and not 0 < self.lifeline <= PID_MAX:  # psutil overflowed on 1e20
            raise UsageError(f"--lifeline must be a process id, got {self.lifeline}")
        if not (self.speed == 0 or MIN_SPEED <= self.speed <= MAX_SPEED):  # also rejects NaN
            raise UsageError(f"--speed must be 0 (no pacing) or between {MIN_SPEED:g} and {MAX_SPEED:g}, "
                              f"got {self.speed}")
        if self.topology.nnodes > 1:
            self._check_multinode()
        if self.output not in OUTPUTS:
            raise UsageError(f"--output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        for name in ("collective_timeout_s", "rdzv_timeout_s", "shutdown_grace_s", "node_timeout_s"):
            if not getattr(self, name) > 0:
                flag = "--" + name.removesuffix("_s").replace("_", "-")
                raise UsageError(f"{flag} must be > 0 seconds, got {getattr(self, name)}")
        if self.exit_after_s is not None and not self.exit_after_s > 0:
            raise UsageError(f"--exit-after-time must be > 0, got {self.exit_after_s}")
        if self.start_time is not None:
            from fakerun.world.clock import parse_start

            try:
                parse_start(self.start_time)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        if self.log_dir is not None:
            _check_writable_dir(self.log_dir)
        if self.metrics_file is not None and self.topology.node_rank == 0:  # no other node touches it
            _check_file_target(self.metrics_file, "--metrics-file")
        if self.output_dir is not None:
            _check_writable_dir(self.output_dir, "--output-dir")
        if self.resume is not None and self.resume_from is None:
            self._resume_run(self._find_checkpoint())
        if not self.run_id:
            object.__setattr__(self, "run_id", self._derive_run_id())
        self._check_sent_text()
        if self.identity is None:
            object.__setattr__(self, "identity", self._build_identity())
            self._keep_model()
        self._check_fault()
        self._check_plan()

    def _check_sent_text(self) -> None:
        for what, text, limit in (("--rdzv-id (or $SLURM_JOB_ID)", self.run_id, MAX_RUN_ID),
                                  ("the master address (--master-addr, --rdzv-endpoint, $MASTER_ADDR or "
                                   "$SLURM_JOB_NODELIST)", self.master_addr, MAX_HOST),
                                  ("the token (--token, $FAKERUN_TOKEN)", self.token, MAX_TOKEN)):
            shown = "" if what.startswith("the token") else " " + repr(
                text if len(text) <= 40 else text[:20] + "..." + text[-8:])  # a secret is never shown
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError:
                raise UsageError(f"{what}{shown}: not valid UTF-8") from None
            if size > limit:
                raise UsageError(f"{what}{shown}: {size} bytes, more than {limit}")
        if "/" in self.run_id or self.run_id in (".", ".."):  # it names a directory under --log-dir
            raise UsageError(f"--rdzv-id (or $SLURM_JOB_ID) {self.run_id!r}: a run id names a directory "
                              "(no '/', not '.' or '..')")

    def _check_multinode(self) -> None:
        topo = self.topology
        if topo.node_rank > 0 and not self.token:
            raise UsageError(f"--node-rank {topo.node_rank} needs the job's token: FAKERUN_TOKEN or "
                              "--token-file (node 0 says where it is while it waits)")
        for flag, value in (("--max-restarts", self.max_restarts), ("--resume", self.resume)):
            if value:
                raise UsageError(f"{flag} is not supported with --nnodes > 1 yet")

    def next_run(self, cycle: int) -> RunConfig:
        """--loop's next run: the same cluster (hosts, GPUs, software, token),
        a fresh job on it (seed + cycle draws the model, data and curve).
        Every node derives the same one, so they rendezvous again."""
        fresh = replace(self, seed=self.seed + cycle, run_id="", identity=None, gpu=self.identity.gpu.name,
                        fault=None, resume=None, resume_from=None)
        return replace(fresh, identity=replace(fresh.identity, hosts=self.identity.hosts,
                                               versions=self.identity.versions))

    def digest(self) -> str:
        """What every node must agree on to run one job together."""
        import hashlib

        agreed = (self.topology.nnodes, self.topology.nproc_per_node, self.seed, self.steps,
                  self.identity.model.name, self.identity.gpu.name, self.fault, self.speed,
                  self.start_time, self.entrypoint, self.script_args, self.collective_timeout_s,
                  str(self.style), self.asked)
        return hashlib.sha256(repr(agreed).encode()).hexdigest()[:16]

    def _find_checkpoint(self) -> Any:
        from fakerun.checkpoint import find

        if self.resume == "latest" and self.output_dir is None:
            raise UsageError("--resume without a path needs --output-dir (where the checkpoints are)")
        path = self.output_dir if self.resume == "latest" else Path(self.resume)
        try:
            return find(path)
        except OSError as exc:  # a name too long for a stat
            raise UsageError(f"--resume {_short(path)}: {exc.strerror}") from None

    def _resume_run(self, found: Any) -> None:
        """The checkpoint's run wins: its seed (the curve, data and total
        steps drawn from it), whatever --seed says (a fresh random one, by
        default); its model is kept by _keep_model. An explicit --model that
        differs is refused: a pythia-6.9b checkpoint never carries on as
        Phi-3-mini."""
        object.__setattr__(self, "resume_from", found)
        if found.seed is not None:
            object.__setattr__(self, "seed", found.seed)
        model = _catalog_model(found.model)
        if model is not None and self.model is not None and self.model.lower() != model.lower():
            raise UsageError(f"--model {self.model}: the checkpoint {found.path} is of {model} "
                              "(resume without --model, or start a new run)")

    def _keep_model(self) -> None:
        """The seed draws the checkpoint's model again unless another setting
        (--gpu, --max-steps, the script's arguments) changed the draw: then it
        is pinned. Only then: pinning changes the seed's other draws."""
        found = self.resume_from
        model = _catalog_model(found.model) if found is not None else None
        if model is not None and self.identity.model.name != model:
            object.__setattr__(self, "model", model)
            object.__setattr__(self, "identity", self._build_identity())

    def _build_identity(self) -> Any:
        from fakerun.world import identity

        pinned = self.style.versions()[0] if self.style.pinned else None
        return identity.build(self.seed, self.topology.nnodes, self.topology.nproc_per_node,
                              self.max_steps, self.model, self.gpu, self.funny, pinned, self.asked)

    def _check_fault(self) -> None:
        fault, world = self.fault, self.topology.world_size
        if fault is None:
            return
        if not 0 <= fault.rank < world:
            raise UsageError(f"--fail-rank must be in [0, {world}), got {fault.rank}")
        if fault.kind == "stall" and world == 1:
            raise UsageError("--scenario nccl-timeout needs at least 2 ranks: with one, no peer "
                              "waits in a collective, so no watchdog would ever fire")
        if fault.step is None:
            object.__setattr__(self, "fault", Fault(fault.kind, fault.rank, max(1, self.steps // 2),
                                                    fault.params))
        elif not 1 <= fault.step <= self.steps:
            raise UsageError(f"--fail-step must be in [1, {self.steps}], got {fault.step}")

    def _check_plan(self) -> None:
        """Figures no job could have are refused here, before any process
        starts; whatever passes, the coordinator accepts (`bounds`). A micro
        batch or sequence no GPU holds was refused by the identity's memory plan."""
        h, ident = self.identity.hyper, self.identity
        if h.tokens_per_step > MAX_TOKENS_PER_STEP:
            raise UsageError(
                f"{h.global_batch:,} sequences of {h.seq_len:,} tokens = {h.tokens_per_step:.3g} tokens per "
                "optimizer step (the script's batch arguments): more than any real job takes (at most "
                f"{MAX_TOKENS_PER_STEP:,}; the largest pretraining batches are 16M-63M)")
        years = self.bounds.run_s / YEAR_S
        if self.bounds.run_s > RUN_SPAN_S:
            raise UsageError(
                f"{self.steps:,} steps of {ident.model.name} on {ident.world} x {ident.gpu.name} would take "
                f"{years:.3g} years of simulated time, past the calendar's end (at most "
                f"{RUN_SPAN_S / YEAR_S:.0f}): fewer steps, a smaller batch or more GPUs")

    @property
    def bounds(self) -> Any:
        """sim.Bounds: the largest figures a rank of this plan reports."""
        from fakerun.world import physics as sim

        slow = self.fault.param("factor") if self.fault is not None and self.fault.kind == "slow" else 1.0
        return sim.bounds(self.identity, slow)

    @property
    def steps(self) -> int:
        return self.identity.hyper.total_steps

    @property
    def deterministic(self) -> bool:
        """--start-time fixes every displayed time and pid: same seed, same bytes."""
        return self.start_time is not None

    def _derive_run_id(self) -> str:
        # torchrun: explicit --rdzv-id wins; a static rendezvous (port given) is
        # "none"; otherwise a uuid4. Ours is drawn from the seed so runs repeat.
        if self.rdzv_id:
            return self.rdzv_id
        if self.master_port_given:
            return "none"
        rng = random.Random(f"{self.seed}:run_id")
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _catalog_model(name: str | None) -> str | None:
    """The catalog's name of model `name`; None if it is none of the
    catalog's (a checkpoint of a model the script's arguments described)."""
    from fakerun.world.catalog import find, models

    try:
        return find(models(), name, "model").name if name else None
    except CatalogError:
        return None


def _check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise UsageError(f"--master-port must be in 1-65535, got {port}")


def check_name(flag: str, path: Path | str) -> None:
    """A path's name must be text: fakerun writes it into UTF-8 logs, JSON
    and its messages between processes (a name in other bytes was a
    UnicodeEncodeError there, after the ranks had started)."""
    try:
        os.fsdecode(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise UsageError(f"{flag} {shown}: the name is not valid UTF-8") from None


def _short(path: Path) -> str:
    """A path as messages show it: a name of thousands of bytes, abridged."""
    text = str(path)
    return text if len(text) <= 120 else f"{text[:80]}...{text[-30:]}"


def _check_file_target(path: Path, flag: str) -> None:
    """A file we will (re)write: a regular file or none yet (a FIFO would
    hang the open), in an existing writable directory."""
    check_name(flag, path)
    try:
        if path.is_dir():  # raises what lexists would swallow: a name too long
            raise UsageError(f"{flag} {_short(path)}: is a directory")
        check_regular(path)
    except OSError as exc:  # NotRegularFile; or stat's own error (a symlink loop, a name too long)
        raise UsageError(f"{flag} {_short(path)}: {exc.strerror}") from None
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {_short(path)}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{flag} {_short(path)}: not writable")


# What fakerun makes under a --log-dir or --output-dir: torchrun's layout
# (`<run id>_<8>/attempt_<n>/<local rank>/stderr.log`, the run id at most
# MAX_RUN_ID bytes) or a checkpoint (`checkpoint-<step>.tmp-<pid>-<hex>/
# model-00001-of-00002.safetensors`); the directory must leave room for it.
DEPTH_RESERVE = 512


def _check_writable_dir(path: Path, flag: str = "--log-dir") -> None:
    """The directory must exist or be creatable, and be writable by us."""
    check_name(flag, path)
    probe = path
    try:
        while not _lexists(probe) and probe.parent != probe:  # a symlink counts as there
            probe = probe.parent
        os.stat(probe)  # through symlinks: a dangling one is ENOENT, a loop ELOOP (mkdir: EEXIST)
    except OSError as exc:
        if exc.errno == errno.ENOENT and probe.is_symlink():
            raise UsageError(f"{flag} {_short(path)}: {probe} is a symbolic link to {os.readlink(probe)}, "
                              "which does not exist") from None
        raise UsageError(f"{flag} {_short(path)}: {_short(probe)}: {exc.strerror}") from None
    if not probe.is_dir():
        raise UsageError(f"{flag} {_short(path)}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {_short(path)}: {probe} is not writable")
    _check_length(path, probe, flag)
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {_short(path)}: cannot write there ({exc.strerror})") from None


def _lexists(path: Path) -> bool:
    """os.path.lexists, except that a name too long is an error, not absent
    (it was taken for a directory still to make, and mkdir failed after the
    checks, a traceback)."""
    try:
        os.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise
        return False
    return True


def _check_length(path: Path, probe: Path, flag: str) -> None:
    """Each name still to make fits the file system, and the whole path
    leaves room for what fakerun makes under it."""
    name_max, path_max = os.pathconf(probe, "PC_NAME_MAX"), os.pathconf(probe, "PC_PATH_MAX")
    too_long = f"{flag} {_short(path)}: {os.strerror(errno.ENAMETOOLONG)}"
    if any(len(os.fsencode(part)) > name_max for part in path.parts):
        raise UsageError(f"{too_long} (at most {name_max} bytes a name)")
    if len(os.fsencode(os.path.abspath(path))) > path_max - DEPTH_RESERVE:
        raise UsageError(f"{too_long} (at most {path_max - DEPTH_RESERVE} bytes, to leave room for the "
                          f"{DEPTH_RESERVE} fakerun makes under it)")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago, as torchrun picks MASTER_PORT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def new_seed() -> int:
    return secrets.randbelow(2**31)


def parse_duration(text: str) -> float:
    """`90`, `90s`, `5m`, `1h30m`, `1.5h` -> seconds."""
    match = _DURATION.match(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise UsageError(f"--exit-after-time {text!r}: expected a duration like 90s, 5m or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds
