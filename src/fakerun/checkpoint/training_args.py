"""training_args.bin: `torch.save(self.args, os.path.join(output_dir,
TRAINING_ARGS_NAME))` (trainer.py `_save` at v4.42.4, v4.44.2, v4.46.3 and
v5.0.0), the pickled TrainingArguments of the pinned transformers.

Its fields, in the order the object's __dict__ holds them, and their values
after __post_init__ on a line that gives only --output_dir, are data
(data/training-args-<version>.json, captured from the real library by
tests/fixtures/training_args/capture.py). The launch line's own values
replace them, each converted as HfArgumentParser converts its type, and the
__post_init__ rules that follow from them are applied: run_name is
output_dir, logging_dir is `<output_dir>/runs/<%b%d_%H-%M-%S>_<hostname>`
(default_logdir, at the script's start), logging/eval/save steps above 1
become ints, evaluation_strategy (4.x) sets eval_strategy, eval_steps falls
back to logging_steps under the "steps" strategy, do_eval follows
eval_strategy, report_to "none" or "all" is [] (no integration installed),
metric_for_best_model "loss" and greater_is_better under
load_best_model_at_end, torch_compile and its "inductor" backend.

--fsdp's options become FSDPOption members, as __post_init__ makes them.
What __post_init__ would make of the other fields a line may give (lists,
dicts, --deepspeed's HfTrainerDeepSpeedConfig, a --fsdp_config file's
values) is not written here: for such a line there is no file (`fields` is
None).

The process that saves is rank 0 of a torchrun job on GPUs: LOCAL_RANK is
set, so accelerate's PartialState initialises NCCL (MULTI_GPU, device cuda:0,
the very object _setup_devices returns and caches; _n_gpu 1), state.py at
accelerate 1.1.1.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fakerun.checkpoint.torchpickle import Global, Instance, Made, Member, Reduce
from fakerun.world.tensors import TRAINING_ARGS

NAME = TRAINING_ARGS
DEVICE = Global("torch", "device")
DISTRIBUTED_TYPE = Global("accelerate.utils.dataclasses", "DistributedType")
INTERVAL = Global("transformers.trainer_utils", "IntervalStrategy")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")  # %b, C locale
TRUE_WORDS = ("yes", "true", "t", "y", "1")  # hf_argparser.py string_to_bool
FALSE_WORDS = ("no", "false", "f", "n", "0")
WHOLE_STEPS = ("logging_steps", "eval_steps", "save_steps")  # __post_init__: int(x) when x > 1
SIMPLE = ("int", "float", "str", "bool")
# Fields whose given value __post_init__ turns into others not followed here
# (a DeepSpeed config object, the device choice, deprecated aliases, FSDP's).
GUESSED = ("deepspeed", "no_cuda", "use_cpu", "use_mps_device", "fp16_backend", "torchdynamo",
           "tpu_metrics_debug", "push_to_hub_token", "push_to_hub_model_id", "push_to_hub_organization",
           "adafactor", "fsdp_min_num_params", "fsdp_transformer_layer_cls_to_wrap", "xla_fsdp_config")
REDUCE_ON_PLATEAU = "reduce_lr_on_plateau"
# --fsdp: __post_init__'s `[FSDPOption(s) for s in self.fsdp.split()]`, FSDPOption's
# values (trainer_utils.py at v4.42.4 to v5.0.0), refusing offload alone and
# full_shard with shard_grad_op (a ValueError: the script never runs).
FSDP_OPTION = Global("transformers.trainer_utils", "FSDPOption")
FSDP_OPTIONS = ("full_shard", "shard_grad_op", "no_shard", "hybrid_shard", "hybrid_shard_zero2", "offload",
                "auto_wrap")
CONVERTED = ("report_to", "fsdp")  # fields a list in the object, whose line text converts here
SHARDING = FSDP_OPTIONS[:5]  # accelerate's FSDP_SHARDING_STRATEGY, lower-cased (utils/constants.py at 1.12.0)
# 5.0's _process_fsdp_args (training_args.py at v5.0.0) for the default fsdp_config (no
# --fsdp_config): FSDP 1, what it reads with its defaults, after the options' own keys
# (reshard_after_forward: `str("FULL_SHARD").lower()`, a string of its own).
FSDP_PLUGIN_DEFAULTS = {"fsdp_version": 1, "forward_prefetch": False, "backward_prefetch": "NO_PREFETCH",
                        "reshard_after_forward": Made("full_shard"), "use_orig_params": True,
                        "cpu_ram_efficient_loading": False, "sync_module_states": True}


@dataclass(frozen=True)
class Process:
    """The saving process's devices as accelerate's PartialState sets them."""

    backend: str | None
    device: tuple[str | int, ...]  # torch.device's __reduce__ args
    distributed_type: str
    num_processes: int
    n_gpu: int
    shared_device: bool  # distributed: _setup_devices returns distributed_state.device itself


def gpu_rank0(world: int) -> Process:
    return Process("nccl", ("cuda", 0), "MULTI_GPU", world, 1, True)


@functools.cache
def template(version: str) -> dict[str, Any]:
    text = resources.files("fakerun").joinpath("data", f"training-args-{version}.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def logdir_stamp(when: float, host: str) -> str:
    """default_logdir's `%b%d_%H-%M-%S_<hostname>`, the node's clock in UTC."""
    t = datetime.fromtimestamp(when, UTC)
    return f"{MONTHS[t.month - 1]}{t:%d_%H-%M-%S}_{host}"


def training_args(version: str, script_args: tuple[str, ...], output_dir: str, logdir: str,
                  process: Process, run: dict[str, str] | None = None) -> Instance | None:
    """The TrainingArguments the launch line makes, or None if it gives a field
    whose value here would be a guess. `run`: the values (as the line would
    spell them) the simulated Trainer ran with, which win over the line's."""
    values = fields(version, script_args, output_dir, logdir, run or {})
    if values is None:
        return None
    _place(values, process)
    return Instance(Global("transformers.training_args", "TrainingArguments"), values)


def ran_with(hyper: Any, script_args: tuple[str, ...]) -> dict[str, str]:
    """The arguments the simulated Trainer ran with (the line's where it
    gives them; fakerun's own options win): its LR, batch, accumulation,
    and max_steps unless whole epochs, not a step count, end the run."""
    h = hyper
    run = {"learning_rate": repr(h.max_lr), "per_device_train_batch_size": str(h.micro_batch),
           "gradient_accumulation_steps": str(h.grad_accum)}
    steps = given(script_args, {"max_steps": "str"}).get("max_steps")  # -1: unset, epochs end the run
    if (steps is not None and steps != "-1") or h.total_steps != h.epochs * h.steps_per_epoch:
        run["max_steps"] = str(h.total_steps)
    return run


def report_to(script_args: tuple[str, ...]) -> list[str]:
    """The Trainer's --report_to values (a list field: nargs '+')."""
    found: list[str] = []
    taking = False
    for arg in script_args:
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            taking = name == "report_to"
            if taking:
                found = [value] if eq else []
                taking = not eq
        elif taking:
            found.append(arg)
    return found


def with_tensorboard(version: str, script_args: tuple[str, ...], logdir: str) -> dict[str, str]:
    """What the arguments become where tensorboard is installed (a run that
    writes event files), as line text for `fields`' `run`: 4.x's default
    report_to (None, then "all") and "all" in any version take it; fakerun's
    --tensorboard DIR (`logdir`, "" none) is 4.x's logging_dir (5.0 reads
    $TENSORBOARD_LOGGING_DIR instead)."""
    v5 = int(version.split(".")[0]) >= 5
    asked = report_to(script_args)
    run = {"report_to": "tensorboard"} if asked == ["all"] or (not asked and not v5) else {}
    return {**run, "logging_dir": logdir} if logdir and not v5 else run


def to_json(version: str, script_args: tuple[str, ...], output_dir: str, logdir: str,
            run: dict[str, str] | None = None) -> str | None:
    """`args.to_json_string()`, the text the Trainer's TensorBoardCallback
    logs as `args` (integration_utils.py at v4.42.4 to v5.0.0):
    `json.dumps(self.to_dict(), indent=2)`, to_dict being the init fields in
    their order, enums by their values, `*_token` fields masked as
    `<NAME>`, the AcceleratorConfig as its dict (training_args.py). None
    for a line whose fields this module cannot say (as training_args.bin)."""
    values = fields(version, script_args, output_dir, logdir, run or {})
    if values is None:
        return None
    kinds = {name: kind for name, kind, _ in template(version)["fields"]}
    body = {name: _plain(name, value) for name, value in values.items()
            if kinds.get(name) != "state" and name != "_n_gpu"}  # _n_gpu is field(init=False)
    return json.dumps(body, indent=2)


def _plain(name: str, value: Any) -> Any:
    if name.endswith("_token"):
        return f"<{name.upper()}>"
    if isinstance(value, Member):
        return value.value
    if isinstance(value, list):
        return [_plain("", v) for v in value]
    if isinstance(value, Instance):  # AcceleratorConfig.to_dict(): a copy of its __dict__
        return {k: _plain("", v) for k, v in value.state.items()}
    if isinstance(value, dict):
        return {k: _plain("", v) for k, v in value.items()}
    return str(value) if isinstance(value, Made) else value


def written(version: str, script_args: tuple[str, ...], trainer: object | None) -> bool:
    """Whether `_save` writes training_args.bin here: for a launch line read
    as the Trainer's (`trainer`, its TrainerArgs; another framework's run in
    this layout has no TrainingArguments) whose arguments this module can
    say. The run's own values (`training_args`' `run`) are well formed and
    change no answer. The Export event's list and the writer both ask here."""
    return trainer is not None and fields(version, script_args, "", "", {}) is not None


def fields(version: str, script_args: tuple[str, ...], output_dir: str, logdir: str,
           run: dict[str, str]) -> dict[str, Any] | None:
    data = template(version)
    kinds = {name: kind for name, kind, _ in data["fields"]}
    values = {name: decode(value) for name, _, value in data["fields"]}
    default_out, line = values["output_dir"], {**given(script_args, kinds), **run}
    for name, text in line.items():
        structured = isinstance(values[name], (list, dict, Instance)) and name not in CONVERTED
        if name in GUESSED or structured or (value := convert(kinds[name], text, name)) is None:
            return None
        values[name] = value
    if values.get("run_name") == default_out and "run_name" not in line:
        values["run_name"] = output_dir  # 4.x's __post_init__: run_name is output_dir (5.x leaves None)
    if isinstance(values.get("logging_dir"), str) and "logging_dir" not in line:  # 5.x: None
        values["logging_dir"] = f"{output_dir.rstrip('/')}/runs/{logdir}"
    values["output_dir"] = output_dir
    _post_init(values, v5=int(version.split(".")[0]) >= 5)
    return values


def given(script_args: tuple[str, ...], kinds: dict[str, str]) -> dict[str, str | None]:
    """The fields the line gives: `--name value`, `--name=value`, a bare
    boolean (None); names that are not TrainingArguments' are the script's."""
    found: dict[str, str | None] = {}
    for i, arg in enumerate(script_args):
        name, eq, text = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or name not in kinds or kinds[name] == "state":
            continue
        if eq:
            found[name] = text
        elif i + 1 < len(script_args) and not script_args[i + 1].startswith("--"):
            found[name] = script_args[i + 1]
        else:
            found[name] = None
    return found


def convert(kind: str, text: str | None, name: str) -> Any:
    """HfArgumentParser's conversion of the field's type; None where the value
    would be a guess (a list, a dict, an object)."""
    if name == "report_to":
        return [] if text in ("none", "all") else [text] if text else None
    if name == "fsdp":
        return fsdp_options(text)
    if kind == "bool":  # bare: True; else string_to_bool's words, any other refused
        if text is None:
            return True
        return text.lower() in TRUE_WORDS if text.lower() in TRUE_WORDS + FALSE_WORDS else None
    if text is None:
        return None
    if kind.startswith("enum "):
        module, cls = kind.split()[1:]
        return Member(Global(module, cls), text)
    if kind in SIMPLE:
        try:
            return {"int": int, "float": float, "str": str}[kind](text)
        except ValueError:  # the script's parser refuses it: no run, no file to guess
            return None
    return None


def fsdp_options(text: str | None) -> list[Member] | None:
    """--fsdp's words as __post_init__ makes them FSDPOption members (its
    fsdp_config keeps the defaults a line without --fsdp_config has, and the
    variables it sets for accelerate are not the object's); None for a line
    it refuses."""
    words = (text or "").split()
    if text is None or any(w not in FSDP_OPTIONS for w in words) or words == ["offload"] \
            or {"full_shard", "shard_grad_op"} <= set(words):
        return None
    return [Member(FSDP_OPTION, w) for w in words]


def decode(value: Any) -> Any:
    """The template's tagged JSON as the objects torchsave pickles."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "enum" in value:
        return Member(Global(*value["enum"].split()), value["value"])
    if "device" in value:
        return Reduce(DEVICE, tuple(value["device"]))
    if "object" in value:
        return Instance(Global(*value["object"].split()), decode(value["state"]))
    return {k: decode(v) for k, v in value["dict"]}


def _post_init(values: dict[str, Any], v5: bool) -> None:
    """TrainingArguments.__post_init__'s rules for the values a line gives,
    in its order (training_args.py at v4.46.3 and v5.0.0)."""
    deprecated = values.get("evaluation_strategy")  # 4.x's spelling wins, and stays the choice's string
    if isinstance(deprecated, Member):
        values["eval_strategy"], values["evaluation_strategy"] = deprecated, deprecated.value
    if values["eval_strategy"] != Member(INTERVAL, "no"):
        values["do_eval"] = True
    if _steps(values["eval_strategy"]) and not values.get("eval_steps") and values["logging_steps"] > 0:
        values["eval_steps"] = values["logging_steps"]
    for name in WHOLE_STEPS:  # under the "steps" strategy only
        strategy = values[name.replace("_steps", "_strategy")]
        if _steps(strategy) and values[name] > 1:
            values[name] = int(values[name])
    plateau = values["lr_scheduler_type"] == Member(values["lr_scheduler_type"].cls, REDUCE_ON_PLATEAU)
    if (values["load_best_model_at_end"] or plateau) and values["metric_for_best_model"] is None:
        values["metric_for_best_model"] = "loss"
    if values["greater_is_better"] is None and values["metric_for_best_model"] is not None:
        values["greater_is_better"] = not values["metric_for_best_model"].endswith("loss")
    if values["torch_compile_mode"] is not None or values["torch_compile_backend"] is not None:
        values["torch_compile"] = True
    if values["torch_compile"] and values["torch_compile_backend"] is None:
        values["torch_compile_backend"] = "inductor"
    if v5:
        _post_init_5(values)


def _post_init_5(values: dict[str, Any]) -> None:
    """5.0's own: mixed_precision (no ACCELERATE_MIXED_PRECISION under
    torchrun), warmup_ratio into warmup_steps, the tokens-seen flag's words,
    --fsdp's plugin arguments."""
    values["mixed_precision"] = "fp16" if values["fp16"] else "bf16" if values["bf16"] else "no"
    if values["warmup_ratio"] is not None:
        values["warmup_steps"] = values["warmup_ratio"]
    if isinstance(values["include_num_input_tokens_seen"], bool):
        values["include_num_input_tokens_seen"] = "all" if values["include_num_input_tokens_seen"] else "no"
    values["fsdp_plugin_args"] = fsdp_plugin_args(values["fsdp"])


def fsdp_plugin_args(options: list[Member]) -> dict[str, Any] | None:
    """5.0's fsdp_plugin_args of --fsdp's options: a sharding option is the
    strategy (the last one given wins its key), offload sets cpu_offload,
    auto_wrap the transformer-based policy (no min_num_params given); None
    without --fsdp."""
    if not options:
        return None
    args: dict[str, Any] = {}
    for option in options:
        if option.value in SHARDING:
            args["sharding_strategy"] = option
        elif option.value == "offload":
            args["cpu_offload"] = True
        elif option.value == "auto_wrap":
            args["auto_wrap_policy"] = "TRANSFORMER_BASED_WRAP"  # FSDP_AUTO_WRAP_POLICY[0]
    return {**args, **FSDP_PLUGIN_DEFAULTS}


def _steps(strategy: Member) -> bool:
    return strategy.value == "steps"


def _place(values: dict[str, Any], process: Process) -> None:
    """The saving process's devices into the PartialState and the cache."""
    state = values["distributed_state"]
    device = Reduce(DEVICE, process.device)
    state.state.update(backend=process.backend, device=device,
                       distributed_type=Member(DISTRIBUTED_TYPE, process.distributed_type),
                       num_processes=process.num_processes)
    values["_n_gpu"] = process.n_gpu
    # The device _setup_devices returned, cached: transformers' own cached_property
    # in 4.x (`__cached__setup_devices`), functools' in 5.x (`_setup_devices`).
    cache = next(k for k in ("__cached__setup_devices", "_setup_devices") if k in values)
    values[cache] = device if process.shared_device else Reduce(DEVICE, process.device)
