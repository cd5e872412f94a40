"""The data files behind a run's identity: models, GPUs, datasets and
software versions. Rows are `|`-separated; `#` starts a comment. A malformed
row is an error naming the file and line, at load time."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, TypeVar

from fakerun.errors import UsageError

T = TypeVar("T")
PRE_AMPERE = ("volta", "turing")


class CatalogError(UsageError):
    pass


@dataclass(frozen=True)
class Model:
    name: str
    arch: str
    params: int
    active_params: int  # per token: a mixture of experts routes each token through a few of them
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    vocab: int
    context: int
    kind: str

    @property
    def tuned(self) -> bool:
        """Already instruction- or chat-tuned (a fine-tune's result): a base
        for more fine-tuning, never a model anyone pre-trains from scratch."""
        return TUNED.search(self.name) is not None


# The names' marks of a tuned release (Llama-3.1-8B-Instruct, Llama-2-7b-chat-hf,
# gemma-7b-it, vicuna-13b-v1.5, WizardLM-13B-V1.2, chatglm3-6b; the base of
# ChatGLM3 is chatglm3-6b-base).
TUNED = re.compile(r"(?i)instruct|chat(?!glm3-6b-base)|-it\b|vicuna|wizardlm")


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int
    power_cap_w: int
    bf16_tflops: int
    bus_ids: str
    nvlink: str
    vendor: str  # nvidia or amd: whose software stack (and texts) the job runs on
    kind: str
    # The last columns may be left out (a row without them: a bf16 part on PCIe Gen4, any driver).
    architecture: str = ""  # NVIDIA's: volta, turing, ampere, ada or hopper
    pcie_gen: int = 4  # the host link's PCIe generation
    min_driver: int = 0  # the first NVIDIA driver branch that supports it (0: every one here)

    def bus_id(self, local_rank: int) -> str:
        ids = self.bus_ids.split(",")
        return ids[local_rank % len(ids)]

    @property
    def ampere_or_later(self) -> bool:
        """Compute capability 8.0 or more (AMD's Instinct parts report 9.x)."""
        return self.architecture not in PRE_AMPERE

    @property
    def bf16(self) -> bool:
        """Tensor cores that compute in bfloat16 came with Ampere: Volta and
        Turing train in fp16 with a loss scaler (torch.cuda.is_bf16_supported()
        is False on compute capability < 8.0)."""
        return self.ampere_or_later

    @property
    def precision(self) -> str:
        """The half-precision dtype a mixed-precision job on this part trains in."""
        return "bf16" if self.bf16 else "fp16"

    @property
    def nvls(self) -> bool:
        """NVLink SHARP: Hopper's NVSwitch multicast (not on its PCIe boards)."""
        return self.architecture == "hopper" and self.nvlink == "yes"

    @property
    def host_link(self) -> str:
        return f"PCIe Gen{self.pcie_gen}"


@dataclass(frozen=True)
class Dataset:
    name: str
    tokens: int
    use: str  # "pretrain" (a corpus) or "finetune" (an instruction set)
    kind: str


@dataclass(frozen=True)
class Versions:
    torch: str
    nccl: str
    cuda: str
    cuda_driver: int
    driver: str
    cudnn: str
    transformers: str
    deepspeed: str
    lightning: str
    megatron: str  # megatron-core
    python: str
    drawn: str  # "yes": a run may draw it at random; "no": only a --style that pins it


@dataclass(frozen=True)
class RocmBuild:
    """torch's ROCm wheel for one row of versions.txt (data/rocm.txt)."""

    torch: str  # the versions.txt row it stands for
    wheel: str  # torch.__version__ of the ROCm wheel: "2.5.1+rocm6.2"
    rccl: str  # the NCCL API version RCCL reports (NCCL_VERSION_CODE)
    rocm: str
    hip: str  # torch.version.hip
    amdgpu: str  # the amdgpu driver
    miopen: str

    @property
    def hip_version(self) -> int:
        """HIP_VERSION (and hipRuntimeGetVersion's): major * 10^7 + minor * 10^5 + patch."""
        major, minor, patch = (int(p) for p in self.hip.split("-")[0].split("."))
        return major * 10**7 + minor * 10**5 + patch


def parse(text: str, row: type[T], source: str) -> list[T]:
    fields = dataclasses.fields(row)  # type: ignore[arg-type]
    required = sum(1 for f in fields if f.default is dataclasses.MISSING)
    rows = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cells = [c.strip() for c in line.split("|")]
        if not required <= len(cells) <= len(fields) or not all(cells):
            raise CatalogError(f"{source}:{number}: expected {_count(required, len(fields))} non-empty "
                               f"'|'-separated fields, got {len(cells)}: {raw.strip()!r}")
        values = {f.name: _convert(c, f.type, source, number) for f, c in zip(fields, cells, strict=False)}
        rows.append(row(**values))
    if not rows:
        raise CatalogError(f"{source}: no rows")
    return rows


def _count(required: int, total: int) -> str:
    return str(total) if required == total else f"{required} to {total}"


def _convert(cell: str, kind: Any, source: str, number: int) -> Any:
    if kind in (int, "int"):
        try:
            return int(cell)
        except ValueError:
            raise CatalogError(f"{source}:{number}: {cell!r} is not a whole number") from None
    return cell


@cache
def load(name: str, row: type[T]) -> tuple[T, ...]:
    source = f"fakerun/data/{name}.txt"
    text = resources.files("fakerun").joinpath("data", f"{name}.txt").read_text(encoding="utf-8")
    return tuple(parse(text, row, source))


def models() -> tuple[Model, ...]:
    return load("models", Model)


def gpus() -> tuple[Gpu, ...]:
    return load("gpus", Gpu)


def datasets() -> tuple[Dataset, ...]:
    return load("datasets", Dataset)


def versions() -> tuple[Versions, ...]:
    return load("versions", Versions)


def rocm_builds() -> tuple[RocmBuild, ...]:
    return load("rocm", RocmBuild)


def on_rocm(versions: Versions) -> Versions | None:
    """The same software set as torch's ROCm wheel runs it, in Versions' own
    fields (so that every text reads them alike): nccl is RCCL, cuda ROCm,
    cuda_driver HIP's version number, driver amdgpu's, cudnn MIOpen. None:
    that torch has no ROCm build here."""
    build = next((b for b in rocm_builds() if b.torch == versions.torch), None)
    if build is None:
        return None
    return dataclasses.replace(versions, torch=build.wheel, nccl=build.rccl, cuda=build.rocm,
                               cuda_driver=build.hip_version, driver=build.amdgpu, cudnn=build.miopen)


def find(rows: tuple[T, ...], name: str, what: str) -> T:
    """Select by name, case-insensitively; an unknown name lists the known ones."""
    for row in rows:
        if row.name.lower() == name.lower():  # type: ignore[attr-defined]
            return row
    known = ", ".join(r.name for r in rows)  # type: ignore[attr-defined]
    raise CatalogError(f"unknown {what} {name!r}; known: {known}")
