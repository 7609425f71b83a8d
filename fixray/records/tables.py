"""Tables read back from MLflow: one row per configuration, mean ± std over the seeds that finished."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fixray.records.render import Table
from fixray.records.runs import FINISHED, left_out, outcome
from fixray.trial import metric_keys as keys
from fixray.trial.contract import SEARCHABLE, read_params
from fixray.trial.head_kinds import HEAD_KINDS

# Always shown, as the paper's question is about them: head kind, fixed or learned, the options that name a
# head's configuration (asked of the registered heads: S for cosine heads), and the learning rate.
HEAD_OPTIONS = tuple(dict.fromkeys(name for head in HEAD_KINDS.values() for name in head.shown))
ROW_KEYS = ("kind", "fixed", *HEAD_OPTIONS, "lr")
HEADERS = {"kind": "head", "fixed": "class vectors"}  # column titles where the param name says too little
SUMMARY_COLUMNS = (  # (metric key, column title, multiplier, decimals)
    (keys.VAL_ACC, "test acc (%)", 100.0, 2),  # the last epoch's
    (keys.BEST_ACC, "best test acc (%)", 100.0, 2),  # the best epoch's, as the authors report
    (keys.COMPACTNESS, "compactness", 1.0, 3),
    (keys.SEPARABILITY_MEAN, "separability (mean cos of class means)", 1.0, 3),
)


@dataclass
class Row:
    """One configuration of a sweep: its runs, and the summary metrics of those that finished, by seed."""

    key: dict[str, Any]  # typed parameter values (read_params): True, 0.1, None for an option the head lacks
    by_seed: dict[int, dict[str, float]] = field(default_factory=dict)  # finished runs: seed -> metric -> value
    outcomes: Counter = field(default_factory=Counter)  # finished, diverged, error, ... -> runs
    runs: list = field(default_factory=list)  # the child runs of this configuration, one per seed

    def values(self, metric: str) -> list[float]:
        """One value per finished seed (in seed order); diverged, failed and unfinished runs are never in it."""
        found = (self.by_seed[seed].get(metric) for seed in sorted(self.by_seed))
        return [v for v in found if v is not None and math.isfinite(v)]

    @property
    def seeds(self) -> str:
        """'3', or '3 (1 diverged, 1 unfinished)': every run counted, only finished ones averaged."""
        excluded = left_out(self.outcomes)
        return f"{sum(self.outcomes.values())}" + (f" ({excluded})" if excluded else "")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed); NaN when there is no value."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(children: list) -> list[Row]:
    """Groups child runs by every parameter except the seed; only finished runs' metrics are kept."""
    params = [read_params(c.data.params) for c in children]
    kinds = {p.get("kind") for p in params}
    # A parameter gets a column when it varies beyond what the head kind implies (bias follows kind by default).
    varying = [
        k for k in SEARCHABLE if k not in ROW_KEYS and len({(p.get("kind"), p.get(k)) for p in params}) > len(kinds)
    ]
    keys = list(ROW_KEYS) + varying
    rows: dict[tuple, Row] = {}
    for child, values in zip(children, params):
        group = tuple(values.get(k) for k in keys)
        row = rows.setdefault(group, Row(dict(zip(keys, group))))
        row.runs.append(child)
        row.outcomes[outcome(child)] += 1
        if outcome(child) == FINISHED:
            row.by_seed[values.get("seed")] = dict(child.data.metrics)
    order = ("kind", *HEAD_OPTIONS, "fixed", "lr", *varying)  # rows of one head configuration stay together
    return sorted(rows.values(), key=lambda row: tuple(_sort_key(k, row.key[k]) for k in order))


def _sort_key(key: str, value: Any) -> tuple:
    """Head kinds in registry order, fixed before learned, numbers ascending, absent values first."""
    if key == "kind":
        return (list(HEAD_KINDS).index(value) if value in HEAD_KINDS else len(HEAD_KINDS), str(value))
    if key == "fixed":
        return (value is not True, 0)
    if value is None:
        return (0, 0)
    return (1, value) if isinstance(value, (int, float)) else (2, str(value))


def format_cell(values: list[float], scale: float, decimals: int) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "NaN"
    return f"{mean * scale:.{decimals}f} ± {std * scale:.{decimals}f}"


def shown_value(key: str, value: Any) -> str:
    """A parameter as a table cell: fixed/learned for `fixed`, 'none' for an option the head lacks."""
    if key == "fixed" and isinstance(value, bool):
        return "fixed" if value else "learned"
    return "none" if value is None else str(value)


def sweep_table(rows: list[Row]) -> Table:
    """One row per configuration: its settings, its runs (those not averaged named), mean ± std of finished seeds."""
    settings = list(rows[0].key) if rows else []
    header = [HEADERS.get(k, k) for k in settings] + ["seeds"] + [title for _, title, *_ in SUMMARY_COLUMNS]
    cells = [
        [shown_value(k, row.key[k]) for k in settings]
        + [row.seeds]
        + [format_cell(row.values(m), scale, dec) for m, _, scale, dec in SUMMARY_COLUMNS]
        for row in rows
    ]
    return Table("Every configuration", header, cells, "(mean ± std over finished seeds)", "(no finished trials)")


def row_caption(row: Row) -> str:
    return " · ".join(f"{HEADERS.get(k, k)}={shown_value(k, v)}" for k, v in row.key.items())
