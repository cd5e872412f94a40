"""`fakerun smi`: a running job's GPUs, as nvidia-smi shows them.

The launcher's SmiStateSink (sink.py) keeps a Snapshot (snapshot.py) of the
cluster's GPUs in a JSON file, smi.json in the job's private run dir;
`fakerun smi` (command.py) finds it and prints it in nvidia-smi's table
(smi/table.py), once or refreshing. The command is imported where it runs
(fakerun.smi.command): the launcher, which imports this package for its
sink, loads none of nvidia-smi's renderings."""

from fakerun.smi.sink import SmiStateSink
from fakerun.smi.snapshot import SNAPSHOT_NAME, GpuRow, Snapshot, SnapshotError

__all__ = ["SNAPSHOT_NAME", "GpuRow", "SmiStateSink", "Snapshot", "SnapshotError"]
