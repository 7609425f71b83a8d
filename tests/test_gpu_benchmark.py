"""benchmarks/gpu.py runs the same code on the CPU (--device cpu --quick) and writes every figure it prints."""

import json
import os
import subprocess
import sys

from conftest import GOOD_SWEEP, ROOT

from fixray.sweep.cost import image_flop


def test_the_gpu_benchmark_runs_on_the_cpu_and_writes_each_setting_and_packing(tmp_path):
    out = tmp_path / "gpu.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick", "--repeats", "2"]
    saved = tmp_path / "throughput.json"
    command += ["--json", str(out), "--throughput-file", str(saved)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    settings = {(r["setting"], r["batch"]) for r in results["settings"]}
    assert settings == {(s, b) for s in ("fp32", "channels_last", "bf16+channels_last") for b in (8, 16)}
    assert [r["trials"] for r in results["packed"]] == [1, 2]
    for row in results["settings"] + results["packed"]:
        assert 0 < row["images_per_s_min"] <= row["images_per_s_mean"] <= row["images_per_s_max"]
        assert row["epoch_s"] == 50_000 / row["images_per_s_mean"]
    assert "images/s" in done.stdout and f"written: {out}" in done.stdout

    # The fastest rate, as training FLOP/s counted the compute plan's way, is what `fixray validate` now plans at.
    fastest = max(row["images_per_s_mean"] for row in results["settings"] + results["packed"])
    flop_per_s = json.loads(saved.read_text())["flop_per_s"]
    assert flop_per_s == fastest * image_flop("small_cnn", 3, 32, 10, "global", None)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(GOOD_SWEEP)
    env = {**os.environ, "FIXRAY_THROUGHPUT": str(saved)}
    validate = [sys.executable, "-m", "fixray", "validate", str(sweep)]
    shown = subprocess.run(validate, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"{flop_per_s / 1e12:.3g} TFLOP/s (measured here: cpu, small_cnn " in shown.stdout
    assert "assumed" not in shown.stdout
    # A file that is not one it wrote is bad input: exit 2, naming it.
    saved.write_text("{not json")
    broken = subprocess.run(validate, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert broken.returncode == 2 and str(saved) in broken.stderr
