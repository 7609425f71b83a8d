"""Fencing a trial's attempts: a node cut off from the cluster keeps training after Ray retried its trials elsewhere,
and its late writes must never replace or mix with the retry's.

Each run of a trial's function is an attempt: it takes the next number of its trial (a small file beside the sweep's
Tune experiments, by Tune's trial id: a run name may be shared by two trials a searcher drew), checks before every
checkpoint it writes that no later attempt has taken over (else it stops, writing nothing), and writes its files into
a folder of its own inside each checkpoint (`attempt_3/state.pt`). A check and a write are two steps, so a stale write
can still land between them (a storage that hangs while the node is cut off, then completes): it lands in its own
attempt's folder, and readers take the newest attempt's folder of a checkpoint, which is always the one that reported
it (a later attempt restores from that checkpoint and writes only later ones; an earlier one is a stale writer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fixray.faults import Superseded
from fixray.storage import Storage

ATTEMPT_KEY = "attempt"  # in each result: the number of the attempt that reported it (not a metric)
ATTEMPTS_DIR = "fixray-attempts"  # in a sweep's storage folder: per trial (Tune's id), its newest attempt's number
ATTEMPT_DIR = re.compile(r"attempt_(\d+)")  # one attempt's files inside a checkpoint


def attempt_folder(number: int) -> str:
    """The folder of one attempt's files inside a checkpoint."""
    return f"attempt_{number}"


def newest_attempt(checkpoint: Path) -> Path:
    """The folder a checkpoint's reader trusts: its newest attempt's (a checkpoint written before attempts were
    fenced holds its files at the top)."""
    numbers = [int(m[1]) for p in checkpoint.iterdir() if (m := ATTEMPT_DIR.fullmatch(p.name)) and p.is_dir()]
    return checkpoint / attempt_folder(max(numbers)) if numbers else checkpoint


@dataclass(frozen=True)
class Attempt:
    """One run of a trial's function: its number, and where its trial's newest number is kept."""

    storage: str  # the sweep's storage_path
    sweep: str
    trial: str  # Tune's trial id
    number: int

    @classmethod
    def claim(cls, storage: str, sweep: str, trial: str) -> Attempt:
        """Takes the next number: Tune runs one live attempt of a trial at a time, and a stale one never claims."""
        where = Storage(storage)
        number = _read(where, sweep, trial) + 1
        where.write_whole(str(number).encode(), sweep, ATTEMPTS_DIR, trial)
        return cls(storage, sweep, trial, number)

    def check(self) -> None:
        """Raises Superseded when a later attempt of the trial has started: this one writes nothing more."""
        newest = _read(Storage(self.storage), self.sweep, self.trial)
        if newest != self.number:
            raise Superseded(
                f"trial {self.trial}: attempt {self.number} stops, attempt {newest} has taken over (this node was cut "
                f"off from the cluster and its trial retried elsewhere)"
            )


def _read(where: Storage, sweep: str, trial: str) -> int:
    if not where.exists(sweep, ATTEMPTS_DIR, trial):
        return 0
    return int(where.read_text(sweep, ATTEMPTS_DIR, trial))
