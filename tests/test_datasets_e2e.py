"""`fixray sweep` on dataset folders in official formats: robustness and generalisation land in MLflow."""

import pytest
from e2e import ENV, run, steps, store
from formats_writers import write_cifar10, write_cifar101

pytestmark = pytest.mark.slow

CIFAR_SWEEP = """\
name: cifar
dataset: cifar10
data_dir: {data_dir}
download: false
verify: false  # the tests write small files in the official format
model: small_cnn
epochs: 2
batch_size: 32
seeds: [0]
robustness: {{corruptions: [impulse_noise, jpeg_compression, defocus_blur], severity: 2}}
generalisation: cifar10.1
search:
  space:
    fixed: [true, false]
"""


def test_cifar_folder_sweep_logs_robustness_and_generalisation(tmp_path):
    data = tmp_path / "data"
    write_cifar10(data, per_batch=40, test=50)
    write_cifar101(data, n=20)
    (tmp_path / "s.yaml").write_text(CIFAR_SWEEP.format(data_dir=data))
    done = run(["sweep", "s.yaml"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    client, _, children = store(tmp_path)
    assert len(children) == 2
    for child in children:
        assert steps(client, child, "val/acc") == [1, 2]
        for key in ("robust/impulse_noise/acc", "robust/jpeg_compression/acc", "robust/defocus_blur/acc", "gen/acc"):
            assert steps(client, child, key) == [2], key  # measured once, after the last epoch
            assert 0.0 <= child.data.metrics[key] <= 1.0
    cached = sorted(p.name for p in (data / "fixray-corrupted").iterdir())
    assert len(cached) == 3 and all("-s2-seed0" in name for name in cached)


def test_offline_missing_dataset_exits_2_with_advice_and_starts_nothing(tmp_path):
    (tmp_path / "s.yaml").write_text(
        CIFAR_SWEEP.format(data_dir=tmp_path / "empty").replace("download: false", "download: true")
    )
    closed = "http://127.0.0.1:9"  # nothing listens there: the download fails at once, online or not
    done = run(
        ["sweep", "s.yaml"],
        tmp_path,
        env={**ENV, "http_proxy": closed, "https_proxy": closed, "HTTPS_PROXY": closed, "HTTP_PROXY": closed},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    for text in (
        str(tmp_path / "empty" / "cifar-10-batches-py"),
        "data_batch_1",
        "data_dir",
        "--data-dir",
        "download failed",
    ):
        assert text in done.stderr, text
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "fixray-runs").exists()
