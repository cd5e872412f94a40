"""The pickles torch.save writes (pickle protocol 2, the C Pickler's opcodes
and memo) of objects that are not plain data, described by the classes here
and written opcode by opcode, so that no class of torch, transformers or
accelerate need exist in this process (nor is anything ever unpickled):

- a tensor (Tensor, on a Storage): `torch._utils._rebuild_tensor_v2` of a
  persistent id naming its storage (torch/serialization.py `_save`);
- an OrderedDict (Ordered), a module's state_dict;
- a class or function (Global), a call (Reduce: a torch.device), an Enum
  member (Member), a plain instance (Instance: a TrainingArguments).

checkpoint/torchsave.py puts them in torch.save's archive.
"""

from __future__ import annotations

import io
import pickle
import struct
from dataclasses import dataclass
from typing import Any

PROTOCOL = 2  # torch.serialization.DEFAULT_PROTOCOL
BATCHSIZE = 1000  # pickle's _BATCHSIZE: SETITEMS/APPENDS in batches of this many items
# The typed storage torch pickles for each tensor dtype (safetensors' names), and its bytes per element.
STORAGE_CLASSES = {"F16": "HalfStorage", "BF16": "BFloat16Storage", "F32": "FloatStorage"}
ITEMSIZE = {"F16": 2, "BF16": 2, "F32": 4}


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


@dataclass(frozen=True, eq=False)
class Storage:
    """A tensor's storage: its dtype, elements and location tag. torch.save
    numbers its storages as it meets them (`data/<key>`); one storage under
    two tensors is one record."""

    dtype: str
    numel: int
    location: str = "cpu"

    @property
    def nbytes(self) -> int:
        return self.numel * ITEMSIZE[self.dtype]


@dataclass(frozen=True, eq=False)
class Tensor:
    """A contiguous tensor on the whole of `storage`, as Tensor.__reduce_ex__
    gives it: `torch._utils._rebuild_tensor_v2(storage, 0, size, stride,
    False, OrderedDict())`, the storage a persistent id (torch/serialization.py
    `_save`'s persistent_id: ('storage', its class, key, location, numel)).
    The same Tensor object twice is one tensor (a BINGET)."""

    storage: Storage
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Ordered:
    """A collections.OrderedDict (a module's state_dict)."""

    items: tuple[tuple[str, Any], ...]


class Made(str):
    """A string the pickled object made at run time (a `.lower()`'s result):
    an object of its own, never the memo's earlier string of its value."""

    __slots__ = ()


DESCRIBED = (Global, Reduce, Member, Instance, Tensor, Ordered)  # what Pickler writes that pickle could not
REBUILD = Global("torch._utils", "_rebuild_tensor_v2")
ORDERED_DICT = Global("collections", "OrderedDict")
CPU = "cpu"  # _cpu_tag's constant: one object, memoized; "cuda:N" is built anew for each storage


def contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A contiguous tensor's strides."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


class Pickler:
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
        self.storages: list[Storage] = []  # in the order met: their keys "0", "1", ...
        self.alive: list[Any] = []

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
                 Made: self._str,
                 tuple: self._tuple, list: self._list, dict: self._dict, Global: self._global,
                 Reduce: self._reduce, Member: self._member, Instance: self._instance, Tensor: self._tensor,
                 Ordered: self._ordered}[type(obj)]
        saver(obj, key, fresh)

    def _key(self, obj: Any, fresh: bool) -> object:
        """What the memo knows `obj` by: its value (strings, classes, members),
        its identity (a Reduce, Instance, Tensor or tuple given twice: AdamW's
        param groups share its defaults' betas), else itself alone."""
        if isinstance(obj, (str, Global, Member)) and not fresh and type(obj) is not Made:
            return (type(obj), obj)
        if isinstance(obj, (Reduce, Instance, Tensor)) or (isinstance(obj, tuple) and not fresh):
            self.alive.append(obj)  # an id is only its object's while the object lives
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
        items = list(obj.items())
        self._batch(items, pickle.SETITEM, pickle.SETITEMS)
        if len(items) > 1 and len(items) % BATCHSIZE == 0:  # batch_dict_exact's do-while: an empty last batch
            self.out.write(pickle.MARK + pickle.SETITEMS)

    def _batch(self, items: list[tuple[Any, ...]], one: bytes, many: bytes, exact: bool = True) -> None:
        """_pickle.c's batch_list_exact / batch_dict_exact (torch.save's Pickler
        is the C one): a single item without MARK, else MARK ... in batches of
        1000, a last batch of one included; not `exact` (an iterator's items,
        batch_dict), a last batch of one without MARK."""
        for start in range(0, len(items), BATCHSIZE):
            batch = items[start:start + BATCHSIZE]
            alone = len(batch) == 1 and (len(items) == 1 or not exact)
            self.out.write(b"" if alone else pickle.MARK)
            for item in batch:
                for part in item:
                    self.save(part)
            self.out.write(one if alone else many)

    def _ordered(self, obj: Ordered, key: object, _: bool) -> None:
        """OrderedDict.__reduce_ex__(2): the class called with no arguments,
        then its items from an iterator."""
        self.save(ORDERED_DICT)
        self.out.write(pickle.EMPTY_TUPLE + pickle.REDUCE)
        self._put(key)
        self._batch(list(obj.items), pickle.SETITEM, pickle.SETITEMS, exact=False)

    def _tensor(self, obj: Tensor, key: object, _: bool) -> None:
        self.save(REBUILD)
        self.out.write(pickle.MARK)
        self._persistent_id(obj.storage)
        self._int(0)
        self.save(obj.shape, fresh=True)  # tuple(self.size()): a new tuple for each tensor
        self.save(contiguous(obj.shape), fresh=True)
        self.out.write(pickle.NEWFALSE)
        self.save(Reduce(ORDERED_DICT, ()))  # the backward hooks, a new OrderedDict each
        self.out.write(pickle.TUPLE)
        self._put(self._key(obj.shape, True))
        self.out.write(pickle.REDUCE)
        self._put(key)

    def _persistent_id(self, storage: Storage) -> None:
        """('storage', class, key, location, numel) then BINPERSID; the key is
        the same str each time its storage is met (id_map.setdefault)."""
        self.out.write(pickle.MARK)
        self.save("storage")
        self.save(Global("torch", STORAGE_CLASSES[storage.dtype]))
        known = ("storage key", id(storage))  # self.storages keeps it alive
        if known in self.memo:
            self._get(self.memo[known])
        else:
            self.storages.append(storage)
            self._str(str(len(self.storages) - 1), known, False)
        self.save(storage.location, fresh=storage.location != CPU)
        self._int(storage.numel)
        self.out.write(pickle.TUPLE)
        self._put(self._key(storage, True))
        self.out.write(pickle.BINPERSID)

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
    return Pickler().dumps(obj)
