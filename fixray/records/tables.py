"""Tables read back from MLflow: one row per configuration, mean ± std over the seeds that finished."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from mlflow.tracking import MlflowClient

from fixray.crossing import metric_keys as keys
from fixray.crossing.contract import FLAT_PATHS, SEARCHABLE
from fixray.crossing.head_kinds import DRAW_RULES, HEAD_KINDS
from fixray.faults import Outcome
from fixray.records.encoding import read_params
from fixray.records.render import Table
from fixray.records.runs import SweepRuns, left_out, outcome

# Always shown, as the paper's question is about them: head kind, fixed or learned, the options that name a
# head's configuration (asked of the registered heads: S for cosine heads), and the learning rate.
HEAD_OPTIONS = tuple(dict.fromkeys(name for head in HEAD_KINDS.values() for name in head.shown))
ROW_KEYS = ("kind", "fixed", *HEAD_OPTIONS, "lr")
HEADERS = {"kind": "head", "fixed": "class vectors"}  # column titles where the param name says too little
# Settings each side of a comparison takes at its best: the learning rate and the optimiser's. The head's own
# settings (kind, fixed, S, init, ...) and the loss it trains with are what is compared; every other searched
# setting (the backbone) is the context a comparison holds fixed.
TUNED = ("lr", *(flat for flat, path in FLAT_PATHS.items() if path[0] == "optimizer"))
COMPARED = ("loss", *(flat for flat, path in FLAT_PATHS.items() if path[0] == "head"))


def is_context(setting: str) -> bool:
    """Whether a comparison must hold a setting equal on both sides (model: yes; lr, S, init, loss: no)."""
    return setting not in TUNED and setting not in COMPARED


class MetricReader:
    """A run's metric as the tables show it: a per-epoch test measurement at the run's best epoch (the authors report
    each run at its best_acc epoch), anything else as last logged. One history request per run and metric, kept."""

    def __init__(self, client: MlflowClient | None) -> None:
        self.client = client  # None: every metric as last logged (runs that carry no history)
        self._histories: dict[tuple[str, str], dict[int, float]] = {}

    def __call__(self, run, metric: str, epoch: Literal["best", "last"] = "best") -> float | None:
        logged = run.data.metrics
        if epoch == "last" or self.client is None or not keys.at_best_epoch(metric) or keys.BEST_EPOCH not in logged:
            return logged.get(metric)
        return self.history(run, metric).get(int(logged[keys.BEST_EPOCH]))

    def history(self, run, metric: str) -> dict[int, float]:
        """A metric's value at each epoch it was logged (epoch -> value); empty without a client."""
        key = run.info.run_id, metric
        if key not in self._histories:
            found = self.client.get_metric_history(run.info.run_id, metric) if self.client is not None else []
            self._histories[key] = {m.step: m.value for m in found}
        return self._histories[key]


@dataclass(frozen=True)
class Column:
    """A metric as a table column: each run's value at its best epoch (what the paper reports) or at its last."""

    metric: str
    title: str
    scale: float = 1.0  # 100: a fraction shown in percent (or percentage points)
    decimals: int = 3
    epoch: Literal["best", "last"] = "best"


SUMMARY_COLUMNS = (
    Column(keys.VAL_ACC, "test acc (%)", 100.0, 2, "last"),
    Column(keys.BEST_ACC, "best test acc (%)", 100.0, 2),  # the authors' best_acc
    Column(keys.COMPACTNESS, "compactness"),
    Column(keys.SEPARABILITY_MEAN, "separability (mean cos of class means)"),
)


@dataclass
class Row:
    """One configuration of a sweep: its runs, one per seed, and their metrics read for tables."""

    key: dict[str, Any]  # typed parameter values (read_params): True, 0.1, None for an option the head lacks
    read: MetricReader = field(default_factory=lambda: MetricReader(None), repr=False)
    finished: dict[int, Any] = field(default_factory=dict)  # seed -> its run, for runs that finished
    outcomes: Counter = field(default_factory=Counter)  # finished, diverged, error, ... -> runs
    runs: list = field(default_factory=list)  # the child runs of this configuration, one per seed
    planned: int = 0  # seeds the sweep file plans for each configuration (0: not recorded, an older sweep)

    def value(self, seed: int, column: Column) -> float | None:
        """A finished seed's value of a column; None where it was not logged or is not finite."""
        found = self.read(self.finished[seed], column.metric, column.epoch)
        return found if found is not None and math.isfinite(found) else None

    def values(self, column: Column) -> list[float]:
        """One value per finished seed (in seed order); diverged, failed and unfinished runs are never in it."""
        found = (self.value(seed, column) for seed in sorted(self.finished))
        return [v for v in found if v is not None]

    def mean(self, column: Column) -> float:
        return mean_std(self.values(column))[0]

    @property
    def not_started(self) -> int:
        """Planned seeds with no run yet (a sweep interrupted early, a report read mid-sweep)."""
        return max(self.planned - len(self.runs), 0)

    @property
    def ranked(self) -> bool:
        """Whether the configuration may be ranked against others: every seed the sweep plans finished (the paper
        prints NaN for a setting some of whose seeds diverged; its survivors alone would flatter it, and so would a
        configuration whose other seeds have not started)."""
        return bool(self.runs) and set(self.outcomes) == {Outcome.FINISHED} and not self.not_started

    @property
    def seeds(self) -> str:
        """'3', or '3 (1 diverged, 1 unfinished)', or '1 (2 not started)': every run counted, planned seeds without
        one too, only finished ones averaged."""
        excluded = left_out(dict(self.outcomes) | {"not started": self.not_started})
        return f"{sum(self.outcomes.values())}" + (f" ({excluded})" if excluded else "")

    @property
    def context(self) -> tuple:
        """The settings a comparison holds equal (is_context), as a hashable key."""
        return tuple((k, v) for k, v in self.key.items() if is_context(k))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed); NaN when there is no value."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def sweep_rows(runs: SweepRuns) -> list[Row]:
    """A sweep's configurations as its tables, answer and data read them: the runs its file plans, against the seeds
    it plans."""
    return summarise(runs.children(), runs.client, runs.planned_seeds())


def summarise(children: list, client: MlflowClient | None = None, planned: int = 0) -> list[Row]:
    """Groups child runs by every parameter except the seed; only finished runs' metrics are read, through
    `client` at each run's best epoch (None: as last logged); `planned`: seeds planned per configuration."""
    read = MetricReader(client)
    params = [read_params(c.data.params) for c in children]
    kinds = {p.get("kind") for p in params}
    # A parameter gets a column when it varies beyond what the head kind implies (bias follows kind by default).
    varying = [
        k for k in SEARCHABLE if k not in ROW_KEYS and len({(p.get("kind"), p.get(k)) for p in params}) > len(kinds)
    ]
    names = list(ROW_KEYS) + varying
    rows: dict[tuple, Row] = {}
    for child, values in zip(children, params):
        group = tuple(values.get(k) for k in names)
        row = rows.setdefault(group, Row(dict(zip(names, group)), read, planned=planned))
        row.runs.append(child)
        row.outcomes[outcome(child)] += 1
        if outcome(child) == Outcome.FINISHED:
            row.finished[values.get("seed")] = child
    order = ("kind", *HEAD_OPTIONS, "fixed", "lr", *varying)  # rows of one head configuration stay together
    return sorted(rows.values(), key=lambda row: tuple(sort_key(k, row.key[k]) for k in order))


def sort_key(key: str, value: Any) -> tuple:
    """Head kinds and draws in registry order, fixed before learned, numbers ascending, absent values first."""
    for name, registry in (("kind", list(HEAD_KINDS)), ("init", list(DRAW_RULES))):
        if key == name:
            return (registry.index(value) if value in registry else len(registry), str(value))
    if key == "fixed":
        return (value is not True, 0)
    if value is None:
        return (0, 0)
    return (1, value) if isinstance(value, (int, float)) else (2, str(value))


def format_cell(values: list[float], scale: float, decimals: int) -> str:
    """mean ± std of the values, scaled; NaN where there is none."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "NaN"
    return f"{mean * scale:.{decimals}f} ± {std * scale:.{decimals}f}"


SHOWN_DIGITS = 3  # significant digits of a searched number: S=7.89, not S=7.891112021272017; more where needed apart


def digits_apart(values: Iterable[Any]) -> int:
    """The fewest significant digits, SHOWN_DIGITS at least, that show each distinct number among `values` apart."""
    numbers = {v for v in values if isinstance(v, float)}
    return next(d for d in range(SHOWN_DIGITS, 18) if len({f"{v:.{d}g}" for v in numbers}) == len(numbers))


def shown_value(key: str, value: Any, digits: int = SHOWN_DIGITS) -> str:
    """A parameter as a table cell: fixed/learned for `fixed`, 'none' for an option the head lacks, a number to
    `digits` significant digits (digits_apart: as many as tell a column's numbers apart); MLflow keeps it exact."""
    if key == "fixed" and isinstance(value, bool):
        return "fixed" if value else "learned"
    if isinstance(value, float) and float(short := f"{value:.{digits}g}") != value:
        return short
    return "none" if value is None else str(value)


def measured(row: Row) -> bool:
    """Whether a configuration has numbers to show: a finished seed, or a divergence (shown as NaN, as the paper does);
    not when it is only unfinished, failed or not run."""
    return bool(row.finished) or Outcome.DIVERGED in row.outcomes


def sweep_table(rows: list[Row]) -> Table:
    """One row per configuration: its settings, its runs (those not averaged named), mean ± std of finished seeds."""
    settings = list(rows[0].key) if rows else []
    header = [HEADERS.get(k, k) for k in settings] + ["seeds"] + [column.title for column in SUMMARY_COLUMNS]
    digits = {k: digits_apart(row.key[k] for row in rows) for k in settings}
    cells = [
        [shown_value(k, row.key[k], digits[k]) for k in settings]
        + [row.seeds]
        + [format_cell(row.values(c), c.scale, c.decimals) if measured(row) else "—" for c in SUMMARY_COLUMNS]
        for row in rows
    ]
    note = "(mean ± std over finished seeds, NaN where every seed diverged, — where none finished otherwise; "
    note += "measurements at each run's best epoch, test acc at its last)"
    return Table("Every configuration", header, cells, note, "(no finished trials)")


def row_caption(row: Row) -> str:
    return " · ".join(f"{HEADERS.get(k, k)}={shown_value(k, v)}" for k, v in row.key.items())
