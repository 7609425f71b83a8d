"""MLflow, written from the sweep driver alone: one parent run per sweep, one child run per trial.

A single writer keeps SQLite stores free of lock errors; runs are found again by tags on resume, so
an interrupted sweep never gets a second parent or a second child for the same trial.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from ray.tune.experiment import Trial
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY
from ray.tune.logger import LoggerCallback

SWEEP_TAG = "fixray.sweep"  # on the parent and every child: the sweep's name
ROLE_TAG = "fixray.role"  # "sweep" on the parent, "trial" on children
TRIAL_TAG = "fixray.trial_id"  # Ray Tune's trial id, stable across resumes
STATUS_TAG = "fixray.status"  # finished | diverged | stopped_early | error
FIGURES_DIR = "figures"  # in a trial's last checkpoint, and the artifact folder of its child run
UNTRACKED_SCALARS = {"lr", "diverged"}  # metric keys without a '/' section that are still logged


def is_tracked_metric(key: str, value: Any) -> bool:
    """fixray's own metrics; Ray Tune's bookkeeping (pid, timestamp, ...) stays out of MLflow."""
    return ("/" in key or key in UNTRACKED_SCALARS) and isinstance(value, (int, float)) and not isinstance(value, bool)


def param_value(value: Any) -> str:
    """MLflow params are strings; None (e.g. S of a dot-product head) is logged as 'none'."""
    return "none" if value is None else str(value)


class SweepRuns:
    """The parent run of one sweep and lookups of its children."""

    def __init__(self, tracking_uri: str, experiment: str, sweep: str, create: bool = True) -> None:
        # create=False only reads: a missing experiment or sweep raises LookupError and nothing is written.
        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None and not create:
            raise LookupError(f"no MLflow experiment {experiment!r} in {tracking_uri}")
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.sweep = sweep
        existing = self._find(f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{ROLE_TAG}` = 'sweep'")
        if existing:
            self.parent_id = existing[0].info.run_id
            if create:
                self.client.update_run(self.parent_id, status=RunStatus.to_string(RunStatus.RUNNING))
        elif create:
            tags = {SWEEP_TAG: sweep, ROLE_TAG: "sweep"}
            self.parent_id = self.client.create_run(self.experiment_id, run_name=sweep, tags=tags).info.run_id
        else:
            raise LookupError(f"no sweep named {sweep!r} in MLflow experiment {experiment!r} ({tracking_uri})")

    def _find(self, filter_string: str) -> list:
        return self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=5000)

    def log_sweep_params(self, params: dict[str, Any]) -> None:
        logged = self.client.get_run(self.parent_id).data.params
        fresh = [Param(k, param_value(v)) for k, v in params.items() if k not in logged]
        if fresh:
            self.client.log_batch(self.parent_id, params=fresh)

    def children(self) -> list:
        return self._find(f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_id}'")

    def child_for_trial(self, trial_id: str, run_name: str, params: dict[str, Any]) -> tuple[str, int]:
        """The child run of a trial (created once) and the last epoch it already holds."""
        existing = self._find(f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'")
        if existing:
            run_id = existing[0].info.run_id
            history = self.client.get_metric_history(run_id, "train/loss")
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            return run_id, max((m.step for m in history), default=0)
        tags = {MLFLOW_PARENT_RUN_ID: self.parent_id, SWEEP_TAG: self.sweep, ROLE_TAG: "trial", TRIAL_TAG: trial_id, MLFLOW_RUN_NAME: run_name}
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.client.log_batch(run.info.run_id, params=[Param(k, param_value(v)) for k, v in params.items()])
        return run.info.run_id, 0

    def end(self, status: str) -> None:
        self.client.set_terminated(self.parent_id, status)


class MlflowTrialLogger(LoggerCallback):
    """Ray Tune callback (runs in the driver) that mirrors every trial into a child run."""

    def __init__(self, tracking_uri: str, experiment: str, sweep: str, describe: Callable[[dict], tuple[str, dict, int]]) -> None:
        # describe(trial config) -> (run name, params to log, epochs planned); kept picklable for Tuner.restore.
        self.tracking_uri, self.experiment, self.sweep, self.describe = tracking_uri, experiment, sweep, describe
        self._runs: SweepRuns | None = None
        self._child: dict[str, tuple[str, int]] = {}  # trial id -> (run id, last epoch logged)
        self._last: dict[str, dict] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_runs": None, "_child": {}, "_last": {}}

    @property
    def runs(self) -> SweepRuns:
        if self._runs is None:
            self._runs = SweepRuns(self.tracking_uri, self.experiment, self.sweep)
        return self._runs

    def log_trial_start(self, trial: Trial) -> None:
        if trial.trial_id not in self._child:
            name, params, _ = self.describe(trial.config)
            self._child[trial.trial_id] = self.runs.child_for_trial(trial.trial_id, name, params)

    def log_trial_result(self, iteration: int, trial: Trial, result: dict) -> None:
        self.log_trial_start(trial)
        run_id, logged_epoch = self._child[trial.trial_id]
        epoch = int(result.get("epoch", iteration))
        self._last[trial.trial_id] = result
        if epoch <= logged_epoch:  # already in MLflow from before an interruption
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in result.items() if is_tracked_metric(k, v)]
        self.runs.client.log_batch(run_id, metrics=batch)
        self._child[trial.trial_id] = (run_id, epoch)

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        self.log_trial_start(trial)
        run_id, _ = self._child[trial.trial_id]
        last = self._last.get(trial.trial_id) or trial.last_result or {}
        _, _, epochs = self.describe(trial.config)
        if failed:
            status = "error"
        elif last.get("diverged") == 1:
            status = "diverged"
        elif int(last.get("epoch", 0)) < epochs:
            status = "stopped_early"
        else:
            status = "finished"
        figures = _figures_folder(trial, last)
        if figures is not None:
            self.runs.client.log_artifacts(run_id, str(figures), artifact_path=FIGURES_DIR)
        self.runs.client.set_tag(run_id, STATUS_TAG, status)
        self.runs.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


def _figures_folder(trial: Trial, last: dict) -> Path | None:
    """The figures of a trial's last checkpoint: Tune's own checkpoint, or a DDP trainer's (reported by path)."""
    checkpoint = trial.checkpoint.path if trial.checkpoint is not None else last.get(CHECKPOINT_PATH_KEY)
    if checkpoint is None:
        return None
    folder = Path(checkpoint) / FIGURES_DIR
    return folder if folder.is_dir() else None


