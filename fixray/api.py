"""fixray from Python (a notebook: `from fixray import api`): a sweep's results as pandas DataFrames and values,
read from MLflow with the same rows, means and answer as `fixray report`; and a sweep run from a file or a dict.
docs/python.md shows it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fixray.records import frames
from fixray.records.runs import SweepRuns
from fixray.records.tables import sweep_rows
from fixray.sweep.defaults import EXPERIMENT as DEFAULT_EXPERIMENT
from fixray.sweep.defaults import default_tracking_uri


def _runs(sweep: str, tracking_uri: str | None, experiment: str) -> SweepRuns:
    """A sweep's runs, read without writing (LookupError: no such sweep; MissingStore: no store there)."""
    return SweepRuns(tracking_uri or default_tracking_uri(), experiment, sweep, create=False)


def trials(
    sweep: str, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT, every: bool = False
) -> pd.DataFrame:
    """One row per trial: run_name, run_id, identity, outcome, every setting as a typed column, and each metric as the
    tables read it (per-epoch test measurements at the run's best epoch; `<key>@last` at its last). `val/...` keys
    are measured on the test split, as the authors' code names them. every=True: runs the file no longer plans too."""
    return frames.trials_frame(_runs(sweep, tracking_uri, experiment), every)


def histories(
    sweep: str, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT, metrics: list[str] | None = None
) -> pd.DataFrame:
    """Every epoch of every trial in long form: run_name, run_id, epoch, metric, value (join trials() on run_id for
    the settings)."""
    return frames.histories_frame(_runs(sweep, tracking_uri, experiment), metrics)


def configurations(sweep: str, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> pd.DataFrame:
    """The 'every configuration' table as numbers: settings, runs by outcome, and `<metric>_mean`, `_std`, `_n` over
    the seeds that finished (fractions, not percent)."""
    runs = _runs(sweep, tracking_uri, experiment)
    return pd.DataFrame.from_records(frames.configuration_records(sweep_rows(runs)))


def answer(sweep: str, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> list[dict[str, Any]]:
    """The headline as values, one per context (e.g. per backbone): best fixed and learned configurations, their
    accuracies, the paired difference and its 95% t interval (NaN bounds: no interval), the ties and the sentence."""
    return frames.report_data(_runs(sweep, tracking_uri, experiment))["answer"]


def run_sweep(sweep: str | Path | dict[str, Any], address: str | None = None) -> pd.DataFrame:
    """Runs a sweep (a file, or its contents as a dict), grows or resumes it as `fixray sweep` does, printing the same
    lines; returns its trials(). Bad input raises a FixrayError (BadInput, SweepFileError) before anything starts; a
    sweep stopped before its end (interrupted, storage full, MLflow away) raises RuntimeError."""
    from fixray.cli import run_sweep_spec
    from fixray.errors import EXIT_INTERRUPTED
    from fixray.sweep.spec.checks import parse_sweep
    from fixray.sweep.spec.reading import load_sweep

    if isinstance(sweep, dict):
        spec, file = parse_sweep(sweep, Path("<dict>")), "the sweep's dict"
    else:
        spec, file = load_sweep(sweep), str(sweep)
    status = run_sweep_spec(spec, address, file)
    if status == EXIT_INTERRUPTED:
        raise RuntimeError(f"sweep {spec.name!r} stopped before its end: run it again to resume (see the lines above)")
    return trials(spec.name, spec.tracking.uri, spec.tracking.experiment)
