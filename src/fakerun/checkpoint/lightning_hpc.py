"""Lightning's SLURM auto-requeue checkpoints: `hpc_ckpt_<N>.ckpt` in the
Trainer's default_root_dir, as Lightning-AI/pytorch-lightning writes and
finds them at 2.4.0 to 2.6.5
(src/lightning/pytorch/trainer/connectors/checkpoint_connector.py):

- hpc_save_path: N is one more than the greatest number in the names of the
  root's files that contain `ckpt_` (__max_ckpt_version_in_folder's default
  name_key: every non-digit after the last `ckpt_` dropped), else 1.
- _hpc_resume_path: the file of the greatest number among names containing
  `hpc_ckpt_`; _parse_ckpt_path resumes from it when fit is given no
  ckpt_path and SLURMEnvironment.detect() holds (RunConfig.requeue_job).

The file is a .ckpt like any other the Trainer saves (checkpoint/lightning.py)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from fakerun.checkpoint.reader import Resume

HPC_KEY = "hpc_ckpt_"


def _max_version(root: Path, name_key: str) -> int | None:
    numbers = []
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            if name_key in entry.name:
                digits = re.sub("[^0-9]", "", entry.name.split(name_key)[-1])
                # int("") raises in Lightning: a name with no number after the key is no file of its
                numbers += [int(digits)] if digits.isascii() and digits else []
    return max(numbers) if numbers else None


def save_path(root: Path) -> Path:
    """Where the next auto-requeue save goes."""
    return root / f"{HPC_KEY}{(_max_version(root, 'ckpt_') or 0) + 1}.ckpt"


def resume_path(root: Path) -> Path | None:
    """The auto-requeue checkpoint a restarted job resumes from, if any."""
    found = _max_version(root, HPC_KEY) if root.is_dir() else None
    return root / f"{HPC_KEY}{found}.ckpt" if found is not None else None


def find(root: Path) -> Resume | None:
    """The latest hpc_ckpt_N.ckpt under `root`, read as any Lightning .ckpt."""
    path = resume_path(root)
    if path is None:
        return None
    from fakerun.checkpoint import layouts  # Lightning's reader: only when there is one to read
    return layouts.find("lightning", path)
