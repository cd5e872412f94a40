"""The DeepSpeed engine a DeepSpeed script builds: the config it passes to
deepspeed.initialize, and the names the engine gives each rank's checkpoint
files. The view that logs the saves (render/styles/deepspeed_checkpoint.py)
and the writer of the files (checkpoint/deepspeed.py) both read them here,
so that every path a log line names is a file on disk.

Names: deepspeedai/DeepSpeed deepspeed/runtime/engine.py, the same at
v0.14.4, v0.15.4, v0.16.4 and v0.18.2: `_get_ckpt_name` (mp_rank_XX, or
under ZeRO-3 zero_pp_rank_<dp>_mp_rank_XX, `_model_states.pt`),
`_get_zero_ckpt_name` (`bf16_` whenever bf16 is enabled, whatever the
stage, then zero_pp_rank_<dp>_mp_rank_XX_optim_states.pt), and who writes
them: `save_non_zero_checkpoint` (data-parallel rank 0; every rank under
ZeRO-3), `save_zero_checkpoint` (every rank, when ZeRO or bf16 is on)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fakerun.world.loss_scale import HYSTERESIS, MIN_SCALE, SCALE_POWER, SCALE_WINDOW

if TYPE_CHECKING:
    from fakerun.world.jobs import Identity

CLIP = 1.0
BETAS = (0.9, 0.95)
PARAM_GROUPS = 2  # with and without weight decay, as LLM scripts group them


def user_config(ident: Identity, bf16: bool = False) -> dict[str, Any]:
    """The script's DeepSpeed config, in the order it writes it: fp16 with
    the dynamic loss scaler, or (`bf16`, the Trainer's --bf16 under
    --deepspeed) bf16, which has none."""
    h, zero = ident.hyper, ident.parallel.zero
    zero_section: dict[str, Any] = {"stage": zero, "overlap_comm": True, "contiguous_gradients": True,
                                    "reduce_bucket_size": 5e8, "allgather_bucket_size": 5e8}
    if zero >= 3:
        zero_section["stage3_gather_16bit_weights_on_model_save"] = True
    return {"train_batch_size": h.global_batch, "train_micro_batch_size_per_gpu": h.micro_batch,
            "gradient_accumulation_steps": h.grad_accum, "steps_per_print": h.log_every,
            "gradient_clipping": CLIP,
            **({"bf16": {"enabled": True}} if bf16 else {
                "fp16": {"enabled": True, "loss_scale": 0, "loss_scale_window": SCALE_WINDOW,
                         "initial_scale_power": SCALE_POWER, "hysteresis": HYSTERESIS,
                         "min_loss_scale": MIN_SCALE}}),
            "zero_optimization": zero_section, "wall_clock_breakdown": False}


def tag(step: int) -> str:
    """save_checkpoint's default tag."""
    return f"global_step{step}"


def ranks_of(ident: Identity, rank: int) -> tuple[int, int]:
    """(model-parallel rank, data-parallel rank) of a global rank."""
    mp_size = ident.parallel.tp * ident.parallel.pp
    return rank % mp_size, rank // mp_size


def model_states(ident: Identity, rank: int) -> str:
    """The model-states file `rank` writes (in the tag's folder)."""
    mp, dp = ranks_of(ident, rank)
    prefix = f"zero_pp_rank_{dp}_" if ident.parallel.zero >= 3 else ""
    return f"{prefix}mp_rank_{mp:02d}_model_states.pt"


def optim_states(ident: Identity, rank: int, bf16: bool = False) -> str:
    """The ZeRO optimizer-states file `rank` writes."""
    mp, dp = ranks_of(ident, rank)
    return f"{'bf16_' if bf16 else ''}zero_pp_rank_{dp}_mp_rank_{mp:02d}_optim_states.pt"


def writes_model_states(ident: Identity, rank: int) -> bool:
    """save_non_zero_checkpoint: data-parallel rank 0, or every rank under ZeRO-3."""
    return ident.parallel.zero >= 3 or ranks_of(ident, rank)[1] == 0


def writes_optim_states(ident: Identity, bf16: bool = False) -> bool:
    """save_zero_checkpoint: with ZeRO or bf16 on (else the optimizer is in the model states)."""
    return ident.parallel.zero >= 1 or bf16
