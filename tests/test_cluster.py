"""cluster.yaml (AWS) and cluster-onprem.yaml (machines you own) are cluster configs Ray's own validator accepts,
private by default (the checks a security reviewer reads them for), and run one script's commands on every node, so
the two cannot drift apart. test_onprem.py brings the on-prem file up for real."""

import re
import shlex

import pytest
import yaml
from conftest import ROOT
from ray.autoscaler._private.util import prepare_config, validate_config

FILES = {"aws": "cluster.yaml", "onprem": "cluster-onprem.yaml"}
TEXTS = {name: (ROOT / file).read_text() for name, file in FILES.items()}
CONFIGS = {name: yaml.safe_load(text) for name, text in TEXTS.items()}
CONFIG = CONFIGS["aws"]
NODE_SCRIPT = (ROOT / "scripts" / "cluster-node").read_text()
COMMANDS = ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands")


def _calls(config: dict, commands: str) -> list[list[str]]:
    """A command list as the script calls it makes: [subcommand, arguments...], provider-specific values left out
    (the storage a setup names, the environment a provider sets before the script)."""
    calls = []
    for command in config[commands]:
        words = shlex.split(command)
        words = words[words.index("~/fixray/scripts/cluster-node") + 1 :]  # what runs it: bash, the script
        calls.append(words[:1] if words[0] == "setup" else words)
    return calls


@pytest.mark.parametrize("name", FILES)
def test_each_cluster_file_passes_rays_schema(name):
    validate_config(prepare_config(CONFIGS[name]))  # fills Ray's defaults, then raises on anything its schema rejects


def test_the_aws_file_has_gpu_workers_and_the_onprem_file_keeps_every_machine_up():
    assert CONFIG["available_node_types"]["gpu_worker"]["resources"]["GPU"] >= 1
    onprem = CONFIGS["onprem"]
    assert onprem["provider"]["type"] == "local"
    assert onprem["min_workers"] == onprem["max_workers"] == len(onprem["provider"]["worker_ips"])


@pytest.mark.parametrize("commands", COMMANDS)
def test_both_files_run_the_same_node_script_commands(commands):
    calls = {name: _calls(config, commands) for name, config in CONFIGS.items()}
    assert calls["aws"] == calls["onprem"] and calls["aws"]
    assert all(line.lstrip().startswith(("bash ~/fixray/scripts/cluster-node", "RAY_")) for line in CONFIG[commands])
    assert CONFIGS["aws"]["file_mounts"] == CONFIGS["onprem"]["file_mounts"]


def test_every_node_installs_the_synced_checkout():
    assert "~/fixray" in CONFIG["file_mounts"] and "python3 -m pip install -q -e ~/fixray" in NODE_SCRIPT
    assert all(config["rsync_filter"] == [".gitignore"] for config in CONFIGS.values())  # not .venv, not data


def test_only_ssh_is_open_and_every_service_listens_privately():
    rules = CONFIG["provider"]["security_group"]["IpPermissions"]
    assert [(r["FromPort"], r["ToPort"]) for r in rules] == [(22, 22)]
    assert all(r["CidrIp"] != "0.0.0.0/0" for rule in rules for r in rule["IpRanges"])
    assert all("0.0.0.0" not in text for text in [NODE_SCRIPT, *TEXTS.values()])
    assert "--dashboard-host=127.0.0.1" in NODE_SCRIPT
    assert re.search(r"mlflow server --host 127\.0\.0\.1 --port", NODE_SCRIPT)


def test_token_authentication_is_on_for_every_node_with_one_shared_token():
    assert NODE_SCRIPT.count("RAY_AUTH_MODE=token") == 1  # in ~/fixray.env, which every `ray start` reads
    assert NODE_SCRIPT.count("with_env ray start") == 2  # head and worker
    for config in CONFIGS.values():
        assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_sweeps_on_the_head_default_to_its_mlflow_server_and_to_a_bucket_named_once(tmp_path, monkeypatch):
    from fixray.sweep.spec.checks import parse_sweep

    assert "MLFLOW_TRACKING_URI=%q" in NODE_SCRIPT and "http://127.0.0.1:$MLFLOW_PORT" in NODE_SCRIPT
    (bucket,) = re.findall(r"s3://\S+", TEXTS["aws"])  # named in one place
    assert CONFIG["setup_commands"] == [f"bash ~/fixray/scripts/cluster-node setup {bucket}"]
    monkeypatch.setenv("FIXRAY_STORAGE", bucket)
    raw = {"dataset": "digits", "model": "small_cnn", "epochs": 1, "search": {"space": {"fixed": [True]}}}
    assert parse_sweep(raw, tmp_path / "s.yaml").storage_path == bucket  # a storage_path fixray accepts


def test_the_environment_names_the_defaults_a_sweep_file_leaves_open(tmp_path, monkeypatch):
    from fixray.sweep.spec.checks import parse_sweep

    raw = {"dataset": "digits", "model": "small_cnn", "epochs": 1, "search": {"space": {"fixed": [True]}}}
    spec = parse_sweep(raw, tmp_path / "s.yaml")
    assert spec.tracking.uri == "sqlite:///mlflow.db" and str(spec.storage_path) == "fixray-runs"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("FIXRAY_STORAGE", "/mnt/fixray/runs")
    spec = parse_sweep(raw, tmp_path / "s.yaml")
    assert spec.tracking.uri == "http://127.0.0.1:5000" and str(spec.storage_path) == "/mnt/fixray/runs"
    explicit = parse_sweep(raw | {"tracking": {"uri": "sqlite:///x.db"}, "storage_path": "runs"}, tmp_path / "s.yaml")
    assert explicit.tracking.uri == "sqlite:///x.db" and str(explicit.storage_path) == "runs"


@pytest.mark.parametrize(
    "pairs,store,warned",
    [
        ("", "sqlite:///{home}/mlflow/mlflow.db", True),  # the default: on the head's own disk, said loudly
        (
            "FIXRAY_MLFLOW_DB=postgresql://fixray:pw@db.lab:5432/mlflow\n",
            "postgresql://fixray:pw@db.lab:5432/mlflow",
            False,
        ),
    ],
)
def test_the_heads_mlflow_store_is_a_database_server_when_named_and_sqlite_on_its_disk_is_warned_about(
    pairs, store, warned, tmp_path
):
    import subprocess

    (tmp_path / "fixray.env").write_text(f"FIXRAY_STORAGE=s3://runs/lab\n{pairs}")
    found = subprocess.run(
        ["bash", str(ROOT / "scripts" / "cluster-node"), "mlflow-store"],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == store.format(home=tmp_path)
    assert ("If the head machine dies, every" in found.stderr) == warned
