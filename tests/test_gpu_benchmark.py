"""benchmarks/gpu.py runs the same code on the CPU (--device cpu --quick) and writes every figure it prints."""

import json
import subprocess
import sys

from conftest import ROOT


def test_the_gpu_benchmark_runs_on_the_cpu_and_writes_each_setting_and_packing(tmp_path):
    out = tmp_path / "gpu.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick", "--repeats", "2"]
    done = subprocess.run(command + ["--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    settings = {(r["setting"], r["batch"]) for r in results["settings"]}
    assert settings == {(s, b) for s in ("fp32", "channels_last", "bf16+channels_last") for b in (8, 16)}
    assert [r["trials"] for r in results["packed"]] == [1, 2]
    for row in results["settings"] + results["packed"]:
        assert 0 < row["images_per_s_min"] <= row["images_per_s_mean"] <= row["images_per_s_max"]
        assert row["epoch_s"] == 50_000 / row["images_per_s_mean"]
    assert "images/s" in done.stdout and f"written: {out}" in done.stdout
