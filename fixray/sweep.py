"""A validated SweepSpec -> a Ray Tune run whose trials call the plain training loop.

One-worker trials train inside the Tune function itself (actors reused); trials with several workers
start a Ray Train TorchTrainer (DDP) from the Tune function, which forwards worker reports to Tune.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
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
from fixray.tracking import FIGURES_DIR, NODES_KEY, RESOURCES_KEY, STATUS_TAG, SweepRuns, outcome
from fixray.train import share_gpu, train
from fixray.trial import TrialConfig
from fixray.tune_mlflow import MlflowTrialLogger

METRIC, MODE = "val/acc", "max"  # what schedulers and searchers optimise: test accuracy
STATE_FILE = "state.pt"  # the training loop's state inside a Ray checkpoint
DRIVER_MEMORY = 64 * 2**20  # bytes reserved for a DDP trial's driver function; it takes no CPU so its workers fit


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


def _save_state(state: dict[str, Any], folder: str) -> ray.tune.Checkpoint:
    """The loop's state as a Ray checkpoint; its figures become PNG files that the driver logs to MLflow."""
    figures = state.pop("figures", {})
    torch.save(state, Path(folder) / STATE_FILE)
    if figures:
        (Path(folder) / FIGURES_DIR).mkdir()
        for name, png in figures.items():
            (Path(folder) / FIGURES_DIR / name).write_bytes(png)
    return ray.tune.Checkpoint.from_directory(folder)


def _load_state(checkpoint) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, weights_only=True)  # tensors and plain values, never code


def placement(nodes: list[str] | None = None, memory: str = "") -> dict[str, str]:
    """Where a trial trains (Ray node ids, the resources Ray assigned it and its GPU memory bound): the driver tags
    its MLflow run with it."""
    context = ray.get_runtime_context()
    resources = [f"{name} {amount:g}" for name, amount in sorted(context.get_assigned_resources().items())]
    if memory:
        resources.append(memory)
    return {NODES_KEY: ",".join(nodes or [context.get_node_id()]), RESOURCES_KEY: ", ".join(resources)}


def _trial_device(gpus: float) -> tuple[str, str]:
    """The device a one-worker trial trains on and, for a share of a GPU, the memory bound it was given."""
    if gpus <= 0 or not torch.cuda.is_available():
        return "cpu", ""
    return "cuda", share_gpu(gpus) if gpus < 1 else ""


def _checkpointing(report_fn, where: dict[str, str]):
    """Adapts tune.report or ray.train.report to the loop's report(metrics, state) callback, adding `where`."""

    def report(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        metrics = metrics | where
        if state is None:
            report_fn(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            report_fn(metrics, checkpoint=_save_state(state, folder))

    return report


def _quiet_checkpoint_logs() -> None:
    """Ray logs every persisted checkpoint at INFO: one line per epoch per trial drowns the progress lines."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:  # Ray Train V2 logs every report at INFO under a logger named by its file path
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass


def _threads(spec: SweepSpec) -> int:
    """Torch threads for one training process: its CPU share, at least one."""
    return max(1, int(spec.resources.cpus_per_trial))


def ddp_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the same loop, under the process group Ray Train set up (gloo or NCCL)."""
    _quiet_checkpoint_logs()
    cfg: TrialConfig = loop_config["cfg"]
    torch.set_num_threads(loop_config["threads"])
    splits: Splits = ray.get(loop_config["splits"])
    start = _load_state(ray.train.get_checkpoint())
    nodes = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(nodes, ray.get_runtime_context().get_node_id())  # every worker's node
    memory = _trial_device(loop_config["gpus"])[1]
    where = placement(list(dict.fromkeys(nodes)), memory)
    report = _checkpointing(ray.train.report, where)
    train(cfg, splits, report, start, ray.train.torch.get_device(), loop_config["execution"])


def _run_ddp(cfg: TrialConfig, splits: ray.ObjectRef, spec: SweepSpec) -> None:
    from ray.train import CheckpointConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    resources = spec.resources
    where = storage(spec)
    trainer = TorchTrainer(
        ddp_worker,
        train_loop_config={
            "cfg": cfg,
            "splits": splits,
            "threads": _threads(spec),
            "execution": resources.execution(),
            "gpus": resources.gpus_per_trial,
        },
        scaling_config=ScalingConfig(
            num_workers=resources.workers,
            use_gpu=resources.gpus_per_trial > 0,
            resources_per_worker={"CPU": resources.cpus_per_trial, "GPU": resources.gpus_per_trial},
        ),
        run_config=RunConfig(
            # Stable per trial, so a resumed sweep's trainer picks up its own checkpoints.
            name=f"{spec.name}-{tune.get_context().get_trial_id()}",
            storage_path=where.path("ddp"),
            storage_filesystem=where.fs,
            # Train V2 records its newest checkpoint before it deletes the older one: one is always restorable.
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
            logging_config=LoggingConfig(log_level="WARNING"),  # not a line per report per worker
        ),
    )
    trainer.fit()


INFRASTRUCTURE_ERRORS = (  # a process, node or object the trial's code did not break
    ray.exceptions.RayActorError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.OwnerDiedError,
    ray.exceptions.RaySystemError,
)


def _causes(error: BaseException):
    """An error and every error behind it: causes, contexts, Ray's wrapped causes and DDP worker failures."""
    seen, pending = set(), [error]
    while pending:
        found = pending.pop()
        if found is None or id(found) in seen:
            continue
        seen.add(id(found))
        yield found
        pending += [found.__cause__, found.__context__, getattr(found, "cause", None)]
        pending += list((getattr(found, "worker_failures", None) or {}).values())  # Ray Train's worker group


def infrastructure_failure(error: BaseException) -> bool:
    """Whether an error came from Ray's processes or nodes (retry it) rather than the trial's own code (do not)."""
    return any(isinstance(found, INFRASTRUCTURE_ERRORS) for found in _causes(error))


def out_of_space(error: BaseException) -> bool:
    """Whether an error is a full disk (ENOSPC), even one Ray passed on as text."""
    return any(
        (isinstance(found, OSError) and found.errno == errno.ENOSPC) or os.strerror(errno.ENOSPC) in str(found)
        for found in _causes(error)
    )


class StorageFull(RuntimeError):
    """The sweep's storage ran out of space: trials stopped at their last checkpoint; free space, run again."""


@ray.remote(num_cpus=0)
class CodeErrors:
    """The trials whose own code raised in this driver's run; lives as long as the driver, so a rerun retries them."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def add(self, trial_id: str, error: str) -> None:
        self.errors[trial_id] = error

    def get(self, trial_id: str) -> str | None:
        return self.errors.get(trial_id)


class TrialCodeError(RuntimeError):
    """Raised at once by a retry of a trial whose own code raised: Tune's retries are for dead processes only."""


def make_trainable(spec: SweepSpec, splits: Splits, code_errors):
    describer = TrialDescriber(spec)

    def run_trial(config: dict[str, Any], data: list[ray.ObjectRef]) -> None:
        # `data` holds the ref in a list, so Tune passes the ref on: DDP workers fetch it themselves.
        _quiet_checkpoint_logs()
        trial_id = tune.get_context().get_trial_id()
        earlier = ray.get(code_errors.get.remote(trial_id))
        if earlier is not None:
            raise TrialCodeError(f"not retried in this run (run the command again to retry it): {earlier}")
        cfg = describer.config(config)
        try:
            if spec.resources.workers > 1:
                _run_ddp(cfg, data[0], spec)
                return
            torch.set_num_threads(_threads(spec))
            device, memory = _trial_device(spec.resources.gpus_per_trial)
            report = _checkpointing(tune.report, placement(memory=memory))
            start = _load_state(tune.get_checkpoint())
            train(cfg, ray.get(data[0]), report, start, device, spec.resources.execution())
        except Exception as error:
            if not infrastructure_failure(error):
                ray.get(code_errors.add.remote(trial_id, f"{type(error).__name__}: {error}"))
            raise

    resources = spec.resources
    if resources.workers > 1:
        # The Tune function only drives the TorchTrainer; its workers hold the CPUs and GPUs.
        trial_resources = {"cpu": 0, "memory": DRIVER_MEMORY}
    else:
        trial_resources = {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial}
    # One copy in the object store; every trial on a node maps the same uint8 arrays without copying.
    return tune.with_resources(tune.with_parameters(run_trial, data=[ray.put(splits)]), trial_resources)


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
