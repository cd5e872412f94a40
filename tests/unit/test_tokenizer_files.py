"""The tokenizer's files a Trainer's `_save` writes, against what the real
transformers and tokenizers write for the same tokenizer
(tests/fixtures/tokenizers/<version>.json, captured by capture.py beside
them in a venv of each pinned version), and data/tokenizers.toml's table."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib import resources
from pathlib import Path

import pytest

from fakerun import events as ev
from fakerun import texts
from fakerun.checkpoint import CheckpointWriter, tokenizer
from fakerun.checkpoint.layouts import Saving
from fakerun.world import catalog, tokenizers
from fakerun.world.identity import build
from fakerun.world.trainer import TrainerArgs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizers"
# The pins in their tokenizers series' order (0.19, 0.19, 0.20, 0.22), so that the
# one-entry cache renders Llama 3's tokenizer.json once per merges form.
VERSIONS = ("4.42.4", "4.44.2", "4.46.3", "5.0.0")
SERIES = {"4.42.4": "0.19.", "4.44.2": "0.19.", "4.46.3": "0.20.", "5.0.0": "0.22."}
TOKENIZER_FILES = {"tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"}  # 4.x's


def captured(version: str) -> dict:
    return json.loads((FIXTURES / f"{version}.json").read_text())


def cases() -> list[tuple[str, str]]:
    """Every (version, config), a family's together and in VERSIONS' order
    within it, so that the one-entry cache renders each family once per
    merges form (Llama 3's 17 MB twice, not once per version)."""
    every = [(v, name) for v in VERSIONS for name in sorted(captured(v)["configs"])]
    return sorted(every, key=lambda case: (tokenizers.named(case[1]).family, VERSIONS.index(case[0])))


@pytest.mark.parametrize(("version", "name"), cases())
def test_each_file_is_the_real_libraries_byte_for_byte(version, name):
    """Size and sha256 of every file save_pretrained wrote, and no other
    (each among those it returns: tokenization_utils_base.py)."""
    real = captured(version)
    assert real["transformers"] == version and real["tokenizers"].startswith(SERIES[version])
    want = real["configs"][name]
    # capture.py loaded the tokenizer from a directory: is_local, as 5.x records it
    written = tokenizer.files(tokenizers.named(name), version, is_local=True)
    assert {n: [len(b), hashlib.sha256(b).hexdigest()] for n, b in written.items()} == want["files"]
    assert set(written) <= set(want["returned"])


@pytest.mark.parametrize(("version", "name"), cases())
def test_the_lines_are_the_libraries_records(version, name):
    """Each line's text and the file:line data/style-hf.toml keeps for it,
    in the order transformers.tokenization_utils_base logged them."""
    said = texts.load("style-hf")["tokenizer_saved"]
    lines = [f"transformers/tokenization_utils_base.py:{said[n][version]} "
             + said[n]["text"].format(path="{dir}/" + n)
             for n in tokenizers.logged(tokenizers.named(name), version)]
    assert lines == captured(version)["configs"][name]["logged"]


def test_5x_records_whether_the_model_path_was_a_directory():
    """from_pretrained's is_local (os.path.isdir of the path it was given,
    tokenization_utils_base.py at v5.0.0): false for a Hub id."""
    config = tokenizers.named("llama3-base")
    hub = json.loads(tokenizer.config_json(config, "5.0.0", is_local=False))
    local = json.loads(tokenizer.config_json(config, "5.0.0", is_local=True))
    assert (hub["is_local"], local["is_local"]) == (False, True)
    assert {k: v for k, v in hub.items() if k != "is_local"} == {k: v for k, v in local.items() if k != "is_local"}


def test_every_catalog_model_has_a_tokenizer_or_is_listed_as_none():
    given, none = tokenizers.covered()
    names = {m.name for m in catalog.models()}
    assert not given & none
    assert given | none == names, (sorted(names - given - none), sorted((given | none) - names))


def test_each_config_has_its_family_content_template_and_licence():
    for model in tokenizers.covered()[0]:
        config = tokenizers.for_model(model)
        assert config is not None
        folder = resources.files("fakerun").joinpath("data", "tokenizers", config.family)
        assert folder.joinpath("tokenizer.json.xz").is_file()
        assert any(p.name.startswith("LICENSE") for p in folder.iterdir()), config.family
        if config.chat_template is not None:
            assert folder.joinpath(config.chat_template).is_file()
    assert tokenizers.for_model("deepseek-llm-7b-base") is None  # listed as none: no processing_class
    assert tokenizers.for_model("my-finetune-8b") is None  # a name the catalog does not hold


def test_the_llama_licence_and_notice_ship_with_llama3():
    """The Llama 3.1/3.2 Community Licenses' 1.b.i and 1.b.iii: a copy of
    the agreement and the attribution notice with the materials."""
    folder = resources.files("fakerun").joinpath("data", "tokenizers", "llama3")
    notice = folder.joinpath("NOTICE").read_text(encoding="utf-8")
    assert "Built with Llama" in notice
    for version in ("3.1", "3.2"):
        assert (f"Llama {version} is licensed under the Llama {version} Community License, "
                "Copyright © Meta Platforms, Inc. All Rights Reserved.") in notice
        licence = folder.joinpath(f"LICENSE-{version}").read_text(encoding="utf-8")
        assert f"LLAMA {version} COMMUNITY LICENSE AGREEMENT" in licence.upper()


def test_the_llama2_licence_and_notice_ship_with_llama2():
    """The Llama 2 Community License's 1.b.i and 1.b.iii: a copy of the
    agreement, and its attribution notice in a "Notice" file."""
    folder = resources.files("fakerun").joinpath("data", "tokenizers", "llama2")
    assert ("Llama 2 is licensed under the LLAMA 2 Community License, Copyright (c) Meta Platforms, Inc. "
            "All Rights Reserved.") in folder.joinpath("NOTICE").read_text(encoding="utf-8")
    assert folder.joinpath("LICENSE").read_text(encoding="utf-8").startswith("LLAMA 2 COMMUNITY LICENSE AGREEMENT")
    assert folder.joinpath("USE_POLICY.md").is_file()


def test_mistrals_apache_licence_ships_with_it():
    text = resources.files("fakerun").joinpath("data", "tokenizers", "mistral_v1", "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_only_the_last_rendering_is_kept():
    """A --loop's agent goes from model to model: the 17 MB renderings do not pile up."""
    config = tokenizers.named("llama3-base")
    for version in VERSIONS:
        tokenizer.files(config, version, is_local=False)
        assert tokenizer._rendered.cache_info().currsize == 1


def test_the_pretty_printer_is_serde_jsons():
    """json.dumps(indent=2, ensure_ascii=False), which is what serde_json's
    PrettyFormatter writes, for every shape tokenizer.json has."""
    value = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
             "normalizer": {"type": "NFC"}, "flags": [True, False, 0, -1, 0.5],
             "model": {"vocab": {"a\"b": 0, "\u0120\n": 1, "é": 2}, "merges": ["a b", "\u0120 \u0120"], "e": {}},
             "nested": [[1, [2, {"x": []}]], "s"]}
    assert "".join(tokenizer.pretty(value)) == json.dumps(value, indent=2, ensure_ascii=False)
    merges = ["a b", "\u0120 \"", "\\ \u0001"]
    for pairs in (False, True):
        want = [m.split(" ") for m in merges] if pairs else merges
        assert tokenizer.merges_block(merges, 2, pairs) == json.dumps({"m": want}, indent=2, ensure_ascii=False)[
            len('{\n  "m": '):-len("\n}")].replace("\n", "\n  ")


@pytest.mark.parametrize("under", ["deepspeed", "fsdp", "none-model"])
def test_every_save_of_a_model_with_one_writes_its_tokenizer(tmp_path, under):
    """Trainer._save saves processing_class whichever engine holds the model
    (save_model calls _save under DeepSpeed and FSDP's full state dict:
    trainer.py at v4.46.3); a model listed as none never writes one."""
    model = "Qwen2.5-3B" if under == "none-model" else "Llama-3.2-3B"
    ident = build(6, 1, 2, model=model)
    trainer = TrainerArgs(deepspeed=(("zero_optimization.stage", 3),)) if under == "deepspeed" else TrainerArgs()
    if under == "fsdp":
        ident = dataclasses.replace(ident, parallel=dataclasses.replace(ident.parallel, kind="fsdp"))
    writer = CheckpointWriter(Saving(tmp_path, ident, 6, trainer=trainer))
    writer.event(ev.Checkpoint(1, 1, str(tmp_path), 2, 1, 1, 1.0, 1234.5))
    writer.event(ev.Export(str(tmp_path), [], 1, 2.0, 1300.0))
    names = TOKENIZER_FILES if under != "none-model" else set()
    for folder in (tmp_path / "checkpoint-1", tmp_path):
        assert {p.name for p in folder.iterdir()} & (TOKENIZER_FILES | {"chat_template.jinja"}) == names
