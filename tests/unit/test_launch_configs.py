"""LOGLEVEL=INFO's launch-config block (torch/distributed/launcher/api.py
launch_agent): where torchrun shows the options that have no other effect
(--monitor-interval, --rdzv-conf, --numa-binding, --signals-to-handle, ...),
as each pinned torch words it."""

from __future__ import annotations

import pytest

from fakerun import events as ev
from fakerun.cli.main import build_parser, to_config
from fakerun.render.torchrun.formatter import EventFormatter
from fakerun.world import catalog, identity

ROWS = {row.torch: row for row in catalog.versions()}
LINE = ("--nproc-per-node", "2", "--rdzv-conf", "join_timeout=60", "--monitor-interval", "5", "--max-restarts",
        "1", "--numa-binding", "node", "--duplicate-stdout-filters", "a,,b,c", "--signals-to-handle",
        "SIGTERM,SIGUSR1", "--master-port", "29531", "script.py")
# `LOGLEVEL=INFO torchrun <LINE>` with the torch 2.13.0+cpu wheel (its block, after the glog prefix).
CAPTURED_2_13 = """\
torch/distributed/launcher/api.py:254] Starting elastic_operator with launch configs:
torch/distributed/launcher/api.py:254]   entrypoint               : script.py
torch/distributed/launcher/api.py:254]   min_nodes                : 1
torch/distributed/launcher/api.py:254]   max_nodes                : 1
torch/distributed/launcher/api.py:254]   nproc_per_node           : 2
torch/distributed/launcher/api.py:254]   run_id                   : none
torch/distributed/launcher/api.py:254]   rdzv_backend             : static
torch/distributed/launcher/api.py:254]   rdzv_endpoint            : 127.0.0.1:29531
torch/distributed/launcher/api.py:254]   rdzv_configs             : {'join_timeout': '60', 'rank': 0, 'timeout': 900}
torch/distributed/launcher/api.py:254]   max_restarts             : 1
torch/distributed/launcher/api.py:254]   monitor_interval         : 5.0
torch/distributed/launcher/api.py:254]   log_dir                  : /tmp/torchelastic_r8xrefcr
torch/distributed/launcher/api.py:254]   metrics_cfg              : {}
torch/distributed/launcher/api.py:254]   event_log_handler        : null
torch/distributed/launcher/api.py:254]   numa_options             : NumaOptions(affinity_mode=<AffinityMode.NODE: 'node'>, \
should_fall_back_if_binding_fails=False)
torch/distributed/launcher/api.py:254]   signals_to_handle        : SIGTERM,SIGUSR1
torch/distributed/launcher/api.py:254]   duplicate_stdout_filters : ['a,b', 'c']
torch/distributed/launcher/api.py:254]   duplicate_stderr_filters : []
torch/distributed/launcher/api.py:254] """


def block(argv: tuple[str, ...], torch: str | None, log_root: str = "/tmp/torchelastic_r8xrefcr") -> list[str]:
    """The lines from launcher/api.py of a run of `torch` (None: 2.13's) launched with `argv`."""
    c = to_config(build_parser().parse_args(list(argv)), environ={"LOGLEVEL": "INFO"})
    formatter = EventFormatter(ident=identity.build(5, 1, c.topology.nproc_per_node, versions=ROWS[torch])
                               if torch else None, settings=c.settings)
    formatter.log_root = log_root
    started = ev.RunStarted(c.run_id, c.topology.world_size, c.topology.nnodes, c.topology.nproc_per_node, 0, 5,
                            c.entrypoint, [], 3, c.master_addr, c.master_port, 7169, 0, 0.0)
    return [line.text.split(" ", 3)[3] for line in formatter.lines(started) if "launcher/api.py" in line.text]


def test_the_block_is_the_2_13_wheels():
    assert block(LINE, None) == CAPTURED_2_13.split("\n")


@pytest.mark.parametrize(("torch", "where", "rows"), [
    # launch_agent's logger.info line and its rows in each wheel's launcher/api.py.
    ("2.3.1", 188, 12), ("2.4.1", 189, 12), ("2.5.1", 194, 12), ("2.9.1", 212, 14)])
def test_each_pinned_torch_prints_its_own_rows(torch: str, where: int, rows: int):
    lines = block(LINE, torch)
    assert {line.split("]", 1)[0] for line in lines} == {f"torch/distributed/launcher/api.py:{where}"}
    assert len(lines) == 1 + rows + 1  # the header, the rows, the message's final newline
    assert lines[10].endswith(" : 5.0") and lines[10].split("]", 1)[1].startswith("   monitor_interval ")


@pytest.mark.parametrize(("torch", "shown"), [("2.5.1", False), ("2.9.1", True), (None, True)])
def test_as_many_workers_as_gpus_take_the_default_numa_options_from_2_9_on(torch: str | None, shown: bool):
    # LaunchConfig.__post_init__ (2.9.1 launcher/api.py:117, 2.13.0 :143): no --numa-binding, CUDA, and
    # device_count() == nproc_per_node: torch._utils_internal.get_default_numa_options(), None outside Meta.
    lines = block(("--nproc-per-node", "8", "train.py"), torch)
    assert any(line.endswith("] Using default numa options = None") for line in lines) is shown
    assert not any("numa options" in line for line in block(("--nproc-per-node", "2", "train.py"), torch))


@pytest.mark.parametrize(("argv", "row", "value"), [
    (("--standalone", "train.py"), "rdzv_endpoint", "localhost:0"),
    (("--standalone", "train.py"), "rdzv_backend", "c10d"),
    (("--nnodes", "1:4", "train.py"), "max_nodes", "4"),
    (("-m", "pkg.train"), "entrypoint", "pkg.train"),
    (("--run-path", "/w/train.py"), "entrypoint", "run_script_path"),
    (("--log-dir", "/dev/null", "train.py"), "log_dir", "/dev/null"),
    (("--rdzv-backend", "c10d", "--rdzv-endpoint", "head:29400", "train.py"), "rdzv_configs", "{'timeout': 900}"),
    (("--rdzv-conf", "timeout=60", "train.py"), "rdzv_configs", "{'timeout': '60', 'rank': 0}"),
])
def test_the_rows_follow_the_launch_line(argv: tuple[str, ...], row: str, value: str):
    rows = {line.split("]   ", 1)[1].split(" : ")[0].strip(): line.split(" : ", 1)[1]
            for line in block(argv, None) if " : " in line}
    assert rows[row] == value


def test_not_under_the_default_loglevel():
    c = to_config(build_parser().parse_args(["train.py"]), environ={})
    formatter = EventFormatter(settings=c.settings)
    started = ev.RunStarted("r", 2, 1, 2, 0, 5, "train.py", [], 3, "127.0.0.1", 29500, 7169, 0, 0.0)
    assert not [line for line in formatter.lines(started) if "launcher/api.py" in line.text]


def test_a_bad_rdzv_conf_is_run_pys_error_as_a_usage_error():
    from fakerun.errors import UsageError

    with pytest.raises(UsageError, match="must be in format <key1>=<value1>"):
        to_config(build_parser().parse_args(["--rdzv-conf", "a=1,,b=2", "train.py"]), environ={})


def test_the_event_log_handler_is_the_rendezvous_results_too():
    # elastic/agent/server/api.py _rendezvous (2.9.1: line 525, 2.13.0: 553) ends its result with it.
    c = to_config(build_parser().parse_args(["--event-log-handler", "console", "train.py"]),
                  environ={"LOGLEVEL": "INFO"})
    formatter = EventFormatter(settings=c.settings)
    started = ev.RunStarted("r", 2, 1, 2, 0, 5, "train.py", [], 3, "127.0.0.1", 29500, 7169, 0, 0.0)
    assert [line.text.split("] ", 1)[1] for line in formatter.lines(started)
            if "event_log_handler=" in line.text] == ["  event_log_handler=console"]
