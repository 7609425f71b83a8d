"""A sweep under a storm of faults must end equal to the same sweep run without one.

A sweep of 16 digits trials of 20 epochs runs twice on a Ray cluster of three nodes, each in a network namespace of
its own joined to a bridge (tests/netns.py: a head that trains nothing and runs the driver, two workers of two CPUs;
the storage a folder they all share, as NFS): once clean, once with a fault every 10-20 s drawn on a seeded schedule
from SIGKILL of a trial's process, a worker node lost whole (every process in it at once; the node started again at
its address), a worker's link cut for 15-30 s (longer than Ray's node timeout: its trials are retried elsewhere
while the cut-off processes go on; the node started again after), the head machine lost whole (the GCS, its raylet
and the driver at once; the head started again, the workers rejoin it, the same command submitted again), SIGKILL of
the driver (then the same command again, as a user would), the MLflow server stopped for 20 s, the storage full for
10 s (then the same command again), and the sweep file edited (the driver stopped with Ctrl-C, then the same
command): the chaos sweep's file starts with one seed and one learning rate, and gains the second seed, then the
second learning rate. Afterwards every trial of the final file must have finished exactly once, every epoch must be
in MLflow exactly once, and every trial's metrics at every epoch and a checksum of its final weights must equal the
clean run's, bit for bit (on the CPU, one thread per trial). The last line printed is one JSON object: faults (by
kind), trials, lost, duplicated, not_finished (a trial whose one run ended otherwise: failed, unfinished), differing
(these four must be 0), seconds. tests/test_chaos_compare.py checks the comparison on constructed histories.

Needs root (the namespaces; the storage is a small tmpfs it fills). Rerun: .venv/bin/python benchmarks/chaos.py --seed 1
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import psutil
import torch
import yaml
from mlflow.tracking import MlflowClient

from fixray.crossing.attempts import newest_attempt
from fixray.faults import Outcome
from fixray.trial.trainable import STATE_FILE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the namespaced nodes the tests use too
from conftest import free_port  # noqa: E402
from netns import Network, RayNodes  # noqa: E402

FIXRAY = [str(Path(sys.executable).with_name("fixray"))]
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
WORKERS = 2  # worker nodes, each of two CPUs: two one-CPU trials at a time
DISK = "192m"  # the storage tmpfs: room for every checkpoint kept, small enough to fill quickly
FAULTS = (
    "kill_trial",
    "remove_node",
    "partition_worker",
    "head_lost",
    "kill_driver",
    "mlflow_down",
    "storage_full",
    "edit_file",
)
CUT_S = (15, 30)  # a worker's link stays dark this long (Ray's node timeout here: about 5 s)
SEEDS, LRS = [0, 1], [0.1, 0.05]  # the final file's; the chaos sweep starts with the first of each
# The chaos sweep's file grows twice as it runs, as a researcher edits it: a seed added, then a value.
EDITS = ({"seeds": SEEDS}, {"lr": LRS})


def sweep_file(folder: Path, name: str, storage: Path, epochs: int, seeds=SEEDS, lrs=LRS) -> Path:
    """Two head kinds, fixed and learned, the learning rates and seeds given (16 trials with the final file's); a
    checkpoint every epoch."""
    text = {
        "name": name,
        "dataset": "digits",
        "model": "small_cnn",
        "epochs": epochs,
        "batch_size": 64,
        "seeds": list(seeds),
        "storage_path": str(storage),
        "resources": {"cpus_per_trial": 1, "max_retries": 20, "checkpoint_every": 1},
        "search": {"space": {"kind": ["dot", "cosine"], "fixed": [True, False], "lr": list(lrs)}},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(text))
    return path


def edit(file: Path, change: dict) -> None:
    """One edit of a sweep file: its seeds, or its learning rates."""
    text = yaml.safe_load(file.read_text())
    if "seeds" in change:
        text["seeds"] = change["seeds"]
    else:
        text["search"]["space"]["lr"] = change["lr"]
    file.write_text(yaml.safe_dump(text))


class Server:
    """An MLflow tracking server on this machine's address on the bridge (apart from the cluster's machines, so the
    head's loss leaves it), that can be stopped and started again on the same store."""

    def __init__(self, folder: Path, host: str) -> None:
        self.folder, self.host, self.port, self.process = folder, host, free_port(), None
        self.uri = f"http://{host}:{self.port}"

    def start(self) -> None:
        command = [MLFLOW, "server", "--host", self.host, "--port", str(self.port), "--workers", "1"]
        command += ["--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}"]
        command += ["--artifacts-destination", str(self.folder / "artifacts")]
        log = open(self.folder / "server.log", "a")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return
            except OSError:
                assert time.monotonic() < deadline, "the MLflow server did not start"
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)
            self.process = None


class Driver:
    """`fixray sweep FILE --address ADDR --tracking-uri URI` on the head, started again whenever it ends before the
    sweep does."""

    def __init__(self, file: Path, nodes: RayNodes, uri: str, log: Path) -> None:
        self.file, self.nodes = file, nodes
        self.command = FIXRAY + ["sweep", str(file), "--address", nodes.address, "--tracking-uri", uri]
        self.cwd, self.log, self.process, self.starts = file.parent, log, None, 0

    def start(self) -> None:
        self.process = self.nodes.driver(self.command, self.log, self.cwd)
        self.starts += 1

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def interrupt(self) -> None:
        """Ctrl-C, as a researcher stops a sweep to edit its file (SIGKILL after a minute)."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()


def trial_processes() -> list[psutil.Process]:
    """The processes running a trial's training (Ray's workers for the trainable)."""
    return [p for p in psutil.process_iter(["cmdline"]) if "ray::ImplicitFunc" in " ".join(p.info["cmdline"] or [])]


def fill(disk: Path) -> Path:
    """Writes one file until the disk is full."""
    filler = disk / "filler"
    block = b"\0" * (1 << 20)
    try:
        with open(filler, "wb") as out:
            while True:
                out.write(block)
                out.flush()
    except OSError:
        pass
    return filler


TIMEOUT = 3600  # seconds a sweep may take, faults and all, before the run is called stuck


def run(
    file: Path,
    nodes: RayNodes,
    server: Server,
    disk: Path,
    rng: random.Random | None,
    log: Path,
    kinds: tuple[str, ...] = FAULTS,
) -> tuple[Counter, int]:
    """Runs the sweep to its end; with `rng`, injects a fault every 10-20 s until it ends, the file's edits among them
    (those not drawn before the sweep ends are made then, each followed by the same command). Returns the faults
    injected and how many times the driver was started."""
    driver = Driver(file, nodes, server.uri, log)
    driver.start()
    faults: Counter = Counter()
    edits = list(EDITS) if rng else []
    next_fault = time.monotonic() + (rng.uniform(10, 20) if rng else float("inf"))
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert time.monotonic() < deadline, f"the sweep did not end in {TIMEOUT} s: see {log}"
        code = driver.process.poll()
        if code == 0 and not edits:
            return faults, driver.starts
        if code == 0:  # the file's sweep ended before its edits were drawn: edit it, the same command again
            inject("edit_file", driver, nodes, server, disk, rng, edits)
            faults["edit_file"] += 1
        elif code is not None:  # ended early (storage full, MLflow away at the end): the same command again
            driver.start()
        if time.monotonic() >= next_fault:
            kind = rng.choice([k for k in kinds if k != "edit_file" or edits])
            inject(kind, driver, nodes, server, disk, rng, edits)
            faults[kind] += 1
            next_fault = time.monotonic() + rng.uniform(10, 20)
        time.sleep(0.5)


def inject(
    kind: str, driver: Driver, nodes: RayNodes, server: Server, disk: Path, rng: random.Random, edits: list
) -> None:
    print(f"{time.strftime('%H:%M:%S')} fault: {kind}", flush=True)
    if kind == "edit_file":  # stopped, its file edited, the same command run again
        if driver.process.poll() is None:
            driver.interrupt()
        edit(driver.file, edits.pop(0))
        driver.start()
    if kind == "kill_trial":
        victims = trial_processes()
        if victims:
            rng.choice(sorted(victims, key=lambda p: p.pid)).kill()
    elif kind == "remove_node":  # a worker machine dies whole; a new one takes its address
        worker = rng.randint(1, WORKERS)
        nodes.kill(worker)
        nodes.start(worker)
    elif kind == "partition_worker":  # its link dark past the node timeout, then back; the node started again
        worker = rng.randint(1, WORKERS)
        nodes.network.cut(worker)
        time.sleep(rng.uniform(*CUT_S))
        nodes.network.restore(worker)
        deadline = time.monotonic() + 30  # its raylet, told it was declared dead, ends itself and its workers
        while nodes.network.pids(worker) and time.monotonic() < deadline:
            time.sleep(0.5)
        nodes.kill(worker)  # what is left of it (its `ray start --block`), as an admin restarting Ray
        nodes.start(worker)
    elif kind == "head_lost":  # the head machine dies whole (GCS, raylet, driver); the cluster is brought up again
        nodes.kill(0)
        for worker in range(1, WORKERS + 1):  # as `ray up` restarts Ray on each worker for the new head
            nodes.network.kill(worker)
        nodes.start_all()
        driver.start()
    elif kind == "kill_driver":
        if driver.process.poll() is None:
            driver.kill()
        driver.start()
    elif kind == "mlflow_down":
        server.stop()
        time.sleep(20)
        server.start()
    elif kind == "storage_full":
        filler = fill(disk)
        time.sleep(10)
        filler.unlink()


def _last_whole_state(trial: Path) -> dict | None:
    """The newest checkpoint of a trial folder that loads: one the full disk cut short is skipped (its trial went on
    from the one before, here or, in a sweep that grew, in a later Tune experiment)."""
    for checkpoint in sorted(trial.glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[1]), reverse=True):
        try:
            return torch.load(newest_attempt(checkpoint) / STATE_FILE, map_location="cpu", weights_only=False)
        except (EOFError, RuntimeError, OSError):
            print(f"skipped a checkpoint cut short: {checkpoint}")
    return None


def final_weights(storage: Path, sweep: str) -> dict[str, str]:
    """Run name -> epoch and sha256 of the model weights of its latest checkpoint, for every trial of a sweep (in any
    of its Tune experiments: a sweep that grew continues trials in a new one)."""
    found, latest = {}, {}
    for params in (storage / sweep).rglob("params.json"):
        name = json.loads(params.read_text())["trial"]["run_name"]
        state = _last_whole_state(params.parent)
        if state is None or state["epoch"] <= latest.get(name, -1):
            continue
        latest[name] = state["epoch"]
        digest = hashlib.sha256()
        for key, tensor in sorted(state["model"].items()):
            buffer = io.BytesIO()
            buffer.write(key.encode())
            buffer.write(tensor.contiguous().numpy().tobytes())
            digest.update(buffer.getvalue())
        found[name] = f"{state['epoch']}:{digest.hexdigest()}"
    return found


def histories(uri: str, sweep: str) -> dict[str, list]:
    """Run name -> its child runs, each as {metric: [(epoch, value), ...]} and its status tag."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("fixray")
    children = client.search_runs([experiment.experiment_id], f"tags.`fixray.sweep` = '{sweep}'", max_results=1000)
    runs: dict[str, list] = {}
    for child in children:
        if child.data.tags.get("fixray.role") != "trial":
            continue
        metrics = {
            key: sorted((m.step, m.value) for m in client.get_metric_history(child.info.run_id, key))
            for key in child.data.metrics
        }
        runs.setdefault(child.info.run_name, []).append({"status": child.data.tags.get("fixray.status"), **metrics})
    return runs


UNREPRODUCIBLE = {"time/trial_seconds"}  # what a trial costs depends on the machine's moment, not its numbers


def _same(a: list, b: list) -> bool:
    """Equal (epoch, value) lists, NaN equal to NaN (e.g. Spearman of a model that makes no mistake)."""
    return len(a) == len(b) and all(
        sa == sb and (va == vb or (math.isnan(va) and math.isnan(vb))) for (sa, va), (sb, vb) in zip(a, b)
    )


def compare(clean: dict, chaos: dict, clean_weights: dict, chaos_weights: dict, epochs: int) -> dict[str, int]:
    """How the chaos sweep's record differs from the clean one's, trial by trial (by run name): lost (no run, or an
    epoch missing), duplicated (two runs, or an epoch logged twice), not finished (its one run ended otherwise:
    failed, unfinished, ...) and differing (a metric at an epoch, or the final weights). All zero: equal."""
    lost = duplicated = not_finished = differing = 0
    for name, [reference] in clean.items():
        found = chaos.get(name, [])
        if len(found) != 1:
            lost += not found
            duplicated += len(found) > 1
            continue
        [run] = found
        if run["status"] != Outcome.FINISHED:
            not_finished += 1
            print(f"not finished: {name}: {run['status']}")
            continue
        steps = [step for step, _ in run.get("train/loss", [])]
        if steps != list(range(1, epochs + 1)):  # an epoch missing or logged twice
            duplicated += len(steps) > len(set(steps))
            lost += len(set(steps)) < epochs
            continue
        keys = (set(run) | set(reference)) - {"status"} - UNREPRODUCIBLE
        metrics = [k for k in sorted(keys) if not _same(run.get(k, []), reference.get(k, []))]
        weights = chaos_weights.get(name) != clean_weights.get(name) or name not in clean_weights
        if metrics or weights:
            differing += 1
            print(f"differs: {name}: metrics {metrics[:5]}, final weights {'differ' if weights else 'equal'}")
    return {"lost": lost, "duplicated": duplicated, "not_finished": not_finished, "differing": differing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seeds the fault schedule")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--keep", default=None, help="a folder to work in and keep (default: a temporary one)")
    parser.add_argument(
        "--kinds", default=",".join(FAULTS), help=f"the fault kinds drawn, comma-separated (default: all of {FAULTS})"
    )
    args = parser.parse_args()
    kinds = tuple(args.kinds.split(","))
    if not set(kinds) <= set(FAULTS):
        parser.error(f"--kinds: unknown {sorted(set(kinds) - set(FAULTS))}; known: {', '.join(FAULTS)}")
    work = Path(args.keep or tempfile.mkdtemp(prefix="fixray-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    disk = work / "disk"
    disk.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(disk)], check=True)
    os.environ["FIXRAY_DRIVER_DIR"] = str(work / "driver")  # the lock and spool, off the disk that fills
    nodes = RayNodes(Network(1 + WORKERS), work)
    server = None
    started = time.monotonic()
    try:
        nodes.start_all()
        server = Server(work, nodes.network.host)
        server.start()
        clean_file = sweep_file(work, "clean", disk / "runs", args.epochs)
        run(clean_file, nodes, server, disk, None, work / "clean.log")
        chaos_file = sweep_file(work, "chaos", disk / "runs", args.epochs, SEEDS[:1], LRS[:1])
        faults, starts = run(chaos_file, nodes, server, disk, random.Random(args.seed), work / "chaos.log", kinds)
        clean, chaos = histories(server.uri, "clean"), histories(server.uri, "chaos")
        clean_weights, chaos_weights = final_weights(disk / "runs", "clean"), final_weights(disk / "runs", "chaos")
        result = compare(clean, chaos, clean_weights, chaos_weights, args.epochs)
        summary = {"seed": args.seed, "faults": dict(faults), "driver_starts": starts, "trials": len(clean)}
        summary |= result | {"seconds": round(time.monotonic() - started)}
        print(json.dumps(summary))
    finally:
        try:
            if server is not None:
                server.stop()
        finally:
            nodes.close()
            subprocess.run(["umount", "-l", str(disk)], check=False)


if __name__ == "__main__":
    main()
