"""`fixray report tableN`: the paper's layout, cells equal to the MLflow values they summarise."""

import statistics

import pytest
from mlflow.entities import Metric

from fixray.cli import main
from fixray.records.paper import TABLES, layout, published
from fixray.records.runs import STATUS_TAG, SweepRuns


def _store(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _child(runs: SweepRuns, trial: str, params: dict, acc: float | None, compactness: float = 0.5):
    run_id, _ = runs.child_for_trial(trial, trial, params)
    if acc is None:
        runs.client.set_tag(run_id, STATUS_TAG, "diverged")
        runs.client.log_batch(run_id, metrics=[Metric("val/acc", float("nan"), 0, 1), Metric("diverged", 1.0, 0, 1)])
    else:
        runs.client.set_tag(run_id, STATUS_TAG, "finished")
        runs.client.log_batch(
            run_id,
            metrics=[Metric(k, acc, 0, 1) for k in ("val/acc", "val/acc_best")]
            + [Metric("val/compactness", compactness, 0, 1)],
        )


def test_table1_cells_take_the_best_learning_rate_and_match_mlflow(tmp_path, capsys):
    runs = SweepRuns(_store(tmp_path), "fixray-paper", "paper-dot-cifar10")
    # lr 0.1 holds the best single seed (0.99), lr 0.01 the best mean (0.94 against 0.895): the mean decides.
    values = {("0.1", 0): 0.99, ("0.1", 1): 0.80, ("0.01", 0): 0.95, ("0.01", 1): 0.93}
    for (lr, seed), acc in values.items():
        _child(runs, f"r-fixed-{lr}-{seed}", {"model": "resnet18", "fixed": "True", "lr": lr, "seed": str(seed)}, acc)
    _child(runs, "r-learned-0", {"model": "resnet18", "fixed": "False", "lr": "0.1", "seed": "0"}, None)
    _child(runs, "r-learned-1", {"model": "resnet18", "fixed": "False", "lr": "0.1", "seed": "1"}, None)

    assert main(["report", "table1", "--tracking-uri", _store(tmp_path), "--paper"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| cifar10 |")).split(" | ")
    best = [0.95, 0.93]
    assert row[3] == f"{statistics.fmean(best) * 100:.1f} ± {statistics.stdev(best) * 100:.1f} (paper 94.2)"
    assert row[4] == "NaN (paper 93.4)"  # every seed diverged: NaN, as the paper prints it
    assert row[1].startswith("— (paper 94.1)")  # not run
    assert "| stl10 | — (paper 79.7)" in out


def test_a_learning_rate_with_diverged_seeds_is_not_ranked_on_its_survivors(tmp_path, capsys):
    runs = SweepRuns(_store(tmp_path), "fixray-paper", "paper-dot-cifar100")
    learned = {"model": "preact_resnet18", "fixed": "False"}
    for seed in range(3):  # lr 0.1: 2 of 3 seeds diverged, the survivor at 96.0; lr 0.01: 75.0 on every seed
        _child(runs, f"a{seed}", learned | {"lr": "0.1", "seed": str(seed)}, 0.96 if seed == 0 else None)
        _child(runs, f"b{seed}", learned | {"lr": "0.01", "seed": str(seed)}, 0.75)
    assert main(["report", "table1", "--tracking-uri", _store(tmp_path)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| cifar100 |")).split(" | ")
    assert row[2] == "75.0 ± 0.0 (not ranked, a seed short: lr=0.1: 2 diverged)"


def test_a_learning_rate_whose_planned_seeds_have_not_all_started_is_not_ranked_and_they_are_counted(tmp_path, capsys):
    """Read mid-sweep: lr 0.1 has one of its three planned seeds, at 99%; lr 0.01 all three at 80%. Counted against
    the seeds the sweep plans, lr 0.1 is a seed short and cannot win the cell."""
    runs = SweepRuns(_store(tmp_path), "fixray-paper", "paper-dot-stl10")
    runs.log_plan(1.0, 1.0, 6, [0, 1, 2])
    fixed = {"model": "resnet18", "fixed": "True"}
    _child(runs, "a0", fixed | {"lr": "0.1", "seed": "0"}, 0.99)
    for seed in range(3):
        _child(runs, f"b{seed}", fixed | {"lr": "0.01", "seed": str(seed)}, 0.80)
    _child(runs, "c0", {"model": "mobilenetv2", "fixed": "True", "lr": "0.1", "seed": "0"}, 0.70)
    assert main(["report", "table1", "--tracking-uri", _store(tmp_path)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| stl10 |")).split(" | ")
    assert row[3] == "80.0 ± 0.0 (not ranked, a seed short: lr=0.1: 2 not started)"
    assert row[5] == "— (not ranked, a seed short: lr=0.1: 2 not started)"


def test_table4_reads_compactness_per_S(tmp_path, capsys):
    runs = SweepRuns(_store(tmp_path), "fixray-paper", "paper-compactness-stl10")
    _child(runs, "s1", {"S": "1.0", "fixed": "False", "seed": "0"}, 0.8, compactness=0.97)
    _child(runs, "s20", {"S": "20.0", "fixed": "False", "seed": "0"}, 0.8, compactness=0.70)
    assert main(["report", "table4", "--tracking-uri", _store(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert next(line for line in out.splitlines() if line.startswith("| S1 |")).split(" | ")[3] == "0.97 ± 0.00"
    assert next(line for line in out.splitlines() if line.startswith("| S20 |")).split(" | ")[3] == "0.70 ± 0.00"


@pytest.mark.parametrize("table", TABLES)
def test_every_table_layout_has_a_cell_and_a_published_number_per_position(table):
    grid = layout(table)
    assert set(grid.cells) == set(grid.published) == {(r, c) for r in grid.rows for c in grid.columns}
    assert len(grid.columns) == len(published()[table]["columns"])


def test_table6_reads_each_corruptions_accuracy_from_the_best_lr_run(tmp_path, capsys):
    runs = SweepRuns(_store(tmp_path), "fixray-paper", "paper-dot-cifar10")
    for lr, acc, robust in (("0.1", 0.90, 0.40), ("0.01", 0.95, 0.55)):
        run_id, _ = runs.child_for_trial(
            f"t{lr}", f"t{lr}", {"model": "resnet18", "fixed": "True", "lr": lr, "seed": "0"}
        )
        runs.client.set_tag(run_id, STATUS_TAG, "finished")
        runs.client.log_batch(
            run_id, metrics=[Metric("val/acc_best", acc, 0, 1), Metric("robust/jpeg_compression/acc", robust, 0, 1)]
        )
    assert main(["report", "table6", "--tracking-uri", _store(tmp_path), "--paper"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| jpeg_compression cifar10 |"))
    assert row.split(" | ")[1] == "55.0 ± 0.0 (paper 71.8)"  # lr 0.01 has the better best-epoch test accuracy


def test_a_report_where_no_store_exists_exits_2_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "quickstart"]) == 2
    assert main(["report", "table1"]) == 2
    assert list(tmp_path.iterdir()) == []  # no empty mlflow.db left behind
    assert "no MLflow store at sqlite:///mlflow.db" in capsys.readouterr().err


def test_experiments_open_on_their_training_runs_in_the_mlflow_ui(tmp_path):
    """MLflow 3 opens an experiment in its GenAI view unless its kind says it holds model training runs."""
    fresh = SweepRuns(_store(tmp_path), "fixray", "s")
    assert fresh.client.get_experiment(fresh.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    older = fresh.client.create_experiment("made-before-fixray-set-the-kind")
    SweepRuns(_store(tmp_path), "made-before-fixray-set-the-kind", "s")
    assert fresh.client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"
