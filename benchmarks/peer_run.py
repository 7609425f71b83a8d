"""One epoch of the authors' own STL-10 script against `fixray sweep` of the same recipe, on the same images, side
by side: what a researcher pays for fixray's records, retries and tables over running the published script.

The authors' code is not shipped here: pass a clone of their public repository (MLSpeech/FixedClassificationLayer)
with --authors. Both runs get the same STL-10 files in the official binary format (--images train and as many test
images, written here: no download) and the CPU's cores. The authors' script (ResNet18, fixed dot-product head, lr
0.1, batch 32, 4608-d image vectors) is timed from its start to the end of its first epoch (its "Best acc" line,
after it evaluates the training and test sets), then stopped: it runs 80 epochs and takes no epoch count (the two
library adjustments it needs here are below). fixray runs sweeps/paper/base/authors.yaml with the same head, rate
and one epoch, timed from the command to its exit, and its trial's own training time from Tune's record. The runs
alternate in order over --repeats. The last line is one JSON object: medians in seconds, and fixray's over the
authors'.

Rerun:  .venv/bin/python benchmarks/peer_run.py --authors ~/FixedClassificationLayer [--images 200] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the STL-10 writer the dataset tests use
from formats_writers import write_stl10  # noqa: E402

FIXRAY = str(Path(sys.executable).with_name("fixray"))
EPOCH_DONE = "Best acc:"  # the authors' script prints it once an epoch and its two evaluations are done
# Their script runs as `python run_stl.py`, unchanged, after two adjustments to the libraries it calls: its dataset
# class is told the subset is whole (it checks the published set's checksums, and would download it), and
# ReduceLROnPlateau takes their `verbose=True` again (this torch removed the argument; it only printed).
AUTHORS_RUNNER = """\
import runpy, sys, torch, torchvision
torchvision.datasets.STL10._check_integrity = lambda self: True
class Plateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    def __init__(self, *args, verbose=None, **kwargs):
        super().__init__(*args, **kwargs)
torch.optim.lr_scheduler.ReduceLROnPlateau = Plateau
sys.argv = ["run_stl.py"] + sys.argv[1:]
sys.path.insert(0, ".")
runpy.run_path("run_stl.py", run_name="__main__")
"""


def authors_epoch(authors: Path, data: Path, work: Path) -> float:
    """Seconds from the authors' script's start to the end of its first epoch."""
    command = [sys.executable, "-c", AUTHORS_RUNNER, "--fixed", "--data_dir", str(data), "--save_dir", str(work)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    start = time.monotonic()
    process = subprocess.Popen(
        command, cwd=authors, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if EPOCH_DONE in line:
                return time.monotonic() - start
        raise RuntimeError("the authors' script ended before its first epoch:\n" + "".join(output[-30:]))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def fixray_epoch(data: Path, work: Path, name: str) -> tuple[float, float]:
    """Seconds from `fixray sweep` to its exit, and its trial's own training time (Tune's time_total_s)."""
    sweep = {
        "extends": str(ROOT / "sweeps" / "paper" / "base" / "authors.yaml"),
        "name": name,
        "dataset": "stl10",
        "data_dir": str(data),
        "download": False,
        "verify": False,  # the subset is not the published set
        "model": "resnet18",
        "head": {"kind": "dot"},
        "lr": 0.1,
        "epochs": 1,
        "seeds": [0],
        "search": {"method": "grid", "space": {"fixed": [True]}},
        "resources": {"cpus_per_trial": os.cpu_count(), "gpus_per_trial": 0},
    }
    (work / f"{name}.yaml").write_text(yaml.safe_dump(sweep))
    start = time.monotonic()
    done = subprocess.run([FIXRAY, "sweep", f"{name}.yaml"], cwd=work, capture_output=True, text=True)
    took = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])
    [result] = (work / "fixray-runs" / name).glob("*/result.json")
    trial = json.loads(result.read_text().splitlines()[-1])["time_total_s"]
    return took, trial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, required=True, help="a clone of MLSpeech/FixedClassificationLayer")
    parser.add_argument("--images", type=int, default=200, help="training images, and as many test images")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if not (args.authors / "run_stl.py").is_file():
        parser.error(f"--authors {args.authors}: no run_stl.py there (a clone of MLSpeech/FixedClassificationLayer)")
    work = Path(tempfile.mkdtemp(prefix="fixray-peer-"))
    data = work / "data"
    write_stl10(data, train=args.images, test=args.images)
    authors, fixray, trials = [], [], []
    for repeat in range(args.repeats):
        order = ("authors", "fixray") if repeat % 2 == 0 else ("fixray", "authors")
        for who in order:
            if who == "authors":
                authors.append(authors_epoch(args.authors.resolve(), data, work))
            else:
                took, trial = fixray_epoch(data, work, f"peer{repeat}")
                fixray.append(took)
                trials.append(trial)
            print(f"{who}: {(authors if who == 'authors' else fixray)[-1]:.1f} s", flush=True)
    summary = {
        "images": args.images,
        "authors_s": round(statistics.median(authors), 1),
        "fixray_s": round(statistics.median(fixray), 1),
        "fixray_trial_s": round(statistics.median(trials), 1),
    }
    summary["ratio"] = round(summary["fixray_s"] / summary["authors_s"], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
