"""Hostile and broken input ends like a bad sweep file: exit 2 before Ray or MLflow start, the file (or key)
and what was expected named, no traceback, nothing written, and no code run.

Each dataset format is broken the ways a download, a disk or an attacker breaks it; every case goes through
both `fixray validate` and `fixray sweep`. Then bad names and sizes; then checkpoints load as plain data.
"""

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from formats_writers import write_cifar10, write_cifar100, write_cifar101, write_stl10, write_tinyimagenet
from PIL import Image

from fixray.cli import main
from fixray.crossing.contract import HeadConfig, TrialConfig
from fixray.data.registry import load_dataset
from fixray.records.runs import SweepRuns
from fixray.sweep.spec.reading import MAX_FILE_BYTES
from fixray.trial.loop import train

MARKER = "ran-code"  # a hostile file would create this file beside the data folder


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _pickle(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _cifar_batch(**changes) -> dict:
    batch = {"batch_label": "x", "labels": [1, 2, 3, 4], "data": np.zeros((4, 3072), np.uint8), "filenames": ["a"] * 4}
    return batch | changes


def _hostile(path: Path) -> None:
    _pickle(path, _RunsCode(path.parents[1] / MARKER))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 1])  # half and a byte: no whole number of records


def _symlink_loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)  # points at itself


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _jpeg(path: Path, size: int) -> None:
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(path, format="JPEG")


def _npy_with_code(path: Path) -> None:
    np.save(path, np.array([_RunsCode(path.parents[1] / MARKER)], dtype=object), allow_pickle=True)


CIFAR10, CIFAR100, STL10, TINY = "cifar-10-batches-py", "cifar-100-python", "stl10_binary", "tiny-imagenet-200"
WNID, VAL = "n01443537", "tiny-imagenet-200/val/val_annotations.txt"
TINY_IMAGE = f"{TINY}/train/{WNID}/images/{WNID}_0.JPEG"

# case -> (training set, file under the data folder, how it is broken, text the message shows besides the path)
BROKEN: dict[str, tuple[str, str, Callable[[Path], None], str]] = {
    "cifar10 pickle that would run code": ("cifar10", f"{CIFAR10}/data_batch_1", _hostile, "never holds"),
    "cifar10 truncated": ("cifar10", f"{CIFAR10}/data_batch_1", _truncate, "not a readable CIFAR pickle"),
    "cifar10 not a dict": ("cifar10", f"{CIFAR10}/data_batch_1", lambda p: _pickle(p, [1, 2]), "a pickled dict"),
    "cifar10 wrong shape": (
        "cifar10",
        f"{CIFAR10}/data_batch_1",
        lambda p: _pickle(p, _cifar_batch(data=np.zeros((4, 1024), np.uint8))),
        "shape (4, 1024)",
    ),
    "cifar10 wrong dtype": (
        "cifar10",
        f"{CIFAR10}/data_batch_1",
        lambda p: _pickle(p, _cifar_batch(data=np.zeros((4, 3072), np.float64))),
        "float64",
    ),
    "cifar10 fewer labels than images": (
        "cifar10",
        f"{CIFAR10}/data_batch_1",
        lambda p: _pickle(p, _cifar_batch(labels=[1, 2])),
        "4 integers in [0, 10)",
    ),
    "cifar10 a label past the classes": (
        "cifar10",
        f"{CIFAR10}/data_batch_1",
        lambda p: _pickle(p, _cifar_batch(labels=[1, 2, 3, 10])),
        "4 integers in [0, 10)",
    ),
    "cifar10 an object array": (
        "cifar10",
        f"{CIFAR10}/data_batch_1",
        lambda p: _pickle(p, _cifar_batch(data=np.array([[object()]] * 4))),
        "never holds",
    ),
    "cifar10 extra classes in the meta file": (
        "cifar10",
        f"{CIFAR10}/batches.meta",
        lambda p: _pickle(p, {"label_names": [f"c{i}" for i in range(11)]}),
        "a list of 10 class names",
    ),
    "cifar10 symlink loop": ("cifar10", f"{CIFAR10}/test_batch", _symlink_loop, "a symlink that leads nowhere"),
    "cifar10 a folder in a file's place": ("cifar10", f"{CIFAR10}/test_batch", _directory, "cannot be read"),
    "cifar100 pickle that would run code": ("cifar100", f"{CIFAR100}/train", _hostile, "never holds"),
    "cifar100 a label past the classes": (
        "cifar100",
        f"{CIFAR100}/test",
        lambda p: _pickle(p, {"fine_labels": [0, 100], "data": np.zeros((2, 3072), np.uint8)}),
        "2 integers in [0, 100)",
    ),
    "cifar100 extra classes in the meta file": (
        "cifar100",
        f"{CIFAR100}/meta",
        lambda p: _pickle(p, {"fine_label_names": [f"c{i}" for i in range(101)]}),
        "a list of 100 class names",
    ),
    "stl10 truncated images": ("stl10", f"{STL10}/train_X.bin", _truncate, "a whole number of 96x96 colour images"),
    "stl10 fewer labels than images": (
        "stl10",
        f"{STL10}/test_y.bin",
        lambda p: p.write_bytes(p.read_bytes()[:-1]),
        "one label in 1..10 per image",
    ),
    "stl10 a label past the classes": (
        "stl10",
        f"{STL10}/train_y.bin",
        lambda p: p.write_bytes(bytes([11]) + p.read_bytes()[1:]),
        "a label outside 1..10",
    ),
    "stl10 extra classes in class_names.txt": (
        "stl10",
        f"{STL10}/class_names.txt",
        lambda p: p.write_text(p.read_text() + "unicorn\n"),
        "expected 10 class names",
    ),
    "stl10 class names that are not text": (
        "stl10",
        f"{STL10}/class_names.txt",
        lambda p: p.write_bytes(b"\xff\xfe\x00"),
        "UTF-8 text",
    ),
    "stl10 symlink loop": ("stl10", f"{STL10}/train_X.bin", _symlink_loop, "a symlink that leads nowhere"),
    "tinyimagenet truncated image": ("tinyimagenet", TINY_IMAGE, _truncate, "not a readable image"),
    "tinyimagenet not an image": ("tinyimagenet", TINY_IMAGE, lambda p: p.write_text("hello"), "not a readable image"),
    "tinyimagenet wrong image size": ("tinyimagenet", TINY_IMAGE, lambda p: _jpeg(p, 32), "found 32x32"),
    "tinyimagenet image symlink loop": ("tinyimagenet", TINY_IMAGE, _symlink_loop, "cannot be read"),
    "tinyimagenet extra class in the annotations": (
        "tinyimagenet",
        VAL,
        lambda p: p.write_text(p.read_text() + "val_0.JPEG\tn09999999\t0\t0\t63\t63\n"),
        "n09999999",
    ),
    "tinyimagenet annotation pointing outside the folder": (
        "tinyimagenet",
        VAL,
        lambda p: p.write_text(f"../../../etc/passwd\t{WNID}\n"),
        "../../../etc/passwd",
    ),
    "tinyimagenet repeated wnid": (
        "tinyimagenet",
        f"{TINY}/wnids.txt",
        lambda p: p.write_text(p.read_text() + WNID + "\n"),
        "one distinct WordNet id",
    ),
}

# case -> (file under the data folder, how it is broken, text shown); the training set is a valid CIFAR-10
GENERALISATION: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "cifar10.1 object array that would run code": ("cifar10.1/cifar10.1_v6_data.npy", _npy_with_code, "allow_pickle"),
    "cifar10.1 truncated": ("cifar10.1/cifar10.1_v6_data.npy", _truncate, "not a readable .npy array"),
    "cifar10.1 wrong shape": (
        "cifar10.1/cifar10.1_v6_data.npy",
        lambda p: np.save(p, np.zeros((8, 3, 32, 32), np.uint8)),
        "shape (8, 3, 32, 32)",
    ),
    "cifar10.1 wrong dtype": (
        "cifar10.1/cifar10.1_v6_data.npy",
        lambda p: np.save(p, np.zeros((8, 32, 32, 3), np.float32)),
        "float32",
    ),
    "cifar10.1 fewer labels than images": (
        "cifar10.1/cifar10.1_v6_labels.npy",
        lambda p: np.save(p, np.zeros(3, np.int64)),
        "8 integer labels in [0, 10)",
    ),
    "cifar10.1 a label past the classes": (
        "cifar10.1/cifar10.1_v6_labels.npy",
        lambda p: np.save(p, np.full(8, 10, np.int64)),
        "8 integer labels in [0, 10)",
    ),
}

WRITERS = {
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "stl10": write_stl10,
    "tinyimagenet": write_tinyimagenet,
}


def _tree(folder: Path) -> dict[str, int]:
    """Every path under a folder with its size: what 'nothing written' compares."""
    return {str(p): p.lstat().st_size for p in sorted(folder.rglob("*"))}


def _refused(tmp_path: Path, capsys, command: str, sweep_text: str, *, shown: list[str]) -> str:
    """Runs the command on a sweep file and asserts exit 2, the texts shown, no traceback, nothing written."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(sweep_text)
    before = _tree(tmp_path)
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        assert main([command, str(sweep)]) == 2
    finally:
        os.chdir(cwd)
    message = capsys.readouterr().err
    for text in shown:
        assert text in message, f"{text!r} not in: {message}"
    assert "Traceback" not in message
    assert not (tmp_path.parent / MARKER).exists() and not (tmp_path / MARKER).exists(), "the file's code ran"
    assert _tree(tmp_path) == before, "something was written"
    assert not ray.is_initialized()
    return message


def _sweep_text(data: Path, dataset: str, verify: bool = False, **extra: str) -> str:
    lines = [f"dataset: {dataset}", f"data_dir: {data}", "download: false", f"verify: {str(verify).lower()}"]
    lines += ["model: small_cnn", "epochs: 1", "search: {space: {fixed: [true]}}"]
    return "\n".join(lines + [f"{k}: {v}" for k, v in extra.items()]) + "\n"


@pytest.mark.parametrize("command", ["validate", "sweep"])
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_or_hostile_dataset_file_exits_2_naming_it(case, command, tmp_path, capsys):
    dataset, file, corrupt, shown = BROKEN[case]
    data = tmp_path / "data"
    WRITERS[dataset](data)
    corrupt(data / file)
    path = data / file
    _refused(tmp_path, capsys, command, _sweep_text(data, dataset), shown=[str(path.parent), path.name, shown])


@pytest.mark.parametrize("command", ["validate", "sweep"])
@pytest.mark.parametrize("case", sorted(GENERALISATION))
def test_a_broken_or_hostile_generalisation_set_exits_2_naming_it(case, command, tmp_path, capsys):
    file, corrupt, shown = GENERALISATION[case]
    data = tmp_path / "data"
    write_cifar10(data)
    write_cifar101(data)
    corrupt(data / file)
    text = _sweep_text(data, "cifar10", generalisation="cifar10.1")
    _refused(tmp_path, capsys, command, text, shown=[str(data / file), shown])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode; 'a folder in a file's place' runs")
@pytest.mark.parametrize("command", ["validate", "sweep"])
def test_an_unreadable_file_exits_2_naming_it(command, tmp_path, capsys):
    data = tmp_path / "data"
    write_cifar10(data)
    batch = data / CIFAR10 / "data_batch_2"
    batch.chmod(0)
    _refused(tmp_path, capsys, command, _sweep_text(data, "cifar10"), shown=[str(batch), "cannot be read"])


@pytest.mark.parametrize("command", ["validate", "sweep"])
def test_checksums_refuse_a_file_that_is_not_the_published_one_before_it_is_parsed(command, tmp_path, capsys):
    """verify (the default) compares each file's md5 with the publisher's first: a hostile pickle is never opened."""
    data = tmp_path / "data"
    write_cifar10(data)
    batch = data / CIFAR10 / "data_batch_1"
    _hostile(batch)
    shown = [str(batch), "not the published file's c99cafc152244af753f735de768cd75f", "verify: false"]
    _refused(tmp_path, capsys, command, _sweep_text(data, "cifar10", verify=True), shown=shown)


def test_validate_reads_the_data_a_sweep_would_and_says_so(tmp_path, capsys):
    data = tmp_path / "data"
    write_cifar10(data)
    (tmp_path / "s.yaml").write_text(_sweep_text(data, "cifar10"))
    (tmp_path / "later.yaml").write_text(_sweep_text(tmp_path / "none", "cifar10").replace("download: false", ""))
    assert main(["validate", str(tmp_path / "s.yaml"), str(tmp_path / "later.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"cifar10 in {data}: 20 train and 10 test images read as data" in out
    assert "not in" in out and "`fixray sweep` downloads it" in out
    assert not (tmp_path / "none").exists()


def test_the_official_format_still_loads_after_the_checks(tmp_path):
    written = write_cifar10(tmp_path)
    splits = load_dataset("cifar10", tmp_path, download=False, verify=False)
    assert np.array_equal(splits.train.x, written["train_x"]) and splits.num_classes == 10


# --- names and sizes ---------------------------------------------------------------------------------

DIGITS = "dataset: digits\nmodel: small_cnn\nepochs: 1\nsearch: {space: {fixed: [true]}}\n"
BAD_NAMES = {  # case -> (sweep file text, key path named, bad value shown)
    "a quote in the sweep name": (DIGITS + "name: it's\n", "name", "it's"),
    "a slash in the sweep name": (DIGITS + "name: a/b\n", "name", "a/b"),
    "a sweep name leaving the storage folder": (DIGITS + "name: ../x\n", "name", "../x"),
    "'..' as the sweep name": (DIGITS + "name: '..'\n", "name", ".."),
    "a space in the sweep name": (DIGITS + "name: my sweep\n", "name", "my sweep"),
    "a quote in the experiment": (DIGITS + 'tracking: {experiment: "a\'b"}\n', "tracking.experiment", "a'b"),
    "a storage path leaving its folder": (DIGITS + "storage_path: ../elsewhere\n", "storage_path", "../elsewhere"),
    "a glob in the storage path": (DIGITS + "storage_path: runs/*\n", "storage_path", "runs/*"),
    "credentials in a bucket URI": (
        DIGITS + "storage_path: s3://key:secret@bkt/x\n",
        "storage_path",
        "s3://key:secret@bkt/x",
    ),
    "a bucket URI leaving its prefix": (DIGITS + "storage_path: s3://bkt/a/../b\n", "storage_path", "s3://bkt/a/../b"),
    "a glob in a bucket path": (DIGITS + "storage_path: gs://bkt/runs/*\n", "storage_path", "gs://bkt/runs/*"),
}
BAD_SIZES = {  # case -> (sweep file text, text shown)
    "num_samples 100,000,000": (
        DIGITS.replace("{fixed: [true]}", "{lr: {loguniform: [0.001, 1.0]}}, method: random, num_samples: 100000000"),
        "100000000 trials",
    ),
    "a grid past max_trials": (
        DIGITS.replace("{fixed: [true]}", "{fixed: [true, false]}, max_trials: 5") + "seeds: [0, 1, 2]\n",
        "6 trials",
    ),
    "a billion laughs": (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n" + DIGITS,
        "YAML aliases expanded",
    ),
    "a file past 1 MiB": (DIGITS + "# " + "x" * MAX_FILE_BYTES + "\n", "under 1 MiB"),
}


@pytest.mark.parametrize("command", ["validate", "sweep"])
@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_a_name_that_is_no_identifier_exits_2_naming_the_key(case, command, tmp_path, capsys):
    text, key, value = BAD_NAMES[case]
    _refused(tmp_path, capsys, command, text, shown=[f"{key}: got {value!r}", "letters, digits", "sweep.yaml"])


@pytest.mark.parametrize("command", ["validate", "sweep"])
@pytest.mark.parametrize("case", sorted(BAD_SIZES))
def test_a_sweep_too_big_to_plan_exits_2_before_listing_it(case, command, tmp_path, capsys):
    text, shown = BAD_SIZES[case]
    _refused(tmp_path, capsys, command, text, shown=[shown, "sweep.yaml"])


def test_a_file_stem_that_is_no_identifier_must_be_replaced_by_a_name(tmp_path, capsys):
    (tmp_path / "it's.yaml").write_text(DIGITS)
    assert main(["validate", str(tmp_path / "it's.yaml")]) == 2
    assert "the file's stem \"it's\" is not one, so set name:" in capsys.readouterr().err
    (tmp_path / "fine.yaml").write_text(DIGITS + "name: it-s\n")
    assert main(["validate", str(tmp_path / "fine.yaml")]) == 0


def test_mlflow_lookups_quote_what_they_compare(tmp_path):
    """Names are validated, yet lookups still quote: a quote in a value finds its own run, not a syntax error."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    first = SweepRuns(uri, "e", "it's").parent_id
    assert SweepRuns(uri, "e", "it's").parent_id == first != SweepRuns(uri, "e", "its").parent_id


# --- checkpoints ---------------------------------------------------------------------------------------


def test_a_trials_checkpoint_loads_with_weights_only(tmp_path):
    """Checkpoints hold tensors and plain values only, so they load without unpickling arbitrary objects."""
    states = []
    cfg = TrialConfig(model="small_cnn", epochs=1, seed=0, head=HeadConfig(kind="cosine", S=4.0, learn_S=True))
    train(cfg.settled(), load_dataset("digits"), lambda metrics, state: states.append(state))
    state = {k: v for k, v in states[-1].items() if k != "figures"}  # figures travel as files beside it
    torch.save(state, tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)
    assert loaded["epoch"] == 1 and loaded["best"]["epoch"] == 1
    assert torch.equal(loaded["model"]["head.scale"], state["model"]["head.scale"])
    assert loaded["scheduler"]["best"] == state["scheduler"]["best"]
