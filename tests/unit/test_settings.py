"""The effective settings: the user's flags and environment over the demo's
defaults, and torchrun's defaults for a drop-in launch."""

from __future__ import annotations

import pytest

from fakerun.cli import main as cli
from fakerun.cli.main import build_parser, to_config
from fakerun.launcher.build import worker_env


def config(*argv: str, environ: dict[str, str] | None = None):
    return to_config(build_parser().parse_args(list(argv)), environ=environ or {})


def test_the_demo_is_a_teed_job_with_nccl_debug_info_in_its_ranks_environment():
    c = config("--nproc", "2")
    assert (c.settings.tee, c.settings.env("NCCL_DEBUG")) == (3, "INFO")
    assert worker_env(c, 1, 1, {})["NCCL_DEBUG"] == "INFO"


def test_a_named_training_script_starts_from_torchruns_defaults():
    c = config("--nproc", "2", "train.py", "--lr", "1e-4")
    assert (c.settings.tee, c.settings.redirects, c.settings.env("NCCL_DEBUG")) == (0, 0, None)
    assert "NCCL_DEBUG" not in worker_env(c, 0, 0, {})


def test_fakerun_invoked_as_torchrun_is_a_drop_in(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cli.sys, "argv", ["/usr/local/bin/torchrun", "--nproc", "2"])
    assert config("--nproc", "2").settings.tee == 0


@pytest.mark.parametrize("script", [(), ("train.py",)])
def test_the_users_environment_and_flags_win(script: tuple[str, ...]):
    c = config("--tee", "1", "--redirects", "2", *script, environ={"NCCL_DEBUG": "WARN"})
    assert (c.settings.tee, c.settings.redirects, c.settings.env("NCCL_DEBUG")) == (1, 2, "WARN")
    assert "NCCL_DEBUG" not in worker_env(c, 0, 0, {})  # the user's own: the ranks inherit it
