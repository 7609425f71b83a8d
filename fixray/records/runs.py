"""MLflow, written from the sweep driver alone: one parent run per sweep, one child run per trial.

A single writer keeps SQLite stores free of lock errors; runs are found again by tags on resume, so
an interrupted sweep never gets a second parent or a second child for the same trial.
"""

from __future__ import annotations

import fcntl
import itertools
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote as url_quote
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from fixray.errors import BadInput, Unavailable
from fixray.faults import Outcome, store_unreachable
from fixray.trial import metric_keys as keys
from fixray.trial.contract import FIGURES_DIR

SWEEP_TAG = "fixray.sweep"  # on the parent and every child: the sweep's name
ROLE_TAG = "fixray.role"  # "sweep" on the parent, "trial" on children
TRIAL_TAG = "fixray.trial_id"  # Ray Tune's trial id, stable across resumes
STATUS_TAG = "fixray.status"  # what became of a trial: an Outcome's value (fixray/faults.py)
NODES_TAG, RESOURCES_TAG = "fixray.nodes", "fixray.resources"  # on a child run: every node it trained on, in order
REPORT_FILE = "report.md"  # on the parent run: the sweep's whole report, whatever its length
SEARCH_PAGE = 1000  # runs per MLflow search request; lookups page through all of them
UNTRACKED_SCALARS = {keys.LR, keys.DIVERGED}  # metric keys without a '/' section that are still logged
# MLflow 3's UI opens an experiment in its GenAI view unless told it holds model training runs.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


class MissingStore(BadInput):
    """A read-only command pointed at a tracking URI where no MLflow store exists."""


def local_store_path(tracking_uri: str) -> Path | None:
    """The file or folder a local store lives in (sqlite:///x.db, file:./mlruns, ./mlruns); None for servers."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme == "file" else tracking_uri)
    return None


@contextmanager
def creating(tracking_uri: str) -> Iterator[None]:
    """One driver at a time sets up a local store: two creating one SQLite file at once race in MLflow's schema
    migration, and two creating one experiment race in its name check."""
    path = local_store_path(tracking_uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def reading_client(tracking_uri: str) -> MlflowClient:
    """A client for commands that only read: a local store that does not exist is an error, never created, and
    one a driver is creating is waited for (opening a SQLite file before its tables exist migrates it too)."""
    path = local_store_path(tracking_uri)
    if path is not None and not path.exists():
        raise MissingStore(
            f"no MLflow store at {tracking_uri} ({path.resolve()} does not exist): run a sweep first, or pass "
            f"--tracking-uri with the store the sweep wrote to"
        )
    with creating(tracking_uri):
        return MlflowClient(tracking_uri)  # opens the store now, under the lock


LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store by default


def ui_addresses(tracking_uri: str, experiment_id: str, parent_id: str) -> tuple[str, str]:
    """The MLflow UI pages of a sweep: its trials (the parent's children, one row each) and its parent run (the
    answer, the tables and figures). A local store is served by `mlflow ui`.

    The UI folds filtered children under their parent unless the runs are sorted by something else than their
    start time (checked with MLflow 3.17 in Chromium), so the trials' page sorts them by name."""
    base = tracking_uri.rstrip("/") if urlparse(tracking_uri).scheme in ("http", "https") else LOCAL_UI
    trials = url_quote(f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}'")
    by_name = url_quote(f"tags.`{MLFLOW_RUN_NAME}`")
    experiment = f"{base}/#/experiments/{experiment_id}"
    return (
        f"{experiment}/runs?searchFilter={trials}&orderByKey={by_name}&orderByAsc=true",
        f"{experiment}/runs/{parent_id}",
    )


def require_reachable(tracking_uri: str) -> None:
    """A tracking server must answer when a sweep starts (later outages are waited out, see outage.py)."""
    if local_store_path(tracking_uri) is not None:
        return
    try:
        MlflowClient(tracking_uri).search_experiments(max_results=1)
    except Exception as error:
        if not store_unreachable(error):
            raise
        raise Unavailable(
            f"the MLflow server at {tracking_uri} does not answer ({type(error).__name__}); start it (on a cluster: "
            f"the head's `mlflow server`, see docs/cluster.md) or pass --tracking-uri with one that runs"
        ) from None


def is_tracked_metric(key: str, value: Any) -> bool:
    """fixray's own metrics; Ray Tune's bookkeeping (pid, timestamp, ...) stays out of MLflow."""
    return ("/" in key or key in UNTRACKED_SCALARS) and isinstance(value, (int, float)) and not isinstance(value, bool)


def param_value(value: Any) -> str:
    """MLflow params are strings; None (e.g. S of a dot-product head) is logged as 'none'."""
    return "none" if value is None else str(value)


def outcome(run) -> str:
    """What became of a trial's run: its Outcome's value (its status tag); unfinished when it has none yet."""
    return run.data.tags.get(STATUS_TAG, Outcome.UNFINISHED.value)


def left_out(outcomes: dict[str, int]) -> str:
    """Runs a summary does not average, e.g. '1 diverged, 2 not run'; '' when every run finished."""
    order = [o.value for o in Outcome]
    names = sorted(outcomes, key=lambda name: order.index(name) if name in order else len(order))
    return ", ".join(
        f"{outcomes[name]} {name.replace('_', ' ')}" for name in names if name != Outcome.FINISHED and outcomes[name]
    )


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


def quoted(value: str) -> str:
    """A string literal for an MLflow filter: single quotes, or double quotes around a value holding a single one."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise ValueError(f"{value!r} holds both quote characters, which no MLflow filter string can compare against")


class SweepRuns:
    """The parent run of one sweep and lookups of its children."""

    def __init__(self, tracking_uri: str, experiment: str, sweep: str, create: bool = True) -> None:
        # create=False only reads: a missing store raises MissingStore, a missing experiment or sweep
        # LookupError, and nothing is written.
        if create:
            with creating(tracking_uri):
                self.client = MlflowClient(tracking_uri)
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    found = self._create_experiment(experiment)
        else:
            self.client = reading_client(tracking_uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                raise LookupError(f"no MLflow experiment {experiment!r} in {tracking_uri}")
        self.experiment_id = found.experiment_id
        if create and EXPERIMENT_KIND_TAG not in found.tags:
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        self.sweep = sweep
        existing = self._find(f"tags.`{SWEEP_TAG}` = {quoted(sweep)} and tags.`{ROLE_TAG}` = 'sweep'")
        if existing:
            self.parent_id = existing[0].info.run_id
            if create:
                self.client.update_run(self.parent_id, status=RunStatus.to_string(RunStatus.RUNNING))
        elif create:
            tags = {SWEEP_TAG: sweep, ROLE_TAG: "sweep"}
            self.parent_id = self.client.create_run(self.experiment_id, run_name=sweep, tags=tags).info.run_id
        else:
            raise LookupError(f"no sweep named {sweep!r} in MLflow experiment {experiment!r} ({tracking_uri})")

    def _create_experiment(self, name: str):
        """Creates the experiment, or finds the one another driver on the same server created a moment before."""
        try:
            self.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        return self.client.get_experiment_by_name(name)

    def _find(self, filter_string: str) -> list:
        """Every run the filter matches, page by page (a sweep may hold more runs than one page)."""
        found, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=filter_string, max_results=SEARCH_PAGE, page_token=token
            )
            found += page
            token = page.token
            if not token:
                return found

    def log_sweep_params(self, params: dict[str, Any]) -> None:
        logged = self.client.get_run(self.parent_id).data.params
        fresh = [Param(k, param_value(v)) for k, v in params.items() if k not in logged]
        if fresh:
            self.client.log_batch(self.parent_id, params=fresh)

    def children(self) -> list:
        return self._find(f"tags.`{MLFLOW_PARENT_RUN_ID}` = {quoted(self.parent_id)}")

    def find_child(self, trial_id: str) -> tuple[str, int]:
        """The child run of a trial created earlier and the last epoch it holds; LookupError when there is none."""
        existing = self._find(
            f"tags.`{MLFLOW_PARENT_RUN_ID}` = {quoted(self.parent_id)} and tags.`{TRIAL_TAG}` = {quoted(trial_id)}"
        )
        if not existing:
            raise LookupError(f"no child run of sweep {self.sweep!r} for trial {trial_id}")
        run_id = existing[0].info.run_id
        history = self.client.get_metric_history(run_id, keys.TRAIN_LOSS)
        return run_id, max((m.step for m in history), default=0)

    def child_for_trial(self, trial_id: str, run_name: str, params: dict[str, Any]) -> tuple[str, int]:
        """The child run of a trial (created once) and the last epoch it already holds."""
        try:
            run_id, epoch = self.find_child(trial_id)
        except LookupError:
            pass
        else:
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            return run_id, epoch
        tags = {
            MLFLOW_PARENT_RUN_ID: self.parent_id,
            SWEEP_TAG: self.sweep,
            ROLE_TAG: "trial",
            TRIAL_TAG: trial_id,
            MLFLOW_RUN_NAME: run_name,
        }
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.client.log_batch(run.info.run_id, params=[Param(k, param_value(v)) for k, v in params.items()])
        return run.info.run_id, 0

    def log_summary(
        self, metrics: dict[str, float], tags: dict[str, str], notes: list[str], figures: dict[str, bytes]
    ) -> None:
        """The answer on the parent run: metrics and tags for the runs table, figures, and the report as its note (the
        leading `notes` sections that fit MLflow's tag limit, the whole in REPORT_FILE)."""
        report = "\n\n".join(notes)
        note = report
        if len(note) > MAX_TAG_VAL_LENGTH:
            pointer = f"\n\n(The rest of the report, every configuration included, is the artifact {REPORT_FILE}.)"
            kept = itertools.accumulate(len(section) + 2 for section in notes)
            fits = sum(1 for length in kept if length + len(pointer) <= MAX_TAG_VAL_LENGTH)
            note = "\n\n".join(notes[:fits]) + pointer
        self.client.log_batch(
            self.parent_id,
            metrics=[Metric(k, v, int(time.time() * 1000), 0) for k, v in metrics.items()],
            tags=[RunTag(k, v) for k, v in (tags | {MLFLOW_RUN_NOTE: note}).items()],
        )
        self.client.log_text(self.parent_id, report, REPORT_FILE)
        if figures:
            with tempfile.TemporaryDirectory() as folder:
                for name, png in figures.items():
                    (Path(folder) / name).write_bytes(png)
                self.client.log_artifacts(self.parent_id, folder, FIGURES_DIR)

    def end(self, status: str) -> None:
        self.client.set_terminated(self.parent_id, status)
