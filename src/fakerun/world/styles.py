"""The output dialect of a run: `--style NAME[@VERSION]`.

A style pins the framework's version, and with it the whole software set
(PyTorch, NCCL, CUDA, driver: one row of data/versions.txt), so every line of
the run agrees on what it is running. The framework also holds the training
state its own way (world/memory.py: ZeRO, DDP, Megatron's TP x PP), which the
job's memory plan follows; the rest of the simulation is the same whatever
the style.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fakerun.errors import UsageError
from fakerun.world import catalog

DEFAULT = "torchrun"
# Per style: the versions.txt column naming its framework version, and the
# version a bare name means.
FRAMEWORKS: dict[str, tuple[str, str]] = {
    "torchrun": ("torch", ""), "hf": ("transformers", "4.46"), "megatron": ("megatron", "0.10"),
    "deepspeed": ("deepspeed", "0.14"), "lightning": ("lightning", "2.5"),
}


# What a LightningCLI script's launch line holds: its `fit` subcommand, or
# arguments under its namespaces (src/lightning/pytorch/cli.py); not its
# --optimizer and --lr_scheduler, which other scripts spell alike.
LIGHTNING_CLI = ("--trainer.", "--model.", "--data.", "--ckpt_path", "--seed_everything")


# Lightning's Trainer.__init__ parameters in their order, with their defaults
# (trainer.py at 2.4.0 and 2.5.0; 2.6.5 adds TRAINER_2_6): the --trainer.* a
# LightningCLI line may give, and what its config.yaml lists.
TRAINER: tuple[tuple[str, Any], ...] = (
    ("accelerator", "auto"), ("strategy", "auto"), ("devices", "auto"), ("num_nodes", 1), ("precision", None),
    ("logger", None), ("callbacks", None), ("fast_dev_run", False), ("max_epochs", None),
    ("min_epochs", None), ("max_steps", -1), ("min_steps", None), ("max_time", None),
    ("limit_train_batches", None), ("limit_val_batches", None), ("limit_test_batches", None),
    ("limit_predict_batches", None), ("overfit_batches", 0.0), ("val_check_interval", None),
    ("check_val_every_n_epoch", 1), ("num_sanity_val_steps", None), ("log_every_n_steps", None),
    ("enable_checkpointing", None), ("enable_progress_bar", None), ("enable_model_summary", None),
    ("accumulate_grad_batches", 1), ("gradient_clip_val", None), ("gradient_clip_algorithm", None),
    ("deterministic", None), ("benchmark", None), ("inference_mode", True), ("use_distributed_sampler", True),
    ("profiler", None), ("detect_anomaly", False), ("barebones", False), ("plugins", None),
    ("sync_batchnorm", False), ("reload_dataloaders_every_n_epochs", 0), ("default_root_dir", None))
TRAINER_2_6: tuple[tuple[str, Any], ...] = (("enable_autolog_hparams", True), ("model_registry", None))


# What Trainer(precision=...) takes (fabric/plugins/precision/precision.py at
# 2.4.0-2.6.5: _PRECISION_INPUT_STR, and the aliases it converts with a warning
# for 16 and bf16, fabric/connector.py _convert_precision_to_unified_args).
LIGHTNING_PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed",
                        "bf16-true", "bf16-mixed", "32-true", "64-true")
LIGHTNING_PRECISION_ALIASES = {"64": "64-true", "32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}


# The Lightning script's own Trainer(precision=...) for the GPU's half type:
# bf16 where the part has it, else fp16 with a GradScaler.
LIGHTNING_SCRIPT_PRECISION = {"bf16": "bf16-mixed", "fp16": "16-mixed"}


def lightning_precision(args: list[str] | tuple[str, ...], half: str) -> str:
    """The unified precision a Lightning script trains in: the line's
    --trainer.precision (an alias converted), else the script's for the GPU's
    `half` type."""
    given = lightning_cli_values(args).get("precision")
    return LIGHTNING_PRECISION_ALIASES.get(given, given) if given else LIGHTNING_SCRIPT_PRECISION[half]


def lightning_cli(args: list[str] | tuple[str, ...]) -> bool:
    """The script parses its arguments with LightningCLI."""
    return args[:1] in (["fit"], ("fit",)) or any(a.startswith(LIGHTNING_CLI) for a in args)


def lightning_cli_values(args: list[str] | tuple[str, ...], namespace: str = "--trainer.") -> dict[str, str]:
    """`--trainer.NAME VALUE` (or `=VALUE`) of a LightningCLI line, by NAME, as written."""
    values = {}
    for k, token in enumerate(args):
        key, eq, value = token.partition("=")
        if key.startswith(namespace):
            follows = args[k + 1] if k + 1 < len(args) and not args[k + 1].startswith("--") else ""
            values[key.removeprefix(namespace)] = value if eq else follows
    return values


class StyleError(UsageError):
    """A --style we do not have; the message is one line."""


@dataclass(frozen=True)
class Style:
    name: str = DEFAULT
    version: str = ""  # as asked for: "4.46", "5"; "" = any (torchrun) or the default

    @property
    def pinned(self) -> bool:
        """The style fixes the software set (else the seed draws it)."""
        return bool(self.version or FRAMEWORKS[self.name][1])

    def versions(self) -> tuple[catalog.Versions, ...]:
        """The software sets this style may run with (one, for a pinned framework)."""
        column, default = FRAMEWORKS[self.name]
        wanted = self.version or default
        rows = catalog.versions()
        if not wanted:
            return tuple(r for r in rows if r.drawn == "yes")
        chosen = tuple(r for r in rows if _matches(getattr(r, column), wanted))
        return chosen[:1]

    def __str__(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


def parse(text: str) -> Style:
    name, _, version = text.partition("@")
    if name not in FRAMEWORKS:
        raise StyleError(f"--style must be one of {', '.join(FRAMEWORKS)} (optionally @VERSION), "
                         f"got {text!r}")
    style = Style(name, version)
    if version and not style.versions():
        column = FRAMEWORKS[name][0]
        known = ", ".join(sorted({getattr(r, column) for r in catalog.versions()}))
        raise StyleError(f"--style {text}: no {column} {version} here; known: {known}")
    return style


def _matches(full: str, wanted: str) -> bool:
    """"4.46" names 4.46.3, "5" names 5.0.0: whole dotted components only."""
    return full.split(".")[:len(wanted.split("."))] == wanted.split(".")
