"""One sweep's run, owned by one object in the driver: its plan, its lock, its resume, Ray Tune with the callbacks
that record it (MLflow, the live view, checkpoint pruning), the answer published at the end, and a full storage
as a resumable stop. The CLI builds a SweepRun and prints its outcome.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from fixray.crossing import metric_keys as keys
from fixray.crossing.contract import REPLAYED_EXECUTION, TrialResources
from fixray.crossing.images import Splits
from fixray.faults import Outcome, budget_refused, out_of_space
from fixray.records.outage import SPOOL_FILE, use_driver_http_settings
from fixray.records.store import require_reachable, store_on_the_head, warm_store
from fixray.storage import Storage
from fixray.sweep.capacity import ResourceWait, refuse_unmeetable
from fixray.sweep.cost import admit, compute_plan
from fixray.sweep.inputs import prepare_data
from fixray.sweep.lock import DriverLock
from fixray.sweep.plan import PlannedTrial, plan
from fixray.sweep.provenance import environment
from fixray.sweep.rerun import Rerun
from fixray.sweep.spec.schema import SweepSpec
from fixray.sweep.state import SavedPlan, check_record, write_record

if TYPE_CHECKING:
    from ray import tune

    from fixray.records.runs import SweepRuns

# Set in the driver before Tune runs: every checkpoint is kept until pruned (checkpoints.py), Tune's record of
# each holding its score alone; MLflow is the sweep's record, so no TensorBoard or CSV copy of every result.
TUNE_SETTINGS = {"TUNE_ONLY_STORE_CHECKPOINT_SCORE_ATTRIBUTE": "1", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}

# What the sweep's Tune phase and its end import (MLflow's client, Ray Tune and the callbacks, the trial function, the
# answer's statistics; no torch: the driver never trains): seconds of a 2-core machine, loaded in a thread while Ray
# starts, not before the checks. The methods below import from them where they are used.
TUNE_PHASE = (
    "fixray.records.runs",
    "fixray.trial.trainable",
    "fixray.sweep.search",
    "fixray.sweep.budget",
    "fixray.sweep.checkpoints",
    "fixray.sweep.progress",
    "fixray.records.tune_bridge",
    "fixray.records.sweep_report",
    "ray.tune.logger",
)


# What ray.init imports that the Tune phase imports too, loaded before either starts: two threads importing one
# module graph at once can each be handed the other's half-made module (Python's way out of an import deadlock), and
# fail. A layout test finds any new module the two share.
SHARED_WITH_RAY_INIT = (
    "ray._common.usage.usage_lib",
    "ray.dashboard.optional_deps",
    "ray.autoscaler._private.util",
    "ctypes.util",
)


def load_tune_phase(tracking_uri: str) -> None:
    """The store's client, then the Tune phase's modules: imported while Ray starts (no writes)."""
    warm_store(tracking_uri)
    for module in TUNE_PHASE:
        importlib.import_module(module)


def load_before_ray_starts() -> None:
    """The modules ray.init and the Tune phase share (SHARED_WITH_RAY_INIT); ray.init imports them anyway."""
    for module in SHARED_WITH_RAY_INIT:
        with contextlib.suppress(ModuleNotFoundError):  # a later Ray may move one: the layout test says which
            importlib.import_module(module)


class StorageFull(RuntimeError):
    """The sweep's storage ran out of space: trials stopped at their last checkpoint; free space, run again."""


def stop_on_sigterm() -> None:
    """SIGTERM (a scheduler, `ray job stop`) stops the sweep as Ctrl-C does: at a checkpoint, resumable."""
    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))


@dataclass
class SweepOutcome:
    runs: SweepRuns
    results: tune.ResultGrid
    unfinished: int  # trials not run to an end (the sweep was interrupted): rerun to resume
    pending: int = 0  # MLflow writes still waiting for the tracking server, spooled in `spool`
    spool: Path | None = None
    not_run: int = 0  # trials past the sweep's budget: a rerun with a larger budget runs them

    @property
    def errors(self) -> list[BaseException]:
        """The trials that failed: errors of their own code or of the cluster, not the budget's refusals."""
        return [e for e in self.results.errors if not budget_refused(e)]


class SweepRun:
    """A sweep as its driver runs it: planned once, checked before anything starts, then run (or resumed) on Ray."""

    def __init__(
        self,
        spec: SweepSpec,
        trials: list[PlannedTrial] | None = None,
        rerun: Rerun | None = None,
        file: str = "the sweep file",  # what messages call it
    ) -> None:
        self.file = file
        # Tune runs each trial in its own working directory: relative paths are fixed here, in the driver.
        self.storage = Storage(spec.storage_path)
        self.spec = spec.model_copy(update={"storage_path": self.storage.location})
        self.trials = plan(spec) if trials is None else trials  # every planned trial, once (TPE: drawn as it runs)
        self.rerun = rerun  # what earlier runs of the command left, when the sweep's folder records its plan
        self.to_run = rerun.to_run if rerun is not None else self.trials  # the trials this run may train
        # The Tune experiment that runs them: the sweep's folder, or one below it for a file that grew.
        self.tune = rerun.tune if rerun is not None else ""
        self.experiment = "/".join(filter(None, [spec.name, self.tune]))  # below the storage root
        self.cost = compute_plan(spec, self.trials)
        self.expected = self.cost.trials  # planned, or a drawing method's bound
        # A grown TPE sweep's searcher holds its space and starts from the earlier samples (search.Evaluated).
        self.evaluated = rerun.evaluated if rerun is not None and rerun.draws is not None else None
        # The trials the Tune experiment holds: every one, what a grown sweep's grid holds, or its draws x seeds.
        self.tune_holds = self.expected
        if rerun is not None:
            held = len(rerun.tune_trials)
            self.tune_holds = held if rerun.draws is None else rerun.draws * len(spec.seeds)
        self.admission = admit(spec, self.trials, self.cost.throughput)  # BadInput: a budget that admits nothing
        self.driver_dir = self.storage.driver_dir(spec.name)  # its lock and its spool of pending MLflow writes
        self.spool = self.driver_dir / SPOOL_FILE
        self.wait: ResourceWait | None = None  # why queued trials wait for resources, once Ray has started

    def run(self, address: str | None = None) -> SweepOutcome:
        """Checks the inputs (BadInput, Unavailable before Ray starts; a request no node meets and SweepBusy before
        MLflow or the sweep's folder is written), then runs the sweep."""
        spec = self.spec
        check_record(spec, self.storage)  # a resume goes to the store it started in, with a fixray that reads it
        require_reachable(spec.tracking.uri)  # a server that is away at the start
        if warning := store_on_the_head(spec.tracking.uri):
            print(warning, flush=True)
        splits = prepare_data(spec)  # dataset problems, before Ray or MLflow start
        for name, value in TUNE_SETTINGS.items():
            os.environ.setdefault(name, value)
        use_driver_http_settings()  # before MLflow's client reads them
        load_before_ray_starts()
        with ThreadPoolExecutor(1) as opener:
            loaded = opener.submit(load_tune_phase, spec.tracking.uri)
            ray.init(address=address, logging_level="ERROR", log_to_driver=True, **self._local_ray(address))
            try:
                loaded.result()
                from fixray.records.runs import SweepRuns
                from fixray.sweep.search import max_concurrent

                # A request no node can meet: refused (exit 2) before the sweep's folder or MLflow is written.
                resources = spec.resources
                cap = max_concurrent(spec)
                self.wait = refuse_unmeetable(
                    resources.cpus_per_trial, resources.gpus_per_trial, resources.workers, self.file, cap
                )
                with DriverLock(self.driver_dir, spec.name):
                    # The MLflow store opens while the rest starts (a new SQLite store migrates for about a second).
                    runs = opener.submit(SweepRuns, spec.tracking.uri, spec.tracking.experiment, spec.name)
                    stop_on_sigterm()  # after ray.init, which installs its own handler
                    wall = self.cost.wall_hours(ray.cluster_resources().get("GPU", 0), resources.gpus_per_trial)
                    if wall is not None:
                        print(f"  on this cluster's GPUs: about {wall:.3g} hours of wall time at that rate", flush=True)
                    write_record(spec, self.storage)
                    # What this run plans, and the Tune experiment that runs what is left of it.
                    plan_now = self.rerun.plan if self.rerun else SavedPlan.of(spec, self.trials, "", self.trials)
                    plan_now.write(spec, self.storage)
                    if self.trials:
                        runs.result().mark_in_file({trial.identity for trial in self.trials})
                    return self._tune(splits, runs.result())
            finally:
                ray.shutdown()

    def _local_ray(self, address: str | None) -> dict[str, bool]:
        """A local Ray starts without its dashboard (about 2 s of every sweep's start) unless Ray Train's DDP workers
        need it: its State API, which Train's cleanup polls. A cluster's Ray is joined as it is."""
        return {} if address is not None or self.spec.resources.workers > 1 else {"include_dashboard": False}

    def _spent(self, runs: SweepRuns) -> dict[str, float]:
        """What the sweep's trials have cost: hours of training, and of GPUs held (a trial's hours x its GPUs); and
        the budget this run of the command was given (metrics: a rerun's larger budget replaces it)."""
        seconds = sum(c.data.metrics.get(keys.TRIAL_SECONDS, 0.0) for c in runs.children())
        gpus = self.spec.resources.gpus_per_trial * self.spec.resources.workers
        spent = {"spent/trial_hours": seconds / 3600, "spent/gpu_hours": seconds * gpus / 3600}
        budget = self.admission
        if budget.budget is not None:
            spent |= {"budget/gpu_hours": budget.budget, "budget/admitted_gpu_hours": budget.hours}
        return spent

    def _resources(self) -> TrialResources:
        resources = self.spec.resources
        return TrialResources(
            workers=resources.workers,
            cpus=resources.cpus_per_trial,
            gpus=resources.gpus_per_trial,
            execution=resources.execution(),
            storage=self.storage.location,
            sweep=self.spec.name,
        )

    def _tuner(self, trainable, runs: SweepRuns) -> tune.Tuner:
        """A new Tuner, or the one the sweep's saved state restores (finished trials kept, the rest continued)."""
        from ray import tune
        from ray.tune.logger import JsonLoggerCallback

        from fixray.records.runs import outcome
        from fixray.records.tune_bridge import MlflowTrialLogger
        from fixray.sweep import search
        from fixray.sweep.budget import RefusalsNotRetried
        from fixray.sweep.checkpoints import CheckpointPruner, repair
        from fixray.sweep.progress import Progress
        from fixray.trial.trainable import threads

        spec, where = self.spec, self.storage
        path = where.path(self.experiment)
        space = search.param_space(spec, self._resumable(self.to_run), self.evaluated)
        if repair(where, self.experiment):
            print(
                f"The sweep's saved state in {where.shown(self.experiment)} was cut short (a full disk?): its last "
                "whole copy is restored.",
                flush=True,
            )
        if tune.Tuner.can_restore(path, storage_filesystem=where.fs):
            ended = [outcome(c) for c in runs.children()]
            retried = (
                f"; {ended.count('error')} trial(s) that failed with an error are retried from their last checkpoint"
            )
            offered = f"; {ended.count(Outcome.NOT_RUN)} trial(s) left out by a budget are run if this one admits them"
            kept = "finished trials are kept, unfinished ones continue"
            said = (retried if Outcome.ERROR in ended else "") + (offered if Outcome.NOT_RUN in ended else "")
            print(f"Resuming the sweep in {where.shown(self.experiment)}: {kept}{said}.", flush=True)
            return tune.Tuner.restore(
                path,
                trainable=trainable,
                param_space=space,
                resume_unfinished=True,
                resume_errored=True,
                storage_filesystem=where.fs,
            )
        # Each child run's params besides its trial's settings: what a replay of it needs.
        execution = dataclasses.asdict(spec.resources.execution())
        context = {"dataset": spec.dataset, "workers": spec.resources.workers, "threads": threads(self._resources())}
        context |= {name: value for name, value in execution.items() if name in REPLAYED_EXECUTION}
        return tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric=search.METRIC,
                mode=search.MODE,
                search_alg=search.search_alg(spec, self.evaluated),
                scheduler=search.scheduler(spec),
                num_samples=search.num_samples(spec, self.tune_holds),
                max_concurrent_trials=search.max_concurrent(spec),
                reuse_actors=spec.resources.workers == 1,
            ),
            run_config=tune.RunConfig(
                name=self.tune or spec.name,
                storage_path=where.path(spec.name) if self.tune else where.path(),
                storage_filesystem=where.fs,
                callbacks=[
                    MlflowTrialLogger(
                        spec.tracking.uri, spec.tracking.experiment, spec.name, context, self.spool, where.location
                    ),
                    Progress(
                        self.tune_holds,
                        spec.epochs,
                        parent=(spec.tracking.uri, runs.parent_id),
                        waiting=self.wait.note if self.wait else None,
                    ),
                    CheckpointPruner(where.location, self.experiment),
                    RefusalsNotRetried(),
                    JsonLoggerCallback(),  # each trial's result.json, for a look without MLflow
                ],
                # Every checkpoint is kept until the saved state names a newer one (see checkpoints.py).
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                # A dead process or node is retried from the last checkpoint; code errors fail fast (CodeErrors).
                failure_config=tune.FailureConfig(max_failures=spec.resources.max_retries),
                verbose=0,
            ),
        )

    def _resumable(self, trials: list[PlannedTrial]) -> list[PlannedTrial]:
        """The trials a grown sweep's Tune experiment runs, each with the checkpoint the latest earlier experiment that
        holds it left it (a restore re-specifies them as they were first given)."""
        if self.rerun is None or not self.rerun.resumed or not self.tune:
            return trials
        from fixray.sweep.checkpoints import last_checkpoints, tune_experiments

        left = {}
        for experiment in tune_experiments(self.storage, self.spec.name, before=self.tune):
            left |= last_checkpoints(self.storage, experiment)
        return [dataclasses.replace(t, resume=left.get(t.identity)) for t in trials]

    def _tune(self, splits: Splits, runs: SweepRuns) -> SweepOutcome:
        """Runs (or resumes) the sweep on the Ray already started, its MLflow runs open; publishes the answer."""
        from fixray.records.runs import STATUS_TAG, outcome
        from fixray.records.sweep_report import publish
        from fixray.sweep.budget import quiet_refusals
        from fixray.trial.trainable import CodeErrors, make_trainable

        spec, where = self.spec, self.storage
        runs.log_sweep_params(
            {
                "dataset": spec.dataset,
                "model": spec.model,
                "epochs": spec.epochs,
                "method": spec.search.method,
                "seeds": spec.seeds,
                "execution": spec.resources.execution(),  # bf16 rounds differently: part of what made the numbers
            }
            | environment(spec)
        )
        runs.log_plan(self.cost.flop, self.cost.gpu_hours, self.expected, spec.seeds)
        # On the driver's node: a worker node lost mid-sweep must not take the record of code errors with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        code_errors = CodeErrors.options(scheduling_strategy=here).remote()
        trainable = make_trainable(self._resources(), splits, code_errors, self.admission.admitted)
        tuner = self._tuner(trainable, runs)
        quiet_refusals()
        full = StorageFull(
            f"the sweep's storage {where.shown()} is full (no space left on device): the trials that could not save "
            f"stopped at their last checkpoint. Free space there, then run the same command: it resumes them."
        )
        try:
            results = tuner.fit()
        except BaseException as error:
            if not self.spool.exists():
                runs.end("KILLED")
            # Tune's own end can trip over a file the full disk truncated: the disk, not the error, says why.
            if isinstance(error, Exception) and (out_of_space(error) or where.full()):
                raise full from error
            raise
        if any(out_of_space(error) for error in results.errors):
            runs.end("KILLED")
            raise full
        if self.spool.exists():  # MLflow is still away: its writes wait in the spool for the next run of the command
            pending = sum(1 for line in self.spool.read_text().splitlines() if line.strip())
            return SweepOutcome(runs, results, self.expected, pending, self.spool)
        publish(runs, self._spent(runs))  # after a resume too: the answer covers every trial the store holds
        ended = [outcome(c) for c in runs.children() if STATUS_TAG in c.data.tags]
        done = SweepOutcome(runs, results, max(self.expected - len(ended), 0), not_run=ended.count(Outcome.NOT_RUN))
        runs.end("KILLED" if done.unfinished > 0 else "FAILED" if done.errors else "FINISHED")
        return done
