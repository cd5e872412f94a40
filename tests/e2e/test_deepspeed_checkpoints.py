"""--style deepspeed with --output-dir: engine.save_checkpoint's layout
(deepspeedai/DeepSpeed deepspeed/runtime/engine.py at v0.14.4 and v0.18.2:
`_get_ckpt_name`, `_get_zero_ckpt_name`, `_copy_recovery_script`, the
`latest` file save_checkpoint writes after commit), every file a log line
names on disk and nothing else, and --resume from it carrying on the same
loss curve, the loss scaler's skips with it."""

from __future__ import annotations

import io
import json
import math
import pickle
import pickletools
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fakerun.checkpoint.deepspeed import recovery_script
from fakerun.world import catalog
from fakerun.world.tensors import layout

# Seed 10 at 100 steps: OLMo-2-7B under ZeRO-1, validated and saved at steps 50 and 100.
RUN = ("--seed", "10", "--start-time", "2026-01-30T14:23:15", "--speed", "0", "--nproc", "2",
       "--max-steps", "100", "--style")
SAVES = (50, 100)
# The paths DeepSpeed's lines name (torch_checkpoint_engine.py's Saving/Saved,
# engine.py's "Saving model checkpoint" and "zero checkpoint saved", and
# save_16bit_model's "Saving model weights to <path>, tag: <tag>").
NAMED = re.compile(r"(?:Saving model checkpoint: |\[Torch\] Sav(?:ing|ed) |zero checkpoint saved "
                   r"|Saving model weights to )(\S+?)(?:\.\.\.|\.|,)?(?:$| tag: )")


def ds_run(runner, out: Path, version: str = "deepspeed", *extra: str):
    job = runner.run(*RUN, version, "--output-dir", str(out), *extra)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    return job


def files_under(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


def load_plain(path: Path) -> dict:
    """data.pkl of a torch.save archive, refusing anything but plain data."""
    class Plain(pickle.Unpickler):
        def find_class(self, module, name):
            raise AssertionError(f"{path.name} pickles {module}.{name}")
    with zipfile.ZipFile(path) as zf:
        folder = path.name.removesuffix(".pt")
        assert {f"{folder}/data.pkl", f"{folder}/byteorder", f"{folder}/version"} <= set(zf.namelist())
        return Plain(io.BytesIO(zf.read(f"{folder}/data.pkl"))).load()


@pytest.mark.parametrize("version,tag_of_torch", [("deepspeed", "0.14.4"), ("deepspeed@0.15", "0.15.4"),
                                                 ("deepspeed@0.16", "0.16.4"), ("deepspeed@0.18", "0.18.2")])
def test_every_named_file_exists_and_nothing_else_is_written(runner, tmp_path, version, tag_of_torch):
    out = tmp_path / "out"
    job = ds_run(runner, out, version, "--output", "plain")
    named = {m.group(1) for line in job.stdout.splitlines() if (m := NAMED.search(line))}
    named = {str(Path(p).relative_to(out)) for p in named if p.startswith(str(out))}
    on_disk = files_under(out)
    assert named and named <= on_disk
    # save_16bit_model(output_dir) at the end: pytorch_model.bin, named by every version's lines.
    assert "pytorch_model.bin" in named
    expected = {"latest", "zero_to_fp32.py", "pytorch_model.bin"}
    for step in SAVES:  # ZeRO-1: data-parallel rank 0's model states, every rank's optimizer shard
        expected |= {f"global_step{step}/mp_rank_00_model_states.pt",
                     f"global_step{step}/zero_pp_rank_0_mp_rank_00_optim_states.pt",
                     f"global_step{step}/zero_pp_rank_1_mp_rank_00_optim_states.pt"}
    assert on_disk == expected
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left
    assert (out / "latest").read_bytes() == b"global_step100"  # fd.write(tag): no newline
    script = out / "zero_to_fp32.py"
    assert script.read_bytes() == recovery_script(tag_of_torch)
    assert script.read_text().startswith("#!/usr/bin/env python\n\n# Copyright (c) Microsoft Corporation.")
    assert script.stat().st_mode & stat.S_IXUSR  # _change_recovery_script_permissions
    assert f"Saved model to {out}" in job.stderr  # the script's own line names the save dir
    assert_export_is_torch_save(out, load_plain(out / "global_step100/mp_rank_00_model_states.pt"))


def assert_export_is_torch_save(out: Path, model_states: dict) -> None:
    """pytorch_model.bin is torch.save(module.state_dict()) of the fp16
    model: torch's records (its data/<key> left out), and a pickle that
    rebuilds every tensor of the model from a HalfStorage on rank 0's GPU
    (ZeRO-3: gathered to its CPU). Read with pickletools, never unpickled."""
    torch_2_9 = model_states["ds_version"] == "0.18.2"  # versions.txt: deepspeed 0.18.2 ships with torch 2.9.1
    with zipfile.ZipFile(out / "pytorch_model.bin") as zf:
        assert zf.namelist() == [f"pytorch_model/{n}" for n in (
            "data.pkl", *([".format_version", ".storage_alignment"] if torch_2_9 else []),
            "byteorder", "version", ".data/serialization_id")]
        ops = [(op.name, arg) for op, arg, _ in pickletools.genops(zf.read("pytorch_model/data.pkl"))]
    model = layout(catalog.find(catalog.models(), model_states["args"]["model"], "model"), "F16")
    strings = [arg for name, arg in ops if name == "BINUNICODE"]
    assert {t.name for t in model.tensors} <= set(strings)
    assert ("GLOBAL", "torch HalfStorage") in ops and ("GLOBAL", "torch._utils _rebuild_tensor_v2") in ops
    # One persistent id a tensor; a tied output layer is one more on the embedding's storage
    # (module.state_dict()), or under ZeRO-3 the embedding's very tensor (no id of its own).
    zero3 = model_states["ds_config"]["zero_optimization"]["stage"] >= 3
    ids = len(model.tensors) + (model.tied and not zero3)
    assert [name for name, _ in ops].count("BINPERSID") == ids
    if zero3:  # gathered to the CPU: one constant "cpu", memoized
        assert strings.count("cpu") == 1 and "cuda:0" not in strings
    else:  # _cuda_tag builds "cuda:0" anew for each storage
        assert strings.count("cuda:0") == ids


def test_the_states_are_the_engines(runner, tmp_path):
    out = tmp_path / "out"
    plain = ds_run(runner, out, "deepspeed", "--output", "plain")
    model = load_plain(out / "global_step100/mp_rank_00_model_states.pt")
    assert list(model)[:11] == ["module", "buffer_names", "optimizer", "param_shapes", "frozen_param_shapes",
                                "shared_params", "frozen_param_fragments", "lr_scheduler", "data_sampler",
                                "random_ltd", "skipped_steps"]
    assert model["global_steps"] == model["checkpoint_step"] == 100 and model["ds_version"] == "0.14.4"
    assert model["dp_world_size"] == 2 and model["mp_world_size"] == 1
    assert model["ds_config"]["zero_optimization"]["stage"] == 1 and model["ds_config"]["fp16"]["enabled"]
    # The engine's skipped_steps are the overflows the log shows, and the LR
    # scheduler stepped only on the others.
    overflows = plain.stdout.count("OVERFLOW! Rank 0 Skipping step")
    assert overflows >= 3 and model["skipped_steps"] == overflows
    assert model["lr_scheduler"]["last_epoch"] == 100 - overflows
    last = re.findall(r"step=100, skipped=(\d+), lr=\[([^,]+),", plain.stdout)
    assert last == [(str(overflows), repr(model["lr_scheduler"]["_last_lr"][0]))]
    # param_shapes: the optimizer's groups (decayed weights, then norms), every tensor
    # save_pretrained would write of the model, by name.
    assert all(len(s) == 2 for s in model["param_shapes"][0].values())
    assert all(len(s) == 1 for s in model["param_shapes"][1].values())
    tensors = layout(catalog.find(catalog.models(), model["args"]["model"], "model")).tensors
    assert {**model["param_shapes"][0], **model["param_shapes"][1]} == {t.name: t.shape for t in tensors}
    optim = [load_plain(out / f"global_step100/zero_pp_rank_{r}_mp_rank_00_optim_states.pt") for r in (0, 1)]
    assert all(o["optimizer_state_dict"]["zero_stage"] == 1 for o in optim)
    assert [o["optimizer_state_dict"]["partition_count"] for o in optim] == [[2, 2], [2, 2]]


def test_zero3_every_rank_writes_its_model_states(runner, tmp_path):
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}, "fp16": {"enabled": True}}))
    out = tmp_path / "out"
    job = runner.run(*RUN[:-3], "--max-steps", "12", "--output-dir", str(out), "--output", "plain",
                     "train.py", "--deepspeed_config", str(config))
    assert job.proc.returncode == 0, job.stderr[-2000:]
    # The script's config gathers ZeRO-3's weights on save: save_16bit_model writes the export too.
    assert files_under(out) == {"latest", "zero_to_fp32.py", "pytorch_model.bin"} | {
        f"global_step12/zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt" for r in (0, 1) for kind in ("model", "optim")}
    assert load_plain(out / "global_step12/zero_pp_rank_1_mp_rank_00_optim_states.pt")[
        "optimizer_state_dict"]["zero_stage"] == 3
    assert all(f"Saving model checkpoint: {out}/global_step12/zero_pp_rank_{r}_mp_rank_00_model_states.pt"
               in job.stdout for r in (0, 1))
    assert f"Saving model weights to {out}/pytorch_model.bin, tag: global_step12" in job.stdout
    assert_export_is_torch_save(out, load_plain(out / "global_step12/zero_pp_rank_0_mp_rank_00_model_states.pt"))


def test_resume_reads_latest_and_continues_the_curve(runner, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    whole = ds_run(runner, full, "deepspeed", "--output", "jsonl")
    shutil.copytree(full, part)
    # The directory as it was after the first save: global_step50, `latest` naming it.
    shutil.rmtree(part / "global_step100")
    (part / "latest").write_text("global_step50")
    resumed = runner.run(*RUN, "deepspeed", "--output-dir", str(part), "--resume", "--seed", "3",
                         "--output", "jsonl")
    assert resumed.proc.returncode == 0, resumed.stderr[-2000:]
    assert [s["step"] for s in resumed.of("step")] == list(range(51, 101))
    expected = {s["step"]: s["loss"] for s in whole.of("step")}
    assert all(s["loss"] == expected[s["step"]] for s in resumed.of("step"))
    # The resumed engine's files say what the uninterrupted one's do (its
    # loss scaler and skipped steps restored, not found again from 65536).
    again = load_plain(part / "global_step100/mp_rank_00_model_states.pt")
    first = load_plain(full / "global_step100/mp_rank_00_model_states.pt")
    assert again["skipped_steps"] == first["skipped_steps"] and again["lr_scheduler"] == first["lr_scheduler"]
    assert (part / "latest").read_text() == "global_step100"


# engine.load_checkpoint's lines: TorchCheckpointEngine.load's ("[Torch] Loading/Loaded checkpoint
# from <path>" up to 0.16, "[Torch] Begin/End Load checkpoint from <path>..." from 0.18) and the
# ZeRO part's (_get_all_zero_checkpoint_state_dicts, _load_zero_checkpoint).
LOAD = re.compile(r"^\[default(\d)\]:\[([\d :,-]+)\] \[INFO\] \[[^]]+\] (?:\[Rank 0\] )?"
                  r"(?:\[Torch\] (?:Loading|Loaded|Begin Load|End Load) checkpoint from (\S+?)\.{1,3}"
                  r"|(successfully read 2 ZeRO state_dicts|loading 2 zero partition checkpoints) for rank (\d))$")


def load_lines(stdout: str) -> list[tuple[int, str, str]]:
    """(rank, time, the path it names or the ZeRO line's words) of each load line, in order."""
    found = [m for line in stdout.splitlines() if (m := LOAD.match(line))]
    assert all(m.group(5) is None or m.group(5) == m.group(1) for m in found)  # a rank speaks of itself
    return [(int(m.group(1)), m.group(2), m.group(3) or m.group(4)) for m in found]


def script_time(stderr: str, said: str) -> str:
    """The loguru time of the script's line, in DeepSpeed's logging format."""
    (when,) = re.findall(rf"^\[default0\]:(\S+ \S+) \| INFO .* - \[Rank 0\] {said}", stderr, re.M)
    return when.replace(".", ",")


@pytest.mark.parametrize("version", ["deepspeed", "deepspeed@0.18"])
def test_resume_loads_the_checkpoint_after_initialize_naming_its_files(runner, tmp_path, version):
    """The script's model_engine.load_checkpoint(load_dir) between "DeepSpeed
    engine created" and its first step: every rank reads the model states
    and its own optimizer shard of the tag `latest` names (0.18: rank 0
    alone announces its reads), each of them a file of that checkpoint."""
    out = tmp_path / "out"
    fresh = ds_run(runner, out, version, "--output", "plain")
    assert load_lines(fresh.stdout) == []  # a fresh run loads nothing
    shutil.rmtree(out / "global_step100")
    (out / "latest").write_text("global_step50")
    job = runner.run(*RUN, version, "--output-dir", str(out), "--resume", "--output", "plain")
    assert job.proc.returncode == 0, job.stderr[-2000:]
    lines = load_lines(job.stdout)
    tag = out / "global_step50"
    model, shard = str(tag / "mp_rank_00_model_states.pt"), str(tag / "zero_pp_rank_{}_mp_rank_00_optim_states.pt")
    for rank in (0, 1):
        announced = version == "deepspeed" or rank == 0  # 0.18: log_dist(..., ranks=[0])
        reads = [model, model, shard.format(rank), shard.format(rank)] if announced else []
        assert [what for r, _, what in lines if r == rank] == reads + [
            "successfully read 2 ZeRO state_dicts", "loading 2 zero partition checkpoints"]
    assert {Path(what) for _, _, what in lines if what.startswith("/")} <= {p for p in tag.iterdir()}
    times = [when for _, when, _ in lines]
    assert times == sorted(times)
    assert script_time(job.stderr, "DeepSpeed engine created") <= times[0]
    assert times[-1] <= script_time(job.stderr, "Total number of model parameters")
    first = re.search(r"^\[default0\]:\[([^]]+)\] .*step=60, skipped", job.stdout, re.M).group(1)
    assert script_time(job.stderr, "Total number of model parameters") < first


def test_a_restarted_worker_group_loads_the_checkpoint_this_run_saved(runner, tmp_path):
    """--max-restarts: the new processes' script loads the tag the run saved
    last (global_step50, before the crash at 70), every rank its files."""
    out = tmp_path / "out"
    job = runner.run(*RUN, "deepspeed", "--output-dir", str(out), "--output", "plain", "--scenario", "rank-crash",
                     "--fail-rank", "1", "--fail-step", "70", "--max-restarts", "1")
    assert job.proc.returncode == 0, job.stderr[-2000:]
    lines = load_lines(job.stdout)
    named = {what for _, _, what in lines if what.startswith("/")}
    assert named == {str(out / "global_step50" / name) for name in (
        "mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt")}
    assert all((out / "global_step50" / Path(p).name).is_file() for p in named)
    assert len(lines) == 2 * 6  # each rank: two reads, each announced and done, then the ZeRO part's two


def test_resume_is_refused_without_latest_or_states(runner, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    job = runner.run(*RUN, "deepspeed", "--output-dir", str(empty), "--resume", "--output", "plain")
    assert job.proc.returncode == 2 and "no 'latest' file" in job.stderr
    torn = tmp_path / "torn"
    (torn / "global_step7").mkdir(parents=True)
    (torn / "latest").write_text("global_step7")
    job = runner.run(*RUN, "deepspeed", "--output-dir", str(torn), "--resume", "--output", "plain")
    assert job.proc.returncode == 2 and "not a complete checkpoint" in job.stderr


def test_a_state_file_that_would_run_code_is_refused(runner, tmp_path):
    """A model-states file is read as plain data: one that pickles a call is
    refused with one line, and nothing runs."""
    out = tmp_path / "out"
    (out / "global_step5").mkdir(parents=True)
    (out / "latest").write_text("global_step5")
    marker = tmp_path / "ran"
    evil = pickle.dumps({"global_steps": 5, "x": Boom(str(marker))}, protocol=2)
    with zipfile.ZipFile(out / "global_step5/mp_rank_00_model_states.pt", "w") as zf:
        zf.writestr("mp_rank_00_model_states/data.pkl", evil)
    job = runner.run(*RUN, "deepspeed", "--output-dir", str(out), "--resume", "--output", "plain")
    assert job.proc.returncode == 2 and "not a plain torch.save archive" in job.stderr
    assert not marker.exists()


class Boom:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (subprocess.run, ([sys.executable, "-c", f"open({self.path!r}, 'w')"],))


def test_checkpoints_repeat_byte_for_byte(runner, tmp_path):
    trees = []
    for name in ("a", "b"):
        ds_run(runner, tmp_path / name, "deepspeed", "--output", "jsonl")
        trees.append({n: (tmp_path / name / n).read_bytes() for n in sorted(files_under(tmp_path / name))})
    assert trees[0] == trees[1]


def test_the_trainer_under_deepspeed_saves_deepspeeds_checkpoint_in_its_own(runner, tmp_path):
    """transformers' Trainer with --deepspeed: _save_optimizer_and_scheduler
    calls self.model_wrapped.save_checkpoint(output_dir), so checkpoint-N
    holds global_stepN/, latest and zero_to_fp32.py; bf16 (the run's
    precision) names the optimizer files bf16_..."""
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 2}, "bf16": {"enabled": "auto"}}))
    out = tmp_path / "out"
    job = runner.run("--seed", "5", "--speed", "0", "--nproc", "2", "--output", "jsonl", "train.py",
                     "--model_name_or_path", "meta-llama/Llama-3.1-8B", "--per_device_train_batch_size", "4",
                     "--max_steps", "20", "--output_dir", str(out), "--deepspeed", str(config))
    assert job.proc.returncode == 0, job.stderr[-2000:]
    # Ampere and later train in bf16 (catalog.Gpu.bf16), Volta and Turing in fp16.
    bf16 = job.of("run_identity")[0]["identity"]["gpu"]["architecture"] not in catalog.PRE_AMPERE
    prefix = "bf16_" if bf16 else ""
    ckpt = out / "checkpoint-20"
    assert {"latest", "zero_to_fp32.py", "global_step20/mp_rank_00_model_states.pt",
            f"global_step20/{prefix}zero_pp_rank_0_mp_rank_00_optim_states.pt",
            f"global_step20/{prefix}zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= files_under(ckpt)
    assert (ckpt / "latest").read_text() == "global_step20"
    optim = load_plain(ckpt / f"global_step20/{prefix}zero_pp_rank_0_mp_rank_00_optim_states.pt")
    assert optim["optimizer_state_dict"]["zero_stage"] == 2
    assert optim["optimizer_state_dict"]["dynamic_loss_scale"] is not bf16
    assert ("bf16" if bf16 else "fp16") in optim["ds_config"]


def test_sparse_checkpoints_write_the_engines_files_at_their_true_size(runner, tmp_path):
    """--sparse-checkpoints: each .pt holds its tensors (the fp16 module, ZeRO-1's
    fp32 partitions and AdamW's moments and steps), their records holes of
    their true size; --resume reads only the
    pickle. Qwen2.5-0.5B (a tied head) on 2 ranks: 2 bytes a parameter in
    the model states, 12 over the ranks in the optimizer states (each group
    padded to 2 x 2 elements, the last rank's saved master partition without
    the padding)."""
    out = tmp_path / "out"
    line = ("--seed", "5", "--speed", "0", "--nproc", "2", "--model", "Qwen2.5-0.5B", "--style", "deepspeed",
            "--output-dir", str(out))
    assert runner.run(*line, "--max-steps", "4", "--sparse-checkpoints").proc.returncode == 0
    tensors = layout(catalog.find(catalog.models(), "Qwen2.5-0.5B", "model"), "F16").tensors
    groups = [sum(math.prod(t.shape) for t in tensors if (len(t.shape) > 1) == decayed) for decayed in (True, False)]
    pads = [-n % 4 for n in groups]
    parts = [(n + pad) // 2 for n, pad in zip(groups, pads, strict=True)]
    expected = {"global_step4/mp_rank_00_model_states.pt": 2 * sum(groups), "pytorch_model.bin": 2 * sum(groups)}
    for rank in (0, 1):
        lean = [p - (pad if rank == 1 else 0) for p, pad in zip(parts, pads, strict=True)]
        expected[f"global_step4/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"] = 8 * sum(parts) + 4 * sum(lean) + 8
    for name, data_bytes in expected.items():
        path = out / name
        with zipfile.ZipFile(path) as zf:
            records = [i for i in zf.infolist() if "/data/" in i.filename]
            assert sum(i.file_size for i in records) == data_bytes, name
            assert path.stat().st_size > data_bytes
            with zf.open(records[-1]) as member:  # a hole: zeros, its CRC theirs
                assert member.read() == bytes(records[-1].file_size)
    resumed = runner.run(*line, "--max-steps", "6", "--resume", str(out), "--output", "jsonl")
    assert resumed.proc.returncode == 0, resumed.stderr[-2000:]
    assert resumed.of("step")[0]["step"] == 5
    plain = tmp_path / "plain"
    assert runner.run(*line[:-1], str(plain), "--max-steps", "4").proc.returncode == 0
    for name in expected:  # without the flag: the same records less the storages', their containers empty
        with zipfile.ZipFile(out / name) as sparse, zipfile.ZipFile(plain / name) as compact:
            assert compact.namelist() == [n for n in sparse.namelist() if "/data/" not in n]
            assert (plain / name).stat().st_size < 1 << 20
