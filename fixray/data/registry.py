"""Dataset registry: each entry finds (or downloads) its files and returns uint8 splits with class names.

Images stay uint8 (N x C x H x W numpy arrays) until a batch is trained on: a quarter of float32's memory,
and Ray's object store hands numpy arrays to every trial on a node without copying them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fixray.crossing.contract import Augmentation
from fixray.crossing.images import ImageSet, InputSpec, Splits
from fixray.data import formats
from fixray.errors import DataError

DIGITS_TEST_FRACTION = 0.2  # 360 of digits' 1,797 images are held out as the test split
DIGITS_SPLIT_SEED = 0  # fixed, so every trial and every sweep sees the same split


def default_data_dir() -> Path:
    """Per-user cache folder: $FIXRAY_DATA, else $XDG_CACHE_HOME/fixray/datasets, else ~/.cache/fixray/datasets."""
    if os.environ.get("FIXRAY_DATA"):
        return Path(os.environ["FIXRAY_DATA"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fixray" / "datasets"


class DatasetUnavailable(DataError):
    """A dataset whose files are missing and could not be downloaded."""


@dataclass(frozen=True, kw_only=True)
class DatasetEntry:
    """How to get one dataset: files it needs under its folder, how to fetch them, how to read them."""

    folder: str  # under data_dir
    required: tuple[str, ...]  # relative to folder
    read: Callable[[Path], Splits | tuple[ImageSet, tuple[str, ...]]]
    fetch: Callable[[Path], None] | None  # downloads into data_dir; None: nothing to download
    source: str  # what to get by hand, for the offline message
    image_size: int  # side length in pixels
    augmentation: Augmentation = Augmentation()
    train_set: bool = True  # False: a test-only set (generalisation)
    classes: int = 10  # number of classes, known before the files are read (validation needs it)
    train_images: int = 0  # images in its training split, known before the files are read (the compute plan)
    channels: int = 3  # colour channels of each image
    md5: dict[str, str] = field(default_factory=dict)  # file (relative to folder) -> the publisher's md5 of it

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(self.channels, self.image_size)


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, entry: DatasetEntry) -> None:
    DATASETS[name] = entry


def _missing(folder: Path, entry: DatasetEntry) -> list[str]:
    return [f for f in entry.required if not (folder / f).exists()]


def on_disk(name: str, data_dir: Path) -> bool:
    """Whether every file a dataset needs is there (a broken symlink or a symlink loop is not)."""
    return not _missing(data_dir / DATASETS[name].folder, DATASETS[name])


def _verify(name: str, entry: DatasetEntry, folder: Path) -> None:
    """Each file against its publisher's md5, before a byte of it is parsed."""
    for file, expected in entry.md5.items():
        path = folder / file
        try:
            with open(path, "rb") as f:
                found = hashlib.file_digest(f, "md5").hexdigest()
        except OSError as error:
            raise DataError(f"Dataset {name!r}: {path}: cannot be read ({error.strerror or error})") from None
        if found != expected:
            raise DataError(
                f"Dataset {name!r}: {path} has md5 {found}, not the published file's {expected}. Replace it with "
                f"the official file (or remove it to download it again); for a subset or your own copy in the "
                f"official format, set `verify: false` in the sweep file."
            )


def _ensure_files(name: str, entry: DatasetEntry, data_dir: Path, download: bool) -> Path:
    folder = data_dir / entry.folder
    missing = _missing(folder, entry)
    if not missing:
        return folder
    reason = "downloads are switched off (download: false)"
    if download and entry.fetch is not None:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            entry.fetch(data_dir)
            missing = _missing(folder, entry)
            if not missing:
                return folder
            reason = "the download did not produce them"
        except Exception as error:  # offline, a proxy, a checksum mismatch: all end in the same advice
            reason = f"the download failed: {type(error).__name__}: {error}"
    missing = [f"{f} (a symlink that leads nowhere)" if (folder / f).is_symlink() else f for f in missing]
    shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    raise DatasetUnavailable(
        f"Dataset {name!r} is not in {folder} and {reason}.\n"
        f"Missing: {shown}.\n"
        f"Get {entry.source} and unpack it so that {folder} holds those files, or set `data_dir:` in the "
        f"sweep file (or `fixray sweep --data-dir DIR`) to the folder that holds {entry.folder}/."
    )


def _read(name: str, data_dir: Path | None, download: bool, verify: bool) -> Splits | tuple[ImageSet, tuple[str, ...]]:
    """Finds (or fetches) a dataset's files, checks their published md5 when asked, and reads them as data."""
    entry = DATASETS[name]
    folder = _ensure_files(name, entry, data_dir or default_data_dir(), download)
    if verify:
        _verify(name, entry, folder)
    try:
        return entry.read(folder)
    except formats.FormatError as error:
        raise DataError(
            f"Dataset {name!r}: {error}. Replace the file with the official one, or remove it to download it again."
        ) from None


def load_dataset(name: str, data_dir: Path | None = None, download: bool = True, verify: bool = True) -> Splits:
    """A training set's splits; downloads missing files when `download` is on and the network allows."""
    if name not in DATASETS or not DATASETS[name].train_set:
        raise KeyError(
            f"unknown training dataset {name!r}; registered: {sorted(n for n, e in DATASETS.items() if e.train_set)}"
        )
    return _read(name, data_dir, download, verify)


def load_test_set(
    name: str, data_dir: Path | None = None, download: bool = True, verify: bool = True
) -> tuple[ImageSet, tuple[str, ...]]:
    """Any registered set's test images with class names: the test split of a training set, or a test-only set."""
    found = _read(name, data_dir, download, verify)
    return (found.test, found.class_names) if isinstance(found, Splits) else found


# --- the registered datasets -------------------------------------------------------------------------


def _read_digits(_: Path) -> Splits:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): needs no download."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images * 15).astype(np.uint8)[:, None]  # values 0..16 -> 0..240, exact
    labels = bunch.target.astype(np.int64)
    train, test = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=labels
    )
    names = tuple(str(d) for d in range(10))
    return Splits(ImageSet(images[train], labels[train]), ImageSet(images[test], labels[test]), names)


def _as_splits(read: Callable[[Path], tuple]) -> Callable[[Path], Splits]:
    def to_splits(folder: Path) -> Splits:
        train, test, names = read(folder)
        return Splits(ImageSet(*train), ImageSet(*test), tuple(names))

    return to_splits


def _torchvision_fetch(cls_name: str, **kwargs) -> Callable[[Path], None]:
    def fetch(data_dir: Path) -> None:
        import torchvision.datasets as tvd

        getattr(tvd, cls_name)(root=str(data_dir), download=True, **kwargs)  # downloads, verifies md5, extracts

    return fetch


TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
CIFAR101_URL = "https://raw.githubusercontent.com/modestyachts/CIFAR-10.1/master/datasets/"


def _fetch_tinyimagenet(data_dir: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(TINY_IMAGENET_URL, str(data_dir), md5=TINY_IMAGENET_MD5)


def _cifar101_entry(version: str) -> DatasetEntry:
    files = (f"cifar10.1_{version}_data.npy", f"cifar10.1_{version}_labels.npy")

    def fetch(data_dir: Path) -> None:
        from torchvision.datasets.utils import download_url

        for file in files:
            download_url(CIFAR101_URL + file, str(data_dir / "cifar10.1"), filename=file)

    def read(folder: Path) -> tuple[ImageSet, tuple[str, ...]]:
        return ImageSet(*formats.read_cifar101(folder, version)), CIFAR10_CLASSES

    return DatasetEntry(
        folder="cifar10.1",
        required=files,
        read=read,
        fetch=fetch,
        source=f"CIFAR-10.1 {version} ({', '.join(files)})",
        image_size=32,
        train_set=False,
    )


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_AUGMENTATION = Augmentation(crop_padding=4, flip=True)

register_dataset(
    "digits",
    DatasetEntry(
        folder="",
        required=(),
        read=_read_digits,
        fetch=None,
        source="bundled with scikit-learn",
        image_size=8,
        channels=1,
        train_images=1437,
    ),
)
register_dataset(
    "cifar10",
    DatasetEntry(
        folder="cifar-10-batches-py",
        required=tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        read=_as_splits(formats.read_cifar10),
        fetch=_torchvision_fetch("CIFAR10"),
        source="the CIFAR-10 python version (cifar-10-python.tar.gz)",
        image_size=32,
        augmentation=CIFAR_AUGMENTATION,
        train_images=50_000,
        md5={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
    ),
)
register_dataset(
    "cifar100",
    DatasetEntry(
        folder="cifar-100-python",
        required=("train", "test", "meta"),
        read=_as_splits(formats.read_cifar100),
        fetch=_torchvision_fetch("CIFAR100"),
        source="the CIFAR-100 python version (cifar-100-python.tar.gz)",
        image_size=32,
        augmentation=CIFAR_AUGMENTATION,
        classes=100,
        train_images=50_000,
        md5={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
    ),
)
register_dataset(
    "stl10",
    DatasetEntry(
        folder="stl10_binary",
        required=("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt"),
        read=_as_splits(formats.read_stl10),
        fetch=_torchvision_fetch("STL10", split="train"),
        source="the STL-10 binary files (stl10_binary.tar.gz)",
        image_size=96,
        augmentation=Augmentation(crop_padding=10, flip=True),  # the authors' RandomCrop(96, padding=10)
        train_images=5_000,
        md5={
            "train_X.bin": "918c2871b30a85fa023e0c44e0bee87f",
            "train_y.bin": "5a34089d4802c674881badbb80307741",
            "test_X.bin": "7f263ba9f9e0b06b93213547f721ac82",
            "test_y.bin": "36f9794fa4beb8a2c72628de14fa638e",
        },
    ),
)
register_dataset(
    "tinyimagenet",
    DatasetEntry(
        folder="tiny-imagenet-200",
        required=("wnids.txt", "words.txt", "train", "val/images", "val/val_annotations.txt"),
        read=_as_splits(formats.read_tinyimagenet),
        fetch=_fetch_tinyimagenet,
        source="Tiny ImageNet (tiny-imagenet-200.zip)",
        image_size=64,
        augmentation=Augmentation(crop_padding=8, flip=True),
        classes=200,
        train_images=100_000,
    ),
)
register_dataset("cifar10.1", _cifar101_entry("v6"))
register_dataset("cifar10.1-v4", _cifar101_entry("v4"))
