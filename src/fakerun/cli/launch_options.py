"""torchrun's options of how each worker is started, and those it passes on
to its agent (torch/distributed/run.py get_args_parser, v2.3.1 to v2.13.0):
accepted in both spellings whatever torch the run claims (an option of 2.9.1
or 2.13.0 too, as the README says), so that a launch line written for any
pinned torch runs. The captured help of each version is
tests/fixtures/torchrun_help/."""

from __future__ import annotations

import argparse
from typing import Any

from fakerun.config.launch import START_METHODS, Launch, how
from fakerun.errors import UsageError

# run.py's --numa-binding choices: torch.numa.binding.AffinityMode (2.9.1 and 2.13.0).
NUMA_MODES = ("node", "socket", "exclusive", "core-complex")


def add_launch_options(t: Any) -> None:
    """Add them to the parser's torchrun group `t`."""
    t.add_argument("-m", "--module", action="store_true",
                   help="the training script is a module, run as `python -m` runs it: its name in the "
                        "workers' command line, its file in their tracebacks")
    t.add_argument("--no-python", "--no_python", dest="no_python", action="store_true",
                   help="the training script is an executable, started without `python`")
    t.add_argument("--run-path", "--run_path", dest="run_path", action="store_true",
                   help="run the script with runpy.run_path in a multiprocessing worker (wins over "
                        "--no-python): the report names run_script_path")
    t.add_argument("--start-method", "--start_method", dest="start_method", choices=START_METHODS,
                   default="spawn", help="how --run-path's workers start (default spawn)")
    t.add_argument("--monitor-interval", "--monitor_interval", dest="monitor_interval", type=float,
                   default=0.1, metavar="SECONDS",
                   help="the agent's monitoring interval, in LOGLEVEL=INFO's launch configs (default 0.1)")
    t.add_argument("--local-addr", "--local_addr", dest="local_addr", default=None, metavar="HOST",
                   help="this node's address, accepted as torchrun's")
    t.add_argument("--logs-specs", "--logs_specs", dest="logs_specs", default=None, metavar="NAME",
                   help="a torchrun.logs_specs entry point, accepted; the default layout is written")
    t.add_argument("--event-log-handler", "--event_log_handler", dest="event_log_handler", default="null",
                   metavar="NAME",
                   help="torch elastic's event handler, in LOGLEVEL=INFO's lines (torch 2.9's option)")
    t.add_argument("--numa-binding", "--numa_binding", dest="numa_binding", choices=NUMA_MODES, default=None,
                   help="NUMA binding of the workers, in LOGLEVEL=INFO's launch configs (torch 2.9's option)")
    t.add_argument("--duplicate-stdout-filters", "--duplicate_stdout_filters",
                   dest="duplicate_stdout_filters", type=_filters, default=(), metavar="A,B",
                   help="torch 2.13's filtered copy of the ranks' stdout, in LOGLEVEL=INFO's launch configs")
    t.add_argument("--duplicate-stderr-filters", "--duplicate_stderr_filters",
                   dest="duplicate_stderr_filters", type=_filters, default=(), metavar="A,B",
                   help="torch 2.13's filtered copy of the ranks' stderr, in LOGLEVEL=INFO's launch configs")
    t.add_argument("--signals-to-handle", "--signals_to_handle", dest="signals_to_handle",
                   default="SIGTERM,SIGINT,SIGHUP,SIGQUIT", metavar="SIG,SIG",
                   help="signals the agent forwards to the workers (torch 2.13's option: SIGTERM, SIGINT, "
                        "SIGHUP and SIGQUIT always, and SIGUSR1 where listed)")
    t.add_argument("--shutdown-timeout", "--shutdown_timeout", dest="shutdown_timeout", type=int,
                   default=None, metavar="SECONDS",
                   help="how long the workers have between SIGTERM and SIGKILL (torch 2.13's option)")
    t.add_argument("--virtual-local-rank", "--virtual_local_rank", dest="virtual_local_rank",
                   action="store_true",
                   help="every worker's LOCAL_RANK is 0, its one GPU in CUDA_VISIBLE_DEVICES "
                        "(torch 2.13's option)")


def launch(ns: argparse.Namespace) -> Launch:
    """The Launch the parsed options describe."""
    if (ns.module or ns.no_python or ns.run_path) and ns.training_script is None:
        # fakerun's demo has no script to run as a module or an executable; torchrun's argparse says:
        raise UsageError("the following arguments are required: training_script")
    # --standalone: run.py's c10d rendezvous on localhost:0, whatever was given.
    backend, endpoint = ("c10d", "localhost:0") if ns.standalone else (ns.rdzv_backend,
                                                                       ns.rdzv_endpoint or "")
    return Launch(how(ns.module, ns.no_python, ns.run_path), ns.start_method, ns.monitor_interval,
                  ns.local_addr, ns.logs_specs, ns.event_log_handler, ns.numa_binding, ns.signals_to_handle,
                  ns.virtual_local_rank, ns.duplicate_stdout_filters, ns.duplicate_stderr_filters,
                  backend, endpoint, ns.rdzv_conf)


def _filters(text: str) -> tuple[str, ...]:
    """torch 2.13's comma_separated_list (run.py): ',,' is a comma inside a filter."""
    return tuple(item.replace("\0", ",") for item in text.replace(",,", "\0").split(","))
