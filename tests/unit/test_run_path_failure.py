"""--run-path failures as torchrun logs them (issue 21): spawn.py's
"Terminating process" warning and MultiprocessContext._poll's logger.exception
with spawn's ProcessExitedException / ProcessRaisedException traceback.

Expected: a capture of the torch 2.13.0+cpu wheel on CPython 3.11
(`torchrun --run-path --nproc-per-node 2 fail.py`, rank 1 raising, then
os._exit(1)), its install path replaced by the simulated cluster's, and per
version the line numbers of each wheel's torch/multiprocessing/spawn.py,
torch/distributed/elastic/multiprocessing/api.py and torch/distributed/run.py
(pytorch/pytorch v2.3.1, v2.4.1, v2.5.1, v2.9.1, v2.13.0)."""

from __future__ import annotations

import pytest

from fakerun import events as ev
from fakerun.render.torchrun.formatter import EventFormatter
from fakerun.world import catalog, identity, settings

ROWS = {row.torch: row for row in catalog.versions()}
SITE = "/opt/conda/lib/python{py}/site-packages"
WORKER = """Traceback (most recent call last):
  File "{site}/torch/distributed/elastic/multiprocessing/errors/__init__.py", line 367, in wrapper
    return f(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^
  File "{site}/torch/distributed/run.py", line 982, in run_script_path
    runpy.run_path(sys.argv[0], run_name="__main__")
  File "<frozen runpy>", line 291, in run_path
  File "<frozen runpy>", line 98, in _run_module_code
  File "<frozen runpy>", line 88, in _run_code
  File "fail.py", line 5, in <module>
    raise RuntimeError("boom on rank 1")
RuntimeError: boom on rank 1
"""
# (torch, spawn "Terminating", api logger.exception, _poll join(-1), spawn raise exited/signal/raised,
#  spawn _wrap fn(i, *args), api _wrap record(fn))
LINES = {
    None: (165, 836, 791, 200, 192, 211, 87, 706),  # no identity: 2.13's, as captured
    "2.3.1": (145, 695, 656, 177, 169, 188, 75, 580),
    "2.4.1": (146, 702, 659, 178, 170, 189, 76, 583),
    "2.5.1": (160, 732, 687, 192, 184, 203, 90, 611),
    "2.9.1": (174, 742, 697, 209, 201, 220, 95, 617),
}


def formatter(torch: str | None) -> tuple[EventFormatter, str]:
    ident = identity.build(5, 1, 2, versions=ROWS[torch]) if torch else None
    run = settings.Settings(run_path_start="spawn")
    py = ident.versions.python if ident else "3.11"
    out = EventFormatter(ident=ident, settings=run)
    out.lines(ev.RunStarted("r", 2, 1, 2, 0, 5, "fail.py", [], 3, "h", 1, 29547, 0, 1_796_678_608.0))
    return out, SITE.format(py=py)


def messages(lines: list[ev.Line] | list) -> list[str]:
    return [line.text.split("] ", 1)[1] if "] " in line.text else line.text.split("]", 1)[1] for line in lines]


def failure(message: str = "", exitcode: int = 1) -> ev.Failure:
    return ev.Failure(1, 1, 0, 29552, exitcode, 1_796_678_609.0, "localhost", "<N/A>", message)


@pytest.mark.parametrize("torch", list(LINES))
def test_terminating_process_is_spawn_joins_warning(torch):
    out, _ = formatter(torch)
    [line] = out.lines(ev.ClosingSignal(0, 0, 29551, "SIGTERM", 1_796_678_609.2))
    assert line.text.startswith("W")
    assert line.text.endswith(f" torch/multiprocessing/spawn.py:{LINES[torch][0]}] "
                              "Terminating process 29551 via signal SIGTERM")


@pytest.mark.parametrize("torch", list(LINES))
def test_an_exited_worker_is_logged_with_spawns_process_exited_exception(torch):
    out, site = formatter(torch)
    term, api, join, exited, *_ = LINES[torch]
    lines = out.lines(ev.AttemptFailed("python", failure(), 1_796_678_609.2))
    assert {line.text.split(" ")[3] for line in lines} == {f"torch/distributed/elastic/multiprocessing/api.py:{api}]"}
    assert all(line.text.startswith("E") for line in lines)
    assert messages(lines) == [
        "failed (exitcode: 1) local_rank: 1 (pid: 29552) of fn: run_script_path (start_method: spawn)",
        "Traceback (most recent call last):",
        f'  File "{site}/torch/distributed/elastic/multiprocessing/api.py", line {join}, in _poll',
        "    self._pc.join(-1)",
        f'  File "{site}/torch/multiprocessing/spawn.py", line {exited}, in join',
        "    raise ProcessExitedException(",
        "torch.multiprocessing.spawn.ProcessExitedException: process 1 terminated with exit code 1",
    ]


@pytest.mark.parametrize("torch", list(LINES))
def test_a_signalled_worker_names_its_signal(torch):
    out, site = formatter(torch)
    lines = messages(out.lines(ev.AttemptFailed("python", failure(exitcode=-11), 1_796_678_609.2)))
    assert lines[0].startswith("failed (exitcode: -11) local_rank: 1 (pid: 29552) of fn: run_script_path")
    assert lines[4] == f'  File "{site}/torch/multiprocessing/spawn.py", line {LINES[torch][4]}, in join'
    assert lines[-1] == "torch.multiprocessing.spawn.ProcessExitedException: process 1 terminated with signal SIGSEGV"


@pytest.mark.parametrize("torch", list(LINES))
def test_a_raising_worker_is_logged_with_its_traceback_through_spawn(torch):
    out, site = formatter(torch)
    *_, raised, spawn_wrap, api_wrap = LINES[torch]
    worker = WORKER.format(site=site)
    lines = messages(out.lines(ev.AttemptFailed("python", failure(worker), 1_796_678_609.2)))
    assert lines == [
        "failed (exitcode: 1) local_rank: 1 (pid: 29552) of fn: run_script_path (start_method: spawn)",
        "Traceback (most recent call last):",
        f'  File "{site}/torch/distributed/elastic/multiprocessing/api.py", line {LINES[torch][2]}, in _poll',
        "    self._pc.join(-1)",
        f'  File "{site}/torch/multiprocessing/spawn.py", line {raised}, in join',
        "    raise ProcessRaisedException(msg, error_index, failed_process.pid)",
        "torch.multiprocessing.spawn.ProcessRaisedException: ",
        "",
        "-- Process 1 terminated with the following error:",
        "Traceback (most recent call last):",
        f'  File "{site}/torch/multiprocessing/spawn.py", line {spawn_wrap}, in _wrap',
        "    fn(i, *args)",
        f'  File "{site}/torch/distributed/elastic/multiprocessing/api.py", line {api_wrap}, in _wrap',
        "    ret = record(fn)(*args_)",
        "          ^^^^^^^^^^^^^^^^^^",
        *worker.split("\n")[1:],
    ]
    assert lines[-1] == ""  # the pickled traceback's own newline: a prefixed empty line, as captured


def test_a_normal_run_keeps_torchruns_subprocess_lines():
    out = EventFormatter(settings=settings.Settings())
    out.lines(ev.RunStarted("r", 2, 1, 2, 0, 5, "fail.py", [], 3, "h", 1, 29547, 0, 1_796_678_608.0))
    [line] = out.lines(ev.AttemptFailed("/usr/bin/python", failure(), 1_796_678_609.2))
    assert line.text.endswith("failed (exitcode: 1) local_rank: 1 (pid: 29552) of binary: /usr/bin/python")


def test_a_run_path_traceback_has_runpy_run_paths_frames_and_the_script_as_given():
    """As the 2.13 capture's: elastic's record wrapper, run_script_path, three
    frozen runpy frames, then the script's frames under sys.argv[0] as given."""
    from fakerun.config import launch as launches
    trace = "\n".join(["Traceback (most recent call last):",
                       '  File "/workspace/fail.py", line 5, in <module>', "    main()",
                       '  File "/workspace/fail.py", line 3, in main', "RuntimeError: x"])
    above = '  File "<frozen runpy>", line 88, in _run_code'
    lines = launches.Launch(launches.RUN_PATH).entry_frames(trace, "/workspace/fail.py", above, "fail.py")
    assert lines.split("\n") == ["Traceback (most recent call last):", above,
                                 '  File "fail.py", line 5, in <module>', "    main()",
                                 '  File "fail.py", line 3, in main', "RuntimeError: x"]


def test_the_box_lists_the_one_failure_mp_contexts_poll_reports():
    """2.13's subprocess context lists each torn-down worker (-15); its
    MultiprocessContext only the failed one, as the capture's box shows."""
    out, _ = formatter(None)
    closed = ev.Failure(0, 0, 0, 29551, -15, 1_796_678_609.0, "localhost", after_close=True)
    lines = [line.text for line in out.lines(ev.RunFailed("run_script_path", "python", 29547, failure(),
                                                          [closed], 1_796_678_610.0))]
    assert lines[lines.index("Failures:") + 1] == "  <NO_OTHER_FAILURES>"
