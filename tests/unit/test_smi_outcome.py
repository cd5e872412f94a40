"""`fakerun smi --wait`, the theatre's dashboard, told by the theatre that
the job it waits for ended before it found it (system/outcome.py)."""

from __future__ import annotations

import io

from fakerun.smi.command import main
from fakerun.system import outcome


def test_a_job_that_ended_unseen_is_shown_with_its_exit_code(tmp_path):
    where = tmp_path / "outcome"
    outcome.write(where, 1)
    out = io.StringIO()
    environ = {"TMPDIR": str(tmp_path), outcome.OUTCOME_ENV: str(where)}
    assert main(["--job", "job-7", "--wait"], stdout=out, environ=environ, stderr=io.StringIO(),
                stdin=io.StringIO()) == 0
    assert out.getvalue().splitlines()[-1] == "fakerun smi: job job-7 failed (exit 1) before its GPUs could be read"
    assert "waiting for" not in out.getvalue()


def test_without_an_outcome_there_is_none():
    assert outcome.read({}) is None
    assert outcome.read({outcome.OUTCOME_ENV: "/nonexistent/outcome"}) is None
