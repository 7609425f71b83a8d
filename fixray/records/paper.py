"""The paper's tables rebuilt from MLflow, in its layout, optionally beside its published numbers.

Each table is a grid of cells declared as data in paper_tables.yaml beside its published numbers: a cell names
the sweep (from sweeps/paper/) and the parameter values of the runs it summarises, and, for "best" tables, the
parameter over which the best mean is taken. As the
authors report `best_acc`, every cell shows its runs at their best epoch: the best test accuracy over the
epochs (`val/acc_best`), per-epoch measurements read at that epoch, and robustness and generalisation
measured on that epoch's weights; the best learning rate or S is the one with the best mean `val/acc_best`.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from fixray.crossing import metric_keys as keys
from fixray.faults import Outcome
from fixray.records.encoding import read_params
from fixray.records.render import Report, Table
from fixray.records.runs import SweepRuns, left_out, outcome
from fixray.records.store import reading_client
from fixray.records.tables import MetricReader, format_cell, mean_std, shown_value

PAPER_EXPERIMENT = "fixray-paper"  # the MLflow experiment the paper's sweep files write to
BEST_ACC, BEST_EPOCH = keys.BEST_ACC, keys.BEST_EPOCH  # logged by the loop every epoch


@functools.cache
def published() -> dict:
    """The paper's tables as declared (cells' rules beside the published numbers), shipped inside the package: read
    once per process (the table list at import, then every layout), never changed after."""
    return yaml.safe_load(resources.files("fixray.records").joinpath("paper_tables.yaml").read_text())


@dataclass(frozen=True)
class Cell:
    sweep: str | None  # MLflow parent run name; None: the paper's data was never published, nothing to measure
    where: dict[str, Any] = field(default_factory=dict)  # typed child params that select the runs
    best_over: str | None = None  # the parameter whose best mean (by test accuracy) the cell reports
    metric: str = BEST_ACC  # what the cell shows, each run at its best epoch


@dataclass(frozen=True)
class Layout:
    title: str
    metric: str  # what the cells show (a family, e.g. robust/<corruption>/acc, where rows differ)
    scale: float  # 100 for accuracies in percent
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], Cell]
    published: dict[tuple[str, str], float | None]


def _merged(*settings: dict[str, Any]) -> dict[str, Any]:
    """Cell settings from the table, then its column, then its row: later ones win, `where` merges key by key."""
    merged: dict[str, Any] = {"where": {}}
    for found in settings:
        merged |= {k: v for k, v in found.items() if k != "where"}
        merged["where"] = merged["where"] | found.get("where", {})
    return merged


def layout(table: str) -> Layout:
    """The grid of one of the paper's tables, every cell from its declared rule (paper_tables.yaml)."""
    declared = published()[table]
    rows = {name: row if isinstance(row, dict) else {"paper": row} for name, row in declared["rows"].items()}
    columns = list(declared["columns"])
    cells, numbers = {}, {}
    for name, row in rows.items():
        numbers_of_row = row["paper"] if isinstance(row["paper"], list) else [row["paper"]] * len(columns)
        for column, number in zip(columns, numbers_of_row):
            settings = _merged(declared.get("cell", {}), declared["columns"][column], row.get("cell", {}))
            names = {"row": name, "column": column} | row.get("vars", {})
            sweep = settings.get("sweep")
            cells[name, column] = Cell(
                sweep.format(**names) if sweep else None,
                settings["where"],
                settings.get("best_over"),
                settings.get("metric", declared["metric"]),
            )
            numbers[name, column] = number
    return Layout(declared["title"], declared["metric"], float(declared["scale"]), list(rows), columns, cells, numbers)


TABLES = tuple(name for name, value in published().items() if isinstance(value, dict) and "rows" in value)


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
    unranked: dict[str, str] = field(default_factory=dict)  # best-of cells: 'lr=0.1' -> its runs not finished


def _values(read: MetricReader, runs: list, metric: str) -> tuple[list[float], Counter]:
    """Per-seed values of the runs that finished, and every run's outcome."""
    values = [read(r, metric) for r in runs if outcome(r) == Outcome.FINISHED]
    return [v for v in values if v is not None and math.isfinite(v)], Counter(outcome(r) for r in runs)


NOT_STARTED = "not_started"  # beside a cell's outcomes: seeds its sweep plans that have no run yet


def _counted(read: MetricReader, runs: list, metric: str, planned: int) -> tuple[list[float], Counter]:
    """_values, with the seeds the sweep plans (planned: how many; 0 where unrecorded) that have no run counted too."""
    values, outcomes = _values(read, runs, metric)
    seeds = {read_params(r.data.params).get("seed") for r in runs}
    return values, outcomes + Counter({NOT_STARTED: max(planned - len(seeds), 0)})


def cell_result(read: MetricReader, runs: list, cell: Cell, planned: int = 0) -> CellResult:
    """The runs a cell summarises (one per seed) and their values; for best-of cells, the settings left unranked.
    planned: the seeds the sweep plans per configuration (its parent records them), against which seeds are counted.

    A best-of cell takes the setting (lr, S) with the best mean val/acc_best over its seeds, among the settings
    whose every planned seed finished: as the paper prints NaN for a setting some of whose seeds diverged, a setting's
    survivors alone (or its first seeds, read mid-sweep) never win a cell. Where no setting finished every seed, the
    cell averages nothing (NaN)."""
    typed = [(r, read_params(r.data.params)) for r in runs]
    chosen = [r for r, params in typed if _matches(params, cell.where)]
    if cell.best_over is None:
        return CellResult(chosen, *_counted(read, chosen, cell.metric, planned))
    groups: dict[Any, list] = {}
    for run, params in typed:
        if _matches(params, cell.where):
            groups.setdefault(params.get(cell.best_over), []).append(run)
    scored, unranked = [], {}
    for key, group in groups.items():
        values, outcomes = _counted(read, group, BEST_ACC, planned)
        if set(+outcomes) == {Outcome.FINISHED} and values:
            scored.append((mean_std(values)[0], key))
        else:
            unranked[f"{cell.best_over}={shown_value(cell.best_over, key)}"] = left_out(outcomes) or "no value"
    if not scored:
        return CellResult(chosen, [], Counter(outcome(r) for r in chosen), unranked)
    best = groups[max(scored, key=lambda found: found[0])[1]]
    return CellResult(best, *_counted(read, best, cell.metric, planned), unranked)


def collect(
    table: str, tracking_uri: str, experiment: str = PAPER_EXPERIMENT
) -> tuple[Layout, dict[tuple[str, str], CellResult]]:
    """A table's layout and, per cell, the runs it summarises and their values (no runs where its sweep has not run)."""
    grid = layout(table)
    runs_of: dict[str | None, tuple[list, int]] = {None: ([], 0)}  # sweep -> its runs, the seeds it plans
    read = MetricReader(reading_client(tracking_uri))  # MissingStore where no store exists
    for cell in grid.cells.values():
        if cell.sweep not in runs_of:
            try:
                sweep = SweepRuns(tracking_uri, experiment, cell.sweep, create=False)
                runs_of[cell.sweep] = (sweep.children(), sweep.planned_seeds())
            except LookupError:
                runs_of[cell.sweep] = ([], 0)
    results = {}
    for position, cell in grid.cells.items():
        runs, planned = runs_of[cell.sweep]
        results[position] = cell_result(read, runs, cell, planned)
    return grid, results


def paper_table(grid: Layout, results: dict[tuple[str, str], CellResult], with_paper: bool = False) -> Table:
    """The table in the paper's layout; cells are mean ± std over seeds, NaN where every seed diverged, '—' where
    not run; with_paper: the published number beside each cell."""
    rows = []
    for row in grid.rows:
        cells = [row]
        for column in grid.columns:
            result = results[row, column]
            text = _format(result, grid.scale) if result.runs else "—"
            if with_paper:
                number = grid.published[row, column]
                text += f" (paper {'—' if number is None else 'NaN' if math.isnan(number) else f'{number:g}'})"
            cells.append(text)
        rows.append(cells)
    note = f"({grid.metric}{' in %' if grid.scale == 100 else ''}, mean ± std over seeds)"
    return Table(grid.title, ["", *grid.columns], rows, note)


def report(table: str, tracking_uri: str, experiment: str = PAPER_EXPERIMENT, with_paper: bool = False) -> Report:
    """One of the paper's tables read from MLflow, with the first run of each cell for the HTML page's figures."""
    grid, results = collect(table, tracking_uri, experiment)
    figures = [
        (f"{row} · {column}", results[row, column].runs[0])
        for row in grid.rows
        for column in grid.columns
        if results[row, column].runs
    ]
    return Report([paper_table(grid, results, with_paper)], figures)


def _format(result: CellResult, scale: float) -> str:
    """mean ± std; NaN alone where every seed diverged (as the paper prints it); runs not averaged are named, and so
    are the settings a best-of cell could not rank."""
    outcomes = result.outcomes
    if set(outcomes) == {Outcome.DIVERGED}:
        return "NaN"  # every seed diverged, as the paper prints it
    text = format_cell(result.values, scale, 1 if scale == 100 else 2) if result.values else "—"
    if left_out(outcomes):
        text += f" ({left_out(outcomes)})"
    unranked = "; ".join(f"{setting}: {why}" for setting, why in result.unranked.items())
    return text + (f" (not ranked, a seed short: {unranked})" if unranked else "")
