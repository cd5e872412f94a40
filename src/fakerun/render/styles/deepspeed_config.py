"""The DeepSpeed config as the engine prints it: the script's dict
(world/ds_config.py) in DeepSpeed's JSON, and DeepSpeedConfig.print's dump of
what the engine made of it (per version, from data/style-deepspeed.toml)."""

from __future__ import annotations

import json
import string
from typing import Any

from fakerun.render.styles.deepspeed_log import closest, style_data
from fakerun.world.ds_config import BETAS, CLIP, PARAM_GROUPS
from fakerun.world.identity import Identity
from fakerun.world.loss_scale import HYSTERESIS, SCALE_POWER, SCALE_WINDOW

MOMENTA = [BETAS] * PARAM_GROUPS  # engine.get_mom(): each group's betas


def ds_json(o: Any, level: int = 0) -> str:
    """DeepSpeed's ScientificNotationEncoder.iterencode (config_utils.py):
    numbers over 1e3 in %e, items joined by ", " (so lines end in a space)."""
    if isinstance(o, bool):
        return "true" if o else "false"
    if isinstance(o, (int, float)):
        return f"{o:e}" if o > 1e3 else f"{o}"
    if isinstance(o, dict):
        inner, outer = " " * 4 * (level + 1), " " * 4 * level
        items = [f'\n{inner}"{k}": {ds_json(v, level + 1)}' for k, v in o.items()]
        return "{" + ", ".join(items) + f"\n{outer}" + "}"
    if isinstance(o, (list, tuple)):
        return f"[{', '.join(ds_json(v) for v in o)}]"
    return json.dumps(o)


def config_line(name: str, value: str) -> str:
    """DeepSpeedConfig.print: names of 29 characters or more get no dots."""
    return "  {} {} {}".format(name, "." * (29 - len(name)), value)


def dump_values(ident: Identity, comms_addr: str) -> dict[str, Any]:
    """The run's figures the dump's templates are filled with."""
    h, p = ident.hyper, ident.parallel
    return {"comms_addr": comms_addr, "init_scale": 2**SCALE_POWER,
            "scale_power": SCALE_POWER, "scale_window": SCALE_WINDOW, "hysteresis": HYSTERESIS,
            "grad_accum": h.grad_accum, "clip": CLIP, "steps_per_print": h.log_every,
            "train_batch_size": h.global_batch, "micro_batch": h.micro_batch, "dp": p.dp,
            "stage": p.zero, "gather16": p.zero >= 3}


def config_dump(version: str, values: dict[str, Any]) -> list[tuple[str, str]]:
    """(attribute, printed value) as DeepSpeedConfig.print sorts them."""
    dumps = style_data()["dump"]
    table = _merged(dumps, closest(version, dumps))
    rows = {k: string.Template(v).substitute(values) for k, v in table.items() if isinstance(v, str)}
    rows.update({k: ds_json(json.loads(v)) for k, v in table["json"].items()})
    return sorted(rows.items())


def _merged(dumps: dict[str, Any], key: str) -> dict[str, Any]:
    own = dumps[key]
    merged = _merged(dumps, own["base"]) if "base" in own else {"json": {}}
    merged.update({k: v for k, v in own.items() if k not in ("base", "drop", "json")})
    merged["json"] = {**merged["json"], **own.get("json", {})}
    for name in own.get("drop", []):
        merged.pop(name, None)
    return merged
