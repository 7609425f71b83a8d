"""Tables read back from MLflow: one row per configuration, mean ± std over seeds."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from fixray.config import SEARCHABLE
from fixray.tracking import STATUS_TAG, SweepRuns

ROW_KEYS = ("kind", "fixed", "S", "lr")  # always shown: the paper's question is about these
HEADERS = {"kind": "head", "fixed": "class vectors"}  # column titles where the param name says too little
SUMMARY_COLUMNS = (  # (metric key, column title, multiplier, decimals)
    ("val/acc", "test acc (%)", 100.0, 2),
    ("val/compactness", "compactness", 1.0, 3),
    ("val/separability_mean", "separability (mean cos)", 1.0, 3),
)


@dataclass
class Row:
    """One configuration of a sweep and the per-seed values of each summary metric."""

    key: dict[str, str]
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
    kinds = {c.data.params.get("kind") for c in children}
    # A parameter gets a column when it varies beyond what the head kind implies (bias follows kind by default).
    varying = [
        k for k in SEARCHABLE
        if k not in ROW_KEYS and len({(c.data.params.get("kind"), c.data.params.get(k)) for c in children}) > len(kinds)
    ]
    keys = list(ROW_KEYS) + varying
    rows: dict[tuple, Row] = {}
    for child in children:
        params = child.data.params
        group = tuple(params.get(k, "") for k in keys)
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
    return sorted(rows.values(), key=lambda r: (r.key["kind"] != "dot", _number(r.key["S"]), r.key["fixed"] != "True", _number(r.key["lr"])))


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return -math.inf


def format_cell(values: list[float], scale: float, decimals: int) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "NaN"
    return f"{mean * scale:.{decimals}f} ± {std * scale:.{decimals}f}"


def _shown(key: str, value: str) -> str:
    if key == "fixed":
        return {"True": "fixed", "False": "learned"}.get(value, value)
    return value


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
    captions = [(" · ".join(f"{HEADERS.get(k, k)}={_shown(k, v)}" for k, v in row.key.items()), row.runs[0]) for row in rows]
    return markdown_table(rows), captions


def sweep_table(tracking_uri: str, experiment: str, sweep: str) -> str:
    return sweep_rows(tracking_uri, experiment, sweep)[0]
