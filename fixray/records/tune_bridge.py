"""The Ray Tune callback that mirrors every trial into a child MLflow run, from the sweep driver alone.

Every write goes through PendingWrites: while the tracking server is away, training goes on and the writes
wait (spooled beside the sweep's Tune state), then land in order, each epoch once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, RunTag
from ray.tune.experiment import Trial
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY
from ray.tune.logger import LoggerCallback

from fixray.crossing import metric_keys as keys
from fixray.crossing.attempts import ATTEMPT_KEY, attempt_folder
from fixray.crossing.contract import FIGURES_DIR, NODES_KEY, RESOURCES_KEY, sent_identity, sent_params, sent_run_name
from fixray.faults import Outcome, trial_outcome, trial_refused
from fixray.records.encoding import is_tracked_metric
from fixray.records.outage import RETRIED, PendingWrites
from fixray.records.restorable import Restorable
from fixray.records.runs import NODES_TAG, RESOURCES_TAG, STATUS_TAG, SweepRuns
from fixray.storage import Storage

END_WAIT_S = 60.0  # at the end of a sweep, seconds to keep retrying writes still pending before leaving them spooled
GATHER_S = 2.0  # seconds a trial's epochs may wait in the driver to go to MLflow together, in one request
MAX_BATCH_METRICS = 1000  # MLflow's limit on metrics in one log_batch request


class MlflowTrialLogger(Restorable, LoggerCallback):
    """Ray Tune callback (runs in the driver) that mirrors every trial into a child run."""

    def __init__(
        self, tracking_uri: str, experiment: str, sweep: str, context: dict[str, Any], spool: Path, storage: str
    ) -> None:
        self.tracking_uri, self.experiment, self.sweep = tracking_uri, experiment, sweep
        self.context = context  # params every child run logs beside its trial's settings (dataset, workers)
        self.spool = spool  # pending writes, in the driver's folder
        self.storage = storage  # the sweep's storage_path: checkpoints (and their figures) are read through it
        self._runs: SweepRuns | None = None
        self._pending: PendingWrites | None = None
        self._started: set[str] = set()  # trials whose start was submitted by this driver
        self._last: dict[str, dict] = {}  # trial id -> its last result
        self._child: dict[str, tuple[str, int]] = {}  # trial id -> (run id, last epoch in the store)
        self._nodes: dict[str, list[str]] = {}  # trial id -> Ray node ids it trained on
        # trial id -> (when the first waited, its epochs not yet submitted): one MLflow request for several
        # epochs, sent before any checkpoint past them can be restored (a resume never re-reports them)
        self._gathered: dict[str, tuple[float, list[dict]]] = {}

    @property
    def runs(self) -> SweepRuns:
        if self._runs is None:
            self._runs = SweepRuns(self.tracking_uri, self.experiment, self.sweep)
        return self._runs

    @property
    def pending(self) -> PendingWrites:
        if self._pending is None:
            self._pending = PendingWrites(self.spool, self._apply)
        return self._pending

    # --- Tune's events -> writes -------------------------------------------------------------------

    def setup(self, *args, **kwargs) -> None:
        self.pending.flush(wait=True)  # what an earlier driver left pending goes first

    def on_step_end(self, *args, **kwargs) -> None:
        now = time.monotonic()
        for trial_id in [t for t, (since, _) in self._gathered.items() if now - since >= GATHER_S]:
            self._submit_gathered(trial_id)
        self.pending.flush()  # retried with backoff while the store is away

    def on_checkpoint(self, iteration: int, trials: list, trial: Trial, checkpoint, **info) -> None:
        # Tune calls this before it records the checkpoint: no saved state names it before its epochs are sent.
        self._submit_gathered(trial.trial_id)

    def log_trial_start(self, trial: Trial) -> None:
        if trial.trial_id not in self._started:
            self._started.add(trial.trial_id)
            name, params = sent_run_name(trial.config), sent_params(trial.config) | self.context
            start = {"op": "start", "trial": trial.trial_id, "name": name, "params": params}
            self.pending.submit(start | {"identity": sent_identity(trial.config)})

    def log_trial_result(self, iteration: int, trial: Trial, result: dict) -> None:
        self.log_trial_start(trial)
        self._last[trial.trial_id] = result
        if NODES_KEY in result:
            nodes = {"nodes": str(result[NODES_KEY]).split(","), "resources": str(result.get(RESOURCES_KEY, ""))}
            self.pending.submit({"op": "placement", "trial": trial.trial_id, **nodes})
        metrics = {k: float(v) for k, v in result.items() if is_tracked_metric(k, v)}
        if "time_total_s" in result:  # what the trial has cost so far
            metrics[keys.TRIAL_SECONDS] = float(result["time_total_s"])
        epoch = {"epoch": int(result.get(keys.EPOCH, iteration)), "metrics": metrics, "time": int(time.time() * 1000)}
        self._gathered.setdefault(trial.trial_id, (time.monotonic(), []))[1].append(epoch)
        if CHECKPOINT_PATH_KEY in result:  # a DDP trainer's checkpoint, already saved: send at once
            self._submit_gathered(trial.trial_id)

    def _submit_gathered(self, trial_id: str) -> None:
        _, epochs = self._gathered.pop(trial_id, (0.0, []))
        if epochs:
            self.pending.submit({"op": "metrics", "trial": trial_id, "epochs": epochs})

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        self.log_trial_start(trial)
        self._submit_gathered(trial.trial_id)
        last = self._last.get(trial.trial_id) or trial.last_result or {}
        status = trial_outcome(
            failed=failed,
            refused=failed and trial_refused(trial),
            diverged=last.get(keys.DIVERGED) == 1,
            epoch=int(last.get(keys.EPOCH, 0)),
            epochs=sent_params(trial.config)["epochs"],
        ).value
        figures = self._figures_folder(trial, last)
        write = {"op": "end", "trial": trial.trial_id, "status": status, "failed": failed}
        self.pending.submit(write | {"figures": figures})

    def on_experiment_end(self, trials: list, **info) -> None:
        for trial_id in list(self._gathered):
            self._submit_gathered(trial_id)
        deadline = time.monotonic() + END_WAIT_S
        while not self.pending.flush(wait=True) and time.monotonic() < deadline:
            time.sleep(min(self.pending.backoff, max(0.0, deadline - time.monotonic())))

    def _figures_folder(self, trial: Trial, last: dict) -> list[str] | None:
        """The figures of a trial's last checkpoint (Tune's own, or a DDP trainer's reported by path), in the folder of
        the attempt that reported it, as folder names below the storage root: a spooled write stays valid wherever the
        driver runs."""
        checkpoint = trial.checkpoint.path if trial.checkpoint is not None else last.get(CHECKPOINT_PATH_KEY)
        if checkpoint is None:
            return None
        attempt = [attempt_folder(int(last[ATTEMPT_KEY]))] if ATTEMPT_KEY in last else []
        return Storage(self.storage).relative(checkpoint) + attempt + [FIGURES_DIR]

    # --- writes -> MLflow (each may be applied twice with the same outcome) ---------------------------

    def _apply(self, write: dict[str, Any]) -> None:
        trial = write["trial"]
        if write["op"] == "start":
            self._child[trial] = self.runs.child_for_trial(trial, write["name"], write["params"], write.get("identity"))
            return
        if trial not in self._child or write.get(
            RETRIED
        ):  # started by an earlier driver, or this write may have landed
            self._child[trial] = self.runs.find_child(trial)
        run_id, logged_epoch = self._child[trial]
        client = self.runs.client
        if write["op"] == "metrics":
            # Epochs MLflow already holds (a resumed trial, or a replayed write) are skipped. Requests hold whole
            # epochs, so the last epoch in the store says exactly which have landed if one fails midway.
            epochs = [e for e in write["epochs"] if e["epoch"] > logged_epoch]
            for request in _requests(epochs):
                batch = [Metric(k, v, e["time"], e["epoch"]) for e in request for k, v in e["metrics"].items()]
                client.log_batch(run_id, metrics=batch)
                self._child[trial] = (run_id, request[-1]["epoch"])
        elif write["op"] == "placement":
            known = self._nodes.get(trial)
            if known is None:
                known = [n for n in client.get_run(run_id).data.tags.get(NODES_TAG, "").split(",") if n]
            fresh = [n for n in write["nodes"] if n not in known]
            if fresh:
                tags = {NODES_TAG: ",".join(known + fresh), RESOURCES_TAG: write["resources"]}
                client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            self._nodes[trial] = known + fresh
        elif write["op"] == "end":
            storage, figures = Storage(self.storage), write["figures"]
            if figures is not None and storage.is_dir(*figures):
                with storage.local_copy(storage.path(*figures)) as folder:
                    client.log_artifacts(run_id, str(folder), artifact_path=FIGURES_DIR)
            client.set_tag(run_id, STATUS_TAG, write["status"])
            ended = "SCHEDULED" if write["status"] == Outcome.NOT_RUN else "FAILED" if write["failed"] else "FINISHED"
            client.set_terminated(run_id, ended)


def _requests(epochs: list[dict]) -> list[list[dict]]:
    """Epochs grouped in order into log_batch requests of whole epochs, each within MLflow's metric limit."""
    requests: list[list[dict]] = []
    size = MAX_BATCH_METRICS  # metrics in the request being filled: none open yet
    for epoch in epochs:
        if size + len(epoch["metrics"]) > MAX_BATCH_METRICS:
            requests.append([])
            size = 0
        requests[-1].append(epoch)
        size += len(epoch["metrics"])
    return requests
