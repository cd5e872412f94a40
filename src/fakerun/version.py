"""The version of fakerun, in one place: pyproject.toml reads it from here
(setuptools' dynamic `attr`), and `fakerun --version`, `fakerun.__version__`
and the installed metadata report it; CHANGELOG.md's newest release agrees
(tests/unit/test_version.py). Not read back from importlib.metadata: an
editable install's metadata keeps the version it was installed with, and a
checkout run with PYTHONPATH has none."""

__version__ = "0.1.0"
