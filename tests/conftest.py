import functools
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def benchmark(name: str) -> ModuleType:
    """A script of benchmarks/ as a module, loaded once (e.g. chaos: its comparison of a sweep with a clean run's)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_configure(config):
    """Every test, and every command it starts, plans at the assumed throughput: never one this machine measured."""
    os.environ["FIXRAY_THROUGHPUT"] = str(ROOT / "tests" / "no-measured-throughput.json")  # a file never written
    os.environ["FIXRAY_CPU_THROUGHPUT"] = str(ROOT / "tests" / "no-measured-throughput.json")
    # FLOP counted afresh into this run's own cache, never the user's (nor one left by older code)
    os.environ["FIXRAY_FLOP_CACHE"] = str(Path(tempfile.mkdtemp(prefix="fixray-flop-")) / "flop-per-image.json")
    os.environ["FIXRAY_REPORT_CACHE"] = tempfile.mkdtemp(prefix="fixray-reports-")  # never the user's


GOOD_SWEEP = """\
name: tiny
dataset: digits
model: small_cnn
epochs: 2
batch_size: 64
seeds: [0]
search:
  method: grid
  space:
    fixed: [true, false]
"""


@pytest.fixture
def write_sweep(tmp_path):
    """Writes a sweep file into the test's folder and returns its path."""

    def write(text: str, name: str = "sweep.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def s3_storage(tmp_path, monkeypatch):
    """A real S3-compatible server (moto's) on 127.0.0.1 with a bucket `fixray`: yields a storage_path URI in it.

    Credentials reach fixray, Ray's workers and pyarrow through the environment, as on a real cluster.
    """
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "FIXRAY_DRIVER_DIR": str(tmp_path / "driver"),
    }.items():
        monkeypatch.setenv(name, value)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/fixray", method="PUT"))
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        yield f"s3://fixray/runs?endpoint_override=127.0.0.1:{port}&scheme=http"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def postgresql():
    """A real PostgreSQL server on 127.0.0.1 (tests/postgres.py), stopped and removed after the test."""
    from postgres import postgresql_server

    with postgresql_server() as server:
        yield server
