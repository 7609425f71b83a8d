"""cluster.yaml is a cluster config that Ray's own validator accepts, and private by default: the checks a
security reviewer reads it for."""

import re

import yaml
from conftest import ROOT
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG_TEXT = (ROOT / "cluster.yaml").read_text()
CONFIG = yaml.safe_load(CONFIG_TEXT)
HEAD = " ".join(CONFIG["head_start_ray_commands"])
WORKER = " ".join(CONFIG["worker_start_ray_commands"])
SETUP = " ".join(CONFIG["setup_commands"])
SOURCES_ENV = "set -a && . ~/fixray.env && set +a && ray start"  # the one env file, read before Ray starts


def test_cluster_yaml_passes_rays_schema_and_has_gpu_workers():
    validate_config(prepare_config(CONFIG))  # fills Ray's defaults, then raises on anything its schema rejects
    assert CONFIG["available_node_types"]["gpu_worker"]["resources"]["GPU"] >= 1
    assert any("pip install" in command and "fixray" in command for command in CONFIG["setup_commands"])


def test_only_ssh_is_open_and_every_service_listens_privately():
    rules = CONFIG["provider"]["security_group"]["IpPermissions"]
    assert [(r["FromPort"], r["ToPort"]) for r in rules] == [(22, 22)]
    assert all(r["CidrIp"] != "0.0.0.0/0" for rule in rules for r in rule["IpRanges"])
    assert "0.0.0.0" not in HEAD + WORKER
    assert "--dashboard-host=127.0.0.1" in HEAD
    assert re.search(r"mlflow server --host 127\.0\.0\.1 --port 5000", HEAD)


def test_token_authentication_is_on_for_every_node_with_one_shared_token():
    assert SETUP.count("RAY_AUTH_MODE=token") == 1
    assert SOURCES_ENV in HEAD and SOURCES_ENV in WORKER
    assert CONFIG["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"


def test_sweeps_on_the_head_default_to_its_mlflow_server_and_to_a_bucket_named_once(tmp_path, monkeypatch):
    from fixray.sweep.spec import parse_sweep

    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in SETUP and SOURCES_ENV in HEAD
    (bucket,) = re.findall(r"FIXRAY_STORAGE=(\S+)", CONFIG_TEXT)  # named in one place
    assert re.findall(r"s3://\S+", CONFIG_TEXT) == [bucket]
    monkeypatch.setenv("FIXRAY_STORAGE", bucket)
    raw = {"dataset": "digits", "model": "small_cnn", "epochs": 1, "search": {"space": {"fixed": [True]}}}
    assert parse_sweep(raw, tmp_path / "s.yaml").storage_path == bucket  # a storage_path fixray accepts


def test_the_environment_names_the_defaults_a_sweep_file_leaves_open(tmp_path, monkeypatch):
    from fixray.sweep.spec import parse_sweep

    raw = {"dataset": "digits", "model": "small_cnn", "epochs": 1, "search": {"space": {"fixed": [True]}}}
    spec = parse_sweep(raw, tmp_path / "s.yaml")
    assert spec.tracking.uri == "sqlite:///mlflow.db" and str(spec.storage_path) == "fixray-runs"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("FIXRAY_STORAGE", "/mnt/fixray/runs")
    spec = parse_sweep(raw, tmp_path / "s.yaml")
    assert spec.tracking.uri == "http://127.0.0.1:5000" and str(spec.storage_path) == "/mnt/fixray/runs"
    explicit = parse_sweep(raw | {"tracking": {"uri": "sqlite:///x.db"}, "storage_path": "runs"}, tmp_path / "s.yaml")
    assert explicit.tracking.uri == "sqlite:///x.db" and str(explicit.storage_path) == "runs"
