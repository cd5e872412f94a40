"""The files `tokenizer.save_pretrained(output_dir)` writes in a Trainer's
`_save` (world/tokenizers.py: which model saves which tokenizer), byte for
byte as the pinned transformers and its tokenizers library write them
(tests/fixtures/tokenizers/<version>.json holds the real ones' sizes and
sha256, captured by tests/fixtures/tokenizers/capture.py):

- tokenizer.json: `Tokenizer.save(path, pretty=True)`, serde_json's pretty
  printer (2-space indent, "key": value, UTF-8 unescaped) over the family's
  content in the library's field order. tokenizers 0.19 (transformers
  4.42.4, 4.44.2) writes BPE merges as "a b" strings, 0.20 (4.46.3) and 0.22
  (5.0.0) as ["a", "b"] pairs (transformers' setup.py at each tag pins the
  series).
- tokenizer_config.json: `json.dumps(config, indent=2, sort_keys=True,
  ensure_ascii=False) + "\\n"` (tokenization_utils_base.py save_pretrained).
  4.x: the repo's values with added_tokens_decoder (each added token's
  content and flags, by id) and the chat template as a key. 5.x: no
  added_tokens_decoder, add_bos_token or add_eos_token, the repo's
  additional_special_tokens as extra_special_tokens, `backend: "tokenizers"`,
  `is_local` (was the model path a directory), the class it loaded as, the
  template moved out to chat_template.jinja (written as the string is)
  (tokenization_utils_base.py at v5.0.0: from_pretrained's and
  save_pretrained's handling of init_kwargs).
- special_tokens_map.json (4.x only): the repo's, sorted, indented.
- tokenizer.model (4.x only, SentencePiece families): the repo's file,
  copied back byte for byte (LlamaTokenizerFast.save_vocabulary, as
  can_save_slow_tokenizer holds when the repo has it).

Rendering Llama 3's 17 MB tokenizer.json takes about a second, so each
(family, version) is rendered once per process, and only the last one is
kept: a --loop changes models without growing what the process holds.
"""

from __future__ import annotations

import json
import lzma
from collections.abc import Callable, Iterator
from functools import lru_cache
from importlib import resources
from json import encoder
from typing import Any

from fakerun.world.tokenizers import (
    CHAT_TEMPLATE,
    SLOW_FILE,
    SPECIAL_TOKENS_MAP,
    TOKENIZER_CONFIG,
    TOKENIZER_JSON,
    Config,
    saved,
    v5,
)

FLAGS = ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
ENCODE = json.JSONEncoder(ensure_ascii=False).encode  # a scalar as serde_json writes it (UTF-8, unescaped)
STRING = encoder.encode_basestring  # the C one: a string, likewise
STEP = "  "  # serde_json's PrettyFormatter indent
# 5.x: keys save_pretrained pops, and those from_pretrained renames in init_kwargs
# (tokenization_utils_base.py at v5.0.0, PreTrainedTokenizerBase.save_pretrained and _from_pretrained).
V5_DROPPED = ("add_bos_token", "add_eos_token")
V5_RENAMED = {"additional_special_tokens": "extra_special_tokens"}
# 4.x: the arguments a repo's class passes on to init_kwargs whatever the repo's config says,
# which save_pretrained then writes (LlamaTokenizerFast.__init__, models/llama/tokenization_llama_fast.py,
# the same at v4.42.4 and v4.46.3: its defaults, legacy's None made True); the repo's values win.
V4_INIT = {"LlamaTokenizer": {"add_bos_token": True, "add_eos_token": False, "add_prefix_space": None,
                              "clean_up_tokenization_spaces": False, "legacy": True,
                              "use_default_system_prompt": False}}
# Both: a special token as save_pretrained writes it, the string (`tokenizer_config.update(
# self.special_tokens_map)`), where the repo may hold an AddedToken object ("__type": "AddedToken").
SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def _folder(family: str) -> Any:
    return resources.files("fakerun").joinpath("data", "tokenizers", family)


def _content(family: str) -> dict[str, Any]:
    """The family's tokenizer.json content (merges as "a b" strings)."""
    packed = _folder(family).joinpath("tokenizer.json.xz").read_bytes()
    loaded: dict[str, Any] = json.loads(lzma.decompress(packed))
    return loaded


def _slow_file(family: str) -> bytes:
    """The family's tokenizer.model, as its Hub repos hold it."""
    return lzma.decompress(_folder(family).joinpath(f"{SLOW_FILE}.xz").read_bytes())


def _pairs(transformers: str) -> bool:
    """tokenizers 0.20 on (pinned from transformers 4.46) writes a merge as a
    pair; 0.19 (4.42.x-4.45.x) as one "a b" string."""
    major, minor = (int(part) for part in transformers.split(".")[:2])
    return (major, minor) >= (4, 46)


class Raw(str):
    """Text pretty() writes as it is (a block rendered beforehand)."""


def pretty(value: Any, depth: int = 0) -> Iterator[str]:
    """serde_json's to_string_pretty: what json.dumps(indent=2,
    ensure_ascii=False) writes, without its pure-Python encoder's cost over a
    vocabulary of 10^5 entries and as many merges (_flat's)."""
    flat = _flat(value, depth)
    if flat is not None:
        yield flat
    elif isinstance(value, dict):
        inner = "\n" + STEP * (depth + 1)
        yield "{"
        for k, (key, item) in enumerate(value.items()):
            yield ("," if k else "") + inner + ENCODE(key) + ": "
            yield from pretty(item, depth + 1)
        yield "\n" + STEP * depth + "}"
    else:
        inner = "\n" + STEP * (depth + 1)
        yield "["
        for k, item in enumerate(value):
            yield ("," if k else "") + inner
            yield from pretty(item, depth + 1)
        yield "\n" + STEP * depth + "]"


def _flat(value: Any, depth: int) -> str | None:
    """`value` in one piece where it is a scalar, an empty container, a
    vocabulary (str -> int), a list of strings, or Raw; None for anything else."""
    if isinstance(value, Raw):
        return value
    if not isinstance(value, (dict, list)):
        return ENCODE(value)
    if not value:
        return "{}" if isinstance(value, dict) else "[]"
    inner, close = "\n" + STEP * (depth + 1), "\n" + STEP * depth
    if isinstance(value, dict):
        if not all(type(v) is int for v in value.values()):
            return None
        return "{" + inner + ("," + inner).join(f"{STRING(k)}: {v}" for k, v in value.items()) + close + "}"
    if all(type(v) is str for v in value):
        return "[" + inner + ("," + inner).join(map(STRING, value)) + close + "]"
    return None


def merges_block(merges: list[str], depth: int, pairs: bool) -> Raw:
    """BPE merges ("a b": no token holds a space, and no escape writes one)
    as one string each (tokenizers 0.19) or as a pair, each part on its own
    line (0.20 on), rendered in two replaces rather than 10^5 pairs."""
    inner, close = "\n" + STEP * (depth + 1), "\n" + STEP * depth
    text = "\0".join(map(STRING, merges))  # a NUL only between merges: escaped inside one
    if pairs:
        deeper = "\n" + STEP * (depth + 2)
        text = text.replace(" ", '",' + deeper + '"').replace("\0", inner + "]," + inner + "[" + deeper)
        return Raw("[" + inner + "[" + deeper + text + inner + "]" + close + "]")
    return Raw("[" + inner + text.replace("\0", "," + inner) + close + "]")


@lru_cache(maxsize=1)
def _rendered(family: str, pairs: bool) -> tuple[bytes, dict[str, dict[str, Any]]]:
    """tokenizer.json of `family` as the tokenizers series writes it, and
    its added_tokens_decoder: each added token's content and flags by id."""
    content = _content(family)
    model = content["model"]
    if model.get("merges"):
        model["merges"] = merges_block(model["merges"], 2, pairs)  # content > model > merges
    added = {str(t["id"]): {k: t[k] for k in FLAGS} for t in content["added_tokens"]}
    return "".join(pretty(content)).encode(), added


def chat_template(config: Config) -> str | None:
    if config.chat_template is None:
        return None
    return _folder(config.family).joinpath(config.chat_template).read_text(encoding="utf-8")


def config_json(config: Config, transformers: str, is_local: bool) -> bytes:
    """tokenizer_config.json as save_pretrained of `transformers` writes it."""
    body = dict(config.tokenizer_config)
    body |= {k: body[k]["content"] for k in SPECIAL if isinstance(body.get(k), dict)}
    template = chat_template(config)
    if v5(transformers):
        for key in V5_DROPPED:
            body.pop(key, None)
        for old, new in V5_RENAMED.items():
            if old in body:
                body[new] = body.pop(old)
        body |= {"backend": "tokenizers", "is_local": is_local, "tokenizer_class": config.v5_class}
    else:
        body = V4_INIT.get(body["tokenizer_class"], {}) | body
        body["added_tokens_decoder"] = _rendered(config.family, _pairs(transformers))[1]
        if template is not None:
            body["chat_template"] = template
    return _sorted_json(body)


def _sorted_json(body: dict[str, Any]) -> bytes:
    return (json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def files(config: Config, transformers: str, is_local: bool) -> dict[str, bytes]:
    """What save_pretrained writes, in its order (world/tokenizers.saved names them)."""
    pairs = _pairs(transformers)
    content: dict[str, Callable[[], bytes]] = {
        CHAT_TEMPLATE: lambda: (chat_template(config) or "").encode(),
        TOKENIZER_CONFIG: lambda: config_json(config, transformers, is_local),
        SPECIAL_TOKENS_MAP: lambda: _sorted_json(config.special_tokens_map),
        SLOW_FILE: lambda: _slow_file(config.family),
        TOKENIZER_JSON: lambda: _rendered(config.family, pairs)[0]}
    return {name: content[name]() for name in saved(config, transformers)}
