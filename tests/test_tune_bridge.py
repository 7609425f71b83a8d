"""The driver's MLflow callback against a real SQLite store: a trial's epochs go in one request for several,
never later than a checkpoint past them, whole epochs per request, each epoch once; and every hook it and
the other callbacks define is one Tune calls."""

import inspect
import pickle

import pytest
from ray.tune import Callback
from ray.tune.experiment import Trial

from fixray.crossing import metric_keys
from fixray.crossing.contract import TRIAL_KEY
from fixray.records import tune_bridge
from fixray.records.runs import SweepRuns
from fixray.records.tune_bridge import MlflowTrialLogger
from fixray.sweep.checkpoints import CheckpointPruner
from fixray.sweep.progress import Progress

# Declared keys (what is not in the metric catalogue stays out of MLflow): with train/loss, 15 metrics an epoch
METRICS = {key: 0.5 for key in [k for k in metric_keys.METRICS if "<" not in k and k != "train/loss"][:14]}


class CountingRuns(SweepRuns):
    """The real store, counting the metric requests sent to it."""

    requests = 0

    def __init__(self, *args) -> None:
        super().__init__(*args)
        log_batch = self.client.log_batch

        def counted(run_id, metrics=(), **kwargs):
            CountingRuns.requests += bool(metrics)
            return log_batch(run_id, metrics=metrics, **kwargs)

        self.client.log_batch = counted


@pytest.fixture
def logger(tmp_path, monkeypatch):
    monkeypatch.setattr(tune_bridge, "SweepRuns", CountingRuns)
    CountingRuns.requests = 0
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    callback = MlflowTrialLogger(uri, "fixray", "s", {"dataset": "digits"}, tmp_path / "spool.jsonl", str(tmp_path))
    callback.setup()
    return callback


def _trial() -> Trial:
    sent = {"config": {"lr": 0.1, "epochs": 500}, "run_name": "run"}  # what the driver sends a trial
    return Trial("t", config={TRIAL_KEY: sent}, trial_id="trial_1", stub=True)


def _epochs(logger: MlflowTrialLogger) -> list[int]:
    run_id = logger.runs.find_child("trial_1")[0]
    return sorted(m.step for m in logger.runs.client.get_metric_history(run_id, "train/loss"))


def _report(logger: MlflowTrialLogger, trial: Trial, epochs: range) -> None:
    for epoch in epochs:
        logger.log_trial_result(epoch, trial, {"epoch": epoch, "train/loss": 1.0 / epoch} | METRICS)


def test_epochs_wait_for_a_checkpoint_then_go_in_one_request(logger):
    trial = _trial()
    _report(logger, trial, range(1, 6))
    assert _epochs(logger) == [] and CountingRuns.requests == 0  # gathered, not yet sent
    logger.on_checkpoint(5, [trial], trial, checkpoint=None)  # before Tune records the epoch-5 checkpoint
    assert _epochs(logger) == [1, 2, 3, 4, 5] and CountingRuns.requests == 1


def test_epochs_without_a_checkpoint_go_after_a_while_and_at_the_trial_end(logger, monkeypatch):
    trial = _trial()
    _report(logger, trial, range(1, 3))
    logger.on_step_end(iteration=1, trials=[trial])
    assert _epochs(logger) == []  # younger than GATHER_S
    monkeypatch.setattr(tune_bridge, "GATHER_S", 0.0)
    logger.on_step_end(iteration=2, trials=[trial])
    assert _epochs(logger) == [1, 2]
    _report(logger, trial, range(3, 5))
    logger.log_trial_end(trial)
    assert _epochs(logger) == [1, 2, 3, 4]


def test_a_long_gathering_splits_into_whole_epochs_within_mlflows_limit_and_lands_once(logger):
    trial = _trial()
    _report(logger, trial, range(1, 101))  # 1,500 metrics: over MLflow's 1,000 a request
    gathered = list(logger._gathered["trial_1"][1])
    logger.on_checkpoint(100, [trial], trial, checkpoint=None)
    assert _epochs(logger) == list(range(1, 101)) and CountingRuns.requests == 2
    logger._apply({"op": "metrics", "trial": "trial_1", "epochs": gathered, "retried": True})  # replayed
    assert _epochs(logger) == list(range(1, 101)) and CountingRuns.requests == 2


def test_a_trial_run_logs_the_config_the_driver_sent_and_the_sweep_context(logger):
    _report(logger, _trial(), range(1, 2))
    logger.log_trial_end(_trial())
    run = logger.runs.client.get_run(logger.runs.find_child("trial_1")[0])
    assert run.info.run_name == "run" and run.data.params == {"lr": "0.1", "epochs": "500", "dataset": "digits"}
    assert run.data.tags["fixray.status"] == "stopped_early"  # 1 of the 500 epochs it was sent


def test_a_callback_saved_with_the_sweep_state_comes_back_built_from_its_arguments(logger):
    """Tune pickles callbacks into the saved state: a restored one holds what it was made with, no queue or client."""
    _report(logger, _trial(), range(1, 3))
    restored = pickle.loads(pickle.dumps(logger))
    assert restored._gathered == {} and restored._runs is None and restored._pending is None
    assert (restored.tracking_uri, restored.context, restored.spool) == (
        logger.tracking_uri,
        logger.context,
        logger.spool,
    )
    progress = pickle.loads(pickle.dumps(Progress(trials=4, epochs=10)))
    assert (progress.trials, progress.epochs, progress.stream) == (4, 10, None)
    pruner = CheckpointPruner("/tmp/x", "s")
    pruner._last = 99.0
    assert pickle.loads(pickle.dumps(pruner))._last == 0.0  # not another process's clock


@pytest.mark.parametrize("callback", [MlflowTrialLogger, Progress, CheckpointPruner])
def test_every_hook_a_callback_defines_is_one_tune_calls(callback):
    """A misspelt hook is never called, silently (an `on_step` once left live progress and retries idle)."""
    tune_hooks = {name for name, _ in inspect.getmembers(Callback) if name.startswith("on_")}
    defined = {name for name in vars(callback) if name.startswith("on_")}
    assert defined <= tune_hooks, defined - tune_hooks
