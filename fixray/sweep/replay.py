"""`fixray replay RUN`: one trial trained again from its MLflow run, here, and every per-epoch metric compared.

The child run holds the trial's settled config as params, and what else changes its arithmetic (the dataset, torch
threads, bf16, channels-last, compile); its parent holds the versions and device it ran with. The replay trains in
this process (no Ray, nothing written to MLflow) and compares each metric the run logged at each epoch replayed: on
the CPU with the same versions they are equal bit for bit. Metrics measured after the last epoch on extra test sets
(robustness, generalisation) are not replayed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from fixray.crossing import metric_keys as keys
from fixray.crossing.contract import FLAT_PATHS, REPLAYED_EXECUTION, Execution, from_params
from fixray.errors import BadInput
from fixray.records.encoding import quoted, read_params
from fixray.records.runs import ROLE_TAG, SWEEP_TAG
from fixray.records.store import reading_client
from fixray.sweep.provenance import this_machine


class NotReplayable(BadInput):
    """The run named is no trial fixray can train again here."""


class _Replayed(Exception):
    """Raised from the loop's report after the last epoch asked for: the replay has what it compares."""


@dataclass
class Difference:
    metric: str
    epoch: int
    logged: float
    replayed: float | None  # None: the replay did not report it


@dataclass
class Replay:
    run_id: str
    run_name: str
    epochs: int  # epochs replayed
    compared: int  # (metric, epoch) values compared
    first_difference: Difference | None
    versions: dict[str, tuple[str, str]]  # env/ param -> (the run's, this machine's), where they differ

    @property
    def equal(self) -> bool:
        return self.first_difference is None


FLAGS = {"True": True, "False": False, "none": None}  # how MLflow holds a bool or null setting


def _execution(params: dict[str, Any]) -> Execution:
    """The run's arithmetic settings (bf16 'none': the device's choice, as the trial had it)."""
    return Execution(**{name: FLAGS[params[name]] for name in REPLAYED_EXECUTION if name in params})


def find_trial_run(client: MlflowClient, run: str, tracking_uri: str, sweep: str | None = None):
    """A trial's child run by its id, or by its name (within `sweep` when given): NotReplayable when none is, or
    when the name is several sweeps' (naming them)."""
    if sweep is None:
        try:
            return client.get_run(run)
        except Exception:  # MLflow says RESOURCE_DOES_NOT_EXIST in its own exception type: try it as a name
            pass
    where = f"tags.`{ROLE_TAG}` = 'trial' and tags.`{MLFLOW_RUN_NAME}` = {quoted(run)}"
    where += f" and tags.`{SWEEP_TAG}` = {quoted(sweep)}" if sweep else ""
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, where, max_results=100) if experiments else []
    if not found:
        within = f" of sweep {sweep!r}" if sweep else ""
        raise NotReplayable(f"no trial run with the id or name {run!r}{within} in {tracking_uri}")
    sweeps = sorted({r.data.tags.get(SWEEP_TAG, "?") for r in found})
    if len(found) > 1:
        raise NotReplayable(f"trial runs named {run!r} are in sweeps {', '.join(sweeps)}: pass --sweep NAME")
    return found[0]


def replay(
    run_id: str,
    tracking_uri: str,
    epochs: int | None = None,
    data_dir: Path | None = None,
    sweep: str | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> Replay:
    """Trains the trial of a child run (its id, or its name within `sweep`) again for its first `epochs` (all:
    None) and compares its metrics; progress(epoch, epochs, metrics) after each epoch replayed."""
    from fixray.data.registry import load_dataset
    from fixray.trial.loop import train

    client = reading_client(tracking_uri)
    run = find_trial_run(client, run_id, tracking_uri, sweep)
    run_id = run.info.run_id
    if run.data.tags.get(ROLE_TAG) != "trial":
        raise NotReplayable(f"run {run_id} is no trial of a fixray sweep (it has no {ROLE_TAG}=trial tag)")
    params = read_params(run.data.params)
    if int(params.get("workers", 1)) > 1:
        raise NotReplayable(f"run {run_id} trained with {params['workers']} DDP workers: replay trains one process")
    cfg = from_params({k: v for k, v in params.items() if k in FLAT_PATHS})
    total = epochs or cfg.epochs
    if not 1 <= total <= cfg.epochs:
        raise NotReplayable(f"--epochs {epochs}: the run trained {cfg.epochs} epochs")
    logged = {key: {m.step: m.value for m in client.get_metric_history(run_id, key)} for key in run.data.metrics}
    torch.set_num_threads(int(params.get("threads", 1)))
    splits = load_dataset(params["dataset"], data_dir, download=False)
    reports: dict[int, dict[str, float]] = {}

    def record(metrics: dict[str, float], state) -> None:
        reports[int(metrics[keys.EPOCH])] = metrics
        if progress is not None:
            progress(int(metrics[keys.EPOCH]), total, metrics)
        if metrics[keys.EPOCH] == total and total < cfg.epochs:
            raise _Replayed  # the run's own first epochs: its schedule planned for all of them

    try:
        train(cfg, splits, record, execution=_execution(params))
    except _Replayed:
        pass
    compared, first = 0, None
    for epoch in range(1, total + 1):
        for key, history in sorted(logged.items()):
            if epoch not in history or not _replayable(key, total, cfg.epochs):
                continue
            found = reports.get(epoch, {}).get(key)
            compared += 1
            if first is None and not _same(history[epoch], found):
                first = Difference(key, epoch, history[epoch], found)
    parent_id = run.data.tags.get("mlflow.parentRunId")
    parent = client.get_run(parent_id).data.params if parent_id else {}
    here = this_machine()
    versions = {k: (parent.get(k, "not recorded"), v) for k, v in here.items() if parent.get(k) != v}
    return Replay(run_id, run.info.run_name, total, compared, first, versions)


def _replayable(key: str, replayed: int, trained: int) -> bool:
    """Metrics the replay reproduces: per-epoch ones; those after the last epoch only when it replays the last."""
    metric = keys.declared(key)  # a family's key too (head/S)
    if metric is None or key.startswith(("robust/", "gen/")) or key == keys.TRIAL_SECONDS:
        return False
    return metric.when != keys.ONCE_AT_BEST or replayed == trained


def _same(logged: float, replayed: float | None) -> bool:
    if replayed is None:
        return False
    return logged == replayed or (math.isnan(logged) and math.isnan(replayed))
