"""MLflow, written from the sweep driver alone: one parent run per sweep, one child run per trial.

A single writer keeps SQLite stores free of lock errors; runs are found again by tags on resume, so
an interrupted sweep never gets a second parent or a second child for the same trial.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from fixray.crossing import metric_keys as keys
from fixray.crossing.contract import FIGURES_DIR
from fixray.faults import KEPT_BY_A_RERUN, Outcome
from fixray.records.encoding import param_value, quoted
from fixray.records.store import MissingStore, creating, reading_client

SWEEP_TAG = "fixray.sweep"  # on the parent and every child: the sweep's name
ROLE_TAG = "fixray.role"  # "sweep" on the parent, "trial" on children
TRIAL_TAG = "fixray.trial_id"  # Ray Tune's trial id, stable across resumes
IDENTITY_TAG = "fixray.identity"  # on a child run: what its trial computes, hashed (sweep/plan.py's identity)
STATUS_TAG = "fixray.status"  # what became of a trial: an Outcome's value (fixray/faults.py)
# On a child run whose trial the sweep file no longer plans (a value or a seed removed, epochs changed): kept in MLflow,
# left out of the sweep's tables, answer and figures, and counted beside them; removed when the file plans it again.
NOT_IN_FILE_TAG = "fixray.not_in_file"
PROGRESS_TAG = "fixray.progress"  # on the parent: the driver's live status line, copied every few seconds
PLANNED_SEEDS_TAG = "fixray.planned_seeds"  # on the parent: the seeds the sweep file plans now, e.g. "0,1,2"
NODES_TAG, RESOURCES_TAG = "fixray.nodes", "fixray.resources"  # on a child run: every node it trained on, in order
REPORT_FILE = "report.md"  # on the parent run: the sweep's whole report, whatever its length
SEARCH_PAGE = 1000  # runs per MLflow search request; lookups page through all of them
# MLflow 3's UI opens an experiment in its GenAI view unless told it holds model training runs.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str, order_by=None) -> list:
    """Every run the filter matches, page by page (a sweep may hold more runs than one page)."""
    found, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=filter_string, max_results=SEARCH_PAGE, order_by=order_by, page_token=token
        )
        found += page
        token = page.token
        if not token:
            return found


def in_file(run) -> bool:
    """Whether the sweep file plans a trial run now (NOT_IN_FILE_TAG absent)."""
    return NOT_IN_FILE_TAG not in run.data.tags


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
        return search_all(self.client, [self.experiment_id], filter_string)

    def log_sweep_params(self, params: dict[str, Any]) -> None:
        logged = self.client.get_run(self.parent_id).data.params
        fresh = [Param(k, param_value(v)) for k, v in params.items() if k not in logged]
        if fresh:
            self.client.log_batch(self.parent_id, params=fresh)

    def log_plan(self, flop: float, gpu_hours: float, trials: int, seeds: list[int]) -> None:
        """What the sweep file plans as it now reads (a file that grew replaces it): its compute plan and trials as
        metrics, its seeds as a tag."""
        now = int(time.time() * 1000)
        planned = {"plan/flop": flop, "plan/gpu_hours": gpu_hours, "plan/trials": trials}
        self.client.log_batch(
            self.parent_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in planned.items()],
            tags=[RunTag(PLANNED_SEEDS_TAG, ",".join(str(seed) for seed in seeds))],
        )

    def planned_seeds(self) -> int:
        """Seeds the sweep file plans per configuration, as its parent records them (0: unrecorded, an older sweep)."""
        seeds = self.client.get_run(self.parent_id).data.tags.get(PLANNED_SEEDS_TAG)
        return len(seeds.split(",")) if seeds else 0

    def children(self, every: bool = False) -> list:
        """The sweep's trial runs that its file plans now (every=True: those it no longer plans too)."""
        found = self._find(f"tags.`{MLFLOW_PARENT_RUN_ID}` = {quoted(self.parent_id)}")
        return found if every else [child for child in found if in_file(child)]

    def not_in_file(self) -> int:
        """Earlier trial runs of the sweep that its file no longer plans."""
        return sum(1 for child in self.children(every=True) if not in_file(child))

    def mark_in_file(self, planned: set[str]) -> bool:
        """Tags the trial runs whose identity the file no longer plans (and untags those it plans again); whether any
        tag changed (the tables then change too)."""
        changed = False
        for child in self.children(every=True):
            identity, tagged = child.data.tags.get(IDENTITY_TAG), not in_file(child)
            if identity is None or (identity in planned) != tagged:
                continue
            if tagged:
                self.client.delete_tag(child.info.run_id, NOT_IN_FILE_TAG)
            else:
                self.client.set_tag(child.info.run_id, NOT_IN_FILE_TAG, "true")
            changed = True
        return changed

    def find_child(self, trial_id: str, identity: str | None = None) -> tuple[str, int]:
        """The child run of a trial created earlier and the last epoch it holds; LookupError when there is none.

        A trial of an earlier run of the command under another Tune trial id (the file grew: a new Tune experiment
        resumes it) is found by its identity, and takes the new trial id."""
        parent = f"tags.`{MLFLOW_PARENT_RUN_ID}` = {quoted(self.parent_id)}"
        existing = self._find(f"{parent} and tags.`{TRIAL_TAG}` = {quoted(trial_id)}")
        if not existing and identity is not None:
            existing = self._find(f"{parent} and tags.`{IDENTITY_TAG}` = {quoted(identity)}")
            if existing:
                self.client.set_tag(existing[0].info.run_id, TRIAL_TAG, trial_id)
        if not existing:
            raise LookupError(f"no child run of sweep {self.sweep!r} for trial {trial_id}")
        run_id = existing[0].info.run_id
        history = self.client.get_metric_history(run_id, keys.TRAIN_LOSS)
        return run_id, max((m.step for m in history), default=0)

    def child_for_trial(
        self, trial_id: str, run_name: str, params: dict[str, Any], identity: str | None = None
    ) -> tuple[str, int]:
        """The child run of a trial (created once, tagged with what it computes) and the last epoch it holds."""
        try:
            run_id, epoch = self.find_child(trial_id, identity)
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
        } | ({IDENTITY_TAG: identity} if identity else {})
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


def earlier_trials(tracking_uri: str, experiment: str, sweep: str) -> dict[str, str]:
    """Identity -> what became of each trial an earlier run of the sweep started (an Outcome's value; unfinished
    without a status), those its file no longer plans included, read without writing; {} when the store, the
    experiment or the sweep is not there yet."""
    try:
        runs = SweepRuns(tracking_uri, experiment, sweep, create=False)
    except (LookupError, MissingStore):
        return {}
    return {c.data.tags[IDENTITY_TAG]: outcome(c) for c in runs.children(every=True) if IDENTITY_TAG in c.data.tags}


def earlier_best(tracking_uri: str, experiment: str, sweep: str) -> dict[str, float]:
    """Identity -> best-epoch test accuracy of each trial of the sweep that ended with one (what a searcher ranks)."""
    runs = SweepRuns(tracking_uri, experiment, sweep, create=False)
    return {
        c.data.tags[IDENTITY_TAG]: c.data.metrics[keys.BEST_ACC]
        for c in runs.children(every=True)
        if IDENTITY_TAG in c.data.tags and outcome(c) in KEPT_BY_A_RERUN and keys.BEST_ACC in c.data.metrics
    }
