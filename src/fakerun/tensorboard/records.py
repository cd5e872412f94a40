"""One event file as the writer behind torch.utils.tensorboard writes it:
tensorboard's EventFileWriter (tensorboard/summary/writer/event_file_writer.py,
2.x): named `events.out.tfevents.%010d.<hostname>.<pid>.<n>` from time.time(),
socket.gethostname(), os.getpid() and a process-wide counter of the writers
made (0 for the first); its first record the `brain.Event:2` file version
with the writer's source metadata; then each Event in TFRecord framing
(tensorboard/summary/writer/record_writer.py: length, masked CRC-32C of the
length, the bytes, their masked CRC-32C).

Here the time is the run's clock, the host the writing rank's node as the
logs name it and the pid the rank's as `fakerun smi` shows it. On a local
disk the real writer's thread appends each record as it takes it from its
queue (GFile on the LocalFileSystem appends, tensorboard/compat/
tensorflow_stub/io/gfile.py), so a reader sees it within milliseconds; here
the records of one event go out in one write(2), at once."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from fakerun.render.sinks import SinkFailed
from fakerun.system.files import open_regular
from fakerun.tensorboard import summaries

FILE_VERSION = "brain.Event:2"
SOURCE = "tensorboard.summary.writer.event_file_writer"  # EventFileWriter's SourceMetadata.writer
BLAS_THREADS = "OPENBLAS_NUM_THREADS"


def failed(option: str, path: Path, exc: OSError) -> SinkFailed:
    """One line naming the option that asked for the file (the Renderer
    drops the sink and reports it, as the metrics file's)."""
    return SinkFailed(f"{option}: {path}: {exc.strerror or type(exc).__name__}")


def file_name(when: float, host: str, pid: int, uid: int) -> str:
    return f"events.out.tfevents.{int(when):010d}.{host}.{pid}.{uid}"  # "%010d" % time.time() truncates


def _record_writer() -> Any:
    """tensorboard's RecordWriter, imported at the first file (0.15-0.3 s,
    once): its CRC-32C pulls in numpy, whose OpenBLAS starts threads as it
    loads unless told one, and the launcher forks its ranks (a --loop's next
    run's too) with no thread but its own."""
    saved = os.environ.get(BLAS_THREADS)
    os.environ[BLAS_THREADS] = "1"
    try:
        from tensorboard.summary.writer.record_writer import RecordWriter
    finally:
        if saved is None:
            del os.environ[BLAS_THREADS]
        else:
            os.environ[BLAS_THREADS] = saved
    return RecordWriter


class EventFile:
    """An open event file: records are framed into a buffer and written
    together by flush(); the option that asked for them names it in errors."""

    def __init__(self, logdir: Path, name: str, when: float, option: str) -> None:
        self.path, self.option = logdir / name, option
        self.buffer = io.BytesIO()
        self.records: Any = _record_writer()(self.buffer)
        try:
            logdir.mkdir(parents=True, exist_ok=True)
            self.fd = open_regular(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        except OSError as exc:
            raise failed(option, self.path, exc) from None
        self.add(summaries.file_version(when, FILE_VERSION, SOURCE))
        self.flush()

    def add(self, event: bytes) -> None:
        self.records.write(event)

    def flush(self) -> None:
        data = self.buffer.getvalue()
        if not data:
            return
        self.buffer.seek(0)
        self.buffer.truncate()
        try:
            written = os.write(self.fd, data)
            while written < len(data):
                written += os.write(self.fd, data[written:])
        except OSError as exc:
            raise failed(self.option, self.path, exc) from None

    def close(self) -> None:
        try:
            self.flush()
        finally:
            os.close(self.fd)
