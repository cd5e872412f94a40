"""TensorBoard event files (issue 22) without a run: which writer a launch
line turns on, the boards' SummaryWriter calls, the files the sink makes,
read back with tensorboard's own loader."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

from fakerun import events as ev  # noqa: E402
from fakerun.checkpoint import training_args as targs  # noqa: E402
from fakerun.errors import UsageError  # noqa: E402
from fakerun.render.styles.lightning import LightningLines  # noqa: E402
from fakerun.render.styles.megatron import MegatronLines  # noqa: E402
from fakerun.tensorboard.choice import Board, choose, output_dir, report_to  # noqa: E402
from fakerun.tensorboard.hf import HfBoard  # noqa: E402
from fakerun.tensorboard.lightning import LightningBoard  # noqa: E402
from fakerun.tensorboard.megatron import MegatronBoard  # noqa: E402
from fakerun.tensorboard.sink import TensorBoardSink  # noqa: E402
from fakerun.tensorboard.writes import Close, Hparams, Open, Scalar, Text, Write  # noqa: E402
from fakerun.world import catalog, identity  # noqa: E402

T0 = 1732219121.0  # 2024-11-21 19:58:41 UTC


def _ident(**versions: str) -> identity.Identity:
    (found,) = [v for v in catalog.versions() if all(getattr(v, k) == x for k, x in versions.items())]
    return identity.build(5, 1, 2, 12, versions=found)


def _started(args: list[str], when: float = T0, tensorboard: str = "", attempt: int = 0) -> ev.RunStarted:
    return ev.RunStarted("r", 2, 1, 2, 0, 5, "train.py", args, 12, "127.0.0.1", 29500, 4000, attempt, when,
                         tensorboard=tensorboard)


def _step(step: int, loss: float = 2.0, overflow: bool = False) -> ev.Step:
    return ev.Step(step, 12, loss, loss, loss, 1.5, lr=1e-4, step_time_s=2.0, time=T0 + 60 * step,
                   overflow=overflow)


# -- which writer ---------------------------------------------------------------
def test_each_framework_is_turned_on_by_its_own_switch_or_by_fakeruns_option():
    assert choose("hf", ("--output_dir", "o"), None, 4) is None
    assert choose("hf", ("--report_to", "wandb", "tensorboard"), None, 4) == Board(
        "hf", 0, "", "--report_to tensorboard")
    assert choose("hf", ("--report_to", "none"), Path("tb"), 4) == Board("hf", 0, "tb", "--tensorboard")
    # training/global_vars.py: the last rank writes
    assert choose("megatron", ("--tensorboard-dir=runs/a",), None, 8) == Board(
        "megatron", 7, "runs/a", "--tensorboard-dir")
    assert choose("megatron", ("--tensorboard-dir", "a"), Path("b"), 8) == Board("megatron", 7, "b", "--tensorboard")
    assert choose("torchrun", (), None, 2) is None and choose("deepspeed", (), Path("d"), 2) == Board(
        "own", 0, "d", "--tensorboard")
    assert choose("lightning", (), None, 2) is None
    assert choose("lightning", (), Path("d"), 2) == Board("lightning", 0, "d", "--tensorboard")


def test_under_lightning_the_directory_is_the_trainers_root():
    """Its default logger saves under default_root_dir, the checkpoints with it."""
    assert output_dir("lightning", None, Path("tb")) == Path("tb")
    assert output_dir("lightning", Path("./tb"), Path("tb")) == Path("tb")
    assert output_dir("hf", Path("out"), Path("tb")) == Path("out")
    with pytest.raises(UsageError, match=r"^--tensorboard tb: under Lightning .* --output-dir says out$"):
        output_dir("lightning", Path("out"), Path("tb"))


def test_report_to_takes_every_value_up_to_the_next_option():
    assert report_to(("--report_to", "wandb", "tensorboard", "--x", "y")) == ["wandb", "tensorboard"]
    assert report_to(("--report_to=all", "tensorboard")) == ["all"]
    assert report_to(("tensorboard",)) == []


# -- the files -------------------------------------------------------------------
class Scripted:
    """A board that answers each event kind with the writes given."""

    def __init__(self, plan: dict[type, list[Write]]) -> None:
        self.plan = plan

    def writes(self, e: ev.Event) -> list[Write]:
        return self.plan.get(type(e), [])


def _events(path: Path) -> list:
    return list(LegacyEventFileLoader(str(path)).Load())


def test_the_sink_names_each_file_as_the_writing_process_and_counts_its_writers(tmp_path):
    board = Board("own", 1, str(tmp_path), "--tensorboard")
    ident = _ident(megatron="0.10.0")
    sink = TensorBoardSink(board, Scripted({
        ev.Phase: [Open(str(tmp_path / "a"), T0 + 0.75), Scalar("x", 0.1, 3, T0 + 1), Close(T0 + 2),
                   Open(str(tmp_path / "a"), T0 + 3), Text("args", "{}", None, T0 + 3),
                   Hparams({"lr": 0.5, "name": "gpt", "none": None}, ("hp_metric",), T0 + 3)]}))
    sink.event(_started([]))
    sink.event(ev.RunIdentity(ident))
    sink.event(ev.RankStarted(1, 1, 0, 4321, {}))
    sink.event(ev.Phase("train", "", 0, T0))
    host = ident.host(1)
    first, second = (tmp_path / "a" / f"events.out.tfevents.{int(T0) + dt}.{host}.4321.{n}" for dt, n in ((0, 0), (3, 1)))
    version, scalar = _events(first)
    assert (version.wall_time, version.file_version, version.source_metadata.writer) == (
        T0 + 0.75, "brain.Event:2", "tensorboard.summary.writer.event_file_writer")
    assert (scalar.step, scalar.wall_time, scalar.summary.value[0].tag) == (3, T0 + 1, "x")
    assert scalar.summary.value[0].simple_value == pytest.approx(0.1)  # a float32
    _, text, *hparams = _events(second)
    assert text.summary.value[0].tag == "args/text_summary" and text.summary.value[0].tensor.string_val == [b"{}"]
    assert text.summary.value[0].metadata.plugin_data.plugin_name == "text"
    assert [h.summary.value[0].tag for h in hparams] == [
        "_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams[1].summary.value[0].metadata.plugin_data.content)
    assert dict(start.session_start_info.hparams) == {"lr": start.session_start_info.hparams["lr"],
                                                     "name": start.session_start_info.hparams["name"]}
    assert start.session_start_info.hparams["lr"].number_value == 0.5
    sink.event(_started([], T0 + 100, attempt=1))  # a restart: a new process, its count from 0 again
    sink.event(ev.RankStarted(1, 1, 0, 4400, {}))
    sink.event(ev.Phase("train", "", 0, T0 + 100))
    assert (tmp_path / "a" / f"events.out.tfevents.{int(T0)}.{host}.4400.0").exists()
    sink.close()


def test_an_unwritable_directory_is_one_line_naming_the_option(tmp_path):
    from fakerun.render.sinks import SinkFailed

    (tmp_path / "file").write_text("")
    sink = TensorBoardSink(Board("own", 0, "", "--tensorboard"),
                           Scripted({ev.Phase: [Open(str(tmp_path / "file" / "tb"), T0)]}))
    sink.event(ev.RunIdentity(_ident(megatron="0.10.0")))
    with pytest.raises(SinkFailed, match=r"^--tensorboard: .*/file/tb/events\.out\.tfevents\..*: Not a directory$"):
        sink.event(ev.Phase("train", "", 0, T0))


# -- the HF Trainer --------------------------------------------------------------
def _hf(version: str, args: list[str], tensorboard: str = "",
        environ_dir: str | None = None) -> tuple[HfBoard, identity.Identity]:
    ident = _ident(transformers=version)
    ident = dataclasses.replace(ident, hyper=dataclasses.replace(ident.hyper, log_every=2))
    board = HfBoard(Board("hf", 0, tensorboard, "--report_to tensorboard"), tuple(args), None, environ_dir)
    board.writes(ev.RunIdentity(ident))
    board.writes(_started(args))
    board.writes(ev.Phase("init", "nccl", 0, T0 + 5))
    return board, ident


def test_the_trainers_logging_dir_is_stamped_at_parsing_in_4x_and_at_train_begin_in_5():
    board, ident = _hf("4.46.3", ["--output_dir", "out", "--report_to", "tensorboard"])
    (opened, args, config) = board.writes(ev.Phase("train", "", 0, T0 + 70))
    assert opened == Open(f"out/runs/Nov21_19-58-46_{ident.hosts[0]}", T0 + 70)
    body = json.loads(args.text)
    assert (args.tag, body["logging_dir"], body["report_to"], body["hub_token"]) == (
        "args", opened.logdir, ["tensorboard"], "<HUB_TOKEN>")
    assert config.tag == "model_config" and json.loads(config.text)["transformers_version"] == "4.46.3"
    given, _ = _hf("4.46.3", ["--output_dir", "out", "--logging_dir", "logs"])
    assert given.writes(ev.Phase("train", "", 0, T0 + 70))[0].logdir == "logs"
    # 5.0: TENSORBOARD_LOGGING_DIR or output_dir/default_logdir() at on_train_begin; --logging_dir ignored
    v5, ident = _hf("5.0.0", ["--output_dir", "out", "--logging_dir", "logs"])
    assert v5.writes(ev.Phase("train", "", 0, T0 + 70))[0].logdir == f"out/runs/Nov21_19-59-51_{ident.hosts[0]}"
    env, _ = _hf("5.0.0", ["--output_dir", "out"], environ_dir="~/tb")
    assert env.writes(ev.Phase("train", "", 0, T0 + 70))[0].logdir == str(Path("~/tb").expanduser())
    old, _ = _hf("4.46.3", ["--output_dir", "out"], environ_dir="~/tb")  # 4.x reads no such variable
    assert old.writes(ev.Phase("train", "", 0, T0 + 70))[0].logdir.startswith("out/runs/")


def test_the_trainer_logs_at_its_steps_and_a_log_after_the_end_opens_a_new_file():
    board, _ = _hf("4.46.3", ["--output_dir", "out"], tensorboard="tb")  # logging every 2 steps
    board.writes(ev.Phase("train", "", 0, T0 + 70))
    assert board.writes(_step(1)) == []
    logged = board.writes(_step(2))
    assert [w.tag for w in logged] == ["train/loss", "train/grad_norm", "train/learning_rate", "train/epoch"]
    assert {w.step for w in logged} == {2}
    done = board.writes(ev.Summary("m", 1, 2, 2.0, 7.4, 2.0, 120.0, 1000, 8.0, "out", T0 + 200))
    assert [w.tag for w in done[:-1]] == ["train/train_runtime", "train/train_samples_per_second",
                                          "train/train_steps_per_second", "train/total_flos", "train/train_loss",
                                          "train/epoch"]
    assert done[-1] == Close(T0 + 200)
    after = board.writes(ev.Validation(2, 1, 2.5, 12.2, 9.0, 64, T0 + 210))
    assert after[0] == Open("tb", T0 + 210) and [w.tag for w in after[1:3]] == ["eval/loss", "eval/runtime"]


def test_the_args_text_is_to_json_string_of_the_init_fields_in_their_order():
    text = targs.to_json("4.46.3", ("--output_dir", "o", "--learning_rate", "3e-4"), "o", "Nov21_x")
    body = json.loads(text)
    fields = [name for name, kind, _ in targs.template("4.46.3")["fields"] if kind != "state" and name != "_n_gpu"]
    assert list(body) == fields and text.startswith('{\n  "output_dir": "o",\n')
    assert (body["learning_rate"], body["eval_strategy"], body["push_to_hub_token"]) == (
        3e-4, "no", "<PUSH_TO_HUB_TOKEN>")
    assert body["accelerator_config"]["even_batches"] is True
    assert targs.to_json("4.46.3", ("--deepspeed", "ds.json"), "o", "x") is None  # no guess, no text


# -- Megatron ----------------------------------------------------------------------
def test_megatron_says_it_sets_tensorboard_on_the_last_rank_after_the_tokenizer():
    for launch in (_started(["--tensorboard-dir", "tb"]), _started([], tensorboard="tb")):
        out = MegatronLines(100, UTC)
        out.lines(ev.RunIdentity(_ident(megatron="0.10.0")))
        out.launched(launch)
        banner = out.banner(T0)
        texts = [line.text for line in banner]
        at = texts.index("> setting tensorboard ...")
        assert texts[at - 1].startswith(" > padded vocab") and texts[at + 1] == "> initializing torch distributed ..."
        assert banner[at].rank == 1 and "  tensorboard_dir ................................. tb" in texts
    plain = MegatronLines(100, UTC)
    plain.lines(ev.RunIdentity(_ident(megatron="0.10.0")))
    plain.launched(_started([]))
    assert "> setting tensorboard ..." not in [line.text for line in plain.banner(T0)]


def _megatron(args: list[str], gpu: str | None = None) -> MegatronBoard:
    (found,) = [v for v in catalog.versions() if v.megatron == "0.10.0"]
    ident = identity.build(5, 1, 2, 12, versions=found, gpu=gpu)
    ident = dataclasses.replace(ident, hyper=dataclasses.replace(ident.hyper, log_every=2))
    board = MegatronBoard(Board("megatron", 1, "tb", "--tensorboard-dir"), tuple(args))
    board.writes(ev.RunIdentity(ident))
    board.writes(_started(args))
    return board


def test_megatron_logs_every_iteration_and_no_grad_norm_where_fp16_skipped_it():
    board = _megatron(["--log-timers-to-tensorboard", "--tensorboard-dir", "tb"], gpu="Tesla V100-SXM2-32GB")
    opened, *args = board.writes(ev.Phase("train", "", 0, T0))
    assert opened == Open("tb", T0) and all(isinstance(a, Text) and a.step == 0 for a in args)
    assert ("fp16", "True") in [(a.tag, a.text) for a in args]
    first = board.writes(_step(1))
    batch = board.ident.hyper.global_batch
    assert [(w.tag, w.step) for w in first] == [
        (t, s) for tag in ("learning-rate", "batch-size", "lm loss", "loss-scale", "grad-norm")
        for t, s in ((tag, 1), (f"{tag} vs samples", batch))]
    skipped = {w.tag: w.value for w in board.writes(_step(2, loss=3.0, overflow=True))}
    assert "grad-norm" not in skipped and skipped["lm loss"] == 3.0  # the iteration's own loss, not the mean
    assert skipped["loss-scale"] == 65536.0  # the hysteresis spent first: the scale kept
    assert skipped["iteration-time"] == 2.0 and skipped["throughput"] > 0
    assert {w.tag for w in board.writes(_step(3, overflow=True))} >= {"loss-scale"}
    assert {w.tag: w.value for w in board.writes(_step(4))}["loss-scale"] == 32768.0


def test_megatrons_flags_gate_the_tags():
    board = _megatron(["--tensorboard-log-interval", "2", "--no-log-loss-scale-to-tensorboard",
                       "--log-validation-ppl-to-tensorboard", "--eval-interval", "2"])
    board.writes(ev.Phase("init", "", 0, T0))
    assert board.writes(_step(1)) == []
    assert "loss-scale" not in {w.tag for w in board.writes(_step(2))}
    evaluated = board.writes(ev.Validation(2, 1, 2.5, 12.2, 9.0, 64, T0 + 200))
    assert [(w.tag, w.value) for w in evaluated if "vs samples" not in w.tag] == [
        ("lm loss validation", 2.5), ("lm loss validation ppl", math.exp(2.5))]


# -- Lightning ---------------------------------------------------------------------
def test_lightnings_tensorboard_logger_logs_its_hparams_then_the_scripts_rows():
    ident = _ident(lightning="2.5.0")
    ident = dataclasses.replace(ident, hyper=dataclasses.replace(ident.hyper, log_every=2))
    board = LightningBoard(Board("lightning", 0, "tb", "--tensorboard"), (), 5)
    board.writes(ev.RunIdentity(ident))
    board.writes(dataclasses.replace(_started([]), logger_version=3))
    opened, metric, params = board.writes(ev.Phase("train", "", 0, T0))
    assert opened == Open("tb/lightning_logs/version_3", T0) and metric == Scalar("hp_metric", -1.0, 0, T0)
    assert params.metrics == ("hp_metric",) and params.params["seed"] == 5
    assert board.writes(_step(1)) == []
    assert board.writes(_step(2, loss=2.1)) == [Scalar("train_loss", 2.0999999046325684, 1, T0 + 120),
                                                Scalar("epoch", 0.0, 1, T0 + 120)]
    assert board.writes(ev.Phase("export", "", 2, T0 + 130)) == [Close(T0 + 130)]
    again = board.writes(ev.Validation(2, 1, 2.5, 12.2, 9.0, 64, T0 + 140))  # a new writer: a new file
    assert again[0] == Open("tb/lightning_logs/version_3", T0 + 140) and again[1].tag == "val_loss"


def test_with_tensorboard_installed_lightning_warns_of_no_csv_logger():
    for tensorboard, warned in (("", True), ("tb", False)):
        out = LightningLines(100, UTC)
        out.lines(ev.RunIdentity(_ident(lightning="2.5.0")))
        out.launched(_started([], tensorboard=tensorboard))
        said = " ".join(line.text for line in out.banner(T0))
        assert ("will use `CSVLogger` as the default logger" in said) == warned


def test_the_first_file_leaves_the_launcher_without_threads_to_fork_across(tmp_path):
    """The record writer's import loads numpy, whose OpenBLAS would start a
    thread: the next --loop run's ranks fork from this process."""
    import os
    import subprocess
    import sys

    code = ("import os, pathlib; from fakerun.tensorboard.records import EventFile; "
            f"EventFile(pathlib.Path({str(tmp_path)!r}), 'x', 1.0, '--tensorboard').close(); "
            "print(len(os.listdir('/proc/self/task')), 'OPENBLAS_NUM_THREADS' in os.environ)")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"} | {"PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                         check=True)
    assert out.stdout.split() == ["1", "False"]


def test_with_tensorboard_installed_the_trainers_arguments_say_so():
    """4.x's report_to None means "all" (the installed integrations); 5.0's
    default is "none"; fakerun's --tensorboard DIR is 4.x's logging_dir."""
    assert targs.with_tensorboard("4.46.3", (), "tb") == {"report_to": "tensorboard", "logging_dir": "tb"}
    assert targs.with_tensorboard("4.46.3", ("--report_to", "none"), "") == {}
    assert targs.with_tensorboard("5.0.0", (), "tb") == {}
    assert targs.with_tensorboard("5.0.0", ("--report_to=all",), "tb") == {"report_to": "tensorboard"}
    body = json.loads(targs.to_json("4.46.3", ("--output_dir", "o"), "o", "x",
                                    targs.with_tensorboard("4.46.3", (), "tb")))
    assert (body["report_to"], body["logging_dir"]) == (["tensorboard"], "tb")


def test_inside_a_slurm_job_the_tensorboard_loggers_version_is_the_job_id(tmp_path, monkeypatch):
    from fakerun.checkpoint.lightning import slurm_version
    from fakerun.cli.main import build_parser, to_config
    from fakerun.launcher.build import logger_version

    assert slurm_version({"SLURM_JOB_ID": "4242"}) == 4242
    assert slurm_version({"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "interactive"}) is None
    assert slurm_version({"SLURM_JOB_ID": "12_3x"}) is None and slurm_version({}) is None
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_JOB_NAME", raising=False)
    (tmp_path / "tb" / "lightning_logs" / "version_0").mkdir(parents=True)

    def version(*flags: str) -> int:
        argv = ["--nproc", "1", "--speed", "0", *flags, "train_lightning.py"]
        return logger_version(to_config(build_parser().parse_args(argv), environ={}))

    assert version("--tensorboard", str(tmp_path / "tb")) == 4242
    assert version("--output-dir", str(tmp_path / "tb")) == 1  # a CSVLogger: the next free one
