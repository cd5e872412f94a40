"""--metrics-file: training metrics as JSONL, for dashboards and alerting
under test. Each line goes out in one write(2) on an O_APPEND descriptor, so
a reader tailing the file never sees a torn line, even if the job is
SIGKILLed mid-run; a disk that fills mid-line leaves the file ending in the
last whole line. NaN and infinities are spelled out as strings ("NaN",
"Infinity", "-Infinity"): strict JSON has none."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from fakerun import events as ev
from fakerun.render.jsonl import strict
from fakerun.render.sinks import SinkFailed
from fakerun.system.files import open_regular


def append_whole(fd: int, data: bytes) -> None:
    """Whole lines onto an O_APPEND descriptor, in one write(2). Should the
    disk fill mid-line (a short write), the rest is tried, and on its error
    the part written is cut off again: the file never ends in a torn line."""
    written = os.write(fd, data)
    try:
        while written < len(data):
            written += os.write(fd, data[written:])
    except OSError:
        with contextlib.suppress(OSError):  # O_APPEND: we wrote the file's last `written` bytes
            os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_END) - written)
        raise


class MetricsFile:
    """An EventSink: --metrics-file."""

    console = False
    clocked = False

    def __init__(self, path: Path, append: bool = False) -> None:
        """`append`: a resumed run continues the file of the run it resumes
        (a fresh one starts it anew)."""
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC)
        try:
            self.fd = open_regular(path, flags)  # never a hang on a FIFO
        except OSError as exc:
            raise SinkFailed(f"--metrics-file {path}: {exc.strerror}") from None

    def event(self, e: ev.Event) -> None:
        record = self._record(e)
        if record is None:
            return
        line = json.dumps(strict(record), allow_nan=False, separators=(",", ":")) + "\n"
        try:
            append_whole(self.fd, line.encode())
        except OSError as exc:
            raise SinkFailed(f"--metrics-file {self.path}: {exc.strerror}") from None

    def flush(self) -> None:
        """Every line is already in the kernel: nothing is buffered here."""

    def close(self) -> None:
        os.close(self.fd)

    @staticmethod
    def _record(e: Any) -> dict[str, Any] | None:
        if isinstance(e, ev.Step):
            return {"type": "train", "step": e.step, "epoch": e.epoch, "loss": e.loss, "ppl": e.ppl,
                    "lr": e.lr, "grad_norm": e.grad_norm, "tokens_per_s": e.tokens_per_s,
                    "samples_per_s": e.samples_per_s, "step_time_s": e.step_time_s, "mfu": e.mfu,
                    "gpu_mem_mib": e.gpu_mem_used_mib, "time": e.time}
        if isinstance(e, ev.Validation):
            return {"type": "eval", "step": e.step, "epoch": e.epoch, "val_loss": e.val_loss,
                    "val_ppl": e.val_ppl, "eval_time_s": e.eval_time_s, "time": e.time}
        if isinstance(e, ev.RunStarted):
            return {"type": "event", "event": "run_started", "run_id": e.run_id,
                    "restart_count": e.restart_count, "world_size": e.world_size, "time": e.time}
        if isinstance(e, ev.Checkpoint):
            return {"type": "event", "event": "checkpoint", "step": e.step, "path": e.path,
                    "bytes": e.model_bytes + e.optimizer_bytes, "time": e.time}
        if isinstance(e, ev.Restart):
            return {"type": "event", "event": "restart", "restart_count": e.restart_count,
                    "resume_step": e.resume_step, "time": e.time}
        if isinstance(e, ev.RunFinished):
            return {"type": "event", "event": "run_finished", "exit_code": e.exit_code, "steps": e.steps}
        return None
