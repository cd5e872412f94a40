"""The settings that decide what the real stack prints: torchrun's flags
(--tee, --redirects, --local-ranks-filter, --role, --log-line-prefix-template)
and the environment variables torch and NCCL read (NCCL_DEBUG, LOGLEVEL,
TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE, ...). A line the real stack prints
only under a setting is printed exactly when that setting is in effect.

fakerun's demo (`fakerun --nproc 8`, no training script) is itself expressed
as such settings, a job launched with `--tee 3` whose environment sets
NCCL_DEBUG=INFO: the ranks' environment shows them, and the user's own flags
and environment override them. A drop-in launch (a training script named, or
fakerun invoked as `torchrun`) starts from torchrun's defaults instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from string import Template

from fakerun.errors import UsageError

# What the demo sets where the user did not: the environment a job launched
# to show its NCCL set-up would have, and torchrun's --tee 3.
DEMO_ENV = (("NCCL_DEBUG", "INFO"),)
DEMO_TEE = 3
# The variables of the user's environment that change what torch or NCCL
# print (and so what fakerun prints): each is read once, here.
PREFIX_ENV = "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"
READ = ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "LOGLEVEL", PREFIX_ENV)
DEFAULT_ROLE = "default"  # torch/distributed/run.py's --role default, every pinned torch
STD_BITS = {"stdout": 1, "stderr": 2}  # torchrun's Std: 1 stdout, 2 stderr, 3 both
# torchrun's --tee/--redirects values (elastic/multiprocessing/api.py _VALUE_REGEX and
# _MAPPING_REGEX, the same in v2.3.1 to v2.13.0): one Std for every local rank, or
# `local_rank:std` pairs, each local rank a single digit.
_STD_VALUE = re.compile(r"^[0123]$")
_STD_MAPPING = re.compile(r"^(\d:[0123],)*(\d:[0123])$")


@dataclass(frozen=True)
class StdMap:
    """A --tee or --redirects value: `every` local rank's Std, except the
    `ranks` a `0:1,1:2` mapping names. Std.from_str then to_map: a mapping
    leaves the local ranks it does not name at Std.NONE."""

    every: int = 0
    ranks: tuple[tuple[int, int], ...] = field(default=())

    def of(self, local_rank: int) -> int:
        return dict(self.ranks).get(local_rank, self.every)

    def spare(self, bits: int) -> StdMap:
        """`bits` where this map does not set them, rank by rank (the demo's tee around --redirects)."""
        return StdMap(bits & ~self.every, tuple((r, bits & ~std) for r, std in self.ranks))

    @classmethod
    def parse(cls, text: str) -> StdMap:
        """ValueError with Std.from_str's words for anything else."""
        if _STD_VALUE.match(text):
            return cls(int(text))
        if _STD_MAPPING.match(text):
            pairs = (item.split(":") for item in text.split(","))
            return cls(0, tuple(sorted({int(r): int(v) for r, v in pairs}.items())))
        raise ValueError(f"{text} does not match: <{_STD_VALUE.pattern}> or <{_STD_MAPPING.pattern}>")


def _std_map(value: int | StdMap) -> StdMap:
    return value if isinstance(value, StdMap) else StdMap(value)


def _plain(value: int | StdMap) -> int | StdMap:
    """One Std for every local rank is torchrun's plain value (an int)."""
    return value.every if isinstance(value, StdMap) and not value.ranks else value


@dataclass(frozen=True)
class Flags:
    """torchrun's output flags as given on the command line (None: not given)."""

    tee: StdMap | None = None
    redirects: StdMap | None = None
    local_ranks: frozenset[int] | None = None
    role: str | None = None
    prefix_template: str | None = None
    no_log_files: bool = False  # --log-dir /dev/null


@dataclass(frozen=True)
class Settings:
    """The effective settings of one node's job."""

    tee: int | StdMap = 0  # torchrun's Std: the rank streams shown with the prefix
    redirects: int | StdMap = 0  # the rank streams kept off the console (log files only) unless teed
    local_ranks: frozenset[int] | None = None  # only these local ranks on the console
    environ: tuple[tuple[str, str], ...] = ()  # the READ variables as the ranks see them
    added: tuple[tuple[str, str], ...] = ()  # the demo's defaults, set in the ranks' environment
    role: str = DEFAULT_ROLE  # --role: ROLE_NAME, and the default prefix's ${role_name}
    prefix_template: str = ""  # the tee prefix's template; '' is torch's default
    loglevel: int = logging.WARNING  # the level of torchrun's loggers that read LOGLEVEL
    no_log_files: bool = False  # --log-dir /dev/null: every rank stream stays on the console, bare
    # LOGLEVEL=INFO's launch configs block, as far as the launch line says (config.launch.Launch.configs).
    launch_configs: tuple[tuple[str, str], ...] = ()
    # --run-path's --start-method ('' otherwise): its workers fail as multiprocessing children
    # (render/torchrun/run_path.py).
    run_path_start: str = ""

    def __post_init__(self) -> None:
        # An int stands for every local rank, as torchrun's single value does; a mapping stays one.
        object.__setattr__(self, "tee", _plain(self.tee))
        object.__setattr__(self, "redirects", _plain(self.redirects))

    def tee_of(self, local_rank: int) -> int:
        return _std_map(self.tee).of(local_rank)

    def redirects_of(self, local_rank: int) -> int:
        return _std_map(self.redirects).of(local_rank)

    def kept(self, local_rank: int) -> int:
        """The Std of a local rank's streams written to its log files (reify ORs --tee into --redirects)."""
        return 0 if self.no_log_files else self.tee_of(local_rank) | self.redirects_of(local_rank)

    # False: srun started each rank as its own task, no torchrun (cli/slurm.py): none of
    # torchrun's lines, files or prefixes; each rank's streams are its task's own, bare.
    torchrun: bool = True

    def without_torchrun(self) -> Settings:
        """No torchrun tees, redirects or filters a task's streams: srun
        hands each task's stdout and stderr to the job's output itself."""
        return replace(self, tee=0, redirects=0, local_ranks=None, torchrun=False)

    def env(self, name: str) -> str | None:
        """A variable of the ranks' environment, as torch or NCCL reads it."""
        return dict(self.environ).get(name)

    def rank_env(self) -> dict[str, str]:
        """What the ranks' environment gets beyond the user's own."""
        return dict(self.added)

    def prefix(self, rank: int, local_rank: int) -> str:
        """A teed line's prefix: TailLog's default `[{role}{local_rank}]:`
        (elastic/multiprocessing/tail_log.py, TailLog.start), or the template
        as LocalElasticAgent._start_workers fills it: string.Template's
        safe_substitute, so an unknown ${name} stays as written (torch 2.3.1
        to 2.13.0 alike)."""
        if not self.prefix_template:
            return f"[{self.role}{local_rank}]:"
        return Template(self.prefix_template).safe_substitute(role_name=self.role, rank=rank,
                                                              local_rank=local_rank)

    def console(self, stream: str, local_rank: int) -> tuple[bool, bool]:
        """(on the console, prefixed) for a rank's line, as DefaultLogsSpecs.reify
        routes it (elastic/multiprocessing/api.py): a teed stream is written to
        its file and tailed to the console with the prefix (tee wins over
        --redirects, which it implies); a redirected one goes to its file only;
        any other is the worker's inherited stream, bare. --local-ranks-filter
        stops the tail of the others, and sends their console streams to
        /dev/null. Under --log-dir /dev/null reify routes nothing: every
        stream of every rank is the worker's own (tee tails /dev/null)."""
        if self.no_log_files or not self.torchrun:
            return True, False
        if self.local_ranks is not None and local_rank not in self.local_ranks:
            return False, False
        bit = STD_BITS[stream]
        if self.tee_of(local_rank) & bit:
            return True, True
        return not self.redirects_of(local_rank) & bit, False

    def in_files(self, stream: str, local_rank: int = 0) -> bool:
        """A rank stream torch writes to its stdout.log / stderr.log: the
        redirected and the teed ones (of `local_rank` under a mapping)."""
        return bool(self.kept(local_rank) & STD_BITS[stream])

    def logs(self, level: int, follows_loglevel: bool) -> bool:
        """Whether a torchrun logger prints a record of `level`: a logger made
        by elastic.utils.logging.get_logger takes LOGLEVEL (default WARNING,
        log_level.get_log_level); the others inherit the "torch" logger's
        WARNING."""
        return level >= (self.loglevel if follows_loglevel else logging.WARNING)


def resolve(flags: Flags, environ: Mapping[str, str], drop_in: bool) -> Settings:
    """The user's flags and environment first, then (unless `drop_in`) the demo's defaults."""
    added = () if drop_in else tuple((k, v) for k, v in DEMO_ENV if k not in environ)
    seen = {k: environ[k] for k in READ if k in environ} | dict(added)
    redirects = flags.redirects or StdMap()
    # The demo's --tee is a default like the others: it leaves alone the
    # streams the user redirected (torch would tee them, tee winning).
    tee = flags.tee if flags.tee is not None else StdMap() if drop_in else redirects.spare(DEMO_TEE)
    # torch 2.14's --log-line-prefix-template wins over the variable
    # (run.py: `args.log_line_prefix_template or os.getenv(...)`); before
    # 2.14 only the variable exists. Empty is unset: torch tests truthiness.
    template = flags.prefix_template or environ.get(PREFIX_ENV, "")
    return Settings(tee, redirects, flags.local_ranks, tuple(sorted(seen.items())), added,
                    flags.role if flags.role is not None else DEFAULT_ROLE, template,
                    loglevel(environ.get("LOGLEVEL")), flags.no_log_files)


def loglevel(value: str | None) -> int:
    """LOGLEVEL as Logger.setLevel takes it: a level's exact name. NOTSET
    leaves the logger to its parent, "torch", at WARNING. Anything else makes
    torchrun fail at import (ValueError: Unknown level)."""
    if value is None:
        return logging.WARNING
    level = logging.getLevelNamesMapping().get(value)
    if level is None:
        raise UsageError(f"LOGLEVEL: Unknown level: {value!r}")
    return level or logging.WARNING


def demo() -> Settings:
    """The bare `fakerun` demo's settings in an environment that sets none."""
    return resolve(Flags(), {}, drop_in=False)
