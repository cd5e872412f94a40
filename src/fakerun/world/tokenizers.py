"""Which tokenizer a Trainer run of each catalog model saves, and which of
its files the pinned transformers names in a log line (data/tokenizers.toml).

A model with a config saves its tokenizer in every `Trainer._save` (each
checkpoint-N and the final save_model), after the model's files and before
training_args.bin: `processing_class.save_pretrained(output_dir)`
(`self.tokenizer` in 4.42.4 and 4.44.2; trainer.py at each pinned tag). A
model listed as none is a run whose Trainer has no processing_class: no
file, no line.

What save_pretrained logs (transformers.tokenization_utils_base, INFO):
4.x "tokenizer config file saved in <dir>/tokenizer_config.json" then
"Special tokens file saved in <dir>/special_tokens_map.json"; 5.x writes no
special_tokens_map.json and logs "chat template saved in
<dir>/chat_template.jinja" first when the tokenizer has a chat template
(tests/fixtures/tokenizers/<version>.json, captured from each version).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
TOKENIZER_JSON = "tokenizer.json"
CHAT_TEMPLATE = "chat_template.jinja"
SLOW_FILE = "tokenizer.model"  # a SentencePiece family's, as the Hub repo has it


class TokenizerTableError(RuntimeError):
    """data/tokenizers.toml names a config it does not define."""


@dataclass(frozen=True)
class Config:
    """A Hub repo's tokenizer: its family, tokenizer_config.json's values and
    special_tokens_map.json as the repo has them, its chat template's file."""

    name: str
    family: str  # its content: data/tokenizers/<family>/tokenizer.json.xz
    tokenizer_config: dict[str, Any]
    special_tokens_map: dict[str, Any]
    chat_template: str | None  # a file in the family's folder
    v5_class: str  # the class 5.x's AutoTokenizer loads the repo as (its tokenizer_class)
    slow_file: bool  # the family ships tokenizer.model, which 4.x's save_pretrained copies back


def v5(transformers: str) -> bool:
    return int(transformers.split(".")[0]) >= 5


@cache
def _table() -> dict[str, Any]:
    text = resources.files("fakerun").joinpath("data", "tokenizers.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@cache
def named(name: str) -> Config:
    """data/tokenizers.toml's config `name`."""
    table = _table()
    if name not in table["configs"]:
        raise TokenizerTableError(f"fakerun/data/tokenizers.toml: no config {name!r}")
    row = table["configs"][name]
    family = table["families"][row["family"]]
    config = _values(row["family"], row["tokenizer_config"])
    config.pop("added_tokens_decoder", None)  # save_pretrained makes it from the tokenizer's added tokens
    return Config(name, row["family"], config, _values(row["family"], row["special_tokens_map"]),
                  row.get("chat_template"), family["v5_class"], family.get("slow_file", False))


def _values(family: str, given: dict[str, Any] | str) -> dict[str, Any]:
    """A table's values, or the family's JSON file a string names (the Hub
    repo's own, where it holds a null, which TOML cannot)."""
    if isinstance(given, str):
        folder = resources.files("fakerun").joinpath("data", "tokenizers", family)
        loaded: dict[str, Any] = json.loads(folder.joinpath(given).read_text(encoding="utf-8"))
        return loaded
    return dict(given)


def for_model(model: str) -> Config | None:
    """The tokenizer the Trainer of catalog model `model` saves, or None
    (listed as none, or a model the catalog does not hold)."""
    name = _table()["models"].get(model)
    return named(name) if name is not None else None


def covered() -> tuple[set[str], set[str]]:
    """The models given a config and those listed as none."""
    table = _table()
    return set(table["models"]), set(table["none"]["models"])


def saved(config: Config, transformers: str) -> tuple[str, ...]:
    """The files save_pretrained writes, in its order: the config (and in 5.x
    the template before it), 4.x's special tokens map and tokenizer.model,
    tokenizer.json. The one place their names are decided: the writer
    (checkpoint/tokenizer.py) and the Export event (world/tensors.py) read it."""
    if v5(transformers):
        return (*((CHAT_TEMPLATE,) if config.chat_template else ()), TOKENIZER_CONFIG, TOKENIZER_JSON)
    return TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP, *((SLOW_FILE,) if config.slow_file else ()), TOKENIZER_JSON


def logged(config: Config, transformers: str) -> tuple[str, ...]:
    """The files save_pretrained names in its lines, in their order."""
    if v5(transformers):
        return (*((CHAT_TEMPLATE,) if config.chat_template else ()), TOKENIZER_CONFIG)
    return TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP
