"""The Ray Tune callback that mirrors every trial into a child MLflow run, from the sweep driver alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mlflow.entities import Metric
from ray.tune.experiment import Trial
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY
from ray.tune.logger import LoggerCallback

from fixray.tracking import FIGURES_DIR, STATUS_TAG, SweepRuns, is_tracked_metric


class MlflowTrialLogger(LoggerCallback):
    """Ray Tune callback (runs in the driver) that mirrors every trial into a child run."""

    def __init__(
        self, tracking_uri: str, experiment: str, sweep: str, describe: Callable[[dict], tuple[str, dict, int]]
    ) -> None:
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
