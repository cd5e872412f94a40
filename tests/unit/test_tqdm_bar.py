"""The HF Trainer's bar against the real tqdm and the real torchrun tee.

fakerun.render.styles.tqdm.Bar is driven with the same clock as the real
tqdm (the [test] extra installs it; tqdm 4.70.1 when written), through the
calls transformers' ProgressCallback makes (tqdm(total=max_steps,
dynamic_ncols=True), update(1) per step, write() per log, close()), and must
write the same characters. fakerun.render.tail.TailedFile must print what
torch's own tail_logfile prints of the same writes (read from the pinned
torch's extracted wheel under /work/torchsrc, skipped where it is absent)."""

from __future__ import annotations

import importlib.util
import io
import random
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

import pytest

from fakerun.render.styles.tqdm import Bar
from fakerun.render.tail import TailedFile

TORCHSRC = Path("/work/torchsrc")
HEADER = "[default0]:"


class Utf8Buffer(io.StringIO):
    """A stream that says utf-8, as a rank's stderr does (tqdm draws ASCII bars on others)."""

    encoding = "utf-8"


class CreationOrder(list):
    """tqdm's instance set (a WeakSet: tqdm.write blanks and redraws the bars
    in its iteration order), in the order the bars were made. CPython's set
    gives that order to a fresh set of two bars (their ids hash to one slot,
    the second probes the next); a process's earlier bars can change it.
    fakerun draws the training bar first."""

    def add(self, item: object) -> None:
        self.append(item)


def real_tqdm(monkeypatch: pytest.MonkeyPatch, clock: list[float]) -> tuple[type, Utf8Buffer]:
    """The real tqdm on a fake clock, its bars on a utf-8 stderr: its class and that stream."""
    tqdm_std = pytest.importorskip("tqdm.std")
    from tqdm.auto import tqdm

    monkeypatch.setattr(tqdm_std, "time", lambda: clock[0])  # tqdm.__init__ takes its _time from it
    monkeypatch.setattr(tqdm_std.tqdm, "_instances", CreationOrder())
    monkeypatch.setattr(tqdm_std.tqdm, "monitor_interval", 0)  # no TMonitor thread (see Bar)
    err = Utf8Buffer()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", Utf8Buffer())
    return tqdm, err


def real_tqdm_writes(monkeypatch: pytest.MonkeyPatch, times: list[float], logs: set[int],
                     end: float) -> list[str]:
    """What the real tqdm writes to stderr at each moment of a Trainer's run:
    opened at times[0], one update per later time, a write() after the
    update of each step in `logs`, closed at `end`. One string per moment."""
    clock = [times[0]]
    tqdm, err = real_tqdm(monkeypatch, clock)
    moments, seen = [], 0

    def moment() -> None:
        nonlocal seen
        moments.append(err.getvalue()[seen:])
        seen = len(err.getvalue())

    bar = tqdm(total=len(times) - 1, dynamic_ncols=True)
    moment()
    for step, now in enumerate(times[1:], 1):
        clock[0] = now
        bar.update(1)
        if step in logs:
            bar.write(f"{{'loss': {step}}}")
        moment()
    clock[0] = end
    bar.write("{'train_runtime': 1.0}")
    bar.close()
    moment()
    return moments


def fakerun_writes(times: list[float], logs: set[int], end: float) -> list[str]:
    bar, opened = Bar.opened(len(times) - 1, times[0])
    moments = [opened]
    for step, now in enumerate(times[1:], 1):
        written = bar.update(1, now)
        if step in logs:
            written += bar.clear() + bar.refresh(now)
        moments.append(written)
    moments.append(bar.clear() + bar.refresh(end) + bar.close(end))
    return moments


def timings(seed: int) -> tuple[list[float], set[int], float]:
    """A run's step times: a step of 10 ms to 40 s, steady or jittered, with
    pauses (evaluations) now and then, and some logging steps."""
    draw = random.Random(seed)
    steps, per_step = draw.randint(1, 80), draw.choice([0.01, 0.03, 0.06, 0.2, 1.0, 4.0, 18.0, 40.0])
    times = [1_769_783_011.588 + draw.uniform(0, 1)]
    for _ in range(steps):
        pause = draw.choice([0.0] * 9 + [draw.uniform(1, 30)])
        times.append(times[-1] + per_step * draw.uniform(0.7, 1.4) + pause)
    logs = {s for s in range(1, steps + 1) if draw.random() < 0.2}
    return times, logs, times[-1] + draw.uniform(0, 40)


@pytest.mark.parametrize("seed", range(40))
def test_the_bar_writes_what_tqdm_writes(monkeypatch, seed):
    times, logs, end = timings(seed)
    assert fakerun_writes(times, logs, end) == real_tqdm_writes(monkeypatch, times, logs, end)


def test_fast_steps_print_only_every_mininterval(monkeypatch):
    # 50 ms steps: tqdm prints when 0.1 s have passed and its dynamic miniters allow, not every step.
    times = [100.0 + 0.05 * k for k in range(41)]
    moments = real_tqdm_writes(monkeypatch, times, set(), times[-1])
    printed = sum(1 for m in fakerun_writes(times, set(), times[-1])[1:-1] if m)
    assert printed == sum(1 for m in moments[1:-1] if m) < 25
    # and 1 s steps print every one
    slow = [100.0 + k for k in range(11)]
    assert all(fakerun_writes(slow, set(), slow[-1])[1:-1])


def torch_tail_log(version: str) -> ModuleType:
    path = TORCHSRC / version / "torch/distributed/elastic/multiprocessing/tail_log.py"
    if not path.is_file():
        pytest.skip(f"torch {version}'s sources are not extracted under {TORCHSRC}")
    spec = importlib.util.spec_from_file_location(f"tail_log_{version}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_tee(version: str, batches: list[str]) -> str:
    """torch's tail_logfile printing a log file written in `batches`: the
    writer adds a batch each time the reader, at the end of the file, sleeps."""
    module = torch_tail_log(version)
    finished = threading.Event()
    pending = iter(batches)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stderr.log"
        path.touch()
        with open(path, "a", encoding="utf-8") as log:

            class Clock:
                @staticmethod
                def sleep(_seconds: float) -> None:
                    batch = next(pending, None)
                    if batch is None:
                        finished.set()
                    else:
                        log.write(batch)
                        log.flush()

            module.time = Clock  # the module's own name: its reader sleeps on our writer
            out = io.StringIO()
            module.tail_logfile(HEADER, str(path), out, finished, 0.1)
    return out.getvalue()


def fakerun_tee(batches: list[str]) -> str:
    tail = TailedFile(HEADER)
    return "".join(tail.written(batch) + tail.caught_up() for batch in batches)


@pytest.mark.parametrize("version", ["2.3.1", "2.4.1", "2.5.1", "2.9.1"])
@pytest.mark.parametrize("seed", range(8))
def test_the_tee_prints_what_torchs_tail_logfile_prints(monkeypatch, version, seed):
    times, logs, end = timings(seed)
    moments = [m for m in fakerun_writes(times, logs, end) if m]
    # The Trainer's logger lines between the bar's moments, and a lone `\r` and a `\r\n` split over two writes.
    batches = ["***** Running training *****\n", *moments[:-1], "Saving model checkpoint to out/checkpoint-4\n",
               "\n***** Running Evaluation *****\n", moments[-1], "a\r", "\nb\r", "\r\n"]
    assert fakerun_tee(batches) == torch_tee(version, batches)


def test_a_redraw_read_mid_line_glues_the_next_header():
    # The reader found the bar with no newline yet: the next read's header follows it.
    assert fakerun_tee(["\r  0%|          | 0/4 [00:00<?, ?it/s]", "Saving\n"]) == \
        f"{HEADER}\n{HEADER}  0%|          | 0/4 [00:00<?, ?it/s]{HEADER}Saving\n"


@pytest.mark.parametrize("batches,per_batch", [(1, 0.5), (7, 0.05), (40, 0.3)])
def test_an_evaluation_bar_under_the_training_bar_writes_what_tqdm_writes(monkeypatch, batches, per_batch):
    """The Trainer's prediction bar: a second tqdm (position 1, leave=False)
    opened at the first evaluation batch, updated per batch; Trainer.evaluate
    logs its metrics (tqdm.write: both bars blanked and redrawn) before
    on_evaluate closes it."""
    clock = [1000.0]
    tqdm, err = real_tqdm(monkeypatch, clock)
    train = tqdm(total=3, dynamic_ncols=True)
    bar, ours = Bar.opened(3, 1000.0)
    for step in (1, 2):
        clock[0] = 1000.0 + 2 * step
        train.update(1)
        ours += bar.update(1, clock[0])
    prediction, eval_bar = None, None
    for k in range(1, batches + 1):
        clock[0] = 1004.0 + per_batch * k
        if prediction is None:
            prediction = tqdm(total=batches, leave=False, dynamic_ncols=True)
            eval_bar, opened = Bar.opened(batches, clock[0], pos=1, leave=False)
            ours += opened
        prediction.update(1)
        ours += eval_bar.update(1, clock[0])
    train.write("{'eval_loss': 1.0}")
    ours += bar.clear() + eval_bar.clear() + bar.refresh(clock[0]) + eval_bar.refresh(clock[0])
    prediction.close()
    ours += eval_bar.close(clock[0])
    clock[0] += 2
    train.update(1)
    ours += bar.update(1, clock[0])
    train.close()
    ours += bar.close(clock[0])
    assert ours == err.getvalue()


def test_after_a_resume_the_first_step_counts_every_step_up_to_the_checkpoint(monkeypatch):
    """ProgressCallback.on_step_end updates by state.global_step - current_step,
    and current_step starts at 0: the first step after resuming from step 6
    moves the bar 7 steps at once (and tqdm's rate with it), as the Trainer's does."""
    from fakerun.render.styles.hf_progress import ProgressCallback

    clock = [500.0]
    tqdm, err = real_tqdm(monkeypatch, clock)
    bar = tqdm(total=10, dynamic_ncols=True)
    callback = ProgressCallback()
    ours = callback.on_train_begin(10, 500.0)
    counted = 0
    for step in (7, 8, 9):
        clock[0] += 3.0
        bar.update(step - counted)
        counted = step
        ours += callback.on_step_end(step, clock[0])
    bar.close()
    ours += callback.on_train_end(clock[0])
    assert "".join(line.text + line.end for line in ours) == err.getvalue()
    assert " 7/10 [00:03<00:01,  2.33it/s]" in err.getvalue()
