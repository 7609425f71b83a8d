"""A sweep that grows: its file edited and the same command run again, end to end (real local Ray, real MLflow on
SQLite, bundled digits). Only what is new runs; what ended earlier is kept untouched; what stopped midway continues
from its checkpoint as if never stopped; what the file no longer plans stays in MLflow, out of its tables."""

import json

import pytest
from e2e import run, steps, store

from fixray.records.runs import IDENTITY_TAG, NOT_IN_FILE_TAG, PLANNED_SEEDS_TAG, STATUS_TAG

pytestmark = pytest.mark.slow

GROWING = """\
name: grows
dataset: digits
model: small_cnn
epochs: 2
batch_size: 64
seeds: {seeds}
search:
  space:
{space}
"""


def _write(folder, seeds="[0]", space="    fixed: [true, false]", extra=""):
    (folder / "grows.yaml").write_text(GROWING.format(seeds=seeds, space=space) + extra)


def _sweep(folder, name="grows.yaml"):
    done = run(["sweep", name], folder)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _ends(children) -> dict[str, int]:
    return {c.info.run_id: c.info.end_time for c in children}


def test_editing_the_file_runs_only_what_is_new_and_keeps_the_rest_untouched(tmp_path):
    _write(tmp_path)
    _sweep(tmp_path)
    client, _, first = store(tmp_path)
    assert len(first) == 2

    # A seed added: the first seed's trials are kept (not retrained, their runs untouched), the new seed's run.
    _write(tmp_path, seeds="[0, 1]")
    out = _sweep(tmp_path)
    assert "2 ended earlier (kept), 2 new" in out and "Number of trials                 2" in out
    client, parents, second = store(tmp_path)
    assert len(parents) == 1 and len(second) == 4
    assert {k: v for k, v in _ends(second).items() if k in _ends(first)} == _ends(first)
    assert all(steps(client, c, "val/acc") == [1, 2] and c.data.tags[STATUS_TAG] == "finished" for c in second)
    assert "| dot | fixed | none | 0.1 | 2 |" in out  # both seeds in the table
    assert client.get_run(parents[0].info.run_id).data.tags[PLANNED_SEEDS_TAG] == "0,1"

    # A new setting at the value the trials had, and only resources changed: the same trials, nothing runs, no Ray.
    _write(
        tmp_path,
        seeds="[0, 1]",
        space="    fixed: [true, false]\n    momentum: [0.9]",
        extra="resources: {cpus_per_trial: 1}\n",
    )
    out = _sweep(tmp_path)
    assert out.startswith("Sweep 'grows': 4 trials: 4 ended earlier (kept).") and "Configuration for" not in out
    assert _ends(store(tmp_path)[2]) == _ends(second)

    # A value removed: its runs stay in MLflow, left out of the tables and the answer, and counted.
    _write(tmp_path, seeds="[0, 1]", space="    fixed: [true]")
    out = _sweep(tmp_path)
    assert "2 ended earlier (kept); 2 earlier run(s) not in this file" in out
    assert "| dot | learned |" not in out and "2 earlier trial run(s) of this sweep are not in its file" in out
    client, parents, third = store(tmp_path)
    dropped = {c.info.run_name for c in third if NOT_IN_FILE_TAG in c.data.tags}
    assert dropped == {"dot-learned-lr0.1-seed0", "dot-learned-lr0.1-seed1"} and _ends(third) == _ends(second)
    report = run(["report", "grows"], tmp_path)
    assert "| dot | learned |" not in report.stdout and "not in its file" in report.stdout
    assert "no configuration has finished runs both fixed and learned" in report.stdout

    # The value back and another added: the returning runs count again (not retrained), only the new value runs.
    _write(tmp_path, seeds="[0, 1]", space="    fixed: [true, false]\n    lr: [0.1, 0.05]")
    out = _sweep(tmp_path)
    assert "4 ended earlier (kept), 4 new" in out
    client, parents, fourth = store(tmp_path)
    assert len(fourth) == 8 and not any(NOT_IN_FILE_TAG in c.data.tags for c in fourth)
    assert {k: v for k, v in _ends(fourth).items() if k in _ends(second)} == _ends(second)
    assert len({c.data.tags[IDENTITY_TAG] for c in fourth}) == 8
    assert "| dot | learned | none | 0.05 | 2 |" in out and "| dot | learned | none | 0.1 | 2 |" in out
    status = run(["status", "grows"], tmp_path)
    assert "| grows | 8 | 8 | 0 |" in status.stdout, status.stdout

    # Epochs changed: every trial differs, and the line before anything starts says why none is kept.
    _write(tmp_path, space="    fixed: [true]")
    (tmp_path / "grows.yaml").write_text((tmp_path / "grows.yaml").read_text().replace("epochs: 2", "epochs: 3"))
    out = _sweep(tmp_path)
    said = out.splitlines()[1]
    assert "1 new; 8 earlier run(s) not in this file" in said and "the file changed epochs 2 -> 3" in said
    assert len(store(tmp_path)[2]) == 9


STOPPED = """\
name: {name}
dataset: digits
model: small_cnn
epochs: 3
batch_size: 64
seeds: [0]
resources: {{checkpoint_every: 1}}
search:
  max_concurrent_trials: 1
{asha}  space:
    lr: {lrs}
"""


def test_a_trial_stopped_early_continues_from_its_checkpoint_when_early_stopping_is_dropped_equal_to_a_clean_run(
    tmp_path,
):
    asha = "  asha: {grace_period: 1, reduction_factor: 2}\n"
    (tmp_path / "asha.yaml").write_text(STOPPED.format(name="asha", asha=asha, lrs="[0.1, 0.0001]"))
    _sweep(tmp_path, "asha.yaml")
    client, _, first = store(tmp_path)
    by_lr = {c.data.params["lr"]: c for c in first}
    assert by_lr["0.0001"].data.tags[STATUS_TAG] == "stopped_early" and steps(client, by_lr["0.0001"], "val/acc") == [1]
    assert by_lr["0.1"].data.tags[STATUS_TAG] == "finished"

    # Early stopping dropped: the stopped trial continues in the same MLflow run, from its epoch-1 checkpoint.
    (tmp_path / "asha.yaml").write_text(STOPPED.format(name="asha", asha="", lrs="[0.1, 0.0001]"))
    out = _sweep(tmp_path, "asha.yaml")
    assert "1 ended earlier (kept), 1 continue from where they stopped" in out
    client, _, after = store(tmp_path)
    assert len(after) == 2 and _ends(after)[by_lr["0.1"].info.run_id] == by_lr["0.1"].info.end_time
    resumed = client.get_run(by_lr["0.0001"].info.run_id)
    assert resumed.data.tags[STATUS_TAG] == "finished" and steps(client, resumed, "val/acc") == [1, 2, 3]
    grown = tmp_path / "fixray-runs" / "asha" / "grown-2"
    trained = [json.loads(line)["epoch"] for f in grown.glob("*/result.json") for line in f.read_text().splitlines()]
    assert trained == [2, 3]  # from the checkpoint: epoch 1 was not trained again

    # The same trial run clean, in a sweep of its own: every epoch's numbers equal, bit for bit.
    (tmp_path / "clean.yaml").write_text(STOPPED.format(name="clean", asha="", lrs="[0.0001]"))
    _sweep(tmp_path, "clean.yaml")
    client, _, every = store(tmp_path)
    clean = next(c for c in every if c.data.tags["fixray.sweep"] == "clean")
    assert clean.data.tags[IDENTITY_TAG] == resumed.data.tags[IDENTITY_TAG]
    for key in ("train/loss", "val/acc", "val/compactness"):
        history = {run.info.run_id: client.get_metric_history(run.info.run_id, key) for run in (clean, resumed)}
        values = [[(m.step, m.value) for m in sorted(h, key=lambda m: m.step)] for h in history.values()]
        assert values[0] == values[1], key


def test_a_tpe_sweep_with_a_larger_num_samples_keeps_its_samples_and_draws_the_rest_from_their_results(tmp_path):
    tpe = "  method: tpe\n  num_samples: {n}\n  random_seed: 3\n  space:\n    lr: {{loguniform: [0.01, 0.3]}}\n"
    text = GROWING.split("search:")[0].format(seeds="[0, 1]") + "search:\n"
    (tmp_path / "grows.yaml").write_text(text + tpe.format(n=2))
    _sweep(tmp_path)
    client, _, first = store(tmp_path)
    assert len(first) == 4  # 2 drawn configurations x 2 seeds

    (tmp_path / "grows.yaml").write_text(text + tpe.format(n=3))
    out = _sweep(tmp_path)
    assert (
        "4 ended earlier (kept); 1 more configuration(s) drawn by tpe" in out and "the 2 earlier ones' results" in out
    )
    client, parents, second = store(tmp_path)
    assert len(parents) == 1 and len(second) == 6
    assert {k: v for k, v in _ends(second).items() if k in _ends(first)} == _ends(first)  # not retrained
    assert all(steps(client, c, "val/acc") == [1, 2] and c.data.tags[STATUS_TAG] == "finished" for c in second)
    new = [c for c in second if c.info.run_id not in _ends(first)]
    assert len({c.data.params["lr"] for c in new}) == 1 and {c.data.params["seed"] for c in new} == {"0", "1"}
    assert (tmp_path / "fixray-runs" / "grows" / "grown-2").is_dir()

    # The grown file again: its Tune experiment is restored whole, nothing retrains.
    out = _sweep(tmp_path)
    _, _, third = store(tmp_path)
    assert _ends(third) == _ends(second)
