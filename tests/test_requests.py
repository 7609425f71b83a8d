"""What a sweep asks of the machines it runs on, refused before anything is written when it cannot be met: a trial's
request no node can give (a GPU sweep file on a machine without one), and a Ray job's driver writing its results into
the job's temporary working directory. Real local Ray; the job's runtime env is the variable Ray's job supervisor
sets."""

import json

from conftest import GOOD_SWEEP
from e2e import run

from fixray.cli import main
from fixray.sweep.job_dir import JOB_CONFIG_VARIABLE, refuse_a_temporary_store
from fixray.sweep.spec.reading import load_sweep

GPU_SWEEP = GOOD_SWEEP + "resources: {cpus_per_trial: 1, gpus_per_trial: 1}\n"


def test_a_trial_asking_for_a_gpu_no_node_has_is_refused_naming_it_and_nothing_is_written(tmp_path):
    (tmp_path / "gpu.yaml").write_text(GPU_SWEEP)
    done = run(["sweep", "gpu.yaml"], tmp_path, timeout=120)  # a sweep that waited for ever would time out here
    assert done.returncode == 2, done.stdout + done.stderr
    assert "each trial asks for 1 GPU(s) and 1 CPU(s) (resources: in gpu.yaml)" in done.stderr
    assert "this machine (local Ray) has" in done.stderr and "no GPU" in done.stderr
    assert "--gpus-per-trial 0 --cpus-per-trial 1" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu.yaml"]  # no store, no sweep folder
    bad = run(["sweep", "gpu.yaml", "--cpus-per-trial", "-1"], tmp_path, timeout=120)
    assert bad.returncode == 2 and "resources from the command line" in bad.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_a_ray_jobs_driver_never_writes_its_runs_into_the_jobs_temporary_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FIXRAY_STORAGE", raising=False)
    job = {"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}, "metadata": {"job_submission_id": "raysubmit_1"}}
    monkeypatch.setenv(JOB_CONFIG_VARIABLE, json.dumps(job))
    (tmp_path / "s.yaml").write_text(GOOD_SWEEP)
    assert main(["sweep", "s.yaml"]) == 2  # the defaults here: sqlite:///mlflow.db and fixray-runs, both relative
    message = capsys.readouterr().err
    assert "tracking.uri sqlite:///mlflow.db and storage_path fixray-runs of s.yaml" in message
    assert "$MLFLOW_TRACKING_URI (its MLflow server)" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]
    # On a cluster's head the environment names the server and the bucket: nothing temporary, nothing refused.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("FIXRAY_STORAGE", str(tmp_path / "runs"))
    refuse_a_temporary_store(load_sweep(tmp_path / "s.yaml"), "s.yaml")
    monkeypatch.delenv(JOB_CONFIG_VARIABLE)  # not a job: a relative store is the user's own folder
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    refuse_a_temporary_store(load_sweep(tmp_path / "s.yaml"), "s.yaml")


def test_a_trial_holding_a_gpu_cuda_cannot_see_is_an_error_naming_it_never_a_silent_cpu_run(monkeypatch):
    import pytest
    import torch

    from fixray.trial.device import CPU_FOR_DECLARED_GPUS, training_device

    monkeypatch.delenv(CPU_FOR_DECLARED_GPUS, raising=False)
    assert training_device(0) == "cpu"
    if torch.cuda.is_available():
        assert training_device(1) == "cuda"
        return
    with pytest.raises(RuntimeError, match="declares GPUs that CUDA does not see.*--gpus-per-trial 0"):
        training_device(0.5)
    monkeypatch.setenv(CPU_FOR_DECLARED_GPUS, "1")  # asked for by name: GPU scheduling tested without a GPU
    assert training_device(1) == "cpu"
