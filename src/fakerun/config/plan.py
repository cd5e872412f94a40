"""The run a job's options describe: `plan(options)` fills in what is derived
(the checkpoint it resumes, whose seed and model win; its run id; its drawn
identity; the fault's step) and refuses, with one UsageError line, what
cannot run: paths it cannot use, a plan no job could have. The options are
never changed; the plan is a new RunConfig."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from fakerun.config.options import (
    MAX_HOST,
    MAX_RUN_ID,
    MAX_TOKEN,
    MAX_TOKENS_PER_STEP,
    RunConfig,
)
from fakerun.config.paths import check_file_target, check_writable_dir, short
from fakerun.config.strategy_args import check_megatron_world
from fakerun.errors import UsageError
from fakerun.world import hardware, identity, styles
from fakerun.world.catalog import CatalogError, models
from fakerun.world.catalog import find as find_row
from fakerun.world.clock import RUN_SPAN_S, YEAR_S

if TYPE_CHECKING:
    from fakerun.checkpoint import Resume


def plan(options: RunConfig) -> RunConfig:
    _check_paths(options)
    if options.style.name == "megatron":  # its TP x PP must divide the world, before any draw
        check_megatron_world(options.asked.strategy, options.topology.world_size,
                             options.style.versions()[0].megatron)
    config = options
    if config.resume is not None and config.resume_from is None:
        config = _resumed(config, _find_checkpoint(config))
    elif config.resume_from is None and (found := _hpc_checkpoint(config)) is not None:
        config = _resumed(config, found)
    if not config.run_id:
        config = replace(config, run_id=_run_id(config))
    _check_sent_text(config)
    if config.identity is None:
        config = _anchored(_keep_model(_hardware_gpu(replace(config, identity=_draw(config)))))
    config = _with_fault_step(config)
    _check_plan(config)
    _check_metrics_port(config)
    return config


def next_run(config: RunConfig, cycle: int) -> RunConfig:
    """--loop's next run: the same cluster (hosts, GPUs, software, token), a
    fresh job on it (seed + cycle draws the model, data and curve). Every
    node derives the same one, so they rendezvous again."""
    fresh = plan(replace(config, seed=config.seed + cycle, run_id="", identity=None,
                         gpu=config.identity.gpu.name, fault=None, resume=None, resume_from=None))
    return replace(fresh, identity=replace(fresh.identity, hosts=config.identity.hosts,
                                           versions=config.identity.versions))


def _check_paths(c: RunConfig) -> None:
    if c.log_dir is not None:
        check_writable_dir(c.log_dir)
    if c.metrics_file is not None and c.topology.node_rank == 0:  # no other node touches it
        check_file_target(c.metrics_file, "--metrics-file")
    if c.output_dir is not None:
        check_writable_dir(c.output_dir, "--output-dir")
    if c.tensorboard is not None:
        check_writable_dir(c.tensorboard, "--tensorboard")


def _find_checkpoint(c: RunConfig) -> Resume:
    from fakerun.checkpoint import layouts  # only for --resume: the command starts without it
    if c.resume == "latest" and c.output_dir is None:
        raise UsageError("--resume without a path needs --output-dir (where the checkpoints are)")
    path = c.output_dir if c.resume == "latest" else Path(c.resume)
    try:
        return layouts.find(c.style.name, path)
    except OSError as exc:  # a name too long for a stat
        raise UsageError(f"--resume {short(path)}: {exc.strerror}") from None


def _hpc_checkpoint(c: RunConfig) -> Resume | None:
    """A Lightning script under SLURMEnvironment given no ckpt_path resumes
    from its auto-requeue save (checkpoint_connector.py _parse_ckpt_path:
    "hpc", the default root dir's latest hpc_ckpt_N.ckpt), as a requeued job
    rerunning the same command does. Only where fakerun writes them: its
    --output-dir (the script's default_root_dir)."""
    given = styles.lightning_cli_values(c.script_args, "--").get("ckpt_path")  # LightningCLI fit --ckpt_path
    if not c.requeues or c.output_dir is None or given:
        return None
    from fakerun.checkpoint import lightning_hpc  # as _find_checkpoint: only when there may be one
    try:
        return lightning_hpc.find(c.output_dir)
    except OSError as exc:
        raise UsageError(f"{short(c.output_dir)}: {exc.strerror}") from None


def _resumed(c: RunConfig, found: Resume) -> RunConfig:
    """The seed is the command line's, as a real resume reruns the same
    command (the framework's files hold no seed of ours; only an old
    checkpoint's .resume.json did, and it still wins); the checkpoint's model
    is kept by _keep_model and its loss curve by _anchored. An explicit
    --model that differs is refused: a pythia-6.9b checkpoint never carries
    on as Phi-3-mini."""
    model = _catalog_model(found.model)
    if model is not None and c.model is not None and c.model.lower() != model.lower():
        raise UsageError(f"--model {c.model}: the checkpoint {found.path} is of {model} "
                         "(resume without --model, or start a new run)")
    return replace(c, resume_from=found, seed=c.seed if found.seed is None else found.seed)


def _run_id(c: RunConfig) -> str:
    # torchrun: explicit --rdzv-id wins; a static rendezvous (port given) is
    # "none"; otherwise a uuid4. Ours is drawn from the seed so runs repeat.
    if c.rdzv_id:
        return c.rdzv_id
    if c.master_port_given:
        return "none"
    rng = random.Random(f"{c.seed}:run_id")
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _check_sent_text(c: RunConfig) -> None:
    """Strings every rank sends in its hello must fit the wire and a
    directory name (options.MAX_RUN_ID and its neighbours say why)."""
    for what, text, limit in (("--rdzv-id (or $SLURM_JOB_ID)", c.run_id, MAX_RUN_ID),
                              ("the master address (--master-addr, --rdzv-endpoint, $MASTER_ADDR or "
                               "$SLURM_JOB_NODELIST)", c.master_addr, MAX_HOST),
                              ("the token (--token, $FAKERUN_TOKEN)", c.token, MAX_TOKEN)):
        shown = "" if what.startswith("the token") else " " + repr(
            text if len(text) <= 40 else text[:20] + "..." + text[-8:])  # a secret is never shown
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise UsageError(f"{what}{shown}: not valid UTF-8") from None
        if size > limit:
            raise UsageError(f"{what}{shown}: {size} bytes, more than {limit}")
    if "/" in c.run_id or c.run_id in (".", ".."):  # it names a directory under --log-dir
        raise UsageError(f"--rdzv-id (or $SLURM_JOB_ID) {c.run_id!r}: a run id names a directory "
                         "(no '/', not '.' or '..')")


def _draw(c: RunConfig) -> identity.Identity:
    pinned = c.style.versions()[0] if c.style.pinned else None
    asked = replace(c.asked, framework=c.style.name)  # whose script runs: whose memory accounting holds
    return identity.build(c.seed, c.topology.nnodes, c.topology.nproc_per_node, c.max_steps, c.model,
                          c.gpu, c.jokes, pinned, asked)


def _hardware_gpu(c: RunConfig) -> RunConfig:
    """A hardware scenario on a cluster the seed drew without what it needs
    (thermal-throttle on AMD GPUs, link-flap on PCIe boxes), no --gpu asked:
    the seed's cluster of GPUs that can have it. An asked GPU that cannot is
    refused (_with_fault_step)."""
    if c.fault is None or c.gpu is not None or (name := hardware.gpu_for(c.identity, c.fault)) is None:
        return c
    pinned = replace(c, gpu=name)
    return replace(pinned, identity=_draw(pinned))


def _keep_model(c: RunConfig) -> RunConfig:
    """The seed draws the checkpoint's model again unless another setting
    (--gpu, --max-steps, the script's arguments) changed the draw: then it is
    pinned. Only then: pinning changes the seed's other draws."""
    found = c.resume_from
    model = _catalog_model(found.model) if found is not None else None
    if model is None or c.identity.model.name == model:
        return c
    pinned = replace(c, model=model)
    return replace(pinned, identity=_draw(pinned))


def _anchored(c: RunConfig) -> RunConfig:
    """A resumed run's losses scaled to carry on from the checkpoint's last
    logged one: exactly 1 under the seed that wrote it (checkpoint/anchor.py)."""
    found = c.resume_from
    if found is None or not found.history:
        return c
    from fakerun.checkpoint import anchor  # only for --resume, as _find_checkpoint
    return replace(c, resume_from=replace(found, loss_scale=anchor.loss_scale(c.identity, found.history)))


def _with_fault_step(c: RunConfig) -> RunConfig:
    """The fault checked against the world, at half the run when no step was asked."""
    fault, world = c.fault, c.topology.world_size
    if fault is None:
        return c
    if not 0 <= fault.rank < world:
        raise UsageError(f"--fail-rank must be in [0, {world}), got {fault.rank}")
    if fault.kind == "stall" and world == 1:
        raise UsageError("--scenario nccl-timeout needs at least 2 ranks: with one, no peer "
                         "waits in a collective, so no watchdog would ever fire")
    if (why := hardware.unsupported(c.identity, fault)) is not None:
        raise UsageError(why)
    if fault.step is None:
        return replace(c, fault=replace(fault, step=max(1, c.steps // 2)))
    if not 1 <= fault.step <= c.steps:
        raise UsageError(f"--fail-step must be in [1, {c.steps}], got {fault.step}")
    return c


def _check_plan(c: RunConfig) -> None:
    """Figures no job could have are refused here, before any process
    starts; whatever passes, the coordinator accepts (`bounds`). A micro
    batch or sequence no GPU holds was refused by the identity's memory plan."""
    h, ident = c.identity.hyper, c.identity
    if h.tokens_per_step > MAX_TOKENS_PER_STEP:
        raise UsageError(
            f"{h.global_batch:,} sequences of {h.seq_len:,} tokens = {h.tokens_per_step:.3g} tokens per "
            "optimizer step (the script's batch arguments): more than any real job takes (at most "
            f"{MAX_TOKENS_PER_STEP:,}; the largest pretraining batches are 16M-63M)")
    run_s = c.bounds.run_s
    if run_s > RUN_SPAN_S:
        raise UsageError(
            f"{c.steps:,} steps of {ident.model.name} on {ident.world} x {ident.gpu.name} would take "
            f"{run_s / YEAR_S:.3g} years of simulated time, past the calendar's end (at most "
            f"{RUN_SPAN_S / YEAR_S:.0f}): fewer steps, a smaller batch or more GPUs")


def _check_metrics_port(c: RunConfig) -> None:
    """The endpoint is NVIDIA's dcgm-exporter's, one a node."""
    port = c.metrics_listen
    if port is None:
        return
    if c.identity.gpu.vendor != "nvidia":
        raise UsageError(f"--metrics-port serves NVIDIA's dcgm-exporter metrics: {c.identity.gpu.name} "
                         "is not an NVIDIA GPU (choose one with --gpu, e.g. --gpu 'NVIDIA H100 80GB HBM3')")
    if c.task is not None:
        raise UsageError("--metrics-port is not supported under srun's one task per rank yet "
                         "(one exporter a node: run one fakerun a node)")
    if port > 65535:
        raise UsageError(f"--metrics-port {c.metrics_port}: node {c.topology.node_rank} would serve "
                         f"port {port}, past 65535")


def _catalog_model(name: str | None) -> str | None:
    """The catalog's name of model `name`; None if it is none of the
    catalog's (a checkpoint of a model the script's arguments described)."""
    try:
        return find_row(models(), name, "model").name if name else None
    except CatalogError:
        return None
