"""Faults injected for real: SIGKILL to a trial's process, a bug in a trial's code, a second driver, another
tracking store, two stores created at once (SIGTERM to the driver: test_sweep_e2e's interrupted sweep). Each
ends with nothing lost, asserted on the MLflow store: one parent, one child per trial, every epoch once, the
right status tag."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from e2e import ENV, FIXRAY, epochs_logged, run, steps, store, tune_results

from fixray.cli import main
from fixray.errors import EXIT_BUSY
from fixray.records.runs import STATUS_TAG, TRIAL_TAG
from fixray.storage import Storage
from fixray.sweep.checkpoints import KEPT_DIR, restorable
from fixray.sweep.lock import DriverLock
from fixray.sweep.spec.reading import load_sweep
from fixray.sweep.state import RECORD_FILE, write_record

FAULTS = Path(__file__).parent / "fault_injection"

TWO_TRIALS = """\
name: {name}
dataset: digits
model: small_cnn
epochs: {epochs}
batch_size: 64
seeds: [0]
resources: {{max_retries: 2, checkpoint_every: 1}}
search:
  max_concurrent_trials: 1
  space:
    fixed: [true, false]
"""


def _epochs_logged(cwd: Path) -> int:
    """Epochs in the sweep's default SQLite store so far."""
    return epochs_logged(f"sqlite:///{cwd / 'mlflow.db'}")


def _every_epoch_once(tmp_path: Path, epochs: int, trials: int = 2) -> list:
    client, parents, children = store(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == trials and len({c.data.tags[TRIAL_TAG] for c in children}) == trials
    for child in children:
        assert child.data.tags[STATUS_TAG] == "finished"
        assert steps(client, child, "train/loss") == list(range(1, epochs + 1)), "an epoch lost or logged twice"
    return children


@pytest.mark.slow
def test_a_killed_trial_process_is_retried_from_its_last_checkpoint(tmp_path):
    sweep_text = TWO_TRIALS.format(name="kill", epochs=30).replace("[true, false]", "[true]")
    # A checkpoint every 2 epochs: the retry redoes the epochs since, and MLflow still holds each once.
    (tmp_path / "s.yaml").write_text(sweep_text.replace("checkpoint_every: 1", "checkpoint_every: 2"))
    sweep = subprocess.Popen(
        FIXRAY + ["sweep", "s.yaml"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 240
    while _epochs_logged(tmp_path) < 3:  # MLflow has each epoch as it ends (Tune's result files lag)
        assert sweep.poll() is None and time.monotonic() < deadline, "the trial never reached epoch 3"
        time.sleep(0.2)
    live = run(["status", "--format", "markdown"], tmp_path)  # from MLflow alone: the driver's live line, copied
    said = live.stdout
    assert "**Running now" in said and "kill: [0:" in said and " trials 0/1 done, 1 running" in said, said
    (victim,) = [
        p for p in psutil.process_iter(["cmdline"]) if "ray::ImplicitFunc" in " ".join(p.info["cmdline"] or [])
    ]
    victim.kill()  # the trial's worker process dies (SIGKILL), as on an OOM kill or a lost node
    victim = victim.pid
    output = sweep.communicate(timeout=300)[0]
    assert sweep.returncode == 0, output
    _every_epoch_once(tmp_path, 30, trials=1)
    after = [r for r in tune_results(tmp_path, "kill") if r["pid"] != victim]
    assert after and after[0]["epoch"] > 1, "the retry started over instead of resuming from a checkpoint"


@pytest.mark.slow
def test_a_bug_in_a_trial_is_not_retried_in_the_run_but_a_rerun_retries_it(tmp_path):
    fault, calls = tmp_path / "fault", tmp_path / "calls.log"
    fault.touch()
    env = {**ENV, "PYTHONPATH": str(FAULTS), "FIXRAY_FAULT_FILE": str(fault), "FIXRAY_FAULT_LOG": str(calls)}
    one_trial = TWO_TRIALS.format(name="bug", epochs=3).replace("[true, false]", "[true]")
    (tmp_path / "s.yaml").write_text(one_trial.replace("max_retries: 2", "max_retries: 1"))
    first = run(["sweep", "s.yaml"], tmp_path, env=env)
    assert first.returncode == 1, first.stdout + first.stderr
    assert len(calls.read_text().splitlines()) == 1, "a trial's own error was retried in the run"
    assert "not retried in this run" in first.stdout + first.stderr  # its retry failed at once, saying why
    _, _, children = store(tmp_path)
    assert [c.data.tags[STATUS_TAG] for c in children] == ["error"]
    assert "| 1 (1 error) | — |" in first.stdout  # counted, never averaged

    fault.unlink()  # the bug is fixed
    second = run(["sweep", "s.yaml"], tmp_path, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 trial(s) that failed with an error are retried" in second.stdout
    _every_epoch_once(tmp_path, 3, trials=1)


def test_a_second_driver_on_a_running_sweep_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "s.yaml").write_text(TWO_TRIALS.format(name="busy", epochs=2))
    monkeypatch.chdir(tmp_path)
    spec = load_sweep(tmp_path / "s.yaml")
    with DriverLock(Storage(spec.storage_path).driver_dir(spec.name), spec.name):
        assert main(["sweep", "s.yaml"]) == EXIT_BUSY  # not bad input: the same command works once it ends
    message = capsys.readouterr().err
    assert "sweep 'busy' is already running" in message and f"pid {os.getpid()}" in message
    assert not (tmp_path / "mlflow.db").exists()


def test_resuming_under_another_tracking_store_is_refused_not_split(tmp_path, monkeypatch, capsys):
    (tmp_path / "s.yaml").write_text(TWO_TRIALS.format(name="moved", epochs=2))
    monkeypatch.chdir(tmp_path)
    spec = load_sweep(tmp_path / "s.yaml")
    write_record(spec, Storage(spec.storage_path))  # as the first run of the sweep wrote it
    assert main(["sweep", "s.yaml", "--tracking-uri", "sqlite:///other.db"]) == 2
    message = capsys.readouterr().err
    assert (
        "was started with MLflow 'sqlite:///mlflow.db'" in message and "--tracking-uri sqlite:///mlflow.db" in message
    )
    assert not (tmp_path / "other.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_sweep_started_by_fixray_0_1_is_refused_with_the_version_that_finishes_it(tmp_path, monkeypatch, capsys):
    """Its saved Tune state names modules that moved: resuming it here would end in a traceback mid-restore."""
    (tmp_path / "s.yaml").write_text(TWO_TRIALS.format(name="old", epochs=2))
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "fixray-runs" / "old"
    folder.mkdir(parents=True)  # what fixray 0.1 wrote first: the store, without a state layout
    (folder / RECORD_FILE).write_text('{"uri": "sqlite:///mlflow.db", "experiment": "fixray"}\n')
    assert main(["sweep", "s.yaml"]) == 2
    message = capsys.readouterr().err
    assert "was started by fixray 0.1" in message and "commit 7c9d2bb" in message and "--fresh" in message
    assert sorted(p.name for p in folder.iterdir()) == [RECORD_FILE] and not (tmp_path / "mlflow.db").exists()


CREATE = """
import sys
from fixray.records.runs import SweepRuns
SweepRuns(sys.argv[1], "fixray", sys.argv[2])
"""


READ_WHEN_THERE = """
import sys, time
from fixray.records.store import MissingStore, reading_client
while True:
    try:
        reading_client(sys.argv[1]).search_experiments()
        break
    except MissingStore:
        time.sleep(0.001)
"""


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_drivers_creating_one_store_at_once_all_succeed_and_a_reader_waits_for_them(database, tmp_path, request):
    if database == "sqlite":
        uri = f"sqlite:///{tmp_path / 'new.db'}"
    else:
        uri = request.getfixturevalue("postgresql").create_database("new")  # an empty database on a real server
    # Readers open the store the moment it appears, mid-migration, as `fixray report` or a test polling might.
    readers = [subprocess.Popen([sys.executable, "-c", READ_WHEN_THERE, uri], stderr=subprocess.PIPE, text=True)]
    time.sleep(2)  # the reader is polling before any creator starts
    procs = readers + [
        subprocess.Popen([sys.executable, "-c", CREATE, uri, f"sweep{i}"], stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("fixray")
    parents = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in parents) == [f"sweep{i}" for i in range(4)]


@pytest.fixture
def small_disk(tmp_path):
    """A 256 MiB tmpfs at tmp_path/disk, as a storage_path that can fill up (needs root: skipped without)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
        except OSError:
            pass
    return filler


@pytest.mark.slow
def test_a_full_storage_stops_the_sweep_resumably_and_a_rerun_after_freeing_it_finishes(tmp_path, small_disk):
    sweep_text = TWO_TRIALS.format(name="full", epochs=300).replace(
        "max_concurrent_trials: 1", "max_concurrent_trials: 2"
    )
    (tmp_path / "s.yaml").write_text(sweep_text + "storage_path: disk/runs\n")
    sweep = subprocess.Popen(
        FIXRAY + ["sweep", "s.yaml"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 240
    kept = small_disk / "runs" / "full" / KEPT_DIR
    while not any(restorable(f.read_text()) for f in kept.glob("experiment_state-*.json")):  # checkpointed, pruned
        assert sweep.poll() is None and time.monotonic() < deadline, "the sweep never saved a restorable state"
        time.sleep(0.2)
    assert _epochs_logged(tmp_path) < 500, "the trials (2 x 300 epochs) ended before the disk could fill"
    filler = _fill(small_disk)  # the disk fills up mid-sweep
    output = sweep.communicate(timeout=300)[0]
    assert sweep.returncode == 130, output
    assert "is full (no space left on device)" in output and "run the same command" in output
    _, parents, children = store(tmp_path)
    assert parents[0].info.status == "KILLED" and len(children) == 2

    filler.unlink()  # space is freed
    second = run(["sweep", "s.yaml"], tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    _, _, children = store(tmp_path)
    assert len(children) == 2, output + second.stdout + second.stderr  # no second child run for a trial
    _every_epoch_once(tmp_path, 300)  # the same two child runs, each epoch once


@pytest.mark.slow
def test_a_driver_killed_at_any_moment_leaves_a_restorable_checkpoint_and_the_rerun_finishes(tmp_path):
    """SIGKILL to the driver (and the local Ray it started) twice: right after its trial's first checkpoint, and
    after checkpoints were pruned; each time the state a restore reads names checkpoints that exist."""
    (tmp_path / "s.yaml").write_text(TWO_TRIALS.format(name="killed", epochs=120).replace("[true, false]", "[true]"))
    runs = tmp_path / "fixray-runs" / "killed"

    def kill_when(ready) -> None:
        sweep = subprocess.Popen(
            FIXRAY + ["sweep", "s.yaml"], cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 240
        while not ready():
            assert sweep.poll() is None and time.monotonic() < deadline, "the sweep ended before the kill was due"
            time.sleep(0.1)
        os.killpg(sweep.pid, signal.SIGKILL)  # no handler runs: the driver, its Ray and its trial die at once
        sweep.wait()
        newest = max(runs.glob("experiment_state-*.json"))
        for folder, index in restorable(newest.read_text()).items():
            assert (runs / folder / f"checkpoint_{index:06d}").is_dir(), "a restore would find no checkpoint"

    kill_when(lambda: any(r["training_iteration"] >= 1 for r in tune_results(tmp_path, "killed")))
    # ... and once old checkpoints were pruned (if they never are, the sweep ends first and this fails)
    kill_when(
        lambda: (
            not list(runs.glob("*/checkpoint_000000"))
            and max(r["epoch"] for r in tune_results(tmp_path, "killed")) > 20
        )
    )
    last = run(["sweep", "s.yaml"], tmp_path)
    assert last.returncode == 0, last.stdout + last.stderr
    _every_epoch_once(tmp_path, 120, trials=1)


def test_a_tpe_sweep_whose_saved_searcher_names_the_old_schema_modules_is_refused_and_a_grid_one_is_not(tmp_path):
    """State layout 2 pickled a TPE searcher's spec by the schema's module path (sweep/spec.py, now a folder); a grid
    sweep's saved state names no schema class, so it still resumes."""
    from fixray.errors import BadInput
    from fixray.storage import Storage
    from fixray.sweep.spec.reading import load_sweep
    from fixray.sweep.state import check_record

    def spec(method: str):
        searched = "lr: {loguniform: [0.01, 0.1]}" if method == "tpe" else "lr: [0.1]"
        text = f"name: old\ndataset: digits\nmodel: small_cnn\nepochs: 2\nsearch:\n  method: {method}\n  space:\n"
        (tmp_path / "s.yaml").write_text(text + f"    {searched}\n")
        return load_sweep(tmp_path / "s.yaml").model_copy(update={"storage_path": str(tmp_path / "runs")})

    where = Storage(str(tmp_path / "runs"))
    (tmp_path / "runs" / "old").mkdir(parents=True)
    record = tmp_path / "runs" / "old" / RECORD_FILE
    for layout, method, refused in [(2, "tpe", True), (2, "grid", False), (3, "tpe", False)]:
        uri = spec(method).tracking.uri
        record.write_text(f'{{"uri": "{uri}", "experiment": "fixray", "layout": {layout}}}\n')
        if refused:
            with pytest.raises(BadInput, match="commit 3b4302d.*--fresh"):
                check_record(spec(method), where)
        else:
            check_record(spec(method), where)
