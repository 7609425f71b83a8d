"""cluster.yaml is a cluster config that Ray's own validator accepts."""

import yaml
from conftest import ROOT
from ray.autoscaler._private.util import prepare_config, validate_config


def test_cluster_yaml_passes_rays_schema_and_has_gpu_workers():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # fills Ray's defaults, then raises on anything its schema rejects
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["resources"]["GPU"] >= 1
    assert any("pip install" in command and "fixray" in command for command in config["setup_commands"])
