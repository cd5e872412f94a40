"""Files in torch.save's format (torch/serialization.py `_save`, zip
serialization, the default since torch 1.6): a zip archive of stored records
under a folder named after the file (checkpoint/torchzip.py: the records the
pinned torch writes, in its order and layout), `data.pkl` the object
(pickle protocol 2); each tensor's storage a `data/<key>` record the pickle
points at.

Most objects pickled here are plain data (dicts, lists, tuples, numbers,
strings, None): their pickles hold no GLOBAL, REDUCE or BUILD opcode, so
loading one (pickle.load, torch.load with or without weights_only) runs
nothing and imports nothing; pickle's own bytes. An object holding tensors,
or no plain data at all (training_args.bin's TrainingArguments, with its
enums, its AcceleratorConfig, accelerate's PartialState and torch.device),
is described by checkpoint/torchpickle.py's classes and its opcodes written
by hand: loading that file imports transformers, as the real one does. The
storages' data is left out (`archive`) or a hole of its true size (`sparse`).
"""

from __future__ import annotations

import pickle
from pathlib import PurePosixPath
from typing import Any

from fakerun.checkpoint import torchzip
from fakerun.checkpoint.store import Sparse
from fakerun.checkpoint.torchpickle import DESCRIBED, PROTOCOL, Pickler, Storage


def archive(file_name: str, obj: Any, serialization_id: str, torch_version: str) -> bytes:
    """torch.save(obj, file_name)'s bytes under the pinned torch, for plain
    `obj`, or for an object described by this module's classes; the data of
    its tensors' storages left out."""
    data, _ = pickled(obj)
    records = torchzip.records(torch_version, data, serialization_id)
    return torchzip.archive(PurePosixPath(file_name).stem, records)


def sparse(file_name: str, obj: Any, serialization_id: str, torch_version: str) -> Sparse:
    """The same file at its true size: each storage's `data/<key>` record a
    hole of its bytes (where the file system keeps holes)."""
    data, storages = pickled(obj)
    holes = [torchzip.Record(f"data/{key}", size=s.nbytes) for key, s in enumerate(storages)]
    records = torchzip.records(torch_version, data, serialization_id, holes)
    return torchzip.sparse(PurePosixPath(file_name).stem, records)


def pickled(obj: Any) -> tuple[bytes, list[Storage]]:
    """data.pkl (pickle's own bytes for plain data, ours for a described
    object) and the storages it names, in the order torch numbers them."""
    if _described(obj):
        pickler = Pickler()
        return pickler.dumps(obj), pickler.storages
    return pickle.dumps(obj, protocol=PROTOCOL), []


def _described(obj: Any) -> bool:
    if isinstance(obj, DESCRIBED):
        return True
    if isinstance(obj, dict):
        return any(_described(v) for v in obj.values())
    return isinstance(obj, (list, tuple)) and any(_described(v) for v in obj)
