"""`--style lightning`: what a LightningModule script prints under torchrun,
as the pinned lightning version prints it: Lightning-AI/pytorch-lightning 2.5.0
(and 2.4.0, 2.6.x) src/lightning/pytorch/callbacks/progress/tqdm_progress.py
(TQDMProgressBar.BAR_FORMAT, Tqdm.format_num), src/lightning/pytorch/__init__.py
(the package logger's StreamHandler), src/lightning/fabric/utilities/
distributed.py (`Initializing distributed: ...`) and src/lightning/pytorch/
accelerators/cuda.py (`LOCAL_RANK: ...`), with tqdm's format_meter.

The script behind it: a LightningModule whose only child is
`self.model = AutoModelForCausalLM.from_config(...)`, a DataModule, and
`Trainer(devices=nproc, num_nodes=nnodes, strategy="ddp", precision="bf16-mixed" (or
"16-mixed" on a GPU without bf16),
max_steps=N, max_time=<--exit-after-time, when given>, accumulate_grad_batches=grad_accum,
log_every_n_steps=log_every, callbacks=[TQDMProgressBar(refresh_rate=log_every * grad_accum)])`; it logs
`train_loss` and `val_loss` with `prog_bar=True, sync_dist=True`, and keeps
the default (silent) ModelCheckpoint and the default logger: a CSVLogger, as
neither tensorboard nor tensorboardX is installed (the Trainer warns so; with
fakerun's --tensorboard it is installed, the logger a TensorBoardLogger and
the warning gone: logger_connector.py configure_logger). Its
files are checkpoint/lightning.py's. A LightningCLI launch line
(`fit --trainer.max_steps ...`) sets these Trainer arguments instead, and
`--ckpt_path` restores a checkpoint. The model summary
counts the whole model, as under DDP (under FSDP Lightning would count rank 0's
shard: not modelled, the strategy shows nowhere else in the output).

Streams: Lightning's loggers get a bare StreamHandler (stderr) and its
`rank_zero_info` prints on global rank 0 only, but `Initializing distributed`
and `LOCAL_RANK` come from every rank; TQDMProgressBar writes to stdout
(`file=sys.stdout`) on rank 0. A bar refresh is a line of its own here: in a
terminal tqdm redraws it in place, in a file it separates refreshes with `\\r`.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable
from datetime import timedelta, tzinfo
from typing import Any

from fakerun import events as ev
from fakerun import texts
from fakerun.render.lines import STDERR, STDOUT, Line
from fakerun.render.styles.routes import EventRoutes
from fakerun.render.styles.tqdm import format_meter, format_num
from fakerun.world import physics as sim
from fakerun.world import styles
from fakerun.world.identity import ENV_PREFIX

DATA = "style-lightning"
DASHES = "-" * 100  # fabric/utilities/distributed.py's block around the backend lines
PAD_SIZE = 5  # lightning's Tqdm pads numbers in the postfix to 5 characters
SANITY_STEPS = 2  # Trainer(num_sanity_val_steps=2)
UNITS = [" ", "K", "M", "B", "T"]  # model_summary.PARAMETER_NUM_UNITS
# ModelSummary's precision_to_bits (utilities/model_summary/model_summary.py): at
# 2.4.0 and 2.5.0 its keys are the aliases, which trainer.precision never is
# (32 bits whatever the precision); 2.6.5 adds the unified names, and warns for
# a precision it lacks (the mixed ones), still sizing it at 32 bits.
SUMMARY_BITS = {"64": 64, "32": 32, "16": 16, "bf16": 16}
SUMMARY_BITS_2_6 = {**SUMMARY_BITS, "16-true": 16, "bf16-true": 16, "32-true": 32, "64-true": 64}


def postfix_num(n: float | int) -> str:
    """lightning's Tqdm.format_num: tqdm's `.3g`, then floats padded with 0 to 5 characters."""
    text = format_num(n)
    if isinstance(n, int) or "e" in text:
        return text
    if "." not in text and len(text) < PAD_SIZE:
        text += "."  # nan and inf too: float("nan") parses
    return text + "0" * (PAD_SIZE - len(text))


def human_count(number: int) -> str:
    """model_summary.get_human_readable_count: `123  `, `1.2 K`, `117 M`, `1.5 B`."""
    digits = int(math.floor(math.log10(number)) + 1 if number > 0 else 1)
    groups = min(int(math.ceil(digits / 3)), len(UNITS))
    shifted = number * (10 ** (-3 * (groups - 1)))
    if groups == 1 or shifted >= 100:
        return f"{int(shifted):,d} {UNITS[groups - 1]}"
    return f"{shifted:,.1f} {UNITS[groups - 1]}"


def summary_table(params: int, modules: int, columns: list[tuple[str, list[str]]], flops: bool,
                  bits: int = 32) -> list[str]:
    """model_summary._format_summary_table: each column as wide as its widest cell
    or header, cells left-justified, `" | "` between them (so a trailing space
    after `Mode` when `train` is wider), then the footer left-justified in 10."""
    widths = [max(len(header), *(len(c) for c in cells)) for header, cells in columns]
    rule = "-" * (sum(widths) + 3 * (1 + len(columns)))
    rows = [" | ".join(cells[i].ljust(w) for (_, cells), w in zip(columns, widths, strict=True))
            for i in range(len(columns[0][1]))]
    footer = [(human_count(params), "Trainable params"), (human_count(0), "Non-trainable params"),
              (human_count(params), "Total params"),
              (f"{params * bits / 8.0 * 1e-6:,.3f}", "Total estimated model params size (MB)"),
              (str(modules), "Modules in train mode"), ("0", "Modules in eval mode")]
    if flops:
        footer.append((human_count(0), "Total Flops"))  # no example_input_array: nothing was counted
    header = " | ".join(h.ljust(w) for (h, _), w in zip(columns, widths, strict=True))
    return [header, rule, *rows, rule, *(f"{value:<10}{label}" for value, label in footer)]


def module_count(arch: str, layers: int, transformers: str, name: str = "") -> int:
    """The model's modules, from its architecture (or its own row, by name)
    and depth (data/style-lightning.toml [modules]) for the transformers
    release the pinned set ships."""
    tables = texts.load(DATA)["modules"]
    version = _minor(transformers)
    known = sorted(tables, key=_minor)
    table = tables[([k for k in known if _minor(k) <= version] or known[:1])[-1]]
    base, per_layer = table.get(name) or table.get(arch, table["LlamaForCausalLM"])
    return base + per_layer * layers


def _minor(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2])


def flag_value(args: list[str], name: str) -> str | None:
    """The value of `name VALUE` or `name=VALUE` on the script's line."""
    for k, token in enumerate(args):
        key, eq, value = token.partition("=")
        if key == name:
            return (value if eq else (args[k + 1] if k + 1 < len(args) else "")) or None
    return None


def ckpt_path(args: list[str]) -> str | None:
    """LightningCLI's `fit --ckpt_path PATH` (or `--ckpt_path=PATH`)."""
    return flag_value(args, "--ckpt_path")


class LightningLines(EventRoutes):
    def __init__(self, width: int, tz: tzinfo | None) -> None:
        self.width = width
        self.tz = tz
        self.text: dict[str, Any] = texts.load(DATA)["text"]
        self.version_num = 0  # the logger's version, as the launch found it (RunStarted.logger_version)
        self.fits = 0  # the fits this renderer saw start: each made its logger's version directory
        self.checkpoints: dict[int, str] = {}  # step -> where the default ModelCheckpoint saved it
        self.resume: str | None = None  # the checkpoint a restarted script restores
        self.resume_step = 0  # and the step it was saved at
        self.handles_sigterm = False  # fit set Lightning's SIGTERM handlers (auto-requeue)
        self.sigterm = False  # and Slurm's SIGTERM came: the stop is SIGTERMException's, not max_time's
        self._reset()
        self._handlers: dict[type, Callable[[Any], list[Line]]] = {
            ev.Phase: self._phase, ev.Step: self._step, ev.Validation: self._validation,
            ev.Checkpoint: self._checkpoint, ev.Restart: self._restart,
            ev.HpcCheckpoint: self._hpc_checkpoint, ev.Requeued: self._requeued,
            ev.ShutdownRequested: self._sigterm,
        }

    def _reset(self) -> None:
        self.last: ev.Step | None = None  # the latest step: its loss is the train bar's postfix
        self.shown = 0  # the batches the train bar counts: set at its refreshes only (_update_n)
        self.fit_start = 0.0  # on_train_start: where the Timer's elapsed time starts
        self.val_loss: float | None = None
        self.epoch_start = 0.0  # when the train bar was last reset (tqdm's elapsed counts from it)
        self.epoch_end = 0.0  # when the latest epoch's checkpoint was saved: the next one starts then

    @property
    def lightning(self) -> tuple[int, ...]:
        return _minor(self.ident.versions.lightning)

    @property
    def refresh_rate(self) -> int:
        h = self.ident.hyper
        return h.log_every * h.grad_accum

    def lines(self, event: ev.Event) -> list[Line]:
        return self.routed(event) or []

    @property
    def _precision_flag(self) -> str:
        """Trainer(precision=...): the line's --trainer.precision, else the
        script's for the GPU's half type; as trainer.precision names it."""
        args = self.launch.args if self.launch is not None else []
        return styles.lightning_precision(args, self.ident.gpu.precision)

    def _precision_said(self) -> list[str]:
        """What _AcceleratorConnector says of it: a warning for the aliases 16
        and bf16 (fabric/connector.py), then the AMP line for a mixed one."""
        args = self.launch.args if self.launch is not None else []
        given = styles.lightning_cli_values(args).get("precision")
        flag = self._precision_flag
        line = self._table("precision_alias_line")
        alias = [self.text["precision_alias"].format(site=self._site(), line=line, given=given, flag=flag)
                 ] if given in ("16", "bf16") else []
        amp = texts.load(DATA)["amp"]
        return alias + ([self.text["amp"].format(amp=amp[flag])] if flag in amp else [])

    def _table(self, name: str) -> Any:
        """A per-release value of data/style-lightning.toml: the newest row at or below the pinned release."""
        table = texts.load(DATA)[name]
        known = sorted(table, key=_minor)
        return table[([k for k in known if _minor(k) <= self.lightning] or known[:1])[-1]]

    def launched(self, launch: ev.RunStarted) -> None:
        """Each launch (a restart's too) is a new script: its CSVLogger's
        version is the one the launch found free, the one its files go to."""
        super().launched(launch)
        # Without an output directory nothing is written: the version directories the earlier
        # scripts' loggers made (at fit start) are missing from the listing the launch read.
        self.version_num = launch.logger_version + (0 if launch.output_dir else self.fits)

    def banner(self, when: float) -> list[Line]:
        """Trainer.__init__ and the start of trainer.fit, up to the first collective."""
        self._reset()
        if self.launch is not None and self.launch.restart_count == 0:
            # trainer.fit(ckpt_path=...): LightningCLI's --ckpt_path as the line gives it, else
            # the .ckpt fakerun's --resume found (a restart's is set by _restart).
            self.resume = ckpt_path(self.launch.args) or self.launch.resumed_from or None
            self.resume_step = self.launch.resumed_step
        i, t = self.ident, self.text
        said = [*self._precision_said(), *t["devices"]]
        said += [] if self.lightning >= (2, 6) else [t["hpu"]]
        if not (self.launch and self.launch.tensorboard):  # else tensorboard is installed: no CSVLogger
            said.append(t["csv_logger"].format(site=self._site(), line=self._table("csv_logger_line")))
        said += [t["litlogger_tip"], t["litmodels_tip"]] if self.lightning >= (2, 6) else []
        members = [Line(t["member"].format(rank=r, member=r + 1, world=i.world), STDERR, r)
                   for r in range(i.world)]
        # rank_zero_info's message ends with "\n": a blank line follows the block.
        # fabric/accelerators/cuda.py _check_cuda_matmul_precision: Ampere and later only.
        tf32 = [t["tensor_cores"].format(gpu=i.gpu.name)] if i.gpu.ampere_or_later else []
        block = [DASHES, *(x.format(world=i.world) for x in t["registered"]), DASHES, "", *tf32]
        return [*self._seeded(), *self._err(said), *members, *self._err(block)]

    def _seeded(self) -> list[Line]:
        """LightningCLI seeds first (`--seed_everything`: an int, true or false)."""
        args = self.launch.args if self.launch is not None else []
        if not styles.lightning_cli(args):
            return []
        said = (flag_value(args, "--seed_everything") or "true").lower()
        if said == "false":
            return []
        seed = int(said) if said.lstrip("-").isdigit() else 0
        warned = [self.text["seed_missing"].format(site=self._site(), line=self._table("seed_missing_line"))
                  ] if not said.lstrip("-").isdigit() else []
        return self._err(warned) + [Line(self.text["seed_set"].format(rank=r, seed=seed), STDERR, r)
                                    for r in range(self.ident.world)]

    # -- events ---------------------------------------------------------------
    def _phase(self, e: ev.Phase) -> list[Line]:
        if e.name == "init" and e.stage == "dataset":
            return self._setup()
        if e.name == "train":
            self.epoch_start = self.fit_start = e.time
            self.fits += 1
            return self._fit_start()
        if e.name == "export":  # trainer.fit has returned, its signal handlers restored (teardown)
            self.handles_sigterm = False
            return self._fit_end(e.time)
        return []

    def _setup(self) -> list[Line]:
        """The strategy's setup: every rank pins its GPU."""
        i = self.ident
        devices = ",".join(str(d) for d in range(i.nproc))
        restoring = self._err([self.text["restoring"].format(path=self.resume)]) if self.resume else []
        local = i.topology.local_rank_of
        pinned = [Line(self.text["local_rank"].format(local=local(r), devices=devices), STDERR, r)
                  for r in range(i.world)]
        return restoring + pinned

    def _fit_start(self) -> list[Line]:
        """ModelSummary.on_fit_start, then the sanity check (skipped when
        resuming, and with no validation batches: limit_val_batches=0)."""
        out = self._err(self._summary())
        if self.resume:
            out += self._err([self.text["restored"].format(path=self.resume)])
        out += self._requeue_enabled()
        if self.resume:
            return out + self._err(self._mid_epoch())
        h = self.ident.hyper
        if not (h.eval_every or h.eval_at_end):
            return out
        per_batch = sim.eval_seconds(self.ident) / h.eval_batches
        batches = min(SANITY_STEPS, h.eval_batches)
        return out + self._eval_bar("Sanity Checking DataLoader 0", batches, per_batch)

    def _mid_epoch(self) -> list[str]:
        """training_epoch_loop.py reset, as the fit loop starts: a checkpoint of
        a step inside an epoch, and a DataLoader that cannot resume mid-way."""
        if self.resume_step % self.ident.hyper.steps_per_epoch == 0:
            return []
        return [self.text["mid_epoch"].format(site=self._site(), line=self._table("mid_epoch_line"))]

    def _summary(self) -> list[str]:
        """The LightningModule's one child, the model; 2.6 counts FLOPs (none without
        an example_input_array) and warns that bf16-mixed is sized as 32 bits."""
        i, newest = self.ident, self.lightning >= (2, 6)
        columns = [(" ", ["0"]), ("Name", ["model"]), ("Type", [i.model.arch]),
                   ("Params", [human_count(i.model.params)]), ("Mode", ["train"])]
        if newest:
            columns.append(("FLOPs", [human_count(0)]))
        modules = module_count(i.model.arch, i.model.layers, i.versions.transformers, i.model.name)
        bits = (SUMMARY_BITS_2_6 if newest else SUMMARY_BITS).get(self._precision_flag)
        table = summary_table(i.model.params, modules, columns, flops=newest, bits=bits or 32)
        warned = [self.text["summary_precision"].format(site=self._site(), precision=self._precision_flag)
                  ] if newest and bits is None else []
        return [*warned, "", *table]  # log.info("\n" + table)

    def _step(self, e: ev.Step) -> list[Line]:
        if self.last is not None and e.epoch != self.last.epoch:
            self.epoch_start = self.epoch_end  # on_train_epoch_start resets the bar
            self.shown = 0
        self.last = e
        h = self.ident.hyper
        done = e.step - (e.epoch - 1) * h.steps_per_epoch
        # TQDMProgressBar._should_update: every refresh_rate batches of the epoch, and its last.
        refreshed = not (done % h.log_every and done != h.steps_per_epoch)
        if refreshed:
            self.shown = done * h.grad_accum
        timed_out = e.stopped and not self.sigterm  # a stop for Slurm's SIGTERM is no Timer's
        return ([self._train_bar(e.time)] if refreshed else []) + (self._time_limit(e) if timed_out else [])

    def _time_limit(self, e: ev.Step) -> list[Line]:
        """Trainer(max_time=...)'s Timer at the batch that ran past it
        (callbacks/timer.py _check_time_remaining, 2.4.0-2.6.x): the bar, whose
        callback comes first, keeps the count of its last refresh; fit_loop
        then leaves with only a debug message (`trainer.should_stop` was set)."""
        elapsed = timedelta(seconds=int(e.time - self.fit_start))
        return self._err([self.text["time_limit"].format(elapsed=elapsed)])

    def _validation(self, e: ev.Validation) -> list[Line]:
        h = self.ident.hyper
        bars = self._eval_bar("Validation DataLoader 0", h.eval_batches, e.eval_time_s / h.eval_batches)
        self.val_loss = e.val_loss
        # on_validation_end: the train bar's postfix gains val_loss (a refresh).
        return bars + ([self._train_bar(e.time)] if self.last else [])

    def _checkpoint(self, e: ev.Checkpoint) -> list[Line]:
        """The default ModelCheckpoint saves on_train_epoch_end, silently; the next
        epoch's bar starts after it."""
        root = e.path.split("/checkpoint-")[0] if "/checkpoint-" in e.path else self._cwd()
        epoch = (max(1, e.step) - 1) // self.ident.hyper.steps_per_epoch
        self.checkpoints[e.step] = (f"{root}/lightning_logs/version_{self.version_num}/checkpoints/"
                                    f"epoch={epoch}-step={e.step}.ckpt")
        if e.step % self.ident.hyper.steps_per_epoch == 0:  # not a save after a validation mid-epoch
            self.epoch_end = e.time
        return []

    def _requeue_enabled(self) -> list[Line]:
        """register_signal_handlers, after the restore (Trainer._run): each rank's own line."""
        if self.launch is None or not self.launch.requeue_job:
            return []
        self.handles_sigterm = True
        return [Line(self.text["requeue_enabled"], STDERR, r) for r in range(self.ident.world)]

    def _sigterm(self, e: ev.ShutdownRequested) -> list[Line]:
        """Slurm's SIGTERM (scontrol requeue ends the job) once fit has set
        the auto-requeue handlers (_requeue_enabled): on every rank,
        _sigterm_notifier_fn's log.info(rank_prefixed_message(..., local_rank))
        then _sigterm_handler_fn's log.info (signal_connector.py, 2.4.0 to
        2.6.5); Python hands handlers the signal's number. Before then the
        script has no handler and dies of it, saying nothing."""
        if not self.handles_sigterm or e.signal != signal.SIGTERM:
            return []
        self.sigterm = True
        local = self.ident.topology.local_rank_of
        return [Line(self.text[key].format(local=local(r), signum=int(e.signal)), STDERR, r)
                for r in range(self.ident.world) for key in ("sigterm_received", "sigterm_bypassed")]

    def _hpc_checkpoint(self, e: ev.HpcCheckpoint) -> list[Line]:
        """_slurm_sigusr_handler_fn's first words (Python hands handlers the
        signal's number: SLURMEnvironment's requeue_signal, SIGUSR1); then it
        saves hpc_ckpt_N.ckpt (the writer's)."""
        return self._err([self.text["requeue_signal"].format(signum=int(signal.SIGUSR1))])

    def _requeued(self, e: ev.Requeued) -> list[Line]:
        job = self.launch.requeue_job if self.launch is not None else ""
        said = (self.text["requeued"].format(job=job) if e.exit_code == 0
                else self.text["requeue_failed"].format(job=job, code=e.exit_code))
        return self._err([self.text["requeueing"].format(job=job), said])

    def _restart(self, e: ev.Restart) -> list[Line]:
        self.resume = self.checkpoints.get(e.resume_step)
        self.resume_step = e.resume_step
        return []

    def _fit_end(self, when: float) -> list[Line]:
        """fit_loop.done says why it stopped; on_train_end closes the bar (a last refresh)."""
        if self.last is None:
            return []
        stopped = self.last.step == self.last.max_steps
        given = styles.lightning_cli_values(self.launch.args if self.launch is not None else [])
        if "max_epochs" in given and "max_steps" not in given:  # the epochs ran out, no step limit set
            said = [self.text["stopped_epochs"].format(max_epochs=given["max_epochs"])]
        else:
            said = [self.text["stopped"].format(max_steps=self.last.max_steps)]
        return (self._err(said) if stopped else []) + [self._train_bar(when)]

    # -- bars -------------------------------------------------------------------
    def _train_bar(self, now: float) -> Line:
        """The `Epoch N` bar: batches (micro-batches) of this epoch, smoothing=0 so
        the rate is batches over the epoch's elapsed time."""
        e, h = self.last, self.ident.hyper
        elapsed = max(0.0, now - self.epoch_start)
        n = self.shown
        postfix = f"v_num={postfix_num(self.version_num)}, train_loss={postfix_num(e.loss)}"
        if self.val_loss is not None:
            postfix += f", val_loss={postfix_num(self.val_loss)}"
        total = h.steps_per_epoch * h.grad_accum
        rate = n / elapsed if elapsed else None
        return Line(format_meter(n, total, elapsed, rate, prefix=f"Epoch {e.epoch - 1}", postfix=postfix,
                                 noinv=True), STDOUT, 0)

    def _eval_bar(self, desc: str, batches: int, per_batch: float) -> list[Line]:
        """An evaluation bar's refreshes: every refresh_rate batches and at the last."""
        shown = [n for n in range(1, batches + 1) if n % self.refresh_rate == 0 or n == batches]
        rate = 1 / per_batch if per_batch > 0 else None
        return [Line(format_meter(n, batches, n * per_batch, rate, prefix=desc, noinv=True), STDOUT, 0)
                for n in shown]

    def _site(self) -> str:
        return f"{ENV_PREFIX}/lib/python{self.ident.versions.python}/site-packages"

    @staticmethod
    def _cwd() -> str:
        return texts.load("torchrun")["script"]["cwd"]  # Trainer's default_root_dir is os.getcwd()

    @staticmethod
    def _err(texts_: list[str]) -> list[Line]:
        return [Line(t, STDERR, 0) for t in texts_]
