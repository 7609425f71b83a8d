"""Which trial checkpoints a killed driver still needs, and deleting the rest.

Tune keeps every checkpoint here (`num_to_keep=None`): with a bound, it deletes the older checkpoint as
soon as a newer one is registered, before its saved experiment state points at the newer one, so a driver
killed in between resumes from a checkpoint that is gone. Instead the driver deletes only checkpoints
older than the one the newest saved experiment state on storage names: whatever instant a kill lands,
the state a restore reads names a checkpoint that exists.

Tune does not write its state atomically, so a full disk can leave it truncated, and a restore that cannot
read it starts every trial anew. Before deleting anything the driver keeps a copy of Tune's state files
(each written whole or not at all); a resume that finds one of them unreadable puts the copies back, and
every checkpoint they name is still there.
"""

from __future__ import annotations

import collections
import fnmatch
import json
import logging
import math
import pickletools
import re
import time
from collections.abc import Iterator

from ray.tune import Callback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from fixray.crossing.contract import TRIAL_KEY
from fixray.records.restorable import Restorable
from fixray.storage import Storage
from fixray.sweep.plan import TRIAL_INDEX
from fixray.sweep.state import GROWN_PREFIX

STATE_PATTERN = "experiment_state-*.json"  # Tune's saved experiment state; a restore reads the newest by name
# Beside it, what a restore reads too: the searcher's state (pickles, whatever their names end in).
SEARCHER_PATTERNS = ("basic-variant-state-*.json", "searcher-state-*.pkl")
KEPT_DIR = "fixray-restorable-state"  # copies of the newest state files that parsed: no checkpoint they name is deleted
CHECKPOINT_DIR = re.compile(r"checkpoint_(\d{6})")  # Tune's checkpoint folder in a trial's folder
PRUNE_EVERY_S = 10.0  # seconds between prunes while a sweep runs (one listing of the storage each)

logger = logging.getLogger(__name__)


def _trials(state_text: str) -> Iterator[tuple[dict, dict, int | None]]:
    """Each trial of a saved experiment state: its JSON, its metadata, and the index of the newest checkpoint a
    restore would use (None: none). The checkpoint manager is a cloudpickled blob in hex; its checkpoint folder names
    are read from the bytes as text, never unpickled."""
    for trial_json, metadata_json in json.loads(state_text)["trial_data"]:
        trial, metadata = json.loads(trial_json), json.loads(metadata_json)
        manager = metadata.get("checkpoint_manager")
        blob = manager.get("value") if isinstance(manager, dict) else None
        indices = [int(i) for i in CHECKPOINT_DIR.findall(bytes.fromhex(blob).decode("latin-1"))] if blob else []
        yield trial, metadata, max(indices, default=None)


def restorable(state_text: str) -> dict[str, int]:
    """Trial folder -> index of the newest checkpoint a restore from this experiment state would use."""
    return {
        trial["relative_logdir"]: index
        for trial, _, index in _trials(state_text)
        if trial.get("relative_logdir") and index is not None
    }


def last_checkpoints(storage: Storage, experiment: str) -> dict[str, str]:
    """Trial identity -> the checkpoint (a path on the storage's filesystem) a restore of this Tune experiment would
    resume it from: Tune's, or the one a DDP trial's trainer reported last. A later Tune experiment of a sweep that grew
    resumes its trials from here."""
    repair(storage, experiment)
    newest = _newest(storage, experiment).get(STATE_PATTERN)
    if newest is None:
        return {}
    found = {}
    for trial, metadata, index in _trials(storage.read_text(experiment, newest)):
        identity = (trial.get("config") or {}).get(TRIAL_KEY, {}).get("identity")
        last = metadata.get("last_result") if isinstance(metadata.get("last_result"), dict) else {}
        if identity is None:
            continue
        if index is not None:
            found[identity] = storage.path(experiment, trial["relative_logdir"], f"checkpoint_{index:06d}")
        elif last.get(CHECKPOINT_PATH_KEY):
            found[identity] = last[CHECKPOINT_PATH_KEY]
    return found


def drawn_points(storage: Storage, experiment: str) -> dict[str, dict]:
    """Trial identity -> what a searcher drew for it (its suggestion's values, as Tune's saved state holds its config),
    for each trial of this Tune experiment: a grown sweep's new searcher starts from them."""
    newest = _newest(storage, experiment).get(STATE_PATTERN)
    if newest is None:
        return {}
    found = {}
    for trial, _, _ in _trials(storage.read_text(experiment, newest)):
        config = trial.get("config") or {}
        identity = config.get(TRIAL_KEY, {}).get("identity")
        if identity is not None:
            found[identity] = {k: v for k, v in config.items() if k not in (TRIAL_KEY, TRIAL_INDEX)}
    return found


def tune_experiments(storage: Storage, sweep: str, before: str | None = None) -> list[str]:
    """The sweep's Tune experiments, oldest first: its own folder, then grown-2, grown-3, ... below it (only those
    before the one named `before`, when given)."""
    numbers = sorted(
        int(name.removeprefix(GROWN_PREFIX))
        for name in (info.base_name for info in storage.listing(sweep))
        if name.startswith(GROWN_PREFIX) and name.removeprefix(GROWN_PREFIX).isdigit()
    )
    last = int(before.removeprefix(GROWN_PREFIX)) if before else math.inf
    return [sweep] + [f"{sweep}/{GROWN_PREFIX}{n}" for n in numbers if n < last]


def _newest(storage: Storage, experiment: str) -> dict[str, str]:
    """Tune's newest state file of each kind (by name, as a restore picks them), from one listing."""
    names = [info.base_name for info in storage.listing(experiment)]
    newest = {
        pattern: max(fnmatch.filter(names, pattern), default=None) for pattern in (STATE_PATTERN, *SEARCHER_PATTERNS)
    }
    return {pattern: name for pattern, name in newest.items() if name is not None}


def _readable(storage: Storage, experiment: str, name: str) -> bool:
    """Whether a state file is whole: Tune's JSON parses; a searcher's pickle has every opcode up to its STOP
    (walked by pickletools, never unpickled)."""
    data = storage.read_bytes(experiment, name)
    try:
        if fnmatch.fnmatch(name, STATE_PATTERN):
            json.loads(data)
        else:
            collections.deque(pickletools.genops(data), maxlen=0)
        return True
    except ValueError:
        return False


def prune(storage: Storage, experiment: str) -> int:
    """Deletes trial checkpoints older than those the newest saved state names; returns how many."""
    files = _newest(storage, experiment)
    newest = files.pop(STATE_PATTERN, None)
    if newest is None:
        return 0
    try:
        text = storage.read_text(experiment, newest)
        kept = restorable(text)
    except (OSError, ValueError, KeyError):
        return 0  # being rewritten right now: the next prune reads it
    searchers = list(files.values())
    if not all(_readable(storage, experiment, name) for name in searchers):
        return 0
    # A copy of what a restore reads, before anything it names is deleted (OSError, a full disk: nothing is)
    for name in searchers:
        storage.write_whole(storage.read_bytes(experiment, name), experiment, KEPT_DIR, name)
    storage.write_whole(text.encode(), experiment, KEPT_DIR, newest)
    deleted = 0
    for folder, newest_index in kept.items():
        for info in storage.listing(experiment, folder):
            found = CHECKPOINT_DIR.fullmatch(info.base_name)
            if found and int(found.group(1)) < newest_index:
                storage.delete_dir(info.path)
                deleted += 1
    return deleted


def repair(storage: Storage, experiment: str) -> bool:
    """Puts the kept copies back where a newest state file is unreadable (truncated); True if it did."""
    kept = {info.base_name for info in storage.listing(experiment, KEPT_DIR) if not info.base_name.startswith(".")}
    newest = list(_newest(storage, experiment).values())
    if not kept or all(_readable(storage, experiment, name) for name in newest):
        return False
    for name in newest:  # from a later save than the copies, which are restored together as one snapshot
        if name not in kept:
            storage.fs.delete_file(storage.path(experiment, name))
    for name in kept:
        storage.write_whole(storage.read_bytes(experiment, KEPT_DIR, name), experiment, name)
    return True


class CheckpointPruner(Restorable, Callback):
    """Tune callback (runs in the driver): prunes every PRUNE_EVERY_S seconds and once at the end."""

    def __init__(self, location: str, experiment: str) -> None:
        self.location, self.experiment = location, experiment
        self._last = 0.0  # when it last pruned, on this process's clock

    def _prune(self) -> None:
        self._last = time.monotonic()
        try:
            prune(Storage(self.location), self.experiment)
        except OSError as error:  # storage away or full: nothing is lost by keeping checkpoints a while longer
            logger.warning("pruning old checkpoints failed (%s); retried in %g s", error, PRUNE_EVERY_S)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self._last >= PRUNE_EVERY_S:
            self._prune()

    def on_experiment_end(self, trials: list, **info) -> None:
        self._prune()
