"""How torchrun starts each worker, as its launch line says (-m,
--no-python, --run-path, --start-method, ...): the worker's argv (its process
title), the name the failure report gives the entrypoint, and the path of the
script's own frames in a traceback. torch/distributed/run.py's
config_from_args (v2.3.1 to v2.13.0 alike) decides:

    if args.run_path: cmd = run_script_path; cmd_args = [training_script]
    elif with_python: cmd = $PYTHON_EXEC or sys.executable
                      cmd_args = ["-u", ("-m",) training_script]
    else: cmd = training_script  (and -m with --no-python is a ValueError)

The options torchrun passes on without a meaning for a simulation
(--monitor-interval, --local-addr, --logs-specs, ...) are kept here too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from fakerun.errors import UsageError

PYTHON, MODULE, NO_PYTHON, RUN_PATH = "python", "module", "no_python", "run_path"
START_METHODS = ("spawn", "fork", "forkserver")  # run.py's --start-method choices
# elastic.multiprocessing's start_processes runs a function entrypoint (run_script_path)
# in multiprocessing children: a spawned or forkserver child's argv is the one
# multiprocessing gives it (multiprocessing/spawn.py get_command_line, forkserver.py
# ensure_running; CPython 3.11 and 3.12 alike); a forked one keeps torchrun's.
SPAWN_ARGV = ("-c", "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd={tracker}, "
                    "pipe_handle={pipe})", "--multiprocessing-fork")
FORKSERVER_ARGV = ("-c", "from multiprocessing.forkserver import main; main({listener}, {alive}, "
                         "['__main__'], **{{'sys_path': None, 'main_path': None}})")
# CPython 3.11's frames above a module run by `python -m` (Lib/runpy.py; as in
# public 3.11 tracebacks, e.g. getupcloud/python-mailgunlog issue 5).
RUNPY_MODULE = ('  File "<frozen runpy>", line 198, in _run_module_as_main',
                '  File "<frozen runpy>", line 88, in _run_code')
# runpy.run_path's `return _run_module_code(...)` line in CPython's frozen runpy: 291 in
# 3.11 (a torch 2.13 torchrun --run-path capture), 286 in 3.12 (public 3.12 tracebacks,
# e.g. kovidgoyal/kitty's). Its other two frames are 98 and 88 in both.
RUNPY_RUN_PATH = {"3.11": 291, "3.12": 286}
RUN_SCRIPT_PATH = "run_script_path"  # run.py's function, the report's entrypoint name


@dataclass(frozen=True)
class Launch:
    """The launch line's worker options, as given (defaults: run.py's)."""

    how: str = PYTHON  # PYTHON, MODULE, NO_PYTHON or RUN_PATH
    start_method: str = "spawn"
    monitor_interval: float = 0.1
    local_addr: str | None = None
    logs_specs: str | None = None
    event_log_handler: str = "null"
    numa_binding: str | None = None
    signals_to_handle: str = "SIGTERM,SIGINT,SIGHUP,SIGQUIT"
    virtual_local_rank: bool = False
    duplicate_stdout_filters: tuple[str, ...] = ()
    duplicate_stderr_filters: tuple[str, ...] = ()
    rdzv_backend: str = "static"
    rdzv_endpoint: str = ""  # as given ('' for a static one: run.py makes it master_addr:master_port)
    rdzv_conf: str = ""

    def __post_init__(self) -> None:
        if self.start_method not in START_METHODS:
            raise UsageError(f"--start-method must be one of {', '.join(START_METHODS)}, "
                             f"got {self.start_method!r}")
        if not self.monitor_interval > 0:
            raise UsageError(f"--monitor-interval must be > 0 seconds, got {self.monitor_interval}")

    def configs(self, entry: str, max_nodes: int, node_rank: int, max_restarts: int, log_dir: str,
                default_numa: bool) -> tuple[tuple[str, str], ...]:
        """The values of launch_agent's "Starting elastic_operator with launch
        configs" INFO block (launcher/api.py) known from the launch line, each
        as its %s renders it; the job's own (min_nodes, nproc_per_node, run_id,
        a static endpoint, a temporary log dir) are the formatter's.
        `default_numa`: LaunchConfig took get_default_numa_options() (2.9+:
        no --numa-binding and as many workers as the node has GPUs)."""
        numa = "None" if self.numa_binding is None else (
            f"NumaOptions(affinity_mode=<AffinityMode.{self.numa_binding.upper().replace('-', '_')}: "
            f"'{self.numa_binding}'>, should_fall_back_if_binding_fails=False)")
        return (("entrypoint", self.entry_name(entry)), ("max_nodes", str(max_nodes)),
                ("rdzv_backend", self.rdzv_backend), ("rdzv_endpoint", self.rdzv_endpoint),
                ("rdzv_configs", repr(rdzv_configs(self.rdzv_conf, self.rdzv_backend, node_rank))),
                ("max_restarts", str(max_restarts)), ("monitor_interval", str(self.monitor_interval)),
                ("log_dir", log_dir), ("metrics_cfg", "{}"), ("event_log_handler", self.event_log_handler),
                ("numa_options", numa), ("signals_to_handle", self.signals_to_handle),
                ("duplicate_stdout_filters", repr(list(self.duplicate_stdout_filters))),
                ("duplicate_stderr_filters", repr(list(self.duplicate_stderr_filters))),
                ("default_numa", "1" if default_numa and self.numa_binding is None else ""),
                ("worker_entrypoint", self.worker_name(entry)))

    def worker_name(self, script: str) -> str:
        """WorkerSpec.get_entrypoint_name (agent/server/api.py), of the agent's
        "starting workers" line: a function's name, else the executable's base
        name; '' for the interpreter's (the formatter knows which)."""
        if self.how == RUN_PATH:
            return RUN_SCRIPT_PATH
        return PurePosixPath(script).name if self.how == NO_PYTHON else ""

    def command(self, python: str, script: str, args: tuple[str, ...] | list[str],
                launcher_argv: list[str], pids: tuple[int, int]) -> list[str]:
        """A worker's argv; `launcher_argv` is what a forked child keeps,
        `pids` two small numbers for the descriptors a multiprocessing child is handed."""
        if self.how == RUN_PATH:
            if self.start_method == "fork":
                return launcher_argv
            template = SPAWN_ARGV if self.start_method == "spawn" else FORKSERVER_ARGV
            values = {"tracker": pids[0], "pipe": pids[1], "listener": pids[0], "alive": pids[1]}
            return [python, *(part.format(**values) for part in template)]
        if self.how == NO_PYTHON:
            return [script, *args]
        return [python, "-u", *(["-m"] if self.how == MODULE else []), script, *args]

    def entry_name(self, script: str) -> str:
        """launcher/api.py _get_entrypoint_name: a function's name, else the
        first of the interpreter's arguments that is no option (the module
        under -m), else the executable itself."""
        return RUN_SCRIPT_PATH if self.how == RUN_PATH else script

    def script_path(self, script: str) -> str:
        """The entry file a traceback names, relative to the job's working
        directory unless absolute: a module's file (`pkg.train` ->
        pkg/train.py) under -m."""
        if self.how == MODULE:
            return str(PurePosixPath(*script.split("."))) + ".py"
        return script

    def entry_frames(self, traceback: str, where: str, run_path_frames: str = "", script: str = "") -> str:
        """`traceback` with the frames above the script's own `<module>` frame
        (at `where`) that -m adds (runpy's), or --run-path's (`run_path_frames`:
        elastic's and runpy.run_path's; the frame then names `script` as given,
        the sys.argv[0] that runpy.run_path compiles)."""
        if self.how not in (MODULE, RUN_PATH):
            return traceback
        lines = traceback.split("\n")
        first = f'  File "{where}", line '
        for n, line in enumerate(lines):
            if line.startswith(first) and line.endswith(", in <module>"):
                if self.how == MODULE:
                    return "\n".join([*lines[:n], *RUNPY_MODULE, *lines[n:]])
                # runpy compiles sys.argv[0] as given: every frame of the script names it so.
                own = [f'  File "{script}", line ' + x[len(first):] if x.startswith(first) else x
                       for x in lines[n:]]
                return "\n".join([*lines[:n], run_path_frames, *own])
        return traceback


def how(module: bool, no_python: bool, run_path: bool) -> str:
    """The launch mode of the flags: --run-path wins over --no-python, which
    takes no -m (run.py's ValueError, a one-line usage error here)."""
    if run_path:
        return RUN_PATH
    if no_python and module:
        raise UsageError("Don't use both the '--no-python' flag and the '--module' flag at the same time.")
    return NO_PYTHON if no_python else MODULE if module else PYTHON


def rdzv_configs(conf: str, backend: str, node_rank: int) -> dict[str, str | int]:
    """--rdzv-conf as run.py makes it (rendezvous/utils.py _parse_rendezvous_config,
    then `rank` for a static rendezvous, then LaunchConfig's default `timeout`, 900)."""
    configs: dict[str, str | int] = {}
    for item in conf.strip().split(",") if conf.strip() else ():
        key, _, value = item.partition("=")
        if not key.strip() or not value.strip():
            raise UsageError("--rdzv-conf: The rendezvous configuration string must be in format "
                             "<key1>=<value1>,...,<keyN>=<valueN>.")
        configs[key.strip()] = value.strip()
    if backend == "static":
        configs["rank"] = node_rank
    configs.setdefault("timeout", 900)
    return configs
