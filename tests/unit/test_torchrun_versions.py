"""torchrun's own lines follow the run's torch (identity.versions.torch): each
version's file:line, logger prefix, traceback frames and ChildFailedError box.

Expected texts are those of each version's sources (pytorch/pytorch v2.3.1,
v2.4.1, v2.5.1, v2.9.1: torch/distributed/run.py, launcher/api.py,
elastic/{agent/server,multiprocessing,metrics}/api.py,
elastic/multiprocessing/errors/__init__.py and torch/_logging/_internal.py,
as each version's wheel ships them) and of torchrun logs posted on GitHub
(2.3 on CPython 3.10, 2.4 and 2.5 on 3.11, 2.9 on 3.12), with their install
paths replaced by the simulated cluster's."""

from __future__ import annotations

import re
import time
from datetime import datetime

import pytest

from fakerun import events as ev
from fakerun.render.torchrun.formatter import EventFormatter
from fakerun.texts import load
from fakerun.texts import torchrun as torchrun_tables
from fakerun.world import catalog, identity, settings

ROWS = {row.torch: row for row in catalog.versions()}
PID = 48190  # the launcher's
MP = "torch/distributed/elastic/multiprocessing"


def at(stamp: str) -> float:
    return time.mktime(datetime.strptime(stamp, "%Y-%m-%d_%H:%M:%S").timetuple())


def start(torch: str | None, node_rank: int = 0, seed: int = 5) -> tuple[EventFormatter, list[str]]:
    """A formatter for a run of `torch` (None: no identity), and its OMP banner."""
    ident = identity.build(seed, 2, 4, versions=ROWS[torch]) if torch else None
    formatter = EventFormatter(ident=ident)
    banner = formatter.lines(ev.RunStarted("r", 8, 2, 4, node_rank, seed, "train.py", [], 3, "h", 1, PID, 0,
                                           at("2024-11-21_19:58:02") + 0.873))
    return formatter, [line.text for line in banner]


def failed(formatter: EventFormatter, error_file: str = "<N/A>") -> list[str]:
    root = ev.Failure(3, 3, 0, 48207, 1, at("2024-11-21_20:14:12"), "gpu-node-17", error_file)
    other = ev.Failure(2, 2, 0, 48206, -15, at("2024-11-21_20:14:12"), "gpu-node-17")
    event = ev.RunFailed("train.py", "/opt/conda/bin/python3", PID, root, [other], at("2024-11-21_20:14:15"))
    return [line.text for line in formatter.lines(event)]


def record_id(line: str) -> int:
    return int(line.split(" ")[2])


@pytest.mark.parametrize(("torch", "where"), [
    ("2.3.1", "torch/distributed/run.py:757"), ("2.4.1", "torch/distributed/run.py:779"),
    ("2.5.1", "torch/distributed/run.py:793"), ("2.9.1", "torch/distributed/run.py:803"),
    (None, "torch/distributed/run.py:874"),  # no identity: 2.13's, as captured
])
def test_omp_banner_names_the_versions_run_py_line(torch, where):
    _, banner = start(torch)
    assert [line.split(" ", 3)[3] for line in banner] == [
        f"{where}] ", f"{where}] *****************************************",
        f"{where}] Setting OMP_NUM_THREADS environment variable for each process to be 1 in default, to avoid "
        "your system being overloaded, please further tune the variable for optimal performance in your "
        "application as needed. ", f"{where}] *****************************************"]
    assert all(line.startswith("W1121 19:58:02.873000 ") for line in banner)
    assert len({record_id(line) for line in banner}) == 1  # one logging call


def test_banner_of_2_5_is_the_references_byte_for_byte():
    _, banner = start("2.5.1")
    assert banner[:2] == ["W1121 19:58:02.873000 48190 torch/distributed/run.py:793] ",
                          "W1121 19:58:02.873000 48190 torch/distributed/run.py:793] "
                          "*****************************************"]


@pytest.mark.parametrize("torch", ["2.3.1", "2.4.1"])
def test_torch_2_3_and_2_4_print_the_main_threads_id_not_the_pid(torch):
    # TorchLogsFormatter printed record.thread before 2.5 (record.process since):
    # `W0527 15:16:45.699000 140119427319616 torch/distributed/run.py:779]` in a real 2.4 log.
    formatter, banner = start(torch)
    thread = record_id(banner[0])
    assert thread != PID and 0x7F0000000000 <= thread < 0x800000000000 and thread & 0xFFF == 0x740
    assert all(record_id(line) == thread for line in failed(formatter, "/tmp/error.json")[:2])
    assert record_id(start(torch)[1][0]) == thread  # stable for a run (seed) and node
    assert record_id(start(torch, node_rank=1)[1][0]) != thread  # another node's launcher


@pytest.mark.parametrize("torch", ["2.5.1", "2.9.1"])
def test_torch_2_5_on_print_the_launchers_pid(torch):
    formatter, banner = start(torch)
    assert {record_id(line) for line in banner + failed(formatter, "/tmp/error.json")[:2]} == {PID}


# Each version's launcher lines on a failure, and its traceback on CPython 3.11+
# (3.12 for 2.9.1: same carets). 2.4, 2.5 and 2.9 match real logs line for line.
FAILURE = {
    "2.3.1": ("851", "826", "3.11", 347, 879, 870, 132, 263),
    "2.4.1": ("858", "833", "3.11", 348, 901, 892, 133, 264),
    "2.5.1": ("897", "869", "3.11", 355, 919, 910, 138, 269),
    "2.9.1": ("908", "882", "3.12", 357, 936, 927, 156, 293),
}


@pytest.mark.parametrize("torch", sorted(FAILURE))
def test_failure_lines_and_traceback_follow_the_version(torch):
    closing, fail, python, wrapper, main, run, call, raise_ = FAILURE[torch]
    formatter, _ = start(torch)
    closing_line = formatter.lines(ev.ClosingSignal(2, 2, 48206, "SIGTERM", at("2024-11-21_20:14:12") + 0.105))
    assert [x.text.split(" ", 3)[3] for x in closing_line] == [
        f"{MP}/api.py:{closing}] Sending process 48206 closing signal SIGTERM"]
    lines = failed(formatter)
    site = f"/opt/conda/lib/python{python}/site-packages"
    assert lines[0].startswith("E1121 20:14:15.000000 ")
    assert lines[0].split(" ", 3)[3] == (f"{MP}/api.py:{fail}] failed (exitcode: 1) local_rank: 3 (pid: 48207) "
                                         "of binary: /opt/conda/bin/python3")
    assert lines[1:19] == f"""Traceback (most recent call last):
  File "/opt/conda/bin/torchrun", line 8, in <module>
    sys.exit(main())
             ^^^^^^
  File "{site}/torch/distributed/elastic/multiprocessing/errors/__init__.py", line {wrapper}, in wrapper
    return f(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^
  File "{site}/torch/distributed/run.py", line {main}, in main
    run(args)
  File "{site}/torch/distributed/run.py", line {run}, in run
    elastic_launch(
  File "{site}/torch/distributed/launcher/api.py", line {call}, in __call__
    return launch_agent(self._config, self._entrypoint, list(args))
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "{site}/torch/distributed/launcher/api.py", line {raise_}, in launch_agent
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:{" "}
{"=" * 60}""".split("\n")


@pytest.mark.parametrize("torch", sorted(FAILURE))
def test_child_failed_box_up_to_2_9_has_no_signal_name_in_the_exitcode_line(torch):
    # errors/__init__.py's template was `exitcode  : ${exitcode} (pid: ${pid})`
    # until after 2.9 (2.13: `... (pid: ${pid}) ${signal_name}`).
    formatter, _ = start(torch)
    lines = failed(formatter)
    box = lines[lines.index("=" * 60):]
    assert box == """============================================================
train.py FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2024-11-21_20:14:12
  host      : gpu-node-17
  rank      : 2 (local_rank: 2)
  exitcode  : -15 (pid: 48206)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 48206
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2024-11-21_20:14:12
  host      : gpu-node-17
  rank      : 3 (local_rank: 3)
  exitcode  : 1 (pid: 48207)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================""".splitlines()


def test_torch_2_13_box_keeps_the_signal_name():
    formatter, _ = start(None)
    lines = failed(formatter)
    assert "  exitcode  : -15 (pid: 48206)  (SIGTERM)" in lines and "  exitcode  : 1 (pid: 48207) " in lines


@pytest.mark.parametrize(("torch", "line"), [("2.3.1", 136), ("2.4.1", 137), ("2.5.1", 141), ("2.9.1", 141),
                                             (None, 145)])
def test_error_file_line_follows_the_version(torch, line):
    formatter, _ = start(torch)
    path = "/tmp/torchelastic_x8k2p1qz/none_3hd9f0k2/attempt_0/3/error.json"
    text = failed(formatter, path)[1]
    # A few ms after the failed line (20:14:15.000), as torch 2.13's capture (5 ms).
    assert re.match(r"E1121 20:14:15\.00[3-7]\d{3} ", text)
    assert text.split(" ", 3)[3] == (f"{MP}/errors/error_handler.py:{line}] no error file defined for parent, "
                                     f"to copy child error file ({path})")


# The launcher's traceback on SIGINT: 2.5.1's matches a real 2.5.1/CPython 3.11 log.
SIGNAL = {
    "2.3.1": ("741", "851", "868", 347, 879, 870, 132, 254, 123, 733, 876, 76),
    "2.4.1": ("688", "858", "875", 348, 901, 892, 133, 255, 124, 680, 835, 79),
    "2.5.1": ("704", "897", "916", 355, 919, 910, 138, 260, 137, 696, 855, 84),
    "2.9.1": ("725", "908", "927", 357, 936, 927, 156, 284, 138, 717, 881, 85),
}


@pytest.mark.parametrize("torch", sorted(SIGNAL))
def test_signal_lines_and_traceback_follow_the_version(torch):
    death, closing, forced, wrapper, main, run, call, agent, prof, invoke, sleep, handler = SIGNAL[torch]
    formatter, _ = start(torch)
    when = at("2024-11-21_20:14:12")
    events = [ev.ShutdownRequested(2, when), ev.ClosingSignal(0, 0, 48205, "SIGINT", when),
              ev.ForcedKill(0, 48205, when, 15), ev.RunFinished(1, 2)]
    lines = [x.text for e in events for x in formatter.lines(e)]
    assert [x.split(" ", 3)[3] for x in lines[:3]] == [
        # CPython 3.11+ (every row of versions.txt): the IntEnum signal prints as its number.
        f"torch/distributed/elastic/agent/server/api.py:{death}] Received 2 death signal, shutting down workers",
        f"{MP}/api.py:{closing}] Sending process 48205 closing signal SIGINT",
        f"{MP}/api.py:{forced}] Unable to shutdown process 48205 via 15, forcefully exiting via 9"]
    site = f"/opt/conda/lib/python{ROWS[torch].python}/site-packages/torch/distributed"
    assert lines[3:] == f"""Traceback (most recent call last):
  File "/opt/conda/bin/torchrun", line 8, in <module>
    sys.exit(main())
             ^^^^^^
  File "{site}/elastic/multiprocessing/errors/__init__.py", line {wrapper}, in wrapper
    return f(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^
  File "{site}/run.py", line {main}, in main
    run(args)
  File "{site}/run.py", line {run}, in run
    elastic_launch(
  File "{site}/launcher/api.py", line {call}, in __call__
    return launch_agent(self._config, self._entrypoint, list(args))
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "{site}/launcher/api.py", line {agent}, in launch_agent
    result = agent.run()
             ^^^^^^^^^^^
  File "{site}/elastic/metrics/api.py", line {prof}, in wrapper
    result = f(*args, **kwargs)
             ^^^^^^^^^^^^^^^^^^
  File "{site}/elastic/agent/server/api.py", line {invoke}, in run
    result = self._invoke_run(role)
             ^^^^^^^^^^^^^^^^^^^^^^
  File "{site}/elastic/agent/server/api.py", line {sleep}, in _invoke_run
    time.sleep(monitor_interval)
  File "{site}/elastic/multiprocessing/api.py", line {handler}, in _terminate_process_handler
    raise SignalException(f"Process {{os.getpid()}} got signal: {{sigval}}", sigval=sigval)
torch.distributed.elastic.multiprocessing.api.SignalException: Process {PID} got signal: 2""".split("\n")


def test_every_row_runs_a_python_whose_signal_texts_we_print():
    # On CPython <= 3.10 torch prints `Received Signals.SIGINT death signal`,
    # `via Signals.SIGTERM, forcefully exiting via Signals.SIGKILL`, `got signal:
    # Signals.SIGINT` and no carets: a row on such a Python needs those texts first.
    assert all(tuple(map(int, row.python.split("."))) >= (3, 11) for row in catalog.versions())


def test_every_row_has_its_torch_table():
    # A version with no table would print 2.13's numbers: each row needs one.
    tables = load("torchrun")["torch"]
    assert all(".".join(row.torch.split(".")[:2]) in tables for row in catalog.versions())


def test_version_tables_only_override_what_the_base_has():
    data = load("torchrun")
    for version, table in data["torch"].items():
        for name, overrides in table.items():
            assert set(overrides) <= set(data[name]), (version, name)
            assert all(type(v) is type(data[name][k]) for k, v in overrides.items()), (version, name)


def test_lookup_is_by_major_minor_and_falls_back_to_2_13():
    base = torchrun_tables(None)
    assert base["lines"]["omp_banner"] == "torch/distributed/run.py:874"
    assert torchrun_tables("2.5.0")["lines"]["omp_banner"] == "torch/distributed/run.py:793"
    assert torchrun_tables("2.13.0") == base and torchrun_tables("2.6.0") == base
    # the base's texts are all still there, the version's exitcode replaces 2.13's
    assert torchrun_tables("2.4.1")["text"]["watchdog"] == base["text"]["watchdog"]
    assert torchrun_tables("2.4.1")["text"]["exitcode"] == "  exitcode  : {exitcode} (pid: {pid})"


def test_the_identity_event_switches_a_formatter_made_without_one():
    formatter, banner = start(None)
    assert banner[0].endswith("run.py:874] ")
    formatter.lines(ev.RunIdentity(identity.build(5, 2, 4, versions=ROWS["2.5.1"])))
    assert f"{MP}/api.py:869] failed" in failed(formatter)[0]


@pytest.mark.parametrize(("torch", "closing_shown"), [("2.3.1", False), ("2.4.1", True), ("2.5.1", True),
                                                      ("2.9.1", True), (None, True)])
def test_loglevel_error_hides_the_warnings_of_the_loggers_that_read_it(torch, closing_shown):
    """LOGLEVEL goes to elastic.utils.logging.get_logger's loggers (run.py's:
    the OMP banner; agent/server/api.py's: the death signal);
    multiprocessing/api.py's logging.getLogger takes it only in 2.3.1, whose
    multiprocessing/__init__.py makes the package's logger with get_logger.
    The 2.13.0 wheel under LOGLEVEL=ERROR prints "Sending process N closing
    signal SIGTERM" and the failure, not the banner (captured)."""
    ident = identity.build(5, 2, 4, versions=ROWS[torch]) if torch else None
    quiet = settings.resolve(settings.Flags(), {"LOGLEVEL": "ERROR"}, drop_in=True)
    formatter = EventFormatter(ident=ident, settings=quiet)
    when = at("2024-11-21_20:14:12")
    assert formatter.lines(ev.RunStarted("r", 8, 2, 4, 0, 5, "train.py", [], 3, "h", 1, PID, 0, when)) == []
    assert formatter.lines(ev.ShutdownRequested(15, when)) == []
    closing = formatter.lines(ev.ClosingSignal(0, 0, 48205, "SIGTERM", when))
    assert bool(closing) is closing_shown
    assert failed(formatter)[0].startswith("E")  # an ERROR prints at every level up to ERROR


# `LOGLEVEL=INFO torchrun --nproc-per-node 2 script.py` with the torch 2.13.0+cpu wheel (a script that
# prints and exits 0), less the launch-config block of launcher/api.py:254 (which fakerun does not print):
# each line after the glog stamp and pid ({sp}: a trailing space).
CAPTURED_INFO_2_13 = """\
torch/distributed/run.py:747] Using nproc_per_node=2.
torch/distributed/run.py:874]{sp}
torch/distributed/run.py:874] *****************************************
torch/distributed/run.py:874] Setting OMP_NUM_THREADS environment variable for each process to be 1 in default, \
to avoid your system being overloaded, please further tune the variable for optimal performance in your \
application as needed.{sp}
torch/distributed/run.py:874] *****************************************
torch/distributed/elastic/agent/server/api.py:912] [default] starting workers for entrypoint: python3
torch/distributed/elastic/agent/server/api.py:707] [default] Rendezvous'ing worker group
torch/distributed/elastic/agent/server/api.py:553] [default] Rendezvous complete for workers. Result:
torch/distributed/elastic/agent/server/api.py:553]   restart_count=0
torch/distributed/elastic/agent/server/api.py:553]   master_addr=localhost
torch/distributed/elastic/agent/server/api.py:553]   master_port=35135
torch/distributed/elastic/agent/server/api.py:553]   group_rank=0
torch/distributed/elastic/agent/server/api.py:553]   group_world_size=1
torch/distributed/elastic/agent/server/api.py:553]   local_ranks=[0, 1]
torch/distributed/elastic/agent/server/api.py:553]   role_ranks=[0, 1]
torch/distributed/elastic/agent/server/api.py:553]   global_ranks=[0, 1]
torch/distributed/elastic/agent/server/api.py:553]   role_world_sizes=[2, 2]
torch/distributed/elastic/agent/server/api.py:553]   global_world_sizes=[2, 2]
torch/distributed/elastic/agent/server/api.py:553]   event_log_handler=null
torch/distributed/elastic/agent/server/api.py:553]{sp}
torch/distributed/elastic/agent/server/api.py:715] [default] Starting worker group
torch/distributed/elastic/agent/server/local_elastic_agent.py:406] use_agent_store: True
torch/distributed/elastic/agent/server/local_elastic_agent.py:265] Environment variable \
'TORCHELASTIC_ENABLE_FILE_TIMER' not found. Do not start FileTimerServer.
torch/distributed/elastic/agent/server/local_elastic_agent.py:345] Environment variable \
'TORCHELASTIC_HEALTH_CHECK_PORT' not found. Do not start health check.
torch/distributed/elastic/agent/server/api.py:932] [default] worker group successfully finished. Waiting 300 \
seconds for other agents to finish.
torch/distributed/elastic/agent/server/api.py:985] Local worker group finished (WorkerState.SUCCEEDED). Waiting \
300 seconds for other agents to finish
torch/distributed/elastic/agent/server/api.py:1000] Done waiting for other agents. Elapsed: {elapsed} seconds"""


def info_run(torch: str | None, role: str = "default") -> list[str]:
    info = settings.resolve(settings.Flags(role=role), {"LOGLEVEL": "INFO"}, drop_in=True)
    ident = identity.build(5, 2, 4, versions=ROWS[torch]) if torch else None
    formatter = EventFormatter(ident=ident, settings=info)
    start = ev.RunStarted("r", 2, 1, 2, 0, 5, "train.py", [], 3, "localhost", 35135, PID, 0, 0.0)
    lines = formatter.lines(start) + formatter.lines(ev.RunFinished(0, 3))
    assert all(line.text.startswith("I") or line.text.startswith("W") for line in lines)
    return [line.text.split(" ", 3)[3] for line in lines]


def test_loglevel_info_prints_the_agents_lines_as_the_2_13_wheel_does():
    lines = info_run(None)
    elapsed = lines[-1].rsplit(" ", 2)[1]
    assert float(elapsed) == int(float(elapsed) * 2**22) * 2.0**-22 < 0.001  # time.time()'s step at ~1.7e9 s
    assert lines == CAPTURED_INFO_2_13.format(elapsed=elapsed, sp=" ").split("\n")


@pytest.mark.parametrize(("torch", "expected"), [
    # elastic/agent/server/{api,local_elastic_agent}.py of each wheel: the line each logging call starts on.
    # 2.3-2.5 say "Using nproc_per_node" through the root logger (logging.info), which LOGLEVEL leaves at
    # WARNING; 2.3 logs neither use_agent_store nor the health check, 2.4 not use_agent_store.
    ("2.3.1", [866, 699, 568, 707, 168, 885, 930, 944]),
    ("2.4.1", [825, 646, 512, 654, 185, 217, 844, 889, 902]),
    ("2.5.1", [845, 662, 525, 670, 291, 192, 229, 864, 917, 931]),
    ("2.9.1", [686, 871, 679, 525, 687, 296, 192, 236, 890, 943, 957]),
])
def test_loglevel_info_lines_follow_the_version(torch, expected):
    lines = [line for line in info_run(torch) if "run.py:" not in line or "Using" in line]
    numbers = [int(line.split("]", 1)[0].rsplit(":", 1)[1]) for line in lines]
    assert list(dict.fromkeys(numbers)) == expected
    has_handler = any("event_log_handler=null" in line for line in lines)
    assert has_handler is (torch == "2.9.1")  # the rendezvous result shows it from 2.9


def test_the_role_names_the_agents_worker_group():
    assert "[rank] Starting worker group" in [line.split("] ", 1)[1] for line in info_run(None, role="rank")]


@pytest.mark.parametrize(("torch", "line"), [("2.3.1", 360), ("2.4.1", 361), ("2.5.1", 368), ("2.9.1", 370),
                                             (None, 380)])
def test_loglevel_info_says_the_root_cause_left_no_error_file(torch, line):
    # The 2.13.0 wheel, LOGLEVEL=INFO, local rank 1 exiting 3: after the "failed" line,
    # I... errors/__init__.py:380] ('local_rank %s FAILED with no error file. ...', 1)
    ident = identity.build(5, 2, 4, versions=ROWS[torch]) if torch else None
    info = settings.resolve(settings.Flags(), {"LOGLEVEL": "INFO"}, drop_in=True)
    formatter = EventFormatter(ident=ident, settings=info)
    formatter.lines(ev.RunStarted("r", 8, 2, 4, 0, 5, "train.py", [], 3, "h", 1, PID, 0, 0.0))
    lines = failed(formatter)
    assert lines[1].split(" ", 3)[3] == (
        f"{MP}/errors/__init__.py:{line}] ('local_rank %s FAILED with no error file. Decorate your entrypoint "
        "fn with @record for traceback info. See: https://pytorch.org/docs/stable/elastic/errors.html', 3)")
    assert lines[2] == "Traceback (most recent call last):"
    quiet = EventFormatter(ident=ident)
    quiet.lines(ev.RunStarted("r", 8, 2, 4, 0, 5, "train.py", [], 3, "h", 1, PID, 0, 0.0))
    assert failed(quiet)[1] == "Traceback (most recent call last):"  # WARNING: not printed


def torn_down_box(torch: str | None) -> list[str]:
    """The box of a failure whose peer torchrun SIGTERMed in its teardown."""
    formatter, _ = start(torch)
    root = ev.Failure(3, 3, 0, 48207, 1, at("2024-11-21_20:14:12"), "gpu-node-17")
    other = ev.Failure(2, 2, 0, 48206, -15, at("2024-11-21_20:14:12"), "gpu-node-17", after_close=True)
    event = ev.RunFailed("train.py", "/opt/conda/bin/python3", PID, root, [other], at("2024-11-21_20:14:15"))
    lines = [line.text for line in formatter.lines(event)]
    return lines[lines.index("Failures:") + 1:lines.index("Root Cause (first observed failure):") - 1]


@pytest.mark.parametrize("torch", ["2.3.1", "2.4.1", "2.5.1", "2.9.1"])
def test_up_to_2_9_the_box_lists_only_what_failed_before_the_teardown(torch):
    # LocalSubprocessContext._poll (elastic/multiprocessing/api.py, v2.3.1 to
    # v2.9.1) returns the failures it saw before close() SIGTERMed the rest.
    assert torn_down_box(torch) == ["  <NO_OTHER_FAILURES>"]


def test_torch_2_13_lists_the_workers_it_sigtermed():
    # 2.13 reads their exit codes again after close() (_capture_process_failures).
    assert "  exitcode  : -15 (pid: 48206)  (SIGTERM)" in torn_down_box(None)


@pytest.mark.parametrize("torch", sorted(FAILURE))
def test_every_failed_attempt_logs_its_failed_line(torch):
    _, fail, *_ = FAILURE[torch]
    formatter, _ = start(torch)
    root = ev.Failure(1, 1, 0, 48207, 1, at("2024-11-21_20:14:12"), "gpu-node-17")
    lines = [x.text for x in formatter.lines(ev.AttemptFailed("/opt/conda/bin/python3", root,
                                                              at("2024-11-21_20:14:12") + 0.446))]
    assert [line.split(" ", 3)[3] for line in lines] == [
        f"{MP}/api.py:{fail}] failed (exitcode: 1) local_rank: 1 (pid: 48207) of binary: /opt/conda/bin/python3"]
    assert lines[0].startswith("E1121 20:14:12.446000 ")
