"""What a reproduction of a sweep needs to know, recorded on its parent run: fixray's version and commit, the
versions of the libraries that compute, the driver's device, and the md5 of each dataset file read."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import fixray
from fixray.data.registry import DATASETS, default_data_dir
from fixray.sweep.spec.schema import SweepSpec

PREFIX = "env/"  # the parent run's params that describe the environment, e.g. env/torch
LIBRARIES = ("torch", "torchvision", "ray", "mlflow", "numpy")
CHUNK = 1 << 20  # bytes read at a time when hashing a dataset file


def _git(*args: str) -> str | None:
    """A git query about the checkout fixray runs from; None when it is not one (an installed wheel)."""
    checkout = Path(fixray.__file__).resolve().parent.parent
    try:
        found = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found.stdout.strip() if found.returncode == 0 else None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as data:
        while block := data.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def dataset_md5(spec: SweepSpec) -> str:
    """'file=md5, ...' of the files a sweep's datasets are read from (bundled data: 'bundled')."""
    found = []
    data_dir = spec.data_dir or default_data_dir()
    for name in filter(None, (spec.dataset, spec.generalisation)):
        entry = DATASETS[name]
        for relative in entry.required:
            path = data_dir / entry.folder / relative
            if path.is_file():
                found.append(f"{entry.folder}/{relative}={entry.md5.get(relative) or _md5(path)}")
    return ", ".join(found) or "bundled"


def this_machine() -> dict[str, str]:
    """fixray's and the computing libraries' versions and the device here (replay compares them with a run's)."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.machine()})"
    found = {"fixray": fixray.__version__, "python": platform.python_version()}
    found |= {name: metadata.version(name) for name in LIBRARIES} | {"device": device}
    return {PREFIX + name: value for name, value in found.items()}


def environment(spec: SweepSpec) -> dict[str, str]:
    """The parent run's env/ params: this machine's versions and device, the commit, the data's md5."""
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    found = {
        "git_commit": commit or "not a checkout",
        "git_dirty": "unknown" if dirty is None else str(bool(dirty)),
        "data_md5": dataset_md5(spec),
    }
    return this_machine() | {PREFIX + name: value for name, value in found.items()}
