"""A worker cut off, not killed: a Ray cluster of three nodes in network namespaces of their own (netns.py: a head
that trains nothing and runs the driver, two workers), its storage a folder every node shares as NFS would be. Mid-
sweep one worker's link goes dark for longer than Ray's node timeout, then comes back. Ray declares the node dead and
retries its trials on the other worker, while the cut-off trial processes go on running and writing into the same
storage. The sweep ends equal to a clean run of it, bit for bit; every reader trusts only the retry's writes (the
fence: crossing/attempts.py), and nothing the stale attempts did reaches MLflow or Tune's record."""

import json
import os
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import benchmark
from e2e import FIXRAY, steps, store, tune_results
from netns import Network, RayNodes, available, leftovers

from fixray.crossing.attempts import ATTEMPT_DIR, ATTEMPT_KEY, ATTEMPTS_DIR, attempt_folder, newest_attempt
from fixray.records.runs import NODES_TAG, SWEEP_TAG, TRIAL_TAG

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
chaos = benchmark("chaos")  # its comparison of a sweep's record with a clean run's
EPOCHS = 24
CUT_S = 10  # the link stays dark at least this long (Ray's node timeout here: about 5 s), and until a retry began
RETRY_WITHIN_S = 240  # a retry waits for a slot on the other worker: within this, and before the raylet gives up
SWEEP = """\
name: {name}
dataset: digits
model: small_cnn
epochs: {epochs}
batch_size: 32
seeds: [0]
storage_path: {storage}
resources: {{cpus_per_trial: 1, max_retries: 3, checkpoint_every: 1}}
search:
  space:
    kind: [dot, cosine]
    fixed: [true, false]
"""


@pytest.fixture
def nodes(tmp_path):
    why = available()
    if why is not None and os.environ.get("CI") != "true":
        pytest.skip(why)
    assert why is None, why
    made = RayNodes(Network(3), tmp_path)
    try:
        yield made
    finally:
        made.close()
        assert leftovers() == [], "namespaces or links left behind"


def _sweep(nodes: RayNodes, folder: Path, name: str):
    (folder / f"{name}.yaml").write_text(SWEEP.format(name=name, epochs=EPOCHS, storage=folder / "runs"))
    return nodes.driver(FIXRAY + ["sweep", f"{name}.yaml", "--address", nodes.address], folder / f"{name}.log", folder)


def _trial_processes(network: Network, node: int) -> list[int]:
    """The trial processes running inside a node's namespace."""
    found = []
    for pid in network.pids(node):
        try:
            if "ray::ImplicitFunc" in " ".join(psutil.Process(pid).cmdline()):
                found.append(pid)
        except psutil.NoSuchProcess:
            pass
    return found


def _attempts(storage: Path, sweep: str) -> dict[str, int]:
    """Tune's trial id -> its newest attempt's number."""
    folder = storage / sweep / ATTEMPTS_DIR
    return {f.name: int(f.read_text()) for f in folder.iterdir()} if folder.exists() else {}


def _two_writers(storage: Path, sweep: str, seen: set, stop: threading.Event) -> None:
    """Records every checkpoint that two attempts of a trial wrote into (a stale write, kept apart), until stopped:
    the driver prunes old checkpoints, so they are looked for while the sweep runs."""
    while not stop.is_set():
        for checkpoint in (storage / sweep).glob("*/checkpoint_*"):
            try:
                writers = {p.name for p in checkpoint.iterdir() if ATTEMPT_DIR.fullmatch(p.name)}
            except FileNotFoundError:
                continue
            if len(writers) > 1:
                seen.add((checkpoint.parent.name, checkpoint.name, tuple(sorted(writers))))
        time.sleep(0.2)


def test_a_worker_cut_off_past_the_node_timeout_cannot_write_twice(nodes, tmp_path):
    network = nodes.network
    nodes.start_all()
    storage = tmp_path / "runs"
    clean = _sweep(nodes, tmp_path, "clean")
    assert clean.wait(timeout=600) == 0, (tmp_path / "clean.log").read_text()[-3000:]

    sweep = _sweep(nodes, tmp_path, "cut")
    stale_writes: set = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_two_writers, args=(storage, "cut", stale_writes, stop), daemon=True)
    watcher.start()
    try:
        deadline = time.monotonic() + 300
        while not (len(_trial_processes(network, 1)) == 2 and len(tune_results(tmp_path, "cut", str(storage))) >= 8):
            assert sweep.poll() is None and time.monotonic() < deadline, (tmp_path / "cut.log").read_text()[-3000:]
            time.sleep(0.2)
        cut_off = _trial_processes(network, 1)
        network.cut(1)
        cut_at = time.monotonic()
        # Ray retries the cut-off node's trials elsewhere: each retry takes its trial's next attempt number, while
        # the first attempts' processes still run behind the dark link.
        while max(_attempts(storage, "cut").values()) < 2:
            assert time.monotonic() - cut_at < RETRY_WITHIN_S, "no trial was retried while its node was cut off"
            time.sleep(0.2)
        assert all(psutil.pid_exists(pid) for pid in cut_off), "the cut-off trial processes were killed, not cut off"
        time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
        network.restore(1)
        assert sweep.wait(timeout=900) == 0, (tmp_path / "cut.log").read_text()[-3000:]
    finally:
        stop.set()
        watcher.join()

    # Every trial finished once, every epoch once in MLflow; metrics and final weights equal the clean run's.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    clean_runs, cut_runs = chaos.histories(uri, "clean"), chaos.histories(uri, "cut")
    weights = chaos.final_weights(storage, "clean"), chaos.final_weights(storage, "cut")
    assert len(clean_runs) == 4
    assert chaos.compare(clean_runs, cut_runs, *weights, EPOCHS) == {
        "lost": 0,
        "duplicated": 0,
        "not_finished": 0,
        "differing": 0,
    }
    # The cut-off node's trials moved: retried on the other worker as attempt 2 (or later).
    client, _, children = store(tmp_path)
    cut = [c for c in children if c.data.tags[SWEEP_TAG] == "cut"]
    moved = {c.data.tags[TRIAL_TAG] for c in cut if "," in c.data.tags[NODES_TAG]}
    attempts = _attempts(storage, "cut")
    assert moved and all(attempts[name] >= 2 for name in moved), (moved, attempts)
    assert all(n == 1 for name, n in attempts.items() if name not in moved), attempts
    # Tune's record holds nothing of a stale attempt: once a retry reported, every later result is the retry's.
    for trial in (storage / "cut").glob("*/result.json"):
        results = [json.loads(line) for line in trial.read_text().splitlines()]
        epochs = [(r[ATTEMPT_KEY], r["epoch"]) for r in results]
        assert epochs == sorted(epochs), epochs  # attempts in order, each from its restore point on
        assert [epoch for _, epoch in epochs] == list(range(1, EPOCHS + 1)), epochs  # each epoch once
        newest = max(a for a, _ in epochs)
        # The final checkpoint readers trust is the newest attempt's own.
        final = max(trial.parent.glob("checkpoint_*"), key=lambda p: p.name)
        assert newest_attempt(final) == final / attempt_folder(newest)
    # A cut-off attempt wrote its next checkpoint after the cut (Ray's function trainable persists one before it
    # waits on the driver), into the index its retry wrote too: beside it, never read.
    print(f"moved: {sorted(moved)}; checkpoints two attempts wrote into (stale writes kept apart): {stale_writes}")
    assert stale_writes, "no cut-off attempt wrote after the cut: the fence was not put to the test"
    assert all(steps(client, c, "train/loss") == list(range(1, EPOCHS + 1)) for c in children)
