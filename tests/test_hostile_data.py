"""Dataset files are data, never code: broken or hostile CIFAR pickles end in exit 2 naming the file, with
nothing run, nothing started and nothing written; checkpoints load as tensors and plain values only."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from formats_writers import write_cifar10

from fixray.cli import main
from fixray.data import load_dataset
from fixray.train import train
from fixray.trial import HeadConfig, TrialConfig

MARKER = "ran-code"  # a hostile pickle would create this file


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _batch(**changes) -> dict:
    batch = {"batch_label": "x", "labels": [1, 2, 3, 4], "data": np.zeros((4, 3072), np.uint8), "filenames": ["a"] * 4}
    return batch | changes


def _write(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


BROKEN = {  # case -> (replace data_batch_1 with ..., text the message must show)
    "a pickle that would run code": (lambda p: _write(p, _RunsCode(p.parent.parent / MARKER)), "never holds"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:100]), "not a readable CIFAR pickle"),
    "not a dict": (lambda p: _write(p, [1, 2, 3]), "expected a pickled dict"),
    "wrong shape": (lambda p: _write(p, _batch(data=np.zeros((4, 1024), np.uint8))), "shape (4, 1024)"),
    "wrong dtype": (lambda p: _write(p, _batch(data=np.zeros((4, 3072), np.float64))), "float64"),
    "fewer labels than images": (lambda p: _write(p, _batch(labels=[1, 2])), "4 integers in [0, 10)"),
    "a label past the classes": (lambda p: _write(p, _batch(labels=[1, 2, 3, 10])), "4 integers in [0, 10)"),
    "an object array": (lambda p: _write(p, _batch(data=np.array([[object()]] * 4))), "data_batch_1"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_or_hostile_cifar_batch_exits_2_naming_the_file_and_runs_nothing(case, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_cifar10(data)
    batch = data / "cifar-10-batches-py" / "data_batch_1"
    corrupt, shown = BROKEN[case]
    corrupt(batch)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"dataset: cifar10\ndata_dir: {data}\ndownload: false\nmodel: small_cnn\nepochs: 1\n"
        "search: {space: {fixed: [true]}}\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(sweep)]) == 2
    message = capsys.readouterr().err
    assert str(batch) in message and shown in message and "Traceback" not in message
    assert not (tmp_path / MARKER).exists(), "the pickle's code ran"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "sweep.yaml"]  # no store, no runs folder
    assert not ray.is_initialized()


def test_the_official_format_still_loads_after_the_checks(tmp_path):
    written = write_cifar10(tmp_path)
    splits = load_dataset("cifar10", tmp_path, download=False)
    assert np.array_equal(splits.train.x, written["train_x"]) and splits.num_classes == 10


def test_a_trials_checkpoint_loads_with_weights_only(tmp_path):
    """Checkpoints hold tensors and plain values only, so they load without unpickling arbitrary objects."""
    states = []
    cfg = TrialConfig(model="small_cnn", epochs=1, seed=0, head=HeadConfig(kind="cosine", S=4.0, learn_S=True))
    train(cfg, load_dataset("digits"), lambda metrics, state: states.append(state))
    state = {k: v for k, v in states[-1].items() if k != "figures"}  # figures travel as files beside it
    torch.save(state, tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)
    assert loaded["epoch"] == 1 and loaded["best"]["epoch"] == 1
    assert torch.equal(loaded["model"]["head.scale"], state["model"]["head.scale"])
    assert loaded["scheduler"]["best"] == state["scheduler"]["best"]
