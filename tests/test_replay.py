"""`fixray replay RUN`: a trial trained again from its MLflow run equals it bit for bit on the CPU, or says the first
metric and epoch that differ; a run that is no trial is bad input."""

import dataclasses

import pytest
import torch
from mlflow.entities import Metric

from fixray.cli import main
from fixray.crossing import metric_keys as keys
from fixray.crossing.contract import HeadConfig, ScheduleConfig, TrialConfig, to_params
from fixray.data.registry import load_dataset
from fixray.records.encoding import is_tracked_metric, param_value
from fixray.records.runs import SweepRuns
from fixray.sweep.provenance import this_machine
from fixray.trial.loop import train

# A cosine schedule: replaying the first epochs must keep the run's own schedule, planned for all of them.
CFG = TrialConfig(
    model="small_cnn",
    epochs=4,
    seed=3,
    batch_size=64,
    lr=0.05,
    schedule=ScheduleConfig(kind="cosine"),
    head=HeadConfig(kind="cosine", S=10.0, fixed=True, init="etf"),
).settled()
CONTEXT = {"dataset": "digits", "workers": 1, "threads": 1, "channels_last": True, "bf16": None, "compile": False}


@pytest.fixture(autouse=True, scope="module")
def threads_kept():
    """A replay takes the trial's torch threads (one) for this process: the tests after these get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def store(tmp_path_factory, threads_kept):
    """A sweep's parent and one child run, logged as the driver logs them, from the trial trained once here."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('replay') / 'mlflow.db'}"
    runs = SweepRuns(uri, "fixray", "replayed")
    runs.log_sweep_params(this_machine())
    params = {k: param_value(v) for k, v in (to_params(CFG) | CONTEXT).items()}
    run_id, _ = runs.child_for_trial("t0", "trial", params)
    reports = []
    torch.set_num_threads(1)  # as the trial's one CPU had it
    train(CFG, load_dataset("digits"), lambda metrics, state: reports.append(metrics))
    batch = [Metric(k, v, 0, int(r[keys.EPOCH])) for r in reports for k, v in r.items() if is_tracked_metric(k, v)]
    runs.client.log_batch(run_id, metrics=batch)
    return uri, runs, run_id


def test_a_replay_of_a_trial_equals_it_bit_for_bit_and_the_first_epochs_alone_too(store, capsys):
    uri, _, run_id = store
    assert main(["replay", run_id, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "Equal, bit for bit" in out and "4 epoch(s)" in out and "this machine's" in out
    assert main(["replay", run_id, "--tracking-uri", uri, "--epochs", "2"]) == 0
    assert "2 epoch(s)" in capsys.readouterr().out


def test_a_trial_is_replayed_by_its_run_name_too_with_a_line_per_epoch(store, capsys):
    uri, _, run_id = store
    assert main(["report", "replayed", "--runs", "--tracking-uri", uri, "--format", "markdown"]) == 0
    assert f"| trial | {run_id} | unfinished |" in capsys.readouterr().out  # the names replay takes, and ids
    assert main(["replay", "trial", "--tracking-uri", uri, "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"Replayed run trial ({run_id})" in out and "Equal, bit for bit" in out
    assert "  epoch 1/2: test acc " in out and "  epoch 2/2: test acc " in out
    other = SweepRuns(uri, "fixray", "another")  # a second sweep with a trial of the same name
    other.child_for_trial("t9", "trial", {"dataset": "digits"})
    assert main(["replay", "trial", "--tracking-uri", uri]) == 2
    assert "trial runs named 'trial' are in sweeps another, replayed: pass --sweep NAME" in capsys.readouterr().err
    assert main(["replay", "trial", "--sweep", "replayed", "--tracking-uri", uri, "--epochs", "1"]) == 0


def test_a_replay_names_the_first_metric_and_epoch_that_differ(store, capsys):
    uri, runs, run_id = store
    logged = {m.step: m.value for m in runs.client.get_metric_history(run_id, "val/nc1")}
    runs.client.log_batch(run_id, metrics=[Metric("val/nc1", logged[3] + 1e-9, 1, 3)])  # a second value at epoch 3
    try:
        assert main(["replay", run_id, "--tracking-uri", uri]) == 1
        out = capsys.readouterr().out
        assert "Different: first at val/nc1, epoch 3" in out
    finally:
        runs.client.log_batch(run_id, metrics=[Metric("val/nc1", logged[3], 2, 3)])


@pytest.mark.parametrize(
    ("which", "said"),
    [
        ("parent", "no trial of a fixray sweep"),
        ("missing", "no trial run with the id or name"),
        ("ddp", "2 DDP workers"),
        ("epochs", "--epochs 9: the run trained 4"),
    ],
)
def test_a_run_that_is_no_replayable_trial_is_bad_input(store, which, said, capsys):
    uri, runs, run_id = store
    if which == "ddp":
        cfg = dataclasses.replace(CFG, seed=4)
        params = {k: param_value(v) for k, v in (to_params(cfg) | CONTEXT | {"workers": 2}).items()}
        run_id, _ = runs.child_for_trial("t-ddp", "ddp", params)
    target = {"parent": runs.parent_id, "missing": "0" * 32}.get(which, run_id)
    extra = ["--epochs", "9"] if which == "epochs" else []
    assert main(["replay", target, "--tracking-uri", uri, *extra]) == 2
    assert said in capsys.readouterr().err
