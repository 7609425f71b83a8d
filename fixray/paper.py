"""The paper's tables rebuilt from MLflow, in its layout, optionally beside its published numbers.

Each table is a grid of cells; a cell names the sweep (from sweeps/paper/) and the parameter values of
the runs it summarises, and, for "best" tables, the parameter over which the best mean is taken. As the
authors report `best_acc`, every cell shows its runs at their best epoch: the best test accuracy over the
epochs (`val/acc_best`), per-epoch measurements read at that epoch, and robustness and generalisation
measured on that epoch's weights; the best learning rate or S is the one with the best mean `val/acc_best`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from fixray.report import format_cell, mean_std
from fixray.tracking import FINISHED, SweepRuns, left_out, outcome
from fixray.trial import read_params

PAPER_EXPERIMENT = "fixray-paper"  # the MLflow experiment the paper's sweep files write to
BEST_ACC, BEST_EPOCH = "val/acc_best", "val/acc_best_epoch"  # logged by the loop every epoch
BACKBONES = ("preact_resnet18", "resnet18", "mobilenetv2")
DATASET_ORDER = ("stl10", "cifar10", "cifar100", "tinyimagenet")


def published() -> dict:
    """The paper's numbers (Tables 1-9, Spearman), shipped inside the package."""
    return yaml.safe_load(resources.files("fixray").joinpath("paper_tables.yaml").read_text())


@dataclass(frozen=True)
class Cell:
    sweep: str  # MLflow parent run name
    where: dict[str, Any] = field(default_factory=dict)  # typed child params that select the runs
    best_over: str | None = None  # the parameter whose best mean (by test accuracy) the cell reports
    metric: str | None = None  # None: the table's metric


@dataclass(frozen=True)
class Layout:
    title: str
    metric: str  # MLflow metric the cells show
    scale: float  # 100 for accuracies in percent
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], Cell]
    published: dict[tuple[str, str], float | None]


def _fixed(flag: str) -> bool:
    return flag == "F"


UNSTATED_BACKBONE = "resnet18"  # Tables 5, 6 and the Spearman values do not name theirs


def _head_cell(head: str, dataset: str, fixed: bool, metric: str, cosine: str = "best-s") -> Cell:
    """A dot/F-style cell of Tables 5, 6 and the Spearman values: the best lr for dot-product heads; for cosine
    heads the best S (Tables 5, 6: only Table 3's best-S models reach their published accuracies) or S = 1."""
    where = {"model": UNSTATED_BACKBONE, "fixed": fixed}
    if head == "dot":
        return Cell(f"paper-dot-{dataset}", where, "lr", metric)
    if cosine == "best-s":
        return Cell(f"paper-cosine-best-s-{dataset}", where, "S", metric)
    return Cell(f"paper-cosine-s1-{dataset}", where, None, metric)


def _robustness_layout(table: str, paper: dict) -> Layout:
    columns = paper["columns"]
    cells, numbers, rows = {}, {}, []
    if table == "table5":
        for key, values in paper.items():
            if key == "columns":
                continue
            dataset, target = key.split("->")
            rows.append(key)
            for i, column in enumerate(columns):
                head, flag = column.split("/")
                # Only CIFAR-10.1 is public; the paper's own STL-10 and CIFAR-100 sets have no sweep here.
                cell = (
                    _head_cell(head, dataset, _fixed(flag), "gen/acc")
                    if target == "cifar10.1"
                    else Cell(f"unavailable-{target}")
                )
                cells[key, column], numbers[key, column] = cell, values[i]
        title = f"Table 5: generalisation, {UNSTATED_BACKBONE}, best lr (dot) and best S (cosine)"
        return Layout(title, "gen/acc", 100.0, rows, columns, cells, numbers)
    for corruption in ("impulse_noise", "jpeg_compression", "defocus_blur"):
        for dataset in DATASET_ORDER:
            row = f"{corruption} {dataset}"
            rows.append(row)
            for i, column in enumerate(columns):
                head, flag = column.split("/")
                cells[row, column] = _head_cell(head, dataset, _fixed(flag), f"robust/{corruption}/acc")
                numbers[row, column] = paper[corruption][dataset][i]
    return Layout(
        f"Table 6: accuracy under corruptions, {UNSTATED_BACKBONE}, best lr (dot) and best S (cosine)",
        "robust/*/acc",
        100.0,
        rows,
        columns,
        cells,
        numbers,
    )


def layout(table: str) -> Layout:
    """The grid of one of the paper's tables (table1-9) or of its Spearman values (spearman)."""
    paper = published()[table]
    if table in ("table5", "table6"):
        return _robustness_layout(table, paper)
    if table == "spearman":
        rows, columns = ["dot_NF", "cosine_S1_NF"], paper["columns"]
        metric = "val/confusion_spearman"
        cells = {(r, c): _head_cell(r.split("_")[0], c, False, metric, cosine="s1") for r in rows for c in columns}
        numbers = {(r, c): paper[r][i] for r in rows for i, c in enumerate(columns)}
        title = f"Spearman of class-vector cosine and mistakes, learned heads (cosine: S = 1), {UNSTATED_BACKBONE}"
        return Layout(title, metric, 1.0, rows, columns, cells, numbers)
    if table == "table4":
        learned, columns = ["S1", "S20", "S40"], paper["columns"]
        cells = {
            (r, c): Cell(f"paper-compactness-{c}", {"S": float(r[1:]), "fixed": False})
            for r in learned
            for c in columns
        }
        numbers = {(r, c): paper[r][i] for r in learned for i, c in enumerate(columns)}
        # The text's "roughly 0.95 in all experiments" for fixed cosine heads at S = 1: Table 2's fixed models.
        for c in columns:
            cells["S1_fixed", c] = Cell(f"paper-cosine-s1-{c}", {"model": UNSTATED_BACKBONE, "fixed": True})
            numbers["S1_fixed", c] = paper["fixed_cosine_S1_all"]
        title = f"Table 4: compactness of learned cosine heads (S1_fixed: fixed heads at S = 1, {UNSTATED_BACKBONE})"
        return Layout(title, "val/compactness", 1.0, [*learned, "S1_fixed"], columns, cells, numbers)
    rows = [d for d in DATASET_ORDER if d in paper]
    columns = paper["columns"]
    sweeps = {"table1": "paper-dot-{}", "table2": "paper-cosine-s1-{}", "table3": "paper-cosine-best-s-{}"}
    cells = {}
    for row in rows:
        for column in columns:
            left, flag = column.split("/")
            if table in sweeps:  # columns: backbone / F|NF
                best = {"table1": "lr", "table3": "S"}.get(table)
                cells[row, column] = Cell(sweeps[table].format(row), {"model": left, "fixed": _fixed(flag)}, best)
            else:  # tables 7-9: one backbone, columns lr / F|NF
                backbone = {"table7": "preact_resnet18", "table8": "resnet18", "table9": "mobilenetv2"}[table]
                where = {"model": backbone, "fixed": _fixed(flag), "lr": float(left.removeprefix("lr"))}
                cells[row, column] = Cell(f"paper-dot-{row}", where)
    numbers = {(r, c): paper[r][i] for r in rows for i, c in enumerate(columns)}
    titles = {
        "table1": "Table 1: dot-product head, fixed (F) vs learned (NF), best learning rate",
        "table2": "Table 2: cosine head, S = 1",
        "table3": "Table 3: cosine head, best S (of a grid holding 1, 20 and 40)",
        "table7": "Table 7: dot-product head, PreActResNet18, per learning rate",
        "table8": "Table 8: dot-product head, ResNet18, per learning rate",
        "table9": "Table 9: dot-product head, MobileNetV2, per learning rate",
    }
    return Layout(titles[table], BEST_ACC, 100.0, rows, columns, cells, numbers)


TABLES = ("table1", "table2", "table3", "table4", "table5", "table6", "table7", "table8", "table9", "spearman")


def _matches(params: dict[str, Any], where: dict[str, Any]) -> bool:
    return all(_same(params.get(k), v) for k, v in where.items())


def _same(logged: Any, wanted: Any) -> bool:
    """Equal values; floats equal to rounding (a logged 0.1 is the table's lr 0.1)."""
    if isinstance(wanted, float) and isinstance(logged, (int, float)) and not isinstance(logged, bool):
        return math.isclose(logged, wanted)
    return logged == wanted


@dataclass
class CellResult:
    """What one cell summarises: its runs (one per seed) and their values at the best epoch."""

    runs: list
    values: list[float]  # one per seed that finished
    outcomes: Counter  # finished, diverged, error, unfinished, ... -> runs: every run counted, finished ones averaged


def _at_best_epoch(client, run, metric: str) -> float | None:
    """A run's value of `metric` at its best epoch; those logged once (robust/, gen/) or running (acc_best) as is."""
    if metric == BEST_ACC or not metric.startswith("val/") or BEST_EPOCH not in run.data.metrics:
        return run.data.metrics.get(metric)
    epoch = int(run.data.metrics[BEST_EPOCH])
    return next((m.value for m in client.get_metric_history(run.info.run_id, metric) if m.step == epoch), None)


def _values(client, runs: list, metric: str) -> tuple[list[float], Counter]:
    """Per-seed values of the runs that finished, and every run's outcome."""
    values = [_at_best_epoch(client, r, metric) for r in runs if outcome(r) == FINISHED]
    return [v for v in values if v is not None and math.isfinite(v)], Counter(outcome(r) for r in runs)


def cell_runs(client, runs: list, cell: Cell) -> list:
    """The runs a cell summarises (one per seed); for best-of cells, the group with the best mean val/acc_best."""
    typed = [(r, read_params(r.data.params)) for r in runs]
    chosen = [(r, params) for r, params in typed if _matches(params, cell.where)]
    if not chosen or cell.best_over is None:
        return [r for r, _ in chosen]
    groups: dict[Any, list] = {}
    for run, params in chosen:
        groups.setdefault(params.get(cell.best_over), []).append(run)
    scored = [(mean_std(_values(client, g, BEST_ACC)[0])[0], key) for key, g in groups.items()]
    finite = [(score, key) for score, key in scored if not math.isnan(score)]
    return groups[max(finite, key=lambda scored: scored[0])[1]] if finite else [r for r, _ in chosen]


def collect(
    table: str, tracking_uri: str, experiment: str = PAPER_EXPERIMENT
) -> tuple[Layout, dict[tuple[str, str], CellResult]]:
    """A table's layout and, per cell, the runs it summarises and their values (no runs where its sweep has not run)."""
    grid = layout(table)
    runs_of: dict[str, list] = {}
    client = None
    for cell in grid.cells.values():
        if cell.sweep not in runs_of:
            try:
                sweep = SweepRuns(tracking_uri, experiment, cell.sweep, create=False)
                runs_of[cell.sweep], client = sweep.children(), sweep.client
            except LookupError:
                runs_of[cell.sweep] = []
    results = {}
    for position, cell in grid.cells.items():
        runs = cell_runs(client, runs_of[cell.sweep], cell)
        results[position] = CellResult(runs, *_values(client, runs, cell.metric or grid.metric))
    return grid, results


def render(grid: Layout, results: dict[tuple[str, str], CellResult], with_paper: bool = False) -> str:
    """The table as Markdown; cells are mean ± std over seeds, NaN where every seed diverged, '—' where not run."""
    lines = [f"**{grid.title}** ({grid.metric}{' in %' if grid.scale == 100 else ''}, mean ± std over seeds)", ""]
    lines += ["| | " + " | ".join(grid.columns) + " |", "|---|" + "---|" * len(grid.columns)]
    for row in grid.rows:
        cells = []
        for column in grid.columns:
            result = results[row, column]
            text = _format(result.values, result.outcomes, grid.scale) if result.runs else "—"
            if with_paper:
                number = grid.published[row, column]
                text += f" (paper {'—' if number is None else 'NaN' if math.isnan(number) else f'{number:g}'})"
            cells.append(text)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format(values: list[float], outcomes: Counter, scale: float) -> str:
    """mean ± std; NaN alone where every seed diverged (as the paper prints it); runs not averaged are named."""
    text = format_cell(values, scale, 1 if scale == 100 else 2)
    every_seed_diverged = set(outcomes) == {"diverged"}
    return text + (f" ({left_out(outcomes)})" if left_out(outcomes) and not every_seed_diverged else "")
