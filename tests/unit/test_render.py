"""Renderers: exact torchrun texts."""

from __future__ import annotations

import io
import json
import time
from datetime import datetime
from pathlib import Path

from fakerun import events as ev
from fakerun.render.console import ConsoleSink
from fakerun.render.jsonl import JsonlSink, dumps
from fakerun.render.lines import Line, c10_stamp, elastic_time, glog_prefix
from fakerun.render.renderer import Renderer
from fakerun.render.torchrun.failure import failure_box
from fakerun.render.torchrun.formatter import EventFormatter
from fakerun.texts import load

GOLDEN = Path(__file__).parent / "golden"
TEXT = load("torchrun")["text"]


def at(stamp: str) -> float:
    return time.mktime(datetime.strptime(stamp, "%Y-%m-%d_%H:%M:%S").timetuple())


def failure(rank: int, pid: int, code: int) -> ev.Failure:
    return ev.Failure(rank, rank, 0, pid, code, at("2026-11-21_21:15:18"), "localhost")


def test_failure_box_matches_real_torchrun_byte_for_byte():
    # Captured from torchrun (torch 2.13.0) on this kind of machine: rank 1
    # exited 1, ranks 0 and 2 were SIGTERMed.
    box = failure_box("train.py", failure(1, 2867, 1),
                      [failure(0, 2866, -15), failure(2, 2868, -15)], TEXT)
    assert "\n".join(box) + "\n" == (GOLDEN / "childfailed_torch2.13.txt").read_text()


def test_failure_box_width_follows_the_longest_line_up_to_60():
    box = failure_box("train.py", failure(1, 31935, -9), [], TEXT)
    # "  traceback : Signal 9 (SIGKILL) received by PID 31935" is 54 long.
    assert box[0] == "=" * 54 and box[4] == "  <NO_OTHER_FAILURES>"
    long_title = failure_box("x" * 70 + ".py", failure(1, 1, 1), [], TEXT)
    assert len(long_title[0]) == 60


def test_prefixes():
    t = at("2026-03-09_07:05:04") + 0.076543
    assert glog_prefix("W", t, 10505, "torch/distributed/run.py:874") == \
        "W0309 07:05:04.076000 10505 torch/distributed/run.py:874] "
    assert c10_stamp(t).startswith("309 07:05:04.0765")
    assert len(c10_stamp(t).split(".")[1]) == 9
    assert elastic_time(t) == "2026-03-09_07:05:04"


def test_console_prefixes_rank_lines_and_filters_other_nodes():
    out, err = io.StringIO(), io.StringIO()
    sink = ConsoleSink(out, err, nproc_per_node=4, node_ranks=range(4, 8))
    sink.write([Line("mine", "stdout", 5), Line("not mine", "stdout", 1),
                Line("oops", "stderr", 6), Line("launcher", "stderr", None)])
    assert out.getvalue() == "[default1]:mine\n"
    assert err.getvalue() == "[default2]:oops\nlauncher\n"


def test_jsonl_is_strict_json():
    line = dumps(ev.Step(1, 2, float("nan"), float("-inf"), float("inf"), 1.5))
    body = json.loads(line)
    assert "NaN" in line and body["loss"] == "NaN" and body["loss_min"] == "-Infinity"
    assert {k: body[k] for k in ("v", "event", "step", "loss", "loss_min", "loss_max", "grad_norm")} == {
        "v": 1, "event": "step", "step": 1, "loss": "NaN", "loss_min": "-Infinity",
        "loss_max": "Infinity", "grad_norm": 1.5}


def test_renderer_feeds_events_and_lines():
    out, err = io.StringIO(), io.StringIO()
    renderer = Renderer(EventFormatter(),
                        [ConsoleSink(out, err, 2, None, show_ranks=False)], [JsonlSink(out)])
    renderer.emit(ev.RunStarted("r", 2, 1, 2, 0, 1, "train.py", [], 3, "127.0.0.1", 29500, 42, 0,
                                at("2026-11-21_19:50:33")))
    renderer.emit(ev.Step(1, 3, 2.0, 1.0, 3.0, 1.0))
    lines = out.getvalue().splitlines()
    assert [json.loads(x)["event"] for x in lines] == ["run_started", "step"]
    banner = err.getvalue().splitlines()
    assert banner[0] == "W1121 19:50:33.000000 42 torch/distributed/run.py:874] "
    assert banner[2].endswith("as needed. ") and len(banner) == 4


def test_failure_report_lines():
    formatter = EventFormatter()
    formatter.lines(ev.RunStarted("r", 2, 1, 2, 0, 1, "train.py", [], 3, "h", 1, 42, 0, 0.0))
    lines = [x.text for x in formatter.lines(ev.RunFailed(
        "train.py", formatter.binary, 42, failure(1, 7, 1), [], at("2026-11-21_21:15:18")))]
    assert lines[0].endswith("torch/distributed/elastic/multiprocessing/api.py:1002] failed "
                             "(exitcode: 1) local_rank: 1 (pid: 7) of binary: /opt/conda/bin/python3")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[2] == '  File "/opt/conda/bin/torchrun", line 8, in <module>'
    assert '  File "/opt/conda/lib/python3.11/site-packages/torch/distributed/run.py", line 1028, in main' in lines
    assert "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: " in lines
    assert lines[-1] == "=" * 60


def test_rendezvous_timeout_names_the_missing_ranks():
    formatter = EventFormatter()
    formatter.lines(ev.RunStarted("r", 4, 2, 2, 0, 1, "train.py", [], 3, "h", 1, 42, 0, 0.0))
    (line,) = formatter.lines(ev.RendezvousTimeout(30.0, [0, 1], 4, 0.0))
    assert line.stream == "stderr" and line.rank is None
    assert line.text.endswith("rendezvous timed out after 30s: 2 of 4 ranks joined (missing: 2, 3)")


def test_rendezvous_timeout_names_a_node_whose_agent_never_joined():
    """Every rank can be in while another node's agent is not: the line said
    `4 of 4 ranks joined (missing: )`."""
    formatter = EventFormatter()
    formatter.lines(ev.RunStarted("r", 4, 2, 2, 0, 1, "train.py", [], 3, "h", 1, 42, 0, 0.0))
    (line,) = formatter.lines(ev.RendezvousTimeout(30.0, [0, 1, 2, 3], 4, 0.0, [1]))
    assert line.text.endswith("4 of 4 ranks joined (missing: node 1's agent)")


def test_under_srun_s_task_a_rank_the_missing_agent_is_a_task():
    """srun's one task a rank (cli/slurm.py): the coordinator's agents are
    srun's tasks, numbered by SLURM_PROCID, as srun itself names them."""
    from fakerun.world.settings import Settings

    formatter = EventFormatter(settings=Settings().without_torchrun())
    formatter.lines(ev.RunStarted("r", 4, 2, 2, 0, 1, "train.py", [], 3, "h", 1, 42, 0, 0.0))
    (line,) = formatter.lines(ev.RendezvousTimeout(30.0, [0, 1, 2, 3], 4, 0.0, [3]))
    assert line.text.endswith("4 of 4 ranks joined (missing: task 3)")


def test_forced_kill_names_the_signal_that_was_ignored():
    formatter = EventFormatter()
    formatter.lines(ev.RunStarted("r", 2, 1, 2, 0, 1, "train.py", [], 3, "h", 1, 42, 0, 0.0))
    (line,) = formatter.lines(ev.ForcedKill(1, 77, 0.0, 2))
    assert line.text.endswith("multiprocessing/api.py:1047] Unable to shutdown process 77 via 2, "
                              "forcefully exiting via 9")


def test_metrics_file_spells_out_non_finite_numbers(tmp_path):
    from fakerun.render.metrics import MetricsFile

    sink = MetricsFile(tmp_path / "m.jsonl")
    sink.event(ev.Step(3, 10, float("nan"), 1.0, 2.0, float("inf"), ppl=float("nan")))
    sink.event(ev.RankOutput(0, "stdout", ["not a metric"]))
    sink.close()
    (line,) = (tmp_path / "m.jsonl").read_text().splitlines()
    row = json.loads(line)
    assert (row["loss"], row["grad_norm"], row["ppl"]) == ("NaN", "Infinity", "NaN")
    assert "NaN," in line or '"NaN"' in line
