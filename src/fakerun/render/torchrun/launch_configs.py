"""LOGLEVEL=INFO's "Starting elastic_operator with launch configs" block
(torch/distributed/launcher/api.py launch_agent, every pinned torch; the
rows each version has are its data/torchrun.toml text): the launch line's
values (Settings.launch_configs, config.launch.Launch.configs) with the job's
own filled in."""

from __future__ import annotations

from fakerun import events as ev


def values(rows: tuple[tuple[str, str], ...], e: ev.RunStarted, log_root: str) -> dict[str, str]:
    """The block's values for the run `e` starts; `log_root` is the
    temporary log dir DefaultLogsSpecs made when no --log-dir was given."""
    out = dict(rows)
    out.update(min_nodes=str(e.nnodes), nproc_per_node=str(e.nproc_per_node), run_id=e.run_id)
    if out["rdzv_backend"] == "static" and not out["rdzv_endpoint"]:  # run.py get_rdzv_endpoint
        host = f"[{e.master_addr}]" if ":" in e.master_addr else e.master_addr
        out["rdzv_endpoint"] = f"{host}:{e.master_port}"
    out["log_dir"] = out["log_dir"] or log_root
    return out
