"""The function Ray runs for each trial: it trains the settled config the driver sent (or drives its DDP
workers), saves its checkpoints, says where it ran, and tells which of its failures a retry can mend.

One-worker trials train inside the Tune function itself (actors reused); trials with several workers start a
Ray Train TorchTrainer (DDP) from the Tune function, which forwards worker reports to Tune. Trial processes import
this room alone (no sweep schema, no MLflow, no tables): they start sooner. The driver imports this module too, to hand
Tune the function, but never trains: torch and the loop are imported inside the functions a trial's process runs (2 s
of every sweep's start on 2 cores otherwise).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune

from fixray.crossing.attempts import ATTEMPT_KEY, Attempt, attempt_folder, newest_attempt
from fixray.crossing.contract import (
    FIGURES_DIR,
    NODES_KEY,
    RESOURCES_KEY,
    TrialConfig,
    TrialResources,
    from_params,
    sent_params,
    sent_resume,
    sent_run_name,
)
from fixray.crossing.images import Splits
from fixray.faults import NotAdmitted, infrastructure_failure
from fixray.storage import Storage

STATE_FILE = "state.pt"  # the training loop's state inside a Ray checkpoint
DRIVER_MEMORY = 64 * 2**20  # bytes reserved for a DDP trial's driver function; it takes no CPU so its workers fit


def _save_state(state: dict[str, Any], folder: str, attempt: int) -> ray.tune.Checkpoint:
    """The loop's state as a Ray checkpoint, in its attempt's own folder; its figures become PNG files that the driver
    logs to MLflow."""
    import torch

    figures = state.pop("figures", {})
    own = Path(folder) / attempt_folder(attempt)
    own.mkdir()
    torch.save(state, own / STATE_FILE)
    if figures:
        (own / FIGURES_DIR).mkdir()
        for name, png in figures.items():
            (own / FIGURES_DIR / name).write_bytes(png)
    return ray.tune.Checkpoint.from_directory(folder)


def _load_state(checkpoint, resume: str | None, storage: str) -> dict[str, Any] | None:
    """The state a trial starts from: Tune's (or Train's) checkpoint of it, else the one an earlier Tune experiment of
    the sweep left it (`resume`), else none."""
    if checkpoint is None and resume is not None:
        checkpoint = ray.tune.Checkpoint(resume, filesystem=Storage(storage).fs)
    if checkpoint is None:
        return None
    import torch

    with checkpoint.as_directory() as folder:  # tensors and plain values, never code; a stale attempt's left unread
        return torch.load(newest_attempt(Path(folder)) / STATE_FILE, weights_only=True)


def placement(nodes: list[str] | None = None, memory: str = "") -> dict[str, str]:
    """Where a trial trains (Ray node ids, the resources Ray assigned it and its GPU memory bound): the driver tags
    its MLflow run with it."""
    context = ray.get_runtime_context()
    resources = [f"{name} {amount:g}" for name, amount in sorted(context.get_assigned_resources().items())]
    if memory:
        resources.append(memory)
    return {NODES_KEY: ",".join(nodes or [context.get_node_id()]), RESOURCES_KEY: ", ".join(resources)}


def _gpu_share(gpus: float) -> str:
    """For a share of a GPU (packed trials), bounds this process's GPU memory to it and says the bound; else ''."""
    import torch

    from fixray.trial.device import share_gpu

    return share_gpu(gpus) if 0 < gpus < 1 and torch.cuda.is_available() else ""


def _checkpointing(report_fn, where: dict[str, str], attempt: Attempt):
    """Adapts tune.report or ray.train.report to the loop's report(metrics, state) callback, adding `where` and the
    attempt's number; a checkpoint is written only while no later attempt of the trial has started."""

    def report(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        metrics = metrics | where | {ATTEMPT_KEY: attempt.number}
        if state is None:
            report_fn(metrics)
            return
        attempt.check()
        with tempfile.TemporaryDirectory() as folder:
            report_fn(metrics, checkpoint=_save_state(state, folder, attempt.number))

    return report


def _quiet_checkpoint_logs() -> None:
    """Ray logs every persisted checkpoint at INFO: one line per epoch per trial drowns the progress lines."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:  # Ray Train V2 logs every report at INFO under a logger named by its file path
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass


def threads(resources: TrialResources) -> int:
    """Torch threads for one training process: its CPU share, at least one."""
    return max(1, int(resources.cpus))


def ddp_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the same loop, under the process group Ray Train set up (gloo or NCCL)."""
    import torch

    from fixray.trial.device import training_device
    from fixray.trial.loop import train

    _quiet_checkpoint_logs()
    cfg: TrialConfig = loop_config["cfg"]
    torch.set_num_threads(loop_config["threads"])
    splits: Splits = ray.get(loop_config["splits"])
    start = _load_state(ray.train.get_checkpoint(), loop_config["resume"], loop_config["storage"])
    nodes = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(nodes, ray.get_runtime_context().get_node_id())  # every worker's node
    where = placement(list(dict.fromkeys(nodes)), _gpu_share(loop_config["gpus"]))
    report = _checkpointing(ray.train.report, where, loop_config["attempt"])
    training_device(loop_config["gpus"])  # a declared GPU CUDA cannot see: an error, not Ray Train's CPU fallback
    train(cfg, splits, report, start, ray.train.torch.get_device(), loop_config["execution"])


def _run_ddp(
    cfg: TrialConfig, splits: ray.ObjectRef, resources: TrialResources, resume: str | None, attempt: Attempt
) -> None:
    from ray.train import CheckpointConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    where = Storage(resources.storage)
    trainer = TorchTrainer(
        ddp_worker,
        train_loop_config={
            "cfg": cfg,
            "splits": splits,
            "threads": threads(resources),
            "execution": resources.execution,
            "gpus": resources.gpus,
            "resume": resume,
            "storage": resources.storage,
            "attempt": attempt,
        },
        scaling_config=ScalingConfig(
            num_workers=resources.workers,
            use_gpu=resources.gpus > 0,
            resources_per_worker={"CPU": resources.cpus, "GPU": resources.gpus},
        ),
        run_config=RunConfig(
            # Stable per trial, so a resumed sweep's trainer picks up its own checkpoints.
            name=f"{resources.sweep}-{tune.get_context().get_trial_id()}",
            storage_path=where.path("ddp"),
            storage_filesystem=where.fs,
            # Train V2 records its newest checkpoint before it deletes the older one: one is always restorable.
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
            logging_config=LoggingConfig(log_level="WARNING"),  # not a line per report per worker
        ),
    )
    trainer.fit()


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


def make_trainable(resources: TrialResources, splits: Splits, code_errors, admitted: frozenset[str] | None):
    """The Tune function of every trial of a sweep, its data put in the object store once and its resources set;
    `admitted`: the run names this run of the command lets train under the sweep's budget (None: every trial)."""

    def run_trial(config: dict[str, Any], data: list[ray.ObjectRef]) -> None:
        # `data` holds the ref in a list, so Tune passes the ref on: DDP workers fetch it themselves.
        if admitted is not None and sent_run_name(config) not in admitted:
            raise NotAdmitted(f"{sent_run_name(config)}: past the sweep's budget, not run")
        _quiet_checkpoint_logs()
        trial_id = tune.get_context().get_trial_id()
        earlier = ray.get(code_errors.get.remote(trial_id))
        if earlier is not None:
            raise TrialCodeError(f"not retried in this run (run the command again to retry it): {earlier}")
        cfg = from_params(sent_params(config))  # settled by the driver, sent once
        import torch  # after the refusals above: a trial refused at once loads no torch

        from fixray.trial.device import training_device
        from fixray.trial.loop import train

        try:
            attempt = Attempt.claim(resources.storage, resources.sweep, trial_id)
            if resources.workers > 1:
                _run_ddp(cfg, data[0], resources, sent_resume(config), attempt)
                return
            torch.set_num_threads(threads(resources))
            device = training_device(resources.gpus)
            report = _checkpointing(tune.report, placement(memory=_gpu_share(resources.gpus)), attempt)
            start = _load_state(tune.get_checkpoint(), sent_resume(config), resources.storage)
            train(cfg, ray.get(data[0]), report, start, device, resources.execution)
        except Exception as error:
            if not infrastructure_failure(error):
                ray.get(code_errors.add.remote(trial_id, f"{type(error).__name__}: {error}"))
            raise

    if resources.workers > 1:
        # The Tune function only drives the TorchTrainer; its workers hold the CPUs and GPUs.
        trial_resources = {"cpu": 0, "memory": DRIVER_MEMORY}
    else:
        trial_resources = {"cpu": resources.cpus, "gpu": resources.gpus}
    # One copy in the object store; every trial on a node maps the same uint8 arrays without copying.
    return tune.with_resources(tune.with_parameters(run_trial, data=[ray.put(splits)]), trial_resources)
