"""The snapshot file: every GPU of a running job as nvidia-smi would show it,
as JSON. A reader trusts nothing: a bad or missing field is a SnapshotError
with a one-line message."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from fakerun.errors import FakerunError

SCHEMA_VERSION = 1
SNAPSHOT_NAME = "smi.json"  # in the job's private run dir
# The most `fakerun smi` reads of a job's file: a 64-rank job writes 14 KB
# (about 220 bytes a GPU, measured), so this holds some 4,700 GPUs.
SNAPSHOT_MAX = 1 << 20
# The latest time a snapshot may carry: 9999-12-31T00:00:00Z, a day short of
# what datetime can show, so that no time zone's offset overflows it.
TIME_MAX = 253402214400.0


def cuda_text(driver_cuda: int) -> str:
    """12040 -> "12.4": the driver's CUDA version as nvidia-smi's header shows it."""
    return f"{driver_cuda // 1000}.{driver_cuda % 1000 // 10}"


class SnapshotError(FakerunError, ValueError):
    """A snapshot we cannot use; the message is one line."""


@dataclass(frozen=True)
class GpuRow:
    rank: int
    node: int
    index: int  # the GPU's index on its node (the local rank)
    host: str
    name: str
    bus_id: str
    util: int
    mem_used_mib: int
    mem_total_mib: int
    temp_c: int
    power_w: int
    power_cap_w: int
    pid: int  # 0: no process on this GPU
    kfd_node: int = 0  # AMD: the GPU's node in the driver's KFD topology (rocm-smi's Node)
    guid: int = 0  # AMD: its KFD gpu_id (rocm-smi's GUID)
    xid: int = 0  # the last Xid the driver raised on it (world/hardware.condition)
    lost: bool = False  # fallen off the bus: NVML can no longer reach it
    clock_factor: float = 1.0  # its SM clock over the boost clock at work (a thermal slowdown)
    throttle: int = 0  # the NVML clocks event reason bits its condition adds at work


@dataclass(frozen=True)
class Snapshot:
    time: float  # wall clock of the write
    run_id: str
    driver: str
    cuda: str  # the driver's CUDA version, as nvidia-smi's header shows it
    process: str  # the ranks' binary
    step: int
    gpus: list[GpuRow]
    finished: bool = False
    clock: float = 0.0  # the run's own (simulated) time of its latest event: the table's clock
    vendor: str = "nvidia"  # whose tool's look: nvidia-smi's, or rocm-smi's for "amd"
    seed: int = 0  # the run's: what nvidia-smi's other outputs draw from (UUIDs, serials)
    v: int = SCHEMA_VERSION

    @property
    def shown_time(self) -> float:
        return self.clock or self.time

    def to_json(self) -> str:
        # What dataclasses.asdict gave, without its deep copy of every value:
        # at 1024 GPUs that took 20 ms a write, on the launcher's thread.
        body = {"v": self.v, **{f: getattr(self, f) for f in _SNAPSHOT_FIELDS if f != "v"}}
        body["gpus"] = [vars(g) for g in self.gpus]  # a row's fields, in their order
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Snapshot:
        try:
            body = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
            raise SnapshotError(f"not a JSON snapshot ({str(exc).splitlines()[0][:80]})") from None
        if not isinstance(body, dict):
            raise SnapshotError("not a snapshot: expected a JSON object")
        if body.get("v") != SCHEMA_VERSION:
            raise SnapshotError(f"snapshot version {str(body.get('v'))[:20]} is not {SCHEMA_VERSION}")
        gpus = body.get("gpus")
        if not isinstance(gpus, list) or not gpus:
            raise SnapshotError("snapshot field 'gpus' should be a non-empty list")
        rows = [GpuRow(**_checked(GpuRow, row, f"gpus[{i}]")) for i, row in enumerate(gpus)]
        return cls(**{**_checked(cls, body, "snapshot"), "gpus": rows})

    def only(self, nodes: range) -> Snapshot:
        return dataclasses.replace(self, gpus=[g for g in self.gpus if g.node in nodes])


_SNAPSHOT_FIELDS = tuple(f.name for f in dataclasses.fields(Snapshot))

# Declared type -> (accepted Python types, how an error names it).
_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "int": (int, "a whole number >= 0"),
    "float": ((int, float), "a number >= 0 (a time before the year 10000)"),
    "str": (str, "a string"), "bool": (bool, "true or false")}


def _checked(cls: type, body: Any, where: str) -> dict[str, Any]:
    """The fields of `cls` from `body`, each of its declared type (unknown
    keys are ignored: newer writers may add fields)."""
    if not isinstance(body, dict):
        raise SnapshotError(f"{where}: expected a JSON object")
    values = {}
    for f in dataclasses.fields(cls):
        if str(f.type) not in _TYPES:
            continue  # nested: checked by the caller
        if f.name not in body:
            if f.default is dataclasses.MISSING:
                raise SnapshotError(f"{where}: missing field {f.name!r}")
            continue
        value = body[f.name]
        if not _fits(value, str(f.type)):
            raise SnapshotError(f"{where}: field {f.name!r} should be {_TYPES[str(f.type)][1]}, "
                                f"got {json.dumps(value)[:30]}")
        values[f.name] = value
    return values


def _fits(value: Any, type_name: str) -> bool:
    """bool is an int in Python but never a number here (nor a number a bool)."""
    if isinstance(value, bool) != (type_name == "bool") or not isinstance(value, _TYPES[type_name][0]):
        return False
    if type_name == "float" and not value <= TIME_MAX:  # every float here is a time to show
        return False
    return type_name not in ("int", "float") or (math.isfinite(value) and value >= 0)
