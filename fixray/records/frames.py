"""A sweep's results as data, read from MLflow with the rows, means and answer its tables print: pandas DataFrames for
notebooks (fixray.api) and the JSON and CSV of `fixray report --format`."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from fixray.crossing import metric_keys as keys
from fixray.crossing.contract import FLAT_PATHS, base_type, field_type
from fixray.records.answer import BEST_ACC, Headline
from fixray.records.encoding import read_params
from fixray.records.runs import IDENTITY_TAG, SweepRuns, outcome
from fixray.records.tables import SUMMARY_COLUMNS, MetricReader, Row, mean_std, sweep_rows

LAST = "@last"  # beside a metric read at the run's best epoch: the same metric at its last epoch
DTYPES = {bool: "boolean", int: "Int64", float: "float64", str: "string"}  # a setting's column, missing values NA


def _setting_dtype(name: str) -> str:
    return DTYPES.get(base_type(field_type(name)), "object")


def trial_records(runs: SweepRuns, every: bool = False) -> list[dict[str, Any]]:
    """One record per trial run the sweep file plans (every=True: those it no longer plans too): its name, id,
    identity and outcome, every param typed, and each metric as the tables read it (a per-epoch test measurement at
    the run's best epoch, and at its last under `<key>@last`; the others as last logged)."""
    read = MetricReader(runs.client)
    records = []
    for child in sorted(runs.children(every=every), key=lambda child: child.info.run_name):
        record = {
            "run_name": child.info.run_name,
            "run_id": child.info.run_id,
            "identity": child.data.tags.get(IDENTITY_TAG),
            "outcome": outcome(child),
        }
        record |= read_params(child.data.params)
        for key in sorted(k for k in child.data.metrics if keys.declared(k) is not None):
            record[key] = read(child, key)
            if keys.at_best_epoch(key):
                record[key + LAST] = read(child, key, "last")
        records.append(record)
    return records


def trials_frame(runs: SweepRuns, every: bool = False) -> pd.DataFrame:
    """trial_records as a DataFrame: settings in their types (nullable: NA where a head lacks an option)."""
    frame = pd.DataFrame.from_records(trial_records(runs, every))
    for name in frame.columns:
        if name in FLAT_PATHS:
            frame[name] = frame[name].astype(_setting_dtype(name))
    return frame


def histories_frame(runs: SweepRuns, metrics: list[str] | None = None) -> pd.DataFrame:
    """Every epoch of every trial run the file plans, in long form: run_name, run_id, epoch, metric, value (metrics:
    the catalogue's that the runs logged, or those named)."""
    rows = []
    for child in runs.children():
        wanted = metrics or [k for k in child.data.metrics if keys.declared(k) is not None]
        for key in wanted:
            for point in runs.client.get_metric_history(child.info.run_id, key):
                rows.append((child.info.run_name, child.info.run_id, point.step, key, point.value))
    columns = ["run_name", "run_id", "epoch", "metric", "value"]
    return pd.DataFrame(rows, columns=columns).sort_values(["run_name", "metric", "epoch"], ignore_index=True)


def configuration_records(rows: list[Row]) -> list[dict[str, Any]]:
    """One record per configuration, as the 'every configuration' table: its settings, its runs by outcome, and for
    each summary column the mean and standard deviation over the seeds that finished (fractions, not percent; NaN
    where none finished) and how many finished seeds it holds."""
    records = []
    for row in rows:
        record = dict(row.key) | {"seeds": sum(row.outcomes.values()), "ranked": row.ranked}
        record |= {f"runs_{name}": count for name, count in sorted(row.outcomes.items())}
        for column in SUMMARY_COLUMNS:
            values = row.values(column)
            name = column.metric + (LAST if column.epoch == "last" else "")
            mean, std = mean_std(values)
            record |= {f"{name}_mean": mean, f"{name}_std": std, f"{name}_n": len(values)}
        records.append(record)
    return records


def answer_records(headlines: list[Headline]) -> list[dict[str, Any]]:
    """The answer as values: per context, the best fixed and best learned configuration, their mean best-epoch
    accuracy, the paired difference with its 95% t interval (NaN bounds under two seeds, or seeds that agree exactly:
    no interval) and the ties."""
    records = []
    for headline in headlines:
        interval, best = headline.interval, headline.best
        records.append(
            {
                "context": dict(headline.context),
                "best_fixed": dict(best.fixed.key),
                "best_learned": dict(best.learned.key),
                "best_fixed_acc": best.fixed.mean(BEST_ACC),
                "best_learned_acc": best.learned.mean(BEST_ACC),
                "fixed_minus_learned": interval.mean,
                "ci95_low": interval.low if interval.has_width else math.nan,
                "ci95_high": interval.high if interval.has_width else math.nan,
                "seeds_paired": interval.n,
                "fixed_ties": headline.fixed_ties,
                "learned_ties": headline.learned_ties,
                "text": headline.text(),
            }
        )
    return records


def report_data(runs: SweepRuns) -> dict[str, Any]:
    """`fixray report SWEEP --format json`: the answer, every configuration and every trial, as values."""
    rows = sweep_rows(runs)
    return {
        "sweep": runs.sweep,
        "answer": answer_records(Headline.each(rows)),
        "configurations": configuration_records(rows),
        "trials": trial_records(runs),
        "not_in_file": runs.not_in_file(),
    }
