"""Each paper table against its caption: which sweep, which runs, which best-of rule, which metric feeds a cell.

`caption_source` is written from the paper's captions and the authors' code, independently of paper.py; the
tables are then rendered from a synthetic MLflow store whose every cell has a known answer and decoys around it
(the other learning rates or S values, the other epochs of a per-epoch metric).
"""

import math
from pathlib import Path

import pytest
from mlflow.entities import Metric

from fixray.crossing.contract import to_params
from fixray.records import paper
from fixray.records.render import as_markdown
from fixray.records.runs import STATUS_TAG, SweepRuns
from fixray.records.tables import format_cell
from fixray.sweep.plan import plan
from fixray.sweep.spec.reading import load_sweep

BACKBONE_OF = {"table7": "preact_resnet18", "table8": "resnet18", "table9": "mobilenetv2"}
UNSTATED = "resnet18"  # Tables 4-6 and the Spearman values do not name a backbone
BEST = "val/acc_best"  # the authors' best_acc: the best test accuracy over the epochs


def caption_source(table: str, row: str, column: str) -> tuple[str, dict, str | None, str] | None:
    """(sweep, run parameters, best-of parameter, metric) of a cell, as the paper's caption describes it."""
    if table in ("table1", "table2", "table3"):  # rows: datasets; columns: backbone/F|NF
        backbone, flag = column.split("/")
        sweep = {"table1": "paper-dot-", "table2": "paper-cosine-s1-", "table3": "paper-cosine-best-s-"}[table]
        best = {"table1": "lr", "table2": None, "table3": "S"}[table]  # best lr / S = 1 / best S
        where = {"model": backbone, "fixed": flag == "F"} | ({"S": 1.0} if table == "table2" else {})
        return sweep + row, where, best, BEST
    if table in BACKBONE_OF:  # dot-product heads per learning rate; columns lr/F|NF
        lr, flag = column.split("/")
        where = {"model": BACKBONE_OF[table], "fixed": flag == "F", "lr": float(lr.removeprefix("lr"))}
        return f"paper-dot-{row}", where, None, BEST
    if table == "table4":  # learned cosine heads at S = 1, 20, 40; the text's fixed heads at S = 1
        if row == "S1_fixed":
            return f"paper-cosine-s1-{column}", {"model": UNSTATED, "fixed": True, "S": 1.0}, None, "val/compactness"
        return f"paper-compactness-{column}", {"S": float(row[1:]), "fixed": False}, None, "val/compactness"
    if table in ("table5", "table6"):  # dot: best lr; cosine: the best-S models of Table 3
        head, flag = column.split("/")
        if table == "table5":
            dataset, target = row.split("->")
            if target != "cifar10.1":
                return None  # the paper's own STL-10 and CIFAR-100 sets were never published
            metric = "gen/acc"
        else:
            corruption, dataset = row.split()
            metric = f"robust/{corruption}/acc"
        sweep = f"paper-dot-{dataset}" if head == "dot" else f"paper-cosine-best-s-{dataset}"
        return sweep, {"model": UNSTATED, "fixed": flag == "F"}, "lr" if head == "dot" else "S", metric
    assert table == "spearman"  # learned heads: dot with its best lr, cosine at S = 1
    if row == "dot_NF":
        return f"paper-dot-{column}", {"model": UNSTATED, "fixed": False}, "lr", "val/confusion_spearman"
    return f"paper-cosine-s1-{column}", {"model": UNSTATED, "fixed": False, "S": 1.0}, None, "val/confusion_spearman"


@pytest.mark.parametrize("table", paper.TABLES)
def test_every_cell_reads_the_sweep_runs_rule_and_metric_its_caption_names(table):
    grid = paper.layout(table)
    for (row, column), cell in grid.cells.items():
        source = caption_source(table, row, column)
        if source is None:
            assert cell.sweep is None, (row, column)
            continue
        assert (cell.sweep, cell.where, cell.best_over, cell.metric) == source, (row, column)


OPTIONS = {"lr": (0.1, 0.01), "S": (8.0, 20.0)}  # the second of each is made the better one below
EPOCHS, BEST_EPOCH = 3, 2


def _fill(store: str, table: str) -> dict[tuple[str, str], list[float]]:
    """Runs for every cell of a table, with decoys; returns each cell's expected per-seed values."""
    grid, planned, expected = paper.layout(table), {}, {}
    for index, (row, column) in enumerate(sorted(grid.cells)):
        source = caption_source(table, row, column)
        if source is None:
            continue
        sweep, where, best_over, metric = source
        options = OPTIONS[best_over] if best_over else (None,)
        for rank, option in enumerate(options):
            params = where | ({best_over: option} if best_over else {})
            better = rank == len(options) - 1
            for seed in (0, 1):
                run = planned.setdefault((sweep, repr(sorted(params.items())), seed), {"params": params, "metrics": {}})
                # best accuracy decides the best-of rule: the last option is better by 0.2
                acc = run["metrics"].setdefault(BEST, 0.3 + 0.001 * index + (0.2 if better else 0.0) + 0.01 * seed)
                value = acc if metric == BEST else 0.1 + 0.001 * index + (0.3 if better else 0.0) + 0.02 * seed
                run["metrics"][metric] = value
                if better:
                    expected.setdefault((row, column), []).append(value)
    sweeps: dict[str, SweepRuns] = {}
    for number, ((sweep, _, seed), run) in enumerate(planned.items()):
        runs = sweeps.setdefault(sweep, SweepRuns(store, paper.PAPER_EXPERIMENT, sweep))
        params = {k: str(v) for k, v in run["params"].items()} | {"seed": str(seed)}
        run_id, _ = runs.child_for_trial(f"trial{number}", f"trial{number}", params)
        metrics = [Metric("val/acc_best_epoch", BEST_EPOCH, 0, EPOCHS)]
        for name, value in run["metrics"].items():
            if name.startswith("val/") and name != BEST:  # per epoch: only the best epoch holds the answer
                metrics += [Metric(name, value if e == BEST_EPOCH else value + 0.5, 0, e) for e in range(1, EPOCHS + 1)]
            else:
                metrics.append(Metric(name, value, 0, EPOCHS))
        runs.client.log_batch(run_id, metrics=metrics)
        runs.client.set_tag(run_id, STATUS_TAG, "finished")
    return expected


@pytest.mark.parametrize("table", paper.TABLES)
def test_each_table_shows_its_caption_runs_at_their_best_epoch(table, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    expected = _fill(store, table)
    grid, results = paper.collect(table, store)
    text = as_markdown(paper.paper_table(grid, results))
    lines = {line.split(" | ")[0].removeprefix("| "): line.strip("| ").split(" | ")[1:] for line in text.splitlines()}
    for row in grid.rows:
        for column, shown in zip(grid.columns, lines[row]):
            if (row, column) not in expected:
                assert shown == "—", (row, column)
                continue
            values = expected[row, column]
            assert sorted(results[row, column].values) == pytest.approx(sorted(values)), (row, column)
            assert shown == format_cell(values, grid.scale, 1 if grid.scale == 100 else 2), (row, column)
    assert BEST in text or table in ("table4", "table5", "table6", "spearman")
    assert not math.isnan(sum(sum(v) for v in expected.values()))


@pytest.mark.parametrize("status", [None, "error", "stopped_early", "not_run"])
def test_a_paper_cell_never_averages_a_run_that_did_not_finish(status, tmp_path):
    """A third seed that is unfinished (no status yet), failed, stopped early or left out by a budget, with a value far
    off, is counted beside the cell and left out of its mean and std."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    expected = _fill(store, "table2")
    row, column = next(iter(sorted(expected)))
    sweep, where, _, _ = caption_source("table2", row, column)
    runs = SweepRuns(store, paper.PAPER_EXPERIMENT, sweep)
    params = {k: str(v) for k, v in where.items()} | {"seed": "2"}
    run_id, _ = runs.child_for_trial("late", "late", params)
    runs.client.log_batch(run_id, metrics=[Metric(BEST, 0.99, 0, 1)])
    if status:
        runs.client.set_tag(run_id, STATUS_TAG, status)
    grid, results = paper.collect("table2", store)
    assert sorted(results[row, column].values) == pytest.approx(sorted(expected[row, column]))
    line = next(
        line for line in as_markdown(paper.paper_table(grid, results)).splitlines() if line.startswith(f"| {row} |")
    )
    cell = line.strip("| ").split(" | ")[1 + grid.columns.index(column)]
    shown = (status or "unfinished").replace("_", " ")
    assert cell == f"{format_cell(expected[row, column], grid.scale, 1)} (1 {shown})"


def test_every_metric_a_paper_table_reads_is_one_the_loop_declares():
    from fixray.crossing import metric_keys
    from fixray.data.corruptions import CORRUPTIONS

    declared = set(metric_keys.METRICS) | {metric_keys.robust_acc(name) for name in CORRUPTIONS}
    for table in paper.TABLES:
        assert {cell.metric for cell in paper.layout(table).cells.values()} <= declared, table


PAPER_SWEEPS = Path(__file__).resolve().parent.parent / "sweeps" / "paper"
NAMED_S = {1.0, 20.0, 40.0}  # the S values the paper's text names for its best-S grid (Table 3)


@pytest.mark.parametrize("table", paper.TABLES)
def test_every_published_cell_has_planned_trials_with_the_test_sets_its_metric_reads(table):
    """A cell with a published number names a sweep file that plans the runs it selects, three seeds each (the paper
    reports means of 3 runs); a best-of cell has a grid to choose from; a cell reading corrupted or generalisation
    accuracy has its sweep measure that set."""
    grid = paper.layout(table)
    for (row, column), cell in grid.cells.items():
        if cell.sweep is None or grid.published[row, column] is None:
            continue
        spec = load_sweep(PAPER_SWEEPS / f"{cell.sweep.removeprefix('paper-')}.yaml")
        assert spec.name == cell.sweep and spec.seeds == [0, 1, 2], (row, column)
        planned = [to_params(trial.config) for trial in plan(spec)]
        selected = [point for point in planned if all(_same(point, k, v) for k, v in cell.where.items())]
        assert len(selected) >= 3, (row, column, cell.where)
        if cell.best_over:
            options = {point[cell.best_over] for point in selected}
            assert len(options) >= 3, (row, column, cell.best_over, options)
            if cell.best_over == "S":
                assert NAMED_S <= options, (row, column)
        if cell.metric.startswith("robust/"):
            assert spec.robustness is not None and cell.metric.split("/")[1] in spec.robustness.corruptions
        if cell.metric.startswith("gen/"):
            assert spec.generalisation == row.split("->")[1], (row, column)


def _same(point: dict, key: str, wanted) -> bool:
    value = point.get(key)
    return math.isclose(value, wanted) if isinstance(wanted, float) and value is not None else value == wanted
