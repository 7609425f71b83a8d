"""Ray's own autoscaler, for real on one machine: a head that trains nothing and a worker type from zero nodes up, its
nodes launched by Ray's fake multi-node provider (real raylets, no cloud). A sweep submitted to it makes the
autoscaler launch workers as trials queue, never more than the type's max_workers, ends equal to the same sweep on
local Ray, and the workers go once idle; a trial asking for what no node type has is refused at once; while no node is
up yet (the autoscaler still launching), the live line says what the trials wait for and SIGTERM ends the sweep at once,
resumable."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import ray
from e2e import ENV, FIXRAY, run, store

from fixray.sweep.capacity import monitor_process

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

RAY = os.path.join(os.path.dirname(sys.executable), "ray")
MAX_WORKERS = 2
IDLE_MINUTES = 0.1  # a worker idle this long is released
SWEEP = """\
name: scales
dataset: digits
model: small_cnn
epochs: 2
batch_size: 64
seeds: [0]
search:
  space:
    kind: [dot, cosine]
    fixed: [true, false]
resources: {cpus_per_trial: 1}
"""


def _config(gcs_address: str) -> dict:
    """cluster.yaml's shape: a head that trains nothing, one worker type from 0 to MAX_WORKERS nodes. Ray's fake
    provider is loaded by module (its defaults file is missing from Ray's wheel), launching local raylets."""
    empty = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands")
    return {
        "cluster_name": "fixray-autoscaling",
        "max_workers": MAX_WORKERS,
        "provider": {
            "type": "external",
            "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},  # the provider's name
            "cpu_worker": {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": MAX_WORKERS},
        },
        "head_node_type": "ray.head.default",
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_MINUTES,
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    } | {key: [] for key in empty}


@contextlib.contextmanager
def autoscaling_cluster(folder):
    """The head's GCS address and the environment that reaches it; every Ray process of the machine stopped at the
    end (while it runs, a plain `ray.init()` here would join it: start it after any local-Ray sweep)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    address = f"{ray.util.get_node_ip_address()}:{port}"
    (folder / "autoscaling.json").write_text(json.dumps(_config(address)))
    env = ENV | {
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_enable_autoscaler_v2": "0",
        "RAY_AUTH_MODE": "disabled",
    }
    start = [RAY, "start", "--head", f"--port={port}", "--num-cpus=0"]
    start.append(f"--autoscaling-config={folder / 'autoscaling.json'}")
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    try:
        yield address, env
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


def _stopped_while_waiting(address: str, folder, env: dict) -> tuple[int, float, str]:
    """(exit code, seconds from SIGTERM to exit, output) of the sweep stopped while its trials wait for a node: the
    autoscaler is paused meanwhile, as a cloud still launching a machine."""
    monitor = monitor_process(address)  # the cluster's autoscaler
    assert monitor is not None, "no monitor runs for the cluster"
    monitor.suspend()
    try:
        sweep = subprocess.Popen(
            FIXRAY + ["sweep", "s.yaml", "--address", address],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        output = []
        for line in sweep.stdout:
            output.append(line)
            if "queued trials wait for a node with 1 CPU(s) and no GPU: none is up now" in line:
                break
        else:
            raise AssertionError("".join(output))
        sent = time.monotonic()
        sweep.send_signal(signal.SIGTERM)
        code = sweep.wait(timeout=120)
        took = time.monotonic() - sent
        return code, took, "".join(output) + sweep.stdout.read()
    finally:
        monitor.resume()


def _workers() -> int:
    return sum(1 for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0)


def _histories(folder) -> dict[str, list[float]]:
    client, _, children = store(folder)
    return {
        c.info.run_name: [
            m.value for m in sorted(client.get_metric_history(c.info.run_id, "val/acc"), key=lambda m: m.step)
        ]
        for c in children
    }


def test_the_autoscaler_launches_workers_as_trials_queue_within_its_bound_and_releases_them(tmp_path):
    for folder in ("scaled", "fixed"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "s.yaml").write_text(SWEEP)
    fixed = run(["sweep", "s.yaml"], tmp_path / "fixed")  # the same sweep on local Ray, first
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr

    with autoscaling_cluster(tmp_path) as (address, env):
        refused = run(["sweep", "s.yaml", "--address", address, "--gpus-per-trial", "1"], tmp_path / "scaled", env=env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "its autoscaler launches node types of 2 CPU(s) and no GPU" in refused.stderr
        assert not (tmp_path / "scaled" / "mlflow.db").exists()

        os.environ["RAY_AUTH_MODE"] = "disabled"
        ray.init(address=address, logging_level="ERROR")
        try:
            assert _workers() == 0  # nothing up before the sweep asks
            code, took, output = _stopped_while_waiting(address, tmp_path / "scaled", env)
            print(f"SIGTERM while trials waited for a node: exit {code} after {took:.1f} s")
            assert code == 130 and took < 15, output
            assert "the autoscaler may launch nodes for them" in output
            assert "run the same command again to resume" in output
            seen, done = [], threading.Event()

            def watch() -> None:
                while not done.is_set():
                    seen.append(_workers())
                    time.sleep(0.5)

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                scaled = run(["sweep", "s.yaml", "--address", address], tmp_path / "scaled", env=env, timeout=600)
            finally:
                done.set()
                watcher.join()
            assert scaled.returncode == 0, scaled.stdout + scaled.stderr
            assert 0 < max(seen) <= MAX_WORKERS, seen
            deadline = time.monotonic() + 120
            while _workers() and time.monotonic() < deadline:  # idle workers go after the timeout
                time.sleep(1)
            assert _workers() == 0
        finally:
            ray.shutdown()
            os.environ.pop("RAY_AUTH_MODE", None)

    scaled_histories = _histories(tmp_path / "scaled")
    assert len(scaled_histories) == 4 and scaled_histories == _histories(tmp_path / "fixed")  # bit for bit
