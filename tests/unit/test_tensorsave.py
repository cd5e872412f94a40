"""checkpoint/tensorsave.py against real torch.save files
(tests/fixtures/torchsave/, written by its capture.py with torch 2.13.0+cpu):
the same pickle byte for byte, the same records in the same order less the
storages' data. The fixtures are read as zips and bytes, never unpickled."""

from __future__ import annotations

import dataclasses
import io
import pickletools
import random
import zipfile
from pathlib import Path

import pytest

from fakerun import events as ev
from fakerun.checkpoint import deepspeed, tensorsave
from fakerun.checkpoint.deepspeed import DeepSpeedWriter
from fakerun.checkpoint.layouts import Saving
from fakerun.checkpoint.tensorsave import Entry
from fakerun.world import catalog, identity, styles
from fakerun.world.tensors import layout

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torchsave"
SHAPES = [("model.embed_tokens.weight", (4, 3)), ("model.norm.weight", (3,)), ("model.conv.weight", (2, 1, 1, 2))]


def entries(tied_as_same: bool) -> list[Entry]:
    """capture.py's state dicts: lm_head on the embedding's storage."""
    out = [Entry(name, shape, n) for n, (name, shape) in enumerate(SHAPES)]
    return [*out, Entry("lm_head.weight", (4, 3), 0, "model.embed_tokens.weight" if tied_as_same else None)]


def real(name: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(FIXTURES / name)


@pytest.mark.parametrize("fixture,dtype,same", [("detached.bin", "F16", False), ("same.bin", "BF16", True)])
def test_the_pickle_is_torchs_byte_for_byte(fixture, dtype, same):
    folder = fixture.removesuffix(".bin")
    expected = real(fixture).read(f"{folder}/data.pkl")
    assert tensorsave.state_dict_pickle(entries(same), dtype) == expected


def test_the_pickle_names_torchs_globals_and_persistent_ids():
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(tensorsave.state_dict_pickle(entries(False), "F16"))]
    assert ("GLOBAL", "torch._utils _rebuild_tensor_v2") in ops and ("GLOBAL", "torch HalfStorage") in ops
    assert [name for name, _ in ops].count("BINPERSID") == 4  # the tied weight: a second id on storage '0'


@pytest.mark.parametrize("torch_version,extra", [("2.3.1", []), ("2.9.1", [".format_version", ".storage_alignment"])])
def test_records_in_torchs_order_less_the_data(torch_version, extra):
    written = tensorsave.archive("detached.bin", entries(False), "F16", "1" * 40, torch_version)
    names = zipfile.ZipFile(io.BytesIO(written)).namelist()
    assert names == [f"detached/{n}" for n in ["data.pkl", *extra, "byteorder", "version", ".data/serialization_id"]]
    # torch 2.9 and later name the same records as the captured 2.13 file, its data/<key> aside.
    if extra:
        assert names == [n for n in real("detached.bin").namelist() if "/data/" not in n]


def test_large_tensors_and_many_keys_pickle_as_python_does():
    """Numbers past BININT (a 256000 x 16384 embedding: 4.2e9 elements), memo past 255
    (LONG_BINPUT), SETITEMS batches of 1000: pickletools reads it whole,
    and the element counts come back."""
    big = [Entry("embed", (256000, 16384), 0)] + [Entry(f"l{n}", (7,), n + 1) for n in range(1200)]
    ops = list(pickletools.genops(tensorsave.state_dict_pickle(big, "BF16")))
    assert [op.name for op, _, _ in ops].count("SETITEMS") == 2
    assert any(op.name == "LONG1" and arg == 256000 * 16384 for op, arg, _ in ops)
    assert any(op.name == "LONG_BINPUT" for op, _, _ in ops)


def tied_ident(zero: int):
    """A DeepSpeed-style run of a model that ties its output layer (Llama-3.2-1B)."""
    pinned = styles.parse("deepspeed").versions()[0]
    ident = identity.build(5, 1, 2, total_steps=12, versions=pinned)
    model = catalog.find(catalog.models(), "Llama-3.2-1B", "model")
    return dataclasses.replace(ident, model=model, parallel=dataclasses.replace(ident.parallel, zero=zero))


@pytest.mark.parametrize("zero", [1, 3])
def test_the_export_names_the_tied_output_layer_as_the_engine_gives_it(zero):
    """Below ZeRO-3, module.state_dict(): lm_head.weight a second tensor on
    the embedding's storage '0' ("cuda:0" each time); ZeRO-3's consolidated
    dict: the embedding's tensor itself, a BINGET ("cpu", once)."""
    ident = tied_ident(zero)
    assert layout(ident.model).tied
    with zipfile.ZipFile(io.BytesIO(deepspeed.exported_file(ident, 5))) as zf:
        assert zf.namelist()[0] == "pytorch_model/data.pkl" and not [n for n in zf.namelist() if "/data/" in n]
        ops = [(op.name, arg) for op, arg, _ in pickletools.genops(zf.read("pytorch_model/data.pkl"))]
    names = [arg for name, arg in ops if name == "BINUNICODE"]
    n = len(layout(ident.model).tensors)
    assert names.index("lm_head.weight") > names.index("model.norm.weight") and ("GLOBAL", "torch HalfStorage") in ops
    ids = [name for name, _ in ops].count("BINPERSID")
    if zero == 3:
        assert ids == n and ops[-3][0] == "BINGET" and names.count("cpu") == 1
    else:
        # n storage keys ("0"...): the second id names storage "0" again (a BINGET of its key)
        assert ids == n + 1 and sum(s.isdigit() for s in names) == n and names.count("cuda:0") == n + 1


def test_the_writer_exports_into_the_output_dir(tmp_path):
    ident = tied_ident(1)
    DeepSpeedWriter(Saving(tmp_path, ident, 5)).event(ev.Export(f"{tmp_path}/", [], 0, 1.0, 1_769_783_000.0))
    assert [p.name for p in tmp_path.iterdir()] == ["pytorch_model.bin"]
    assert (tmp_path / "pytorch_model.bin").read_bytes() == deepspeed.exported_file(ident, 5)
    assert (tmp_path / "pytorch_model.bin").stat().st_mtime == 1_769_783_000.0


def test_the_serialization_id_is_two_zero_padded_uint64s_as_torchs():
    captured = real("detached.bin").read("detached/.data/serialization_id").decode()
    for text in (captured, tensorsave.serialization_id(random.Random(3))):
        assert len(text) == 40 and text.isdigit() and int(text[:20]) < 2**64 and int(text[20:]) < 2**64
