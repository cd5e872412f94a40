"""training_args.bin against the real transformers' (tests/fixtures/training_args/,
captured by capture.py there: torch.save of TrainingArguments on CPU, one
process, per pinned version). Nothing here unpickles with transformers'
classes: the restricted Unpickler maps them to stand-ins."""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import zipfile
from pathlib import Path

import pytest

from fakerun.checkpoint import torchpickle, torchsave
from fakerun.checkpoint import training_args as ta

FIXTURES = Path(__file__).parent.parent / "fixtures" / "training_args"
VERSIONS = ("4.42.4", "4.44.2", "4.46.3", "5.0.0")
# The capture's process: CPU, no torchrun (accelerate's DistributedType.NO).
CPU = ta.Process(None, ("cpu",), "NO", 1, 0, False)
LAUNCHES = json.loads((FIXTURES / "launches.json").read_text())
# Every line at every pin, but 4.x's deprecated spelling, which 5.0's parser refuses.
CASES = [(v, name) for v in VERSIONS for name in LAUNCHES if not (name == "deprecated" and v.startswith("5."))]


def real(version: str, launch: str) -> bytes:
    with zipfile.ZipFile(FIXTURES / f"{version}-{launch}.bin") as zf:  # its folder is the file's stem
        return zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))


def string_after(data: bytes, key: str) -> str:
    """The string value the pickle holds after the key `key` (read by opcodes, not unpickled)."""
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data) if "PUT" not in op.name]
    at = ops.index(("BINUNICODE", key))
    return ops[at + 1][1]  # None after NONE


def opcodes(data: bytes) -> list[tuple[str, object]]:
    return [(op.name, arg) for op, arg, _ in pickletools.genops(data)]


class StandIn:
    """What any class the file names is unpickled as: its __dict__ only."""

    def __init__(self, *args: object) -> None:
        self.args = args


class Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        assert module in ("transformers.training_args", "transformers.trainer_utils",
                          "transformers.trainer_pt_utils", "accelerate.state", "accelerate.utils.dataclasses",
                          "torch"), (module, name)
        return type(name, (StandIn,), {"__module__": module})


@pytest.mark.parametrize(("version", "launch"), CASES)
def test_the_pickle_is_the_real_transformers_one_opcode_for_opcode(version, launch):
    """Same launch line, same process, same logging_dir: the same bytes (the
    lines: a schedule and cadences given as floats, epochs with the best
    model and torch.compile, 4.x's evaluation_strategy with a ratio)."""
    data = real(version, launch)
    logdir = (string_after(data, "logging_dir") or "").removeprefix("/tmp/out/runs/")  # 5.x: None
    obj = ta.training_args(version, tuple(LAUNCHES[launch]), "/tmp/out", logdir, CPU)
    assert obj is not None
    ours = torchpickle.dumps(obj)
    assert opcodes(ours) == opcodes(data)
    assert ours == data


@pytest.mark.parametrize("version", VERSIONS)
def test_the_runs_values_read_back(version):
    """A GPU job's rank 0: the launch line's values, the defaults, the devices."""
    line = ("--model_name_or_path", "meta-llama/Llama-3.2-3B", "--output_dir", "out", "--learning_rate", "2e-5",
            "--per_device_train_batch_size", "4", "--eval_strategy", "steps", "--bf16", "--save_steps", "50",
            "--report_to", "none", "--seed", "7")
    obj = ta.training_args(version, line, "out", ta.logdir_stamp(1767225600.0, "gpu-node-01"), ta.gpu_rank0(16))
    blob = torchsave.archive(ta.NAME, obj, "0" * 20, "2.5.1")
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        back = Restricted(io.BytesIO(zf.read("training_args/data.pkl"))).load()
    v = vars(back)
    assert type(back).__name__ == "TrainingArguments"
    if version.startswith("4."):  # __post_init__'s run_name and default_logdir (5.x leaves both None)
        assert (v["run_name"], v["logging_dir"]) == ("out", "out/runs/Jan01_00-00-00_gpu-node-01")
    else:
        assert (v["run_name"], v["logging_dir"], v["mixed_precision"]) == (None, None, "bf16")
    assert v["output_dir"] == "out"
    assert (v["learning_rate"], v["per_device_train_batch_size"], v["bf16"], v["seed"]) == (2e-5, 4, True, 7)
    assert (v["save_steps"], v["eval_steps"], v["logging_steps"], v["do_eval"]) == (50, 500, 500, True)
    assert v["eval_strategy"].args == ("steps",) and v["report_to"] == []
    assert v["max_steps"] == -1 and v["num_train_epochs"] == 3.0 and v["per_device_eval_batch_size"] == 8
    state = vars(v["distributed_state"])
    assert (state["backend"], state["num_processes"], state["distributed_type"].args) == ("nccl", 16, ("MULTI_GPU",))
    assert state["device"].args == ("cuda", 0)
    cached = v["__cached__setup_devices" if version.startswith("4.") else "_setup_devices"]
    assert cached is state["device"] and v["_n_gpu"] == 1
    assert v["local_rank"] == (0 if version.startswith("4.") else -1)  # 5.x no longer sets it
    assert "model_name_or_path" not in v  # the script's ModelArguments, not the Trainer's


@pytest.mark.parametrize("obj", [{"a": [1, 2, "x"], "b": ("x", 3.5, None, True), "c": "x", "d": -5},
                                 {"big": 2**40, "n": 70000, "t": (1, 2, 3, 4), "e": (), "one": [7], "s": {"k": 1}},
                                 list(range(1001)), {str(i): i for i in range(2001)}])
def test_the_hand_written_pickler_agrees_with_pickle_on_plain_data(obj):
    """Protocol 2's opcodes and memo, as pickle.py writes them."""
    assert torchpickle.dumps(obj) == pickle.dumps(obj, protocol=2)


def test_a_line_whose_fields_would_be_guessed_has_no_file():
    """--fsdp's options are said (the fsdp launch above); a --fsdp_config file's values are not."""
    assert ta.training_args("4.46.3", ("--output_dir", "o", "--fsdp", "full_shard auto_wrap", "--fsdp_config",
                                       "fsdp.json"), "o", "x", ta.gpu_rank0(8)) is None
