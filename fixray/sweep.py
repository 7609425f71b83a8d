"""A validated SweepSpec -> a Ray Tune run of trainable.py's trials, from the driver: the search, its resume,
the callbacks that record it (MLflow, progress, checkpoint pruning) and a full storage as a resumable stop.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.search import Repeater
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from fixray.answer import publish
from fixray.checkpoints import CheckpointPruner, repair
from fixray.data import Splits
from fixray.driver import driver_dir, storage
from fixray.pending import SPOOL_FILE
from fixray.plan import TrialDescriber, expected_trials, points
from fixray.progress import Progress
from fixray.spec import SweepSpec
from fixray.tracking import STATUS_TAG, SweepRuns, outcome
from fixray.trainable import CodeErrors, causes, make_trainable
from fixray.tune_mlflow import MlflowTrialLogger

METRIC, MODE = "val/acc", "max"  # what schedulers and searchers optimise: test accuracy


def _domain(value: dict[str, Any]):
    """A range or choice as a Ray Tune domain, for searchers that draw configurations themselves (TPE)."""
    ((dist, args),) = value.items()
    domain = {"loguniform": tune.loguniform, "uniform": tune.uniform, "choice": tune.choice}[dist]
    return domain(args) if dist == "choice" else domain(*args)


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's param space: fixray's own points as one grid_search, or Tune domains for TPE to draw from."""
    if spec.search.method == "tpe":
        space = spec.search.space.parameters()
        return {
            k: _domain(v) if isinstance(v, dict) else tune.choice(v) if isinstance(v, list) else v
            for k, v in space.items()
        }
    return {TrialDescriber.POINT: tune.grid_search(points(spec))}


def out_of_space(error: BaseException) -> bool:
    """Whether an error is a full disk (ENOSPC), even one Ray passed on as text."""
    return any(
        (isinstance(found, OSError) and found.errno == errno.ENOSPC) or os.strerror(errno.ENOSPC) in str(found)
        for found in causes(error)
    )


class StorageFull(RuntimeError):
    """The sweep's storage ran out of space: trials stopped at their last checkpoint; free space, run again."""


def _max_concurrent(spec: SweepSpec) -> int | None:
    """Caps trials so every running trial's DDP workers fit at once (else Train runs can deadlock)."""
    asked = spec.search.max_concurrent_trials
    if spec.resources.workers == 1:
        return asked
    cluster = ray.cluster_resources()
    per_trial_cpus = spec.resources.workers * spec.resources.cpus_per_trial
    fit = int(cluster.get("CPU", 0) // per_trial_cpus)
    if spec.resources.gpus_per_trial > 0:
        fit = min(fit, int(cluster.get("GPU", 0) // (spec.resources.workers * spec.resources.gpus_per_trial)))
    if fit < 1:
        raise RuntimeError(
            f"one trial needs {spec.resources.workers} workers x {spec.resources.cpus_per_trial} CPU "
            f"but the Ray cluster has {cluster.get('CPU', 0):g} CPUs"
        )
    return min(fit, asked) if asked else fit


def _search_alg(spec: SweepSpec):
    search = spec.search
    if search.method == "tpe":
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(metric=METRIC, mode=MODE, seed=search.random_seed)
        return Repeater(searcher, repeat=len(spec.seeds)) if len(spec.seeds) > 1 else searcher
    return None  # Tune's default generator walks fixray's grid of points


def _scheduler(spec: SweepSpec):
    if spec.search.asha is None:
        return None
    return tune.schedulers.ASHAScheduler(
        time_attr="training_iteration",
        max_t=spec.epochs,
        grace_period=spec.search.asha.grace_period,
        reduction_factor=spec.search.asha.reduction_factor,
    )


@dataclass
class SweepOutcome:
    runs: SweepRuns
    results: tune.ResultGrid
    unfinished: int  # trials not run to an end (the sweep was interrupted): rerun to resume
    pending: int = 0  # MLflow writes still waiting for the tracking server, spooled in `spool`
    spool: Path | None = None


def run_sweep(spec: SweepSpec, splits: Splits, runs: SweepRuns) -> SweepOutcome:
    """Runs (or resumes) a sweep, its MLflow runs open, on the Ray already initialised; returns its outcome."""
    # Tune runs each trial in its own working directory: relative paths must be fixed here, in the driver.
    where = storage(spec)
    spec = spec.model_copy(update={"storage_path": where.location})
    runs.log_sweep_params(
        {
            "dataset": spec.dataset,
            "model": spec.model,
            "epochs": spec.epochs,
            "method": spec.search.method,
            "seeds": spec.seeds,
            "execution": spec.resources.execution(),  # bf16 rounds differently: part of what made the numbers
        }
    )
    # On the driver's node: a worker node lost mid-sweep must not take the record of code errors with it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    trainable = make_trainable(spec, splits, CodeErrors.options(scheduling_strategy=here).remote())
    spool = driver_dir(spec) / SPOOL_FILE
    path = where.path(spec.name)
    if repair(where, spec.name):
        print(
            f"The sweep's saved state in {where.shown(spec.name)} was cut short (a full disk?): its last whole "
            "copy is restored.",
            flush=True,
        )
    if tune.Tuner.can_restore(path, storage_filesystem=where.fs):
        errored = sum(outcome(c) == "error" for c in runs.children())
        retried = (
            f"; {errored} trial(s) that failed with an error are retried from their last checkpoint" if errored else ""
        )
        kept = "finished trials are kept, unfinished ones continue"
        print(f"Resuming the sweep in {where.shown(spec.name)}: {kept}{retried}.", flush=True)
        tuner = tune.Tuner.restore(
            path,
            trainable=trainable,
            param_space=param_space(spec),
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=where.fs,
        )
    else:
        describer = TrialDescriber(spec)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(spec),
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode=MODE,
                search_alg=_search_alg(spec),
                scheduler=_scheduler(spec),
                # TPE: Repeater turns each Optuna suggestion into one trial per seed, and Tune counts them all.
                # Grid and random: every trial is already one of fixray's points.
                num_samples=expected_trials(spec) if spec.search.method == "tpe" else 1,
                max_concurrent_trials=_max_concurrent(spec),
                reuse_actors=spec.resources.workers == 1,
            ),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=where.path(),
                storage_filesystem=where.fs,
                callbacks=[
                    MlflowTrialLogger(
                        spec.tracking.uri, spec.tracking.experiment, spec.name, describer, spool, where.location
                    ),
                    Progress(describer, expected_trials(spec)),
                    CheckpointPruner(where.location, spec.name),
                    JsonLoggerCallback(),  # each trial's result.json, for a look without MLflow
                ],
                # Every checkpoint is kept until the saved state names a newer one (see checkpoints.py).
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                # A dead process or node is retried from the last checkpoint; code errors fail fast (CodeErrors).
                failure_config=tune.FailureConfig(max_failures=spec.resources.max_retries),
                verbose=0,
            ),
        )
    full = StorageFull(
        f"the sweep's storage {where.shown()} is full (no space left on device): the trials that could not save "
        f"stopped at their last checkpoint. Free space there, then run the same command: it resumes them."
    )
    try:
        results = tuner.fit()
    except BaseException as error:
        if not spool.exists():
            runs.end("KILLED")
        # Tune's own end can trip over a file the full disk truncated: the disk, not the error, says why.
        if isinstance(error, Exception) and (out_of_space(error) or where.full()):
            raise full from error
        raise
    if any(out_of_space(error) for error in results.errors):
        runs.end("KILLED")
        raise full
    if spool.exists():  # MLflow is still away: its writes wait in the spool for the next run of the command
        pending = sum(1 for line in spool.read_text().splitlines() if line.strip())
        return SweepOutcome(runs, results, expected_trials(spec), pending, spool)
    publish(runs)  # after a resume too: the answer covers every trial the store holds
    unfinished = expected_trials(spec) - sum(STATUS_TAG in c.data.tags for c in runs.children())
    runs.end("KILLED" if unfinished > 0 else "FAILED" if results.errors else "FINISHED")
    return SweepOutcome(runs, results, max(unfinished, 0))
