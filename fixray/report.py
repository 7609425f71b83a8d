"""Tables read back from MLflow: one row per configuration, mean ± std over seeds."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from fixray.heads import HEADS
from fixray.tracking import STATUS_TAG, SweepRuns
from fixray.trial import SEARCHABLE, read_params

# Always shown, as the paper's question is about them: head kind, fixed or learned, the options that name a
# head's configuration (asked of the registered heads: S for cosine heads), and the learning rate.
HEAD_OPTIONS = tuple(dict.fromkeys(name for head in HEADS.values() for name in head.shown))
ROW_KEYS = ("kind", "fixed", *HEAD_OPTIONS, "lr")
HEADERS = {"kind": "head", "fixed": "class vectors"}  # column titles where the param name says too little
SUMMARY_COLUMNS = (  # (metric key, column title, multiplier, decimals)
    ("val/acc", "test acc (%)", 100.0, 2),  # the last epoch's
    ("val/acc_best", "best test acc (%)", 100.0, 2),  # the best epoch's, as the authors report
    ("val/compactness", "compactness", 1.0, 3),
    ("val/separability_mean", "separability (mean cos of class means)", 1.0, 3),
)


@dataclass
class Row:
    """One configuration of a sweep and the per-seed values of each summary metric."""

    key: dict[str, Any]  # typed parameter values (read_params): True, 0.1, None for an option the head lacks
    values: dict[str, list[float]]  # metric -> one value per seed that did not diverge
    seeds: int
    diverged: int
    runs: list = field(default_factory=list)  # the child runs of this configuration, one per seed


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed); NaN when there is no value."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(children: list) -> list[Row]:
    """Groups child runs by every parameter except the seed; diverged seeds are counted, not averaged."""
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
        row = rows.setdefault(group, Row(dict(zip(keys, group)), {m: [] for m, *_ in SUMMARY_COLUMNS}, 0, 0))
        row.seeds += 1
        row.runs.append(child)
        if child.data.tags.get(STATUS_TAG) == "diverged" or child.data.metrics.get("diverged") == 1:
            row.diverged += 1
            continue
        for metric, *_ in SUMMARY_COLUMNS:
            value = child.data.metrics.get(metric)
            if value is not None and math.isfinite(value):
                row.values[metric].append(value)
    order = ("kind", *HEAD_OPTIONS, "fixed", "lr", *varying)  # rows of one head configuration stay together
    return sorted(rows.values(), key=lambda row: tuple(_sort_key(k, row.key[k]) for k in order))


def _sort_key(key: str, value: Any) -> tuple:
    """Head kinds in registry order, fixed before learned, numbers ascending, absent values first."""
    if key == "kind":
        return (list(HEADS).index(value) if value in HEADS else len(HEADS), str(value))
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


def _shown(key: str, value: Any) -> str:
    """A parameter as a table cell: fixed/learned for `fixed`, 'none' for an option the head lacks."""
    if key == "fixed" and isinstance(value, bool):
        return "fixed" if value else "learned"
    return "none" if value is None else str(value)


def markdown_table(rows: list[Row]) -> str:
    if not rows:
        return "(no finished trials)"
    keys = list(rows[0].key)
    header = [HEADERS.get(k, k) for k in keys] + ["seeds"] + [title for _, title, *_ in SUMMARY_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        seeds = f"{row.seeds}" + (f" ({row.diverged} diverged)" if row.diverged else "")
        cells = [_shown(k, row.key[k]) for k in keys] + [seeds]
        cells += [format_cell(row.values[m], scale, dec) for m, _, scale, dec in SUMMARY_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_rows(tracking_uri: str, experiment: str, sweep: str) -> tuple[str, list[tuple[str, object]]]:
    """A sweep's table and, per row, one run whose figures illustrate it (for HTML reports)."""
    rows = summarise(SweepRuns(tracking_uri, experiment, sweep, create=False).children())
    captions = [
        (" · ".join(f"{HEADERS.get(k, k)}={_shown(k, v)}" for k, v in row.key.items()), row.runs[0]) for row in rows
    ]
    return markdown_table(rows), captions


def sweep_table(tracking_uri: str, experiment: str, sweep: str) -> str:
    return sweep_rows(tracking_uri, experiment, sweep)[0]
