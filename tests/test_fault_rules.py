"""The rules that tell one fault from another (fixray/faults.py), on errors built as Ray, the OS and MLflow raise
them: which are retried, which end a sweep resumably, which are the budget's, and how a trial's end is recorded."""

import errno
import os

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, TEMPORARILY_UNAVAILABLE
from ray import exceptions as ray_errors

from fixray.faults import (
    NotAdmitted,
    Outcome,
    budget_refused,
    causes,
    infrastructure_failure,
    out_of_space,
    store_unreachable,
    trial_outcome,
    trial_refused,
)


def _wrapped(inner: BaseException) -> RuntimeError:
    """inner behind two layers, as Ray Train passes a worker's error on."""
    try:
        try:
            raise inner
        except BaseException as error:
            raise RuntimeError("the trial failed") from error
    except RuntimeError as outer:
        return outer


def test_an_error_s_causes_are_walked_through_cause_context_ray_s_cause_and_ddp_worker_failures():
    worker = ValueError("worker 1")
    group = RuntimeError("worker group")
    group.worker_failures = {1: worker}
    ray_wrapped = RuntimeError("task")
    ray_wrapped.cause = group
    assert worker in list(causes(_wrapped(ray_wrapped)))


def test_a_lost_process_or_node_is_the_cluster_s_fault_and_an_error_in_the_trial_s_code_is_not():
    assert infrastructure_failure(_wrapped(ray_errors.NodeDiedError("node gone")))
    assert infrastructure_failure(_wrapped(ray_errors.WorkerCrashedError()))
    assert not infrastructure_failure(_wrapped(ZeroDivisionError("the trial's own bug")))


@pytest.mark.parametrize(
    "error,full",
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (RuntimeError(f"pyarrow: write failed: {os.strerror(errno.ENOSPC)}"), True),  # Ray passed it on as text
        (OSError(errno.EACCES, "Permission denied"), False),
    ],
)
def test_a_full_disk_is_told_from_other_os_errors_even_as_text(error, full):
    assert out_of_space(_wrapped(error)) is full


def test_the_budget_s_refusal_is_no_failure_however_wrapped():
    assert budget_refused(_wrapped(NotAdmitted("past the budget")))
    assert not budget_refused(_wrapped(ValueError("a failure"))) and not budget_refused(None)


def test_a_refusal_is_told_when_tune_calls_back_before_it_copied_the_error_to_the_storage(tmp_path):
    """Tune saves a trial's error in the driver's copy of its folder and copies it to the storage later: a trial that
    refuses at once reaches the callbacks first, so the rule reads the driver's copy."""
    import ray
    from ray import tune

    def raises_at_once(config):  # defined here: Ray sends it by value, as it does fixray's trial function
        raise NotAdmitted("past the budget") if config["refused"] else ValueError("its own code")

    class Told(tune.Callback):
        def __init__(self):
            self.seen = []  # (hook, whether the trial refused, what the rule said of it)

        def on_trial_recover(self, iteration, trials, trial, **info):
            self.seen.append(("recover", trial.config["refused"], trial_refused(trial)))

        def on_trial_error(self, iteration, trials, trial, **info):
            self.seen.append(("error", trial.config["refused"], trial_refused(trial)))

    told = Told()
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        tune.Tuner(
            raises_at_once,
            param_space={"refused": tune.grid_search([True, False])},
            run_config=tune.RunConfig(
                storage_path=str(tmp_path),
                name="sweep",
                callbacks=[told],
                failure_config=tune.FailureConfig(1),
                verbose=0,
            ),
        ).fit()
    finally:
        ray.shutdown()
    assert sorted((hook, refused) for hook, refused, _ in told.seen) == [
        ("error", False),
        ("error", True),
        ("recover", False),
        ("recover", True),
    ]
    assert all(said is refused for _, refused, said in told.seen), told.seen


@pytest.mark.parametrize(
    "error,away",
    [
        (MlflowException("server error", error_code=TEMPORARILY_UNAVAILABLE), True),
        (MlflowException("internal", error_code=INTERNAL_ERROR), True),
        (MlflowException.invalid_parameter_value("bad request"), False),  # 400: a write it rejects
        (ConnectionRefusedError("connection refused"), True),
        (ValueError("a bug"), False),
    ],
)
def test_a_store_that_is_away_is_waited_out_and_a_write_it_rejects_is_not(error, away):
    assert store_unreachable(error) is away


@pytest.mark.parametrize(
    "ended,outcome",
    [
        (dict(failed=True, refused=True, diverged=False, epoch=0, epochs=5), Outcome.NOT_RUN),
        (dict(failed=True, refused=False, diverged=False, epoch=3, epochs=5), Outcome.ERROR),
        (dict(failed=False, refused=False, diverged=True, epoch=2, epochs=5), Outcome.DIVERGED),
        (dict(failed=False, refused=False, diverged=False, epoch=2, epochs=5), Outcome.STOPPED_EARLY),
        (dict(failed=False, refused=False, diverged=False, epoch=5, epochs=5), Outcome.FINISHED),
    ],
)
def test_a_trial_s_end_is_recorded_as_one_outcome(ended, outcome):
    assert trial_outcome(**ended) is outcome


def test_outcomes_are_the_status_tags_already_in_mlflow_stores_in_the_order_summaries_name_them():
    assert [o.value for o in Outcome] == ["finished", "diverged", "stopped_early", "error", "not_run", "unfinished"]
    assert f"{Outcome.NOT_RUN}" == str(Outcome.NOT_RUN) == "not_run" == Outcome.NOT_RUN
