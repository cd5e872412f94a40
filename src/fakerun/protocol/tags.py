"""What a collective is for, as the rank names it and the coordinator reads
it: the `tag` of a Contribute. The timeline turns tagged collectives into
the run's events, so both sides take the names from here.

Also the operations a collective may be (torch.distributed's names)."""

from __future__ import annotations

OPS = ("all_reduce", "broadcast", "barrier")
REDUCE_OPS = ("sum", "avg", "max", "min")

INIT_PROCESS_GROUP = "init_process_group"
BROADCAST_PARAMETERS = "broadcast_parameters"
LOAD_MODEL = "load_model"
LOAD_TOKENIZER = "load_tokenizer"
LOAD_DATASET = "load_dataset"
INIT_STAGES = (LOAD_MODEL, LOAD_TOKENIZER, LOAD_DATASET)
TRAIN_STEP = "train_step"  # all_reduce of [loss, grad_norm]
VALIDATION = "validation"  # all_reduce of [val_loss]
CHECKPOINT = "checkpoint"
EXPORT = "export"
DESTROY_PROCESS_GROUP = "destroy_process_group"
# all_reduce(max) of [Slurm's SIGUSR1s got]: does every rank save (and leave, but under Lightning's requeue)
REQUEUE_SIGNAL = "requeue_signal"
HPC_CHECKPOINT = "hpc_checkpoint"  # Lightning's auto-requeue save (hpc_ckpt_N.ckpt)
REQUEUED = "requeued"  # all_reduce(sum) of [global zero's `scontrol requeue` exit status; 0 the others']

PHASE = "phase:"  # a barrier opening a phase of the run: PHASE + its name
PHASE_TRAIN = PHASE + "train"
PHASE_VALIDATION = PHASE + "validation"
PHASE_SUMMARY = PHASE + "summary"


def phase(name: str) -> str:
    return PHASE + name
