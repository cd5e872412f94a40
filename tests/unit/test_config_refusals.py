"""Values of the run configuration no job could use (issue 16): paths that
are no place to write, names too long or not in text, scenario files that
are no files, and what every rank sends in its hello. Each is one line (a
usage error, exit 2), never a traceback, a hang or a write elsewhere."""

from __future__ import annotations

import os

import pytest

from fakerun.cli.main import build_parser, to_config
from fakerun.errors import UsageError


def parse(*argv: str):
    return build_parser().parse_args(["--nproc", "1", *argv])


@pytest.mark.parametrize("argv", [("--output-dir", ""), ("--metrics-file", ""), ("--token-file", ""),
                                  ("--resume", ""), ("--output-dir", "\udcff"), ("--metrics-file", "a/\udcfe"),
                                  ("--tensorboard", "")])
def test_an_empty_path_or_one_not_in_text_is_a_usage_error(argv, capsys):
    """'' was Path('.'), the working directory; bytes that are no UTF-8 were a
    UnicodeEncodeError once written into a log, JSON or a message."""
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("fakerun: error: argument")
    assert "expected a path, got ''" in err or "the name is not valid UTF-8" in err


@pytest.mark.parametrize("value", ["", "/dev/null"])
def test_an_empty_log_dir_or_dev_null_is_torchrun_s_none(value):
    assert to_config(parse("--log-dir", value), environ={}).log_dir is None  # /dev/null: no files (settings)


def test_a_script_s_output_dir_not_in_text_is_refused():
    with pytest.raises(UsageError, match=r"^--output-dir \\xff: the name is not valid UTF-8$"):
        to_config(parse("--speed", "0", "train.py", "--output_dir", "\udcff"), environ={})


LONG = "x" * 300  # past any file system's 255 bytes a name


@pytest.mark.parametrize("argv,says", [
    (("--log-dir", LONG), "--log-dir xxxxxxxx"),  # mkdir in the launcher: a traceback
    (("--log-dir", f"missing/{LONG}"), "(at most 255 bytes a name)"),  # the parent is still to make
    (("--output-dir", "abcdefgh/" * 400), "to leave room for the 512 fakerun makes under it"),
    (("--metrics-file", LONG), "File name too long"),  # is_dir raised
    (("--metrics-file", f"sub/{LONG}"), "sub is not a directory"),
    (("--resume", LONG), "--resume xxxxxxxx"),  # find's is_dir raised
])
def test_a_name_too_long_is_one_line(tmp_path, monkeypatch, argv, says):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as caught:
        to_config(parse("--speed", "0", *argv), environ={})
    message = str(caught.value)
    assert says in message and "\n" not in message and len(message) < 300, message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make,says", [
    (lambda p: os.mkfifo(p), "not a regular file (a FIFO)"),  # read_text hung for ever
    (lambda p: p.symlink_to("/dev/null"), "not a regular file (a character device)"),  # ran as an empty one
    (lambda p: p.symlink_to(p), "Too many levels of symbolic links"),  # 'unknown scenario'
    (lambda p: p.write_bytes(b"fault = '\\xff'\n" + b"\xff"), "codec can't decode"),
    (lambda p: p.write_text("#" * 70000), "70000 bytes, more than the 65536 expected"),
])
def test_a_scenario_file_that_is_none_is_one_line_at_once(tmp_path, make, says):
    import threading

    from fakerun.config import scenario as scenarios

    path = tmp_path / "odd.toml"
    make(path)
    said: list[str] = []

    def resolve() -> None:
        try:
            scenarios.resolve(str(path))
        except scenarios.ScenarioError as exc:
            said.append(str(exc))

    reader = threading.Thread(target=resolve, daemon=True)  # a hang fails here, not the whole run
    reader.start()
    reader.join(5)
    assert not reader.is_alive(), "resolve() blocked"
    assert len(said) == 1 and says in said[0] and "\n" not in said[0], said


def test_a_scenario_name_too_long_is_one_line():
    from fakerun.config import scenario as scenarios

    with pytest.raises(scenarios.ScenarioError, match=r"\.\.\.x+: File name too long$"):
        scenarios.resolve("x" * 300)


@pytest.mark.parametrize("argv,environ,says", [
    (("--rdzv-id", "../../escaped"), {}, "a run id names a directory"),  # made ../../escaped_* beside --log-dir
    (("--rdzv-id", ".."), {}, "a run id names a directory"),
    ((), {"SLURM_JOB_ID": "7" * 70000}, "70000 bytes, more than 246"),  # the hello undecodable: a 900 s wait
    (("--rdzv-id", "\udcff"), {}, "not valid UTF-8"),  # every rank failed to send its hello
    (("--master-addr", "h" * 254), {}, "254 bytes, more than 253"),
    ((), {"SLURM_JOB_NODELIST": "n" * 70000 + "[1-2]"}, "70001 bytes, more than 253"),
    (("--token", "\udcff"), {}, "the token (--token, $FAKERUN_TOKEN): not valid UTF-8"),  # a traceback
    ((), {"FAKERUN_TOKEN": "s3cr3t" * 1000}, "the token (--token, $FAKERUN_TOKEN): 6000 bytes, more than 4096"),
])
def test_what_every_rank_sends_in_its_hello_fits_a_name_and_the_wire(argv, environ, says):
    with pytest.raises(UsageError) as caught:
        to_config(parse("--speed", "0", *argv), environ=environ)
    assert says in str(caught.value) and "s3cr3t" not in str(caught.value)
    to_config(parse("--speed", "0", "--rdzv-id", "r" * 246, "--master-addr", "h" * 253), environ={})


@pytest.mark.parametrize("argv,environ", [
    (("--nnodes", "2", "--rdzv-id", "\udcff"), {}),  # the default seed hashed it: a traceback
    ((), {"SLURM_JOB_ID": "\udcff", "SLURM_NNODES": "2"}),  # the token derived from it: a traceback
])
def test_a_job_id_not_in_text_is_refused_before_it_is_hashed(argv, environ):
    with pytest.raises(UsageError, match="not valid UTF-8"):
        to_config(parse("--speed", "0", *argv), environ=environ)


@pytest.mark.parametrize(("body", "recurs"), [
    ('fault = "exit"', True), ('fault = "nan"', True), ('fault = "oom"', True),  # the script's own
    ('fault = "crash"', False), ('fault = "segv"', False), ('fault = "node-down"', False),
    ('fault = "crash"\nrecurs = true', True), ('fault = "exit"\nrecurs = false', False),
])
def test_a_scenarios_fault_recurs_after_a_restart_if_the_script_makes_it(tmp_path, body, recurs):
    from fakerun.config import scenario as scenarios

    path = tmp_path / "s.toml"
    path.write_text(f'description = "x"\n{body}\n')
    assert scenarios.resolve(str(path)).recurs is recurs


def test_recurs_must_be_a_boolean(tmp_path):
    from fakerun.config import scenario as scenarios

    path = tmp_path / "s.toml"
    path.write_text('fault = "exit"\nrecurs = 1\n')
    with pytest.raises(scenarios.ScenarioError, match=r"recurs must be true or false$"):
        scenarios.resolve(str(path))
