"""Tokens that are secrets: the per-user secret behind Slurm jobs' tokens,
--token-file, the warning for --token, and no token on any command line."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from fakerun.cli import main as cli
from fakerun.cli.environment import OPTS_ENV
from fakerun.cli.main import build_parser, to_config
from fakerun.config import tokens
from fakerun.errors import UsageError
from fakerun.launcher import cluster
from fakerun.launcher.join import join_command, reachable

from ..conftest import FAKERUN
from ..other_user import OTHER_GID, OTHER_UID, needs_root

RACE_ROUNDS, RACERS = 30, 4
RACE_TIMEOUT_S = 20
CLI_TIMEOUT_S = 30


def secret_at(home: Path) -> Path:
    return tokens.secret_path({"HOME": str(home)})


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- the secret ----------------------------------------------------------


def test_the_secret_is_made_private_on_first_use_and_then_reused(tmp_path):
    path = secret_at(tmp_path)
    assert path == tmp_path / ".config" / "fakerun" / "secret"
    first = tokens.load_secret(path)
    assert len(first) == 2 * tokens.SECRET_BYTES and bytes.fromhex(first.decode())
    assert (mode(path), mode(path.parent)) == (0o600, 0o700)
    assert tokens.load_secret(path) == first
    assert os.listdir(path.parent) == ["secret"]  # no temp file left behind


def test_xdg_config_home_is_honoured_when_absolute(tmp_path):
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    assert tokens.secret_path(env) == tmp_path / "cfg" / "fakerun" / "secret"
    relative = env | {"XDG_CONFIG_HOME": "cfg"}  # the XDG spec: ignore a relative path
    assert tokens.secret_path(relative) == tmp_path / "home" / ".config" / "fakerun" / "secret"


def test_an_existing_secret_is_never_replaced(tmp_path):
    path = secret_at(tmp_path)
    path.parent.mkdir(parents=True, mode=0o700)
    path.write_text("a" * 64 + "\n")
    path.chmod(0o600)
    assert tokens.load_secret(path) == b"a" * 64
    tokens._create_secret(path)  # a node that lost the race to it
    assert path.read_text() == "a" * 64 + "\n"


@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_a_secret_others_can_read_or_write_is_refused(tmp_path, bits):
    path = secret_at(tmp_path)
    tokens.load_secret(path)
    path.chmod(bits)
    with pytest.raises(UsageError, match=f"chmod 600 {path}"):
        tokens.load_secret(path)


def test_a_symlinked_secret_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("b" * 64)
    target.chmod(0o600)
    path = secret_at(tmp_path)
    path.parent.mkdir(parents=True, mode=0o700)
    path.symlink_to(target)
    with pytest.raises(UsageError, match="symbolic link"):
        tokens.load_secret(path)


def test_a_fifo_in_place_of_the_secret_is_refused_without_blocking(tmp_path):
    path = secret_at(tmp_path)
    path.parent.mkdir(parents=True, mode=0o700)
    os.mkfifo(path, 0o600)
    with pytest.raises(UsageError, match="not a regular file"):
        tokens.load_secret(path)


def test_a_short_or_huge_secret_is_refused(tmp_path):
    path = secret_at(tmp_path)
    tokens.load_secret(path)
    path.write_text("short\n")
    with pytest.raises(UsageError, match="shorter than"):
        tokens.load_secret(path)
    path.write_text("c" * (tokens.MAX_FILE_BYTES + 1))
    with pytest.raises(UsageError, match="more than the"):
        tokens.load_secret(path)


def test_a_directory_others_can_write_is_refused(tmp_path):
    path = secret_at(tmp_path)
    tokens.load_secret(path)
    path.parent.chmod(0o777)
    with pytest.raises(UsageError, match=f"chmod 700 {path.parent}"):
        tokens.load_secret(path)


@needs_root
def test_a_secret_owned_by_another_user_is_refused(tmp_path):
    path = secret_at(tmp_path)
    tokens.load_secret(path)
    os.chown(path, OTHER_UID, OTHER_GID)
    with pytest.raises(UsageError, match=f"owned by uid {OTHER_UID}"):
        tokens.load_secret(path)


def _race(path: Path) -> list[str]:
    """RACERS processes create the secret at once (released together by
    closing a pipe they all block on); what each one ended up with."""
    release_r, release_w = os.pipe()
    children = []
    for _ in range(RACERS):
        result_r, result_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # a node; it must never return into pytest
            try:
                signal.alarm(RACE_TIMEOUT_S)  # a stuck racer dies: the parent reads no answer
                os.close(release_w)
                os.read(release_r, 1)  # EOF once the parent lets go
                try:
                    answer = tokens.load_secret(path).decode()
                except UsageError as exc:
                    answer = f"error: {exc}"
                os.write(result_w, json.dumps(answer).encode())
            finally:
                os._exit(0)
        os.close(result_w)
        children.append((pid, result_r))
    os.close(release_r)
    os.close(release_w)
    answers = []
    for pid, result_r in children:
        with os.fdopen(result_r, "rb") as handle:
            answers.append(json.loads(handle.read() or b'"no answer"'))
        os.waitpid(pid, 0)
    return answers


def test_nodes_creating_the_secret_at_once_all_end_with_the_same_one(tmp_path):
    for round_ in range(RACE_ROUNDS):
        path = secret_at(tmp_path / f"home{round_}")
        answers = _race(path)
        assert len(set(answers)) == 1 and not answers[0].startswith("error"), (round_, answers)
        assert path.read_text().strip() == answers[0]
        assert os.listdir(path.parent) == ["secret"], round_


# -- the token derived from it -------------------------------------------


def test_the_token_depends_on_the_job_and_the_secret():
    a, b = b"1" * 64, b"2" * 64
    token = tokens.derive_token(a, "4242")
    assert token == tokens.derive_token(a, "4242") and len(token) == 32
    assert token != tokens.derive_token(a, "4243")
    assert token != tokens.derive_token(b, "4242")
    computable = hashlib.sha256(f"fakerun:4242:{os.getuid()}".encode()).hexdigest()[:32]
    assert token != computable


SLURM = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "2", "SLURM_NODEID": "1"}


def config(argv: list[str], env: dict[str, str]):
    return to_config(build_parser().parse_args(["--nproc", "2", *argv]), env)


def test_slurm_nodes_sharing_a_home_derive_one_token_that_others_cannot(tmp_path):
    home = {"HOME": str(tmp_path / "me")}
    node0, node1 = (config([], SLURM | home | {"SLURM_NODEID": n}) for n in ("0", "1"))
    assert node0.token == node1.token == tokens.derive_token(
        tokens.load_secret(secret_at(tmp_path / "me")), "4242")
    assert (node0.token_job, node0.token_file) == ("4242", None)
    elsewhere = config([], SLURM | {"HOME": str(tmp_path / "someone")})
    assert elsewhere.token != node1.token


def test_the_token_given_wins_over_the_derived_one(tmp_path):
    home = tmp_path / "me"
    env = SLURM | {"HOME": str(home), "FAKERUN_TOKEN": "from-env"}
    assert (config([], env).token, config([], env).token_job) == ("from-env", None)
    token_file = tmp_path / "token"
    token_file.write_text("from-file\nignored\n")
    token_file.chmod(0o600)
    c = config(["--token-file", str(token_file)], env)
    assert (c.token, c.token_file, c.token_job) == ("from-file", token_file, None)
    assert config(["--token", "flag"], env).token == "flag"
    assert not secret_at(home).exists()  # a token given: no secret is made


def test_one_node_or_no_slurm_derives_nothing(tmp_path):
    env = {"HOME": str(tmp_path)}
    assert config([], env | SLURM | {"SLURM_NNODES": "1", "SLURM_NODEID": "0"}).token == ""
    assert config(["--nnodes", "2"], env).token == ""
    assert not secret_at(tmp_path).exists()


def fakerun(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A subprocess: were the error missed, a job would start, not in pytest."""
    clean = {k: v for k, v in os.environ.items() if k not in ("FAKERUN_TOKEN", OPTS_ENV)}
    return subprocess.run([*FAKERUN, *argv, "--node-timeout", "1"], env=clean | (env or {}),
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)


def test_a_bad_secret_is_one_error_line_and_exit_2(tmp_path):
    tokens.load_secret(secret_at(tmp_path))
    secret_at(tmp_path).chmod(0o644)
    done = fakerun("--nproc", "1", env=SLURM | {"HOME": str(tmp_path)})
    assert done.returncode == 2
    assert done.stderr.startswith("fakerun: error: the fakerun secret ") and done.stderr.count("\n") == 1
    assert "chmod 600" in done.stderr


# -- --token-file and --token ----------------------------------------------


def private_file(path: Path, text: str, bits: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(bits)
    return path


def test_token_file_reads_the_first_line_and_follows_a_symlink(tmp_path):
    target = private_file(tmp_path / "real", "  s3cret \nsecond line\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert tokens.read_token_file(link) == "s3cret"


def _token_file_cases(tmp_path: Path) -> list[tuple[Path, str]]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    return [
        (tmp_path / "missing", "no such file"),
        (private_file(tmp_path / "empty", ""), "first line is empty"),
        (private_file(tmp_path / "blank", "\nsecret\n"), "first line is empty"),
        (tmp_path, "not a regular file"),
        (fifo, "not a regular file"),
        (private_file(tmp_path / "shared", "s3cret\n", 0o640), "chmod 600"),
        (private_file(tmp_path / "world", "s3cret\n", 0o604), "chmod 600"),
        (private_file(tmp_path / "writable", "s3cret\n", 0o622), "chmod 600"),
        (private_file(tmp_path / "huge", "x" * (tokens.MAX_FILE_BYTES + 1)), "more than the"),
    ]


def test_a_bad_token_file_is_refused_saying_why(tmp_path):
    for path, why in _token_file_cases(tmp_path):
        with pytest.raises(UsageError, match=f"^--token-file {path}") as refused:
            tokens.read_token_file(path)
        assert why in str(refused.value)


@pytest.mark.parametrize("bits", [0o600, 0o644])
def test_a_bad_token_file_is_one_error_line_and_exit_2(tmp_path, bits):
    path = private_file(tmp_path / "token", "" if bits == 0o600 else "s3cret\n", bits)
    done = fakerun("--token-file", str(path), "--nnodes", "2", "--node-rank", "1", "--nproc", "1")
    assert done.returncode == 2
    assert done.stderr.startswith(f"fakerun: error: --token-file {path}") and done.stderr.count("\n") == 1


@needs_root
def test_a_token_file_owned_by_another_user_is_refused(tmp_path):
    path = private_file(tmp_path / "theirs", "s3cret\n")
    os.chown(path, OTHER_UID, OTHER_GID)
    with pytest.raises(UsageError, match=f"owned by uid {OTHER_UID}"):
        tokens.read_token_file(path)


def test_token_and_token_file_exclude_each_other(tmp_path, capsys):
    path = private_file(tmp_path / "token", "s3cret\n")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--token", "x", "--token-file", str(path), "--list-scenarios"])
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err


WARNING = ("fakerun: warning: --token is visible to other users (ps); "
           "use --token-file PATH or $FAKERUN_TOKEN\n")


def test_token_on_the_command_line_warns_once_on_stderr(monkeypatch, capsys):
    monkeypatch.delenv(OPTS_ENV, raising=False)
    assert cli.main(["--token", "s3cret", "--list-scenarios"]) == 0
    out, err = capsys.readouterr()
    assert err == WARNING and "healthy" in out
    assert cli.main(["--token=s3cret", "--list-scenarios"]) == 0
    assert capsys.readouterr().err == WARNING


def test_no_warning_for_the_token_out_of_sight(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(OPTS_ENV, "--token s3cret")  # the environment: not in ps
    assert cli.main(["--list-scenarios"]) == 0
    monkeypatch.delenv(OPTS_ENV)
    path = private_file(tmp_path / "token", "s3cret\n")
    assert cli.main(["--token-file", str(path), "--list-scenarios"]) == 0
    assert cli.main(["--list-scenarios", "train.py", "--token", "the-script's-own"]) == 0
    assert capsys.readouterr().err == ""


# -- no token on a command line ----------------------------------------------


@pytest.mark.parametrize("argv,kept", [
    (["--nodes", "2", "--token", "s3cret", "--seed", "1"], ["--seed", "1"]),
    (["--token=s3cret", "--nodes=2", "--no-theatre"], []),
    (["--token-file", "/run/tok", "--nproc", "2", "train.py", "--token", "script's"],
     ["--nproc", "2", "train.py", "--token", "script's"]),
    (["--token-file=/run/tok", "--speed", "0"], ["--speed", "0"]),
    # The cluster names node 0's endpoint itself (127.0.0.1 and its port).
    (["--rdzv-endpoint", "head:29400", "--rdzv_endpoint=h:1", "--seed", "1"], ["--seed", "1"]),
])
def test_the_agents_argv_loses_the_token_options(argv, kept):
    script_args = ("--token", "script's") if "train.py" in argv else ()
    assert cluster._without_local_flags(argv, script_args) == kept


def test_local_agents_get_the_token_in_their_environment_only(tmp_path):
    path = private_file(tmp_path / "token", "s3cret-from-file\n")
    argv = ["--nodes", "2", "--token-file", str(path), "--nproc", "2"]
    ns = build_parser().parse_args(argv)
    ns.nnodes = ns.nodes
    c = to_config(ns, {})
    agents = cluster.plan(argv, c, 2, os.getpid())
    for agent in agents:
        assert agent.env["FAKERUN_TOKEN"] == "s3cret-from-file"
        assert agent.env["FAKERUN_OPTS"] == ""  # already in argv; a --token there would win
        assert not any("s3cret" in a or str(path) in a or a.startswith("--token") for a in agent.argv)


# -- node 0's join hint ----------------------------------------------------------


def hint(argv: list[str], env: dict[str, str], token: str = "made-by-node-0") -> str:
    c = config(["--nnodes", "2", "--node-rank", "0", "--master-port", "29999", *argv], env)
    return join_command(c, 1, c.token or token)


def test_the_join_hint_prints_only_a_token_node_0_made(tmp_path):
    assert hint([], {}).startswith("FAKERUN_TOKEN=made-by-node-0 fakerun ")
    given = hint([], {"FAKERUN_TOKEN": "users-own"})
    assert given.startswith('FAKERUN_TOKEN="$FAKERUN_TOKEN" fakerun ') and "users-own" not in given
    assert "flag-given" not in hint(["--token", "flag-given"], {})


def test_the_join_hint_names_the_token_file(tmp_path, monkeypatch):
    private_file(tmp_path / "token", "s3cret\n")
    monkeypatch.chdir(tmp_path)
    text = hint(["--token-file", "token"], {})
    assert "s3cret" not in text and "FAKERUN_TOKEN" not in text
    assert f"--token-file {tmp_path / 'token'} " in text  # absolute: the other node's cwd differs


def test_the_join_hint_under_slurm_lets_the_node_derive_the_token(tmp_path):
    env = SLURM | {"SLURM_NODEID": "0", "HOME": str(tmp_path)}
    text = hint([], env)
    node0 = config(["--nnodes", "2", "--node-rank", "0"], env)
    assert text.startswith("SLURM_JOB_ID=4242 fakerun ") and node0.token not in text
    # What the hint runs derives node 0's token (same home, as a cluster's nodes share).
    words = shlex.split(text)
    joined = config(words[2:words.index("train.py")], {"SLURM_JOB_ID": "4242", "HOME": str(tmp_path)})
    assert joined.token == node0.token and joined.topology.node_rank == 1


def test_the_join_hint_names_this_host_when_node_0_listens_on_every_interface():
    """--master-addr 0.0.0.0 binds every interface; the other node must be
    told a name it can reach, not the wildcard (its own host, there)."""
    text = hint(["--master-addr", "0.0.0.0"], {})
    assert f"--master-addr {reachable('0.0.0.0')} " in text and "0.0.0.0" not in text
    assert reachable("0.0.0.0", "gpu-node-7") == "gpu-node-7" and reachable("10.0.0.1", "x") == "10.0.0.1"
