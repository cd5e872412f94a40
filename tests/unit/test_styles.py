"""--style parsing and the transformers renderer's exact strings."""

from __future__ import annotations

import pytest

from fakerun.render.styles.tqdm import meter
from fakerun.world import styles


def test_tqdm_meter_matches_the_reference_lines():
    # tqdm.format_meter's defaults with a 10-char bar (tqdm/tqdm v4.69.1 tqdm/std.py; the same
    # strings from tqdm 4.70.1's): Bar.__format__ computes divmod(int(0.4499 * 10 * 8), 8) = (4, 3),
    # so 548/1218 draws ▍, not ▌.
    assert meter(548, 1218, 5530, 6761, 10.09) == " 45%|████▍     | 548/1218 [1:32:10<1:52:41, 10.09s/it]"
    assert meter(2, 1000, 3, 1746, 1.75) == "  0%|          | 2/1000 [00:03<29:06,  1.75s/it]"
    assert meter(1218, 1218, 12345, 0, 10.14) == "100%|██████████| 1218/1218 [3:25:45<00:00, 10.14s/it]"
    assert meter(5, 10, 1, 1, 0.2).endswith(",  5.00it/s]")


@pytest.mark.parametrize("text,transformers", [("hf", "4.46.3"), ("hf@4.46", "4.46.3"), ("hf@4.44.2", "4.44.2"),
                                               ("hf@5", "5.0.0")])
def test_a_version_pins_one_software_set(text, transformers):
    (chosen,) = styles.parse(text).versions()
    assert chosen.transformers == transformers


@pytest.mark.parametrize("text", ["colossalai", "deepspeed@0.3", "hf@6", "hf@4.4", "torchrun@9", ""])
def test_unknown_styles_are_one_line_errors(text):
    with pytest.raises(styles.StyleError) as err:
        styles.parse(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text,column,version", [
    ("megatron", "megatron", "0.10.0"), ("deepspeed", "deepspeed", "0.14.4"), ("lightning", "lightning", "2.5.0"),
    ("deepspeed@0.18", "deepspeed", "0.18.2"), ("lightning@2.4", "lightning", "2.4.0")])
def test_every_framework_pins_a_default_set(text, column, version):
    (chosen,) = styles.parse(text).versions()
    assert getattr(chosen, column) == version


def test_torchrun_draws_its_software_set_from_the_seed():
    assert not styles.parse("torchrun").pinned
    assert {v.transformers for v in styles.parse("torchrun").versions()} == {"4.46.3", "4.44.2", "4.42.4"}
