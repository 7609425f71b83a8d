"""Which checkpoints a restore needs, read from experiment state that Ray's own serialiser wrote, and pruning
everything older, on a local folder and on a real S3-compatible server. (A driver SIGKILLed mid-sweep and
resumed: test_faults.)"""

import json
import pickle

import pytest
from ray.train import Checkpoint, CheckpointConfig
from ray.train._internal.checkpoint_manager import _CheckpointManager
from ray.train._internal.session import _TrainingResult
from ray.tune.trainable.metadata import _TrainingRunMetadata

from fixray.storage import Storage
from fixray.sweep.checkpoints import prune, repair, restorable


def _trial_state(folder: str, checkpoints: list[str]) -> list[str]:
    """A trial as Tune's experiment state holds it: its JSON state and its runtime metadata (checkpoints)."""
    metadata = _TrainingRunMetadata()
    metadata.checkpoint_manager = _CheckpointManager(CheckpointConfig(num_to_keep=None))
    for path in checkpoints:
        metadata.checkpoint_manager.register_checkpoint(_TrainingResult(Checkpoint(path), {"val/acc": 0.5}))
    return [json.dumps({"relative_logdir": folder, "trial_id": folder}), metadata.get_json_state()]


def _state(trials: dict[str, list[int]]) -> str:
    return json.dumps(
        {
            "trial_data": [
                _trial_state(t, [f"/runs/s/{t}/checkpoint_{i:06d}" for i in done]) for t, done in trials.items()
            ]
        }
    )


def test_the_newest_registered_checkpoint_of_each_trial_is_the_one_a_restore_needs():
    assert restorable(_state({"a": [0, 1, 2, 11], "b": [4], "c": []})) == {"a": 11, "b": 4}


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return Storage(str(tmp_path / "runs"))
    return Storage(request.getfixturevalue("s3_storage"))


def test_pruning_keeps_what_the_newest_saved_state_names_and_everything_newer(storage):
    for trial, count in {"a": 6, "b": 3, "new": 2}.items():
        for i in range(count):
            storage.write_text("weights", "s", trial, f"checkpoint_{i:06d}", "state.pt")
    storage.write_text("{}", "s", "a", "result.json")
    # Tune restores from the newest state by name; an older one naming later checkpoints must not count.
    storage.write_text(_state({"a": [5], "b": [2]}), "s", "experiment_state-2026-11-28_10-00-00.json")
    storage.write_text(_state({"a": [0, 1, 3], "b": [0]}), "s", "experiment_state-2026-11-29_10-00-00.json")

    assert prune(storage, "s") == 3

    def left(trial: str) -> list[str]:
        return sorted(info.base_name for info in storage.listing("s", trial))

    assert left("a") == ["checkpoint_000003", "checkpoint_000004", "checkpoint_000005", "result.json"]
    assert left("b") == ["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"]
    assert left("new") == ["checkpoint_000000", "checkpoint_000001"]  # a trial the state does not know yet
    assert prune(storage, "s") == 0


def test_pruning_a_sweep_with_no_saved_state_yet_deletes_nothing(tmp_path):
    storage = Storage(str(tmp_path))
    storage.write_text("weights", "s", "a", "checkpoint_000000", "state.pt")
    storage.write_text('{"trial_da', "s", "experiment_state-x.json")  # being written
    assert prune(storage, "s") == 0 and prune(storage, "none") == 0
    assert storage.exists("s", "a", "checkpoint_000000")


@pytest.mark.parametrize("cut", ["experiment_state-2.json", "basic-variant-state-2.json"])
def test_a_truncated_state_file_is_repaired_from_the_copies_pruning_kept(tmp_path, cut):
    storage = Storage(str(tmp_path))
    for i in range(3):
        storage.write_text("weights", "s", "a", f"checkpoint_{i:06d}", "state.pt")
    whole, searcher = _state({"a": [0, 1]}), pickle.dumps({"grid": "state"})
    storage.write_text(whole, "s", "experiment_state-1.json")
    storage.write_bytes(searcher, "s", "basic-variant-state-1.json")  # a pickle, as Tune's
    assert prune(storage, "s") == 1 and not repair(storage, "s")  # whole state files need no repair
    # The next save (a later driver's) is cut short by a full disk: one of its files is truncated.
    storage.write_text(_state({"a": [0, 1, 2]}), "s", "experiment_state-2.json")
    storage.write_bytes(searcher, "s", "basic-variant-state-2.json")
    storage.write_bytes(storage.read_bytes("s", cut)[:10], "s", cut)
    assert prune(storage, "s") == 0  # nothing deleted on the word of a save that does not parse
    assert repair(storage, "s")
    names = sorted(info.base_name for info in storage.listing("s") if info.base_name.endswith(".json"))
    assert names == ["basic-variant-state-1.json", "experiment_state-1.json"]  # one whole snapshot, restored
    assert storage.read_text("s", "experiment_state-1.json") == whole
    assert all(storage.exists("s", "a", f"checkpoint_{i:06d}") for i in restorable(whole).values())
