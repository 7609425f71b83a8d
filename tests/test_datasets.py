"""Loaders read each dataset's official on-disk format; a one-epoch trial trains on what they return."""

import numpy as np
import pytest
from formats_writers import (
    CIFAR10_NAMES,
    write_cifar10,
    write_cifar100,
    write_cifar101,
    write_stl10,
    write_tinyimagenet,
)

from fixray.crossing.contract import Augmentation, HeadConfig, OptimizerConfig, ScheduleConfig, TrialConfig
from fixray.data.registry import DATASETS, DatasetUnavailable, load_dataset, load_test_set
from fixray.trial.loop import train


def _one_epoch(splits) -> dict:
    cfg = TrialConfig(
        model="small_cnn",
        epochs=1,
        seed=0,
        batch_size=8,
        lr=0.05,
        optimizer=OptimizerConfig(weight_decay=0.0),
        schedule=ScheduleConfig(kind="none"),
        head=HeadConfig(kind="cosine", fixed=True, S=10.0, bias=False),
        augmentation=Augmentation(crop_padding=4, flip=True),
    )
    reports = []
    final = train(cfg.settled(), splits, lambda m, s: reports.append(m))
    assert len(reports) == 1 and np.isfinite(final["train/loss"]) and 0 <= final["val/acc"] <= 1
    return final


def test_cifar10_python_pickles(tmp_path):
    written = write_cifar10(tmp_path)
    splits = load_dataset("cifar10", tmp_path, download=False, verify=False)
    assert splits.train.x.shape == (20, 3, 32, 32) and splits.test.x.shape == (10, 3, 32, 32)
    assert np.array_equal(splits.train.x, written["train_x"]) and np.array_equal(splits.train.y, written["train_y"])
    assert np.array_equal(splits.test.x, written["test_x"]) and np.array_equal(splits.test.y, written["test_y"])
    assert splits.class_names == tuple(CIFAR10_NAMES)
    _one_epoch(splits)


def test_cifar100_python_pickles_use_fine_labels(tmp_path):
    written = write_cifar100(tmp_path)
    splits = load_dataset("cifar100", tmp_path, download=False, verify=False)
    assert splits.num_classes == 100 and splits.class_names == tuple(written["names"])
    assert np.array_equal(splits.train.x, written["train_x"]) and np.array_equal(splits.train.y, written["train_y"])
    assert np.array_equal(splits.test.y, written["test_y"])
    _one_epoch(splits)


def test_stl10_binaries_are_read_column_major_with_labels_from_zero(tmp_path):
    written = write_stl10(tmp_path)
    splits = load_dataset("stl10", tmp_path, download=False, verify=False)
    assert splits.train.x.shape == (6, 3, 96, 96) and splits.test.x.shape == (4, 3, 96, 96)
    assert np.array_equal(splits.train.x, written["train_x"])  # a missing H/W transpose would fail here
    assert np.array_equal(splits.test.y, written["test_y"]) and splits.test.y.min() >= 0
    assert splits.class_names[7] == "monkey"
    _one_epoch(splits)


def test_tinyimagenet_folders_and_val_annotations(tmp_path):
    written = write_tinyimagenet(tmp_path)
    splits = load_dataset("tinyimagenet", tmp_path, download=False, verify=False)
    assert splits.train.x.shape == (9, 3, 64, 64) and splits.test.x.shape == (3, 3, 64, 64)
    assert splits.train.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert splits.test.y.tolist() == written["val_labels"]  # labels from val_annotations.txt, not folders
    assert splits.class_names == tuple(written["names"])
    _one_epoch(splits)


@pytest.mark.parametrize("name,version", [("cifar10.1", "v6"), ("cifar10.1-v4", "v4")])
def test_cifar101_npy_files_share_cifar10_classes(tmp_path, name, version):
    written = write_cifar101(tmp_path, version)
    test, names = load_test_set(name, tmp_path, download=False, verify=False)
    assert (
        test.x.shape == (8, 3, 32, 32) and np.array_equal(test.x, written["x"]) and np.array_equal(test.y, written["y"])
    )
    assert names == tuple(CIFAR10_NAMES)
    with pytest.raises(KeyError):
        load_dataset(name, tmp_path)  # test-only: not a training set


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10", "tinyimagenet", "cifar10.1"])
def test_missing_files_give_advice_not_a_traceback(tmp_path, name):
    with pytest.raises(DatasetUnavailable) as caught:
        load_test_set(name, tmp_path, download=False, verify=False)
    message = str(caught.value)
    entry = DATASETS[name]
    assert str(tmp_path / entry.folder) in message
    assert entry.required[0] in message and "data_dir" in message and "--data-dir" in message


def test_a_long_tailed_training_set_keeps_n_max_times_ratio_to_the_c_over_k_minus_1_per_class_and_the_test_set():
    from pathlib import Path

    import yaml
    from conftest import GOOD_SWEEP

    from fixray.sweep.inputs import check_data
    from fixray.sweep.plan import plan
    from fixray.sweep.spec.checks import SweepFileError, parse_sweep
    from fixray.trial.long_tail import kept_per_class, with_long_tail

    digits = load_dataset("digits")
    available = np.bincount(digits.train.y)  # digits' classes hold 142 to 146 training images
    largest = int(available.max())
    splits = with_long_tail(digits, 0.1, 3)
    counts = np.bincount(splits.train.y, minlength=10)
    wanted = [int(largest * 0.1 ** (c / 9)) for c in range(10)]
    assert wanted == kept_per_class(largest, 10, 0.1) and wanted[0] == largest and wanted[9] == int(largest * 0.1)
    assert counts.tolist() == [min(w, a) for w, a in zip(wanted, available)]  # no class keeps more than it has
    assert np.array_equal(splits.test.x, digits.test.x) and np.array_equal(splits.test.y, digits.test.y)
    for label in range(10):  # every kept image is one of that class's own, none twice
        kept = splits.train.x[splits.train.y == label].reshape(counts[label], -1)
        own = {row.tobytes() for row in digits.train.x[digits.train.y == label].reshape(-1, 64)}
        assert {row.tobytes() for row in kept} <= own
    assert np.array_equal(with_long_tail(digits, 0.1, 3).train.x, splits.train.x)  # the seed alone decides
    assert not np.array_equal(with_long_tail(digits, 0.1, 4).train.x, splits.train.x)
    assert with_long_tail(digits, None, 3) is digits
    # One sweep trains balanced and long-tailed sets side by side: each trial is sent its ratio.
    doc = yaml.safe_load(GOOD_SWEEP) | {"long_tail": {"seed": 3}}
    doc["search"]["space"]["long_tail_ratio"] = [1.0, 0.1]
    spec = parse_sweep(doc, Path("lt.yaml"))
    assert {(t.config.long_tail.ratio, t.config.long_tail.seed) for t in plan(spec)} == {(1.0, 3), (0.1, 3)}
    assert f"({counts.sum()} train images long-tailed at ratio 0.1)" in check_data(spec)
    for ratio in (0, 1.5):
        with pytest.raises(SweepFileError, match="long_tail.ratio"):
            parse_sweep(doc | {"long_tail": {"ratio": ratio}}, Path("lt.yaml"))
