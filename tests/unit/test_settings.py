"""The effective settings: the user's flags and environment over the demo's
defaults, and torchrun's defaults for a drop-in launch."""

from __future__ import annotations

import logging

import pytest

from fakerun.cli import main as cli
from fakerun.cli.main import build_parser, to_config
from fakerun.errors import UsageError
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


def test_a_drop_in_prints_rank_lines_bare_and_writes_no_log_file_lines():
    s = config("--nproc", "2", "train.py").settings
    assert s.console("stdout", 1) == (True, False) and s.console("stderr", 0) == (True, False)
    assert not s.in_files("stdout") and not s.in_files("stderr")


def test_tee_3_with_role_rank_prefixes_as_torchtitan_launches():
    c = config("--nproc", "2", "--tee", "3", "--role", "rank", "train.py")
    assert c.settings.console("stderr", 1) == (True, True)
    assert [c.settings.prefix(r, r) for r in (0, 1)] == ["[rank0]:", "[rank1]:"]
    assert worker_env(c, 1, 1, {})["ROLE_NAME"] == "rank"


def test_the_role_has_torchruns_default():
    assert worker_env(config("train.py"), 0, 0, {})["ROLE_NAME"] == "default"
    assert config("--role", "trainer").settings.prefix(5, 1) == "[trainer1]:"


def test_the_template_from_the_environment_fills_role_rank_and_local_rank_and_keeps_unknowns():
    # LocalElasticAgent._start_workers: Template(...).safe_substitute(role_name, rank, local_rank)
    env = {"TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": "[${role_name}|${rank}|${local_rank}|${hostname}]:"}
    s = config("--tee", "3", "train.py", environ=env).settings
    assert s.prefix(9, 1) == "[default|9|1|${hostname}]:"  # as the 2.13.0 wheel prints it


def test_the_template_flag_wins_over_the_environment_and_empty_is_unset():
    env = {"TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": "env${rank}:"}
    assert config("--log-line-prefix-template", "flag${rank}:", environ=env).settings.prefix(3, 3) == "flag3:"
    assert config("--log_line_prefix_template", "", environ=env).settings.prefix(3, 3) == "env3:"
    empty = {"TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": ""}
    assert config("--role", "r", environ=empty).settings.prefix(3, 1) == "[r1]:"


def test_the_demos_tee_leaves_the_users_redirects_alone():
    s = config("--redirects", "3").settings
    assert (s.tee, s.redirects) == (0, 3)
    assert s.console("stdout", 0) == (False, False) and s.in_files("stdout")
    s = config("--redirects", "1").settings
    assert s.console("stdout", 0) == (False, False) and s.console("stderr", 0) == (True, True)


def test_tee_wins_for_a_stream_set_in_both_and_both_go_to_the_files():
    s = config("--tee", "3", "--redirects", "3", "train.py").settings
    assert s.console("stdout", 0) == (True, True) and s.in_files("stderr")


def test_the_local_ranks_filter_hides_the_others_from_the_console_only():
    s = config("--tee", "3", "--local-ranks-filter", "0", "train.py").settings
    assert s.console("stdout", 1) == (False, False) and s.console("stdout", 0) == (True, True)
    assert s.in_files("stdout")


@pytest.mark.parametrize(("value", "level"), [(None, "WARNING"), ("INFO", "INFO"), ("ERROR", "ERROR"),
                                              ("NOTSET", "WARNING"), ("DEBUG", "DEBUG")])
def test_loglevel_sets_the_level_of_torchruns_get_logger_loggers(value: str | None, level: str):
    environ = {} if value is None else {"LOGLEVEL": value}
    assert config("train.py", environ=environ).settings.loglevel == getattr(logging, level)


@pytest.mark.parametrize("value", ["info", "10", "LOUD"])
def test_a_loglevel_logging_does_not_know_is_a_usage_error(value: str):
    with pytest.raises(UsageError, match=f"LOGLEVEL: Unknown level: '{value}'"):
        config("train.py", environ={"LOGLEVEL": value})


def test_loglevel_error_hides_warnings_only_of_loggers_that_read_it():
    s = config("train.py", environ={"LOGLEVEL": "ERROR"}).settings
    assert not s.logs(logging.WARNING, True) and s.logs(logging.WARNING, False)
    assert s.logs(logging.ERROR, True)


def test_log_dir_dev_null_leaves_every_stream_of_every_rank_bare_on_the_console():
    # DefaultLogsSpecs.reify (torch 2.3.1-2.13.0): under os.devnull only the tee targets become
    # /dev/null; stdouts/stderrs stay the console, and the local-ranks filter is not applied.
    c = config("--tee", "3", "--redirects", "3", "--local-ranks-filter", "0", "--log-dir", "/dev/null")
    assert c.log_dir is None
    assert c.settings.console("stdout", 1) == (True, False) and not c.settings.in_files("stderr")


@pytest.mark.parametrize(("argv", "width"), [
    ((), 120 - len("[default1]:")),  # the demo tees
    (("train.py",), 120),  # a drop-in: bare lines have the whole line
    (("--tee", "3", "--role", "rank", "train.py"), 120 - len("[rank1]:")),
])
def test_the_script_text_fits_the_line_beside_the_prefix_the_settings_give(argv, width):
    import io

    from fakerun.render.renderer import build_renderer

    c = config("--nproc", "2", "--output", "plain", *argv)
    renderer = build_renderer(c, io.StringIO(), io.StringIO(), {"COLUMNS": "120"})
    assert renderer.formatter.script.width == width
