"""A Slurm job's token must be a secret: another user who computes the
token the job id used to give (sha256("fakerun:<job>:<uid>")) cannot join
root's two-node job as node 1, and root's own node 1 (sharing the home
directory, as a cluster's nodes do) still joins.

The attacker runs fakerun's own node code (cli.main in a forked child
dropped to uid 65534), not a hand-made client: it is the reported attack,
and it keeps testing the token whatever the transport does with it.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401 - for the attacker: socket.gethostbyname needs it
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fakerun.cli.main
import fakerun.launcher.agent  # noqa: F401 - imported before the fork (see warm_up)
from fakerun.config.options import free_port
from tests.conftest import parse_events
from tests.other_user import OTHER_GID, OTHER_UID, needs_root, run_as_other_user

ATTACK_TIMEOUT_S = 60
JOB_TIMEOUT_S = 90
# The attacker's --rdzv-timeout: on an encrypted link it is turned away at
# every handshake (hundreds a second, each counted by node 0), for as long as
# it keeps trying; two seconds of that prove what five did.
ATTACKER_RDZV_S = 2


def slurm(node: int, job_id: str) -> dict[str, str]:
    return {"SLURM_JOB_ID": job_id, "SLURM_NNODES": "2", "SLURM_NODEID": str(node)}


def quiet_env(**extra: str) -> dict[str, str]:
    """Ours, minus anything that names the token or the cluster already."""
    kept = {k: v for k, v in os.environ.items()
            if k != "FAKERUN_TOKEN" and k != "FAKERUN_OPTS" and not k.startswith("SLURM_")}
    return kept | extra


@pytest.fixture
def nobody_home() -> Iterator[Path]:
    """A home (and temp dir) uid 65534 can write: pytest's tmp_path sits in a 0700 tree of root's."""
    home = Path(tempfile.mkdtemp(prefix="fakerun-nobody-"))
    os.chown(home, OTHER_UID, OTHER_GID)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def warm_up(argv: list[str], env: dict[str, str]) -> None:
    """As uid 65534 the child can import nothing more (the interpreter and
    the virtualenv may sit in root's 0700 home): what the attacker's fakerun
    loads on its way (catalogs, importlib's resource readers) is loaded here,
    by computing its configuration, as it will."""
    fakerun.cli.main.to_config(fakerun.cli.main.build_parser().parse_args(argv), env)


def join_as_node_1(argv: list[str], env: dict[str, str], out_fd: int) -> int:
    """The attacker's fakerun: node 1 of the job, output to `out_fd`."""
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process ends with the attack
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # chosen again from this environment
    return fakerun.cli.main.main(argv)


def kept_out(said: str) -> dict[str, Any]:
    """How the attacker's fakerun ended, which must be at node 0's door: refused
    at its hello (wrong-token), or never let in at all (an encrypted link
    whose keys come from the token never completes its handshake, so node 0
    never answers and the rendezvous times out; node 0 counts the refused
    handshakes). Anything else (a failure of its own) would prove nothing."""
    events = parse_events(said)
    assert not [e for e in events if e["event"] == "step"], said[-2000:]
    lost = [e for e in events if e["event"] == "node_lost"]
    if lost:
        assert lost[0]["reason"] == "refused" and "wrong-token" in lost[0]["detail"], lost[0]
        return lost[0]
    timeouts = [e for e in events if e["event"] == "rendezvous_timeout"]
    assert timeouts, said[-2000:]
    return {"reason": "never let in", **timeouts[0]}


@needs_root
def test_a_token_computed_from_the_job_id_cannot_join(runner, tmp_path: Path, nobody_home: Path):
    job_id = str(int.from_bytes(os.urandom(3), "big"))
    home = tmp_path / "home"  # root's, shared by root's nodes
    home.mkdir()
    common = ("--nproc", "1", "--master-port", str(free_port()), "--seed", "5", "--max-steps", "3",
              "--speed", "0", "--output", "jsonl", "--node-timeout", "10", "--rdzv-timeout", "60")
    node0 = runner.start(*common, env=quiet_env(HOME=str(home), **slurm(0, job_id)))
    node0.wait_for_event("run_started")

    computable = hashlib.sha256(f"fakerun:{job_id}:{os.getuid()}".encode()).hexdigest()[:32]
    attacker_env = quiet_env(HOME=str(nobody_home), TMPDIR=str(nobody_home),
                             FAKERUN_TOKEN=computable, **slurm(1, job_id))
    attacker_env.pop("XDG_RUNTIME_DIR", None)  # root's
    attacker_argv = [*common, "--rdzv-id", node0.marker, "--node-timeout", "5",
                     "--rdzv-timeout", str(ATTACKER_RDZV_S)]
    warm_up(attacker_argv, attacker_env)
    out = tmp_path / "attacker.out"
    with open(out, "wb") as sink:
        code = run_as_other_user(join_as_node_1, attacker_argv, attacker_env, sink.fileno(),
                                 timeout=ATTACK_TIMEOUT_S)
    said = out.read_text(errors="replace")
    assert code not in (0, None), said[-2000:]
    how = kept_out(said)

    node1 = runner.start(*common, "--rdzv-id", node0.marker, env=quiet_env(HOME=str(home), **slurm(1, job_id)))
    assert node0.wait(JOB_TIMEOUT_S) == 0, node0.stderr[-2000:]
    assert node1.wait(JOB_TIMEOUT_S) == 0, node1.stderr[-2000:]
    assert [e["step"] for e in node1.of("step")][-1] == 3
    # Node 0's own account: the job's ranks were root's two nodes' and no one else's.
    ours = [e["pid"] for e in node0.of("rank_started", node_rank=0) + node1.of("rank_started", node_rank=1)]
    assert sorted(node0.of("rendezvous")[0]["pids"]) == sorted(ours)
    finished: dict[str, Any] = node0.of("run_finished")[0]
    if how["reason"] == "refused":
        assert finished["rejected"].get("wrong-token", 0) >= 1, json.dumps(finished)
    else:  # it did reach node 0, and was turned away there, not lost on its way
        assert finished["rejected"].get("handshake", 0) >= 1, json.dumps(finished)
