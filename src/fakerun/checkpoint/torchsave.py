"""Files in torch.save's format (torch/serialization.py `_save`, zip
serialization, the default since torch 1.6): a zip archive of stored entries
under a folder named after the file, `data.pkl` (the object, pickle protocol
2), `byteorder`, `version` and `.data/serialization_id`; each tensor would be
a `data/<key>` entry that the pickle points at.

Most objects pickled here are plain data (dicts, lists, tuples, numbers,
strings, None): their pickles hold no GLOBAL, REDUCE or BUILD opcode, so
loading one (pickle.load, torch.load with or without weights_only) runs
nothing and imports nothing. Tensors cannot be written that way (a tensor is
rebuilt by a call to torch._utils._rebuild_tensor_v2): what would be one is
left out, and the files say only what plain data can.

An object that is no plain data but whose pickle names only classes and
plain values (training_args.bin's TrainingArguments, with its enums, its
AcceleratorConfig, accelerate's PartialState and torch.device) is described
by Global/Reduce/Member/Instance and its opcodes written by hand (`dumps`):
loading that file imports transformers, as the real one does.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

PROTOCOL = 2  # torch.serialization.DEFAULT_PROTOCOL
VERSION = b"3\n"  # the zip serialization's record version (caffe2/serialize/inline_container.h)
STAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: the bytes repeat from run to run


def archive(file_name: str, obj: Any, serialization_id: str) -> bytes:
    """torch.save(obj, file_name)'s bytes, for plain `obj`, or for an object
    described by this module's Global/Reduce/Member/Instance."""
    folder = PurePosixPath(file_name).stem
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in (("data.pkl", pickled(obj)), ("byteorder", b"little"),
                           ("version", VERSION), (".data/serialization_id", serialization_id.encode())):
            zf.writestr(zipfile.ZipInfo(f"{folder}/{name}", STAMP), data)
    return buffer.getvalue()


def pickled(obj: Any) -> bytes:
    """data.pkl: pickle's own bytes for plain data, ours for a described object."""
    if isinstance(obj, (Instance, Reduce, Member)):
        return dumps(obj)
    return pickle.dumps(obj, protocol=PROTOCOL)


# -- Pickles of objects ------------------------------------------------------
# What torch.save(obj) writes for an object that is not plain data (a
# TrainingArguments): pickle protocol 2's GLOBAL/NEWOBJ/BUILD and REDUCE, the
# opcodes written here by hand, so that no class of transformers, accelerate
# or torch need exist in this process (nor is anything ever unpickled).


@dataclass(frozen=True)
class Global:
    """A class or function by its import path, as GLOBAL names it."""

    module: str
    name: str


@dataclass(frozen=True, eq=False)
class Reduce:
    """`func(*args)`, as an object's __reduce_ex__(2) returns it: a torch.device
    is (torch.device, ('cuda', 0)). Each Reduce is one object: the same
    instance twice is memoized (BINGET), like the object it stands for."""

    func: Global
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Member:
    """An Enum member: (its class, (its value,)), as Enum.__reduce_ex__ gives.
    Members are singletons: equal ones are the same object to the memo."""

    cls: Global
    value: Any


@dataclass(frozen=True, eq=False)
class Instance:
    """A plain instance (a dataclass, accelerate's PartialState): copyreg's
    __newobj__ path, `cls.__new__(cls)` then BUILD with its __dict__."""

    cls: Global
    state: dict[str, Any]


class _Pickler:
    """pickle's Pickler at protocol 2, for the objects above and plain data:
    the same opcodes and memo (every str, tuple, list, dict and object is
    memoized: BINPUT, and BINGET when met again). Strings are memoized by
    value: a str of the same value is one object in the pickling process
    (field names are interned, `run_name` is `output_dir`); the strings a
    Reduce's args hold are its own (a torch.device makes them anew)."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.memo: dict[object, int] = {}
        self.unique = 0

    def dumps(self, obj: Any) -> bytes:
        self.out.write(pickle.PROTO + bytes([PROTOCOL]))
        self.save(obj)
        self.out.write(pickle.STOP)
        return self.out.getvalue()

    def save(self, obj: Any, fresh: bool = False) -> None:
        key = self._key(obj, fresh)
        if key in self.memo:
            self._get(self.memo[key])
            return
        saver = {type(None): self._none, bool: self._bool, int: self._int, float: self._float, str: self._str,
                 tuple: self._tuple, list: self._list, dict: self._dict, Global: self._global,
                 Reduce: self._reduce, Member: self._member, Instance: self._instance}[type(obj)]
        saver(obj, key, fresh)

    def _key(self, obj: Any, fresh: bool) -> object:
        """What the memo knows `obj` by: its value (strings, classes, members),
        its identity (a Reduce or Instance given twice), else itself alone."""
        if isinstance(obj, (str, Global, Member)) and not fresh:
            return (type(obj), obj)
        if isinstance(obj, (Reduce, Instance)):
            return ("id", id(obj))
        self.unique += 1
        return ("unique", self.unique)

    def _put(self, key: object) -> None:
        index = len(self.memo)
        self.memo[key] = index
        self.out.write(_indexed(pickle.BINPUT, pickle.LONG_BINPUT, index))

    def _get(self, index: int) -> None:
        self.out.write(_indexed(pickle.BINGET, pickle.LONG_BINGET, index))

    def _none(self, _: None, *_memo: object) -> None:
        self.out.write(pickle.NONE)

    def _bool(self, obj: bool, *_memo: object) -> None:
        self.out.write(pickle.NEWTRUE if obj else pickle.NEWFALSE)

    def _int(self, obj: int, *_memo: object) -> None:
        if 0 <= obj < 256:
            self.out.write(pickle.BININT1 + bytes([obj]))
        elif 0 <= obj < 65536:
            self.out.write(pickle.BININT2 + struct.pack("<H", obj))
        elif -(2**31) <= obj < 2**31:
            self.out.write(pickle.BININT + struct.pack("<i", obj))
        else:
            encoded = pickle.encode_long(obj)
            self.out.write(pickle.LONG1 + bytes([len(encoded)]) + encoded)

    def _float(self, obj: float, *_memo: object) -> None:
        self.out.write(pickle.BINFLOAT + struct.pack(">d", obj))

    def _str(self, obj: str, key: object, _: bool) -> None:
        encoded = obj.encode("utf-8", "surrogatepass")
        self.out.write(pickle.BINUNICODE + struct.pack("<I", len(encoded)) + encoded)
        self._put(key)

    def _tuple(self, obj: tuple[Any, ...], key: object, fresh: bool) -> None:
        """Protocol 2: () is EMPTY_TUPLE (not memoized), up to three items TUPLE1-3."""
        if not obj:
            self.out.write(pickle.EMPTY_TUPLE)
            return
        if len(obj) > 3:
            self.out.write(pickle.MARK)
        for item in obj:
            self.save(item, fresh)
        self.out.write({1: pickle.TUPLE1, 2: pickle.TUPLE2, 3: pickle.TUPLE3}.get(len(obj), pickle.TUPLE))
        self._put(key)

    def _list(self, obj: list[Any], key: object, _: bool) -> None:
        self.out.write(pickle.EMPTY_LIST)
        self._put(key)  # before the items, as pickle memoizes a container
        self._batch([(item,) for item in obj], pickle.APPEND, pickle.APPENDS)

    def _dict(self, obj: dict[str, Any], key: object, _: bool) -> None:
        self.out.write(pickle.EMPTY_DICT)
        self._put(key)
        self._batch(list(obj.items()), pickle.SETITEM, pickle.SETITEMS)

    def _batch(self, items: list[tuple[Any, ...]], one: bytes, many: bytes) -> None:
        """_pickle.c's batch_list_exact / batch_dict_exact (torch.save's Pickler
        is the C one): a single item without MARK, else MARK ... in batches of
        1000, a last batch of one included."""
        if len(items) == 1:
            for part in items[0]:
                self.save(part)
            self.out.write(one)
            return
        for start in range(0, len(items), 1000):
            self.out.write(pickle.MARK)
            for item in items[start:start + 1000]:
                for part in item:
                    self.save(part)
            self.out.write(many)

    def _global(self, obj: Global, key: object, _: bool) -> None:
        self.out.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self._put(key)

    def _reduce(self, obj: Reduce, key: object, _: bool) -> None:
        self.save(obj.func)
        self.save(obj.args, fresh=True)
        self.out.write(pickle.REDUCE)
        self._put(key)

    def _member(self, obj: Member, key: object, _: bool) -> None:
        self.save(obj.cls)
        self.save((obj.value,))
        self.out.write(pickle.REDUCE)
        self._put(key)

    def _instance(self, obj: Instance, key: object, _: bool) -> None:
        self.save(obj.cls)
        self.out.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
        self._put(key)
        self.save(obj.state)
        self.out.write(pickle.BUILD)


def _indexed(short: bytes, long: bytes, index: int) -> bytes:
    """A memo opcode: a byte's index, or four (little-endian) past 255."""
    return short + bytes([index]) if index < 256 else long + struct.pack("<I", index)


def dumps(obj: Any) -> bytes:
    """pickle.dumps(obj, protocol=2) of the object `obj` stands for."""
    return _Pickler().dumps(obj)
