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

from fixray.data.registry import DATASETS, DatasetUnavailable, load_dataset, load_test_set
from fixray.trial.contract import Augmentation, HeadConfig, OptimizerConfig, ScheduleConfig, TrialConfig
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
