"""mypy --strict on a test suite's use of fakerun (tests/typing/): the typed
API lets a correct file pass and finds each mistake of a wrong one, on its
line. Before py.typed and the typed run(), mypy saw `Any` (or, through the
package's lazy names, `object`) and said nothing useful."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy comes with the test extra: pip install -e '.[test]'")

TYPING = Path(__file__).resolve().parents[1] / "typing"
ERROR = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+): error: ", re.MULTILINE)


def test_mypy_passes_a_correct_file_and_finds_each_mistake_of_a_wrong_one(tmp_path: Path) -> None:
    good, bad = TYPING / "user.py", TYPING / "user_bad.py"
    config = tmp_path / "mypy.ini"  # this one alone, whatever the checkout or the home directory holds
    config.write_text("[mypy]\nstrict = True\n")
    out = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir",
                          str(tmp_path / "cache"), str(good), str(bad)],
                         capture_output=True, text=True, timeout=180, cwd=tmp_path)
    found = {(Path(m["path"]).name, int(m["line"])) for m in ERROR.finditer(out.stdout)}
    marked = {(bad.name, n) for n, line in enumerate(bad.read_text().splitlines(), 1) if "  # error: " in line}
    assert len(marked) == 8
    assert found == marked, out.stdout + out.stderr
    assert out.returncode == 1
