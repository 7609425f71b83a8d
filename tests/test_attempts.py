"""Fencing a trial's attempts (crossing/attempts.py): a retry takes the next number, a superseded attempt writes no
checkpoint, a stale write that lands anyway stays in its own folder and is never read; on a local folder and on a real
S3-compatible server. (A worker cut off from a real cluster for longer than Ray's node timeout: test_partition.)"""

import os
import time
from pathlib import Path

import pytest
import torch
from ray.tune import Checkpoint

from fixray.crossing.attempts import ATTEMPT_KEY, Attempt, newest_attempt
from fixray.faults import Superseded, infrastructure_failure
from fixray.records.tune_bridge import MlflowTrialLogger
from fixray.storage import Storage
from fixray.trial.trainable import STATE_FILE, _checkpointing, _load_state


@pytest.fixture(params=["folder", "bucket"])
def storage(request, tmp_path):
    return str(tmp_path / "runs") if request.param == "folder" else request.getfixturevalue("s3_storage")


def test_each_run_of_a_trial_takes_the_next_number_and_trials_count_apart(storage):
    first = Attempt.claim(storage, "s", "943fe_00001")
    assert first.number == 1
    assert Attempt.claim(storage, "s", "943fe_00001").number == 2
    assert Attempt.claim(storage, "s", "943fe_00002").number == 1
    assert Attempt.claim(storage, "other", "943fe_00001").number == 1


def test_an_attempt_superseded_by_a_retry_stops_before_it_writes_a_checkpoint(storage):
    stale = Attempt.claim(storage, "s", "t")
    stale.check()  # alone: it goes on
    retry = Attempt.claim(storage, "s", "t")
    with pytest.raises(Superseded, match="attempt 1 stops, attempt 2 has taken over"):
        stale.check()
    retry.check()
    reported = []
    report = _checkpointing(lambda metrics, checkpoint=None: reported.append((metrics, checkpoint)), {}, stale)
    report({"val/acc": 0.5}, None)  # a result without a checkpoint goes to the driver, which no longer listens
    assert reported == [({"val/acc": 0.5, ATTEMPT_KEY: 1}, None)]
    with pytest.raises(Superseded):
        report({"val/acc": 0.6}, {"epoch": 3, "model": {}})
    assert len(reported) == 1  # nothing handed to Ray to persist
    # A trial process that stops so is retried, never recorded as the trial's own code error.
    assert infrastructure_failure(RuntimeError("wrapped")) is False
    try:
        stale.check()
    except Superseded as error:
        assert infrastructure_failure(error)


def _write_attempt(checkpoint: Path, number: int, epoch: int) -> None:
    folder = checkpoint / f"attempt_{number}"
    folder.mkdir(parents=True)
    torch.save({"epoch": epoch, "written_by": number}, folder / STATE_FILE)


def test_a_stale_write_that_lands_after_the_retry_s_is_never_read(tmp_path):
    checkpoint = tmp_path / "checkpoint_000005"
    _write_attempt(checkpoint, 2, 5)  # the retry's
    time.sleep(0.01)
    _write_attempt(checkpoint, 1, 5)  # the cut-off attempt's, late: newer on disk, never trusted
    (checkpoint / "attempt_10.tmp").write_text("")  # not an attempt's folder
    assert os.path.getmtime(checkpoint / "attempt_1") > os.path.getmtime(checkpoint / "attempt_2")
    assert newest_attempt(checkpoint) == checkpoint / "attempt_2"
    assert _load_state(Checkpoint(str(checkpoint)), None, str(tmp_path))["written_by"] == 2
    legacy = tmp_path / "checkpoint_000001"  # written before attempts were fenced: its files at the top
    legacy.mkdir()
    torch.save({"epoch": 1}, legacy / STATE_FILE)
    assert newest_attempt(legacy) == legacy and _load_state(Checkpoint(str(legacy)), None, "")["epoch"] == 1


def test_the_driver_logs_the_figures_of_the_attempt_that_reported_the_checkpoint(tmp_path):
    logger = MlflowTrialLogger("sqlite:///x.db", "fixray", "s", {}, tmp_path / "spool", str(tmp_path / "runs"))

    class Trial:
        checkpoint = Checkpoint(str(tmp_path / "runs" / "s" / "t" / "checkpoint_000004"))

    assert logger._figures_folder(Trial(), {ATTEMPT_KEY: 3}) == ["s", "t", "checkpoint_000004", "attempt_3", "figures"]
    assert logger._figures_folder(Trial(), {}) == ["s", "t", "checkpoint_000004", "figures"]  # before attempts


def test_an_unreadable_attempt_number_stops_the_attempt_rather_than_letting_it_write(tmp_path):
    attempt = Attempt(str(tmp_path / "runs"), "s", "t", 1)
    Storage(attempt.storage).write_text("not a number", "s", "fixray-attempts", "t")
    with pytest.raises(ValueError):
        attempt.check()
