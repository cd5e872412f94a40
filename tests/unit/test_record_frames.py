"""The training script's main() is decorated with torch elastic's @record:
its tracebacks pass through record's wrapper (errors/__init__.py
`return f(*args, **kwargs)`, at the run's torch's line), the error file's
callstack starts at that frame, and a SIGINT from torchrun is a
KeyboardInterrupt through the script's own frames (captured with the torch
2.13 wheel: a 2-rank job, SIGINT to torchrun's process group)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from fakerun import failures
from fakerun.config.options import RunConfig, Topology
from fakerun.config.plan import plan
from fakerun.rank.faults import ScriptInterrupted, script_text
from fakerun.world import catalog

ROWS = {row.torch: row for row in catalog.versions()}
WRAPPER = {"2.3.1": 347, "2.4.1": 348, "2.5.1": 355, "2.9.1": 357}  # each tag's errors/__init__.py


def config_of(torch: str) -> RunConfig:
    config = plan(RunConfig(Topology(1, 2), seed=5, max_steps=3))
    return replace(config, identity=replace(config.identity, versions=ROWS[torch]))


@pytest.mark.parametrize("torch", sorted(WRAPPER))
@pytest.mark.parametrize("key", ["crash", "oom", "peer_lost", "interrupt", "interrupt_init", "interrupt_validation",
                                 "interrupt_checkpoint", "interrupt_export"])
def test_the_scripts_tracebacks_pass_through_records_wrapper(torch: str, key: str) -> None:
    config = config_of(torch)
    values = {k: "1 GiB" for k in ("device", "total", "free", "in_use", "allocated", "unallocated", "tried",
                                   "peer", "port")}
    lines = script_text(config, key, **values).split("\n")
    assert lines[1].endswith(", in <module>") and lines[2] == "    main()"
    assert lines[3].endswith(f'torch/distributed/elastic/multiprocessing/errors/__init__.py", '
                             f"line {WRAPPER[torch]}, in wrapper")
    assert lines[4:6] == ["    return f(*args, **kwargs)", "           ^^^^^^^^^^^^^^^^^^"]
    assert lines[6].endswith(", in main")


@pytest.mark.parametrize(("where", "frame"), [
    ("init", "in _sync_params_and_buffers"), ("train", "in train_step"), ("validation", "in evaluate"),
    ("checkpoint", "in _save"), ("export", "in _save")])
def test_a_keyboard_interrupt_goes_through_the_phase_the_script_is_in(where: str, frame: str) -> None:
    config = plan(RunConfig(Topology(1, 2), seed=5, max_steps=3))
    lines = script_text(config, ScriptInterrupted(where).key).split("\n")
    assert lines[0] == "Traceback (most recent call last):" and lines[-1] == "KeyboardInterrupt"
    last_frame = [line for line in lines if line.startswith("  File ")][-1]
    assert last_frame.endswith(frame)
    assert not any("fakerun" in line or "{" in line for line in lines)  # no frame of ours, nothing unformatted


def test_the_error_files_callstack_starts_at_the_wrapper(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "error.json"
    monkeypatch.setenv(failures.ERROR_FILE_ENV, str(path))
    config = plan(RunConfig(Topology(1, 2), seed=5, max_steps=3))
    lines = script_text(config, "crash").split("\n")
    failures.write_record(lines, 1700000000.0)
    callstack = json.loads(path.read_text())["message"]["extraInfo"]["py_callstack"].split("\n")
    assert callstack[0] == "Traceback (most recent call last):"
    assert callstack[1] == lines[3] and "in wrapper" in callstack[1]  # no <module> frame above it
    assert callstack[2:-1] == lines[4:] and callstack[-1] == ""


@pytest.mark.parametrize(("style", "step_frame"), [
    ("hf", "in _inner_training_loop"), ("deepspeed", "in _take_model_step"),
    ("megatron", "in train_step"), ("lightning", "in _multi_tensor_adamw"),
])
@pytest.mark.parametrize("where", ["init", "train", "validation", "checkpoint", "export"])
def test_a_frameworks_script_is_interrupted_in_its_own_frames(style: str, step_frame: str, where: str) -> None:
    """The framework's script (run_clm.py's Trainer, a DeepSpeed engine, Megatron's
    pretrain, Lightning's fit) takes the SIGINT in its step's frames, as its crash
    does, without the seeds' train.py frames or @record (none of them decorate main)."""
    from fakerun.world import styles

    config = replace(config_of("2.5.1"), style=styles.parse(style))
    text = script_text(config, ScriptInterrupted(where).key)
    assert text.startswith("Traceback (most recent call last):\n") and text.endswith("\nKeyboardInterrupt")
    assert step_frame in text
    assert "train_step(model, batch, optimizer)" not in text and "in wrapper" not in text.split("\n")[3]
