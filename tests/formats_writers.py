"""Writers of tiny datasets in each official on-disk format, for loader tests (no downloads)."""

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(rng, n: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 4, test: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {"train_x": [], "train_y": []}
    for i in range(1, 6):
        x, y = _images(rng, per_batch, 32), rng.integers(0, 10, per_batch).tolist()
        _pickle(
            folder / f"data_batch_{i}",
            {
                "batch_label": f"training batch {i} of 5",
                "labels": y,
                "data": x.reshape(per_batch, -1),
                "filenames": [f"{i}_{j}.png" for j in range(per_batch)],
            },
        )
        written["train_x"].append(x)
        written["train_y"] += y
    test_x, test_y = _images(rng, test, 32), (np.arange(test) % 10).tolist()
    _pickle(
        folder / "test_batch",
        {"batch_label": "testing batch 1 of 1", "labels": test_y, "data": test_x.reshape(test, -1)},
    )
    _pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return {
        "train_x": np.concatenate(written["train_x"]),
        "train_y": np.array(written["train_y"]),
        "test_x": test_x,
        "test_y": np.array(test_y),
    }


def write_cifar100(root: Path, train: int = 12, test: int = 6) -> dict:
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    names = [f"class_{i:02d}" for i in range(100)]
    out = {}
    for split, n in (("train", train), ("test", test)):
        x, y = _images(rng, n, 32), rng.integers(0, 100, n).tolist()
        _pickle(
            folder / split,
            {
                "filenames": [f"{j}.png" for j in range(n)],
                "fine_labels": y,
                "coarse_labels": [v // 5 for v in y],
                "data": x.reshape(n, -1),
            },
        )
        out[f"{split}_x"], out[f"{split}_y"] = x, np.array(y)
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": [f"super_{i}" for i in range(20)]})
    out["names"] = names
    return out


def write_stl10(root: Path, train: int = 6, test: int = 4) -> dict:
    rng = np.random.default_rng(2)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", train), ("test", test)):
        x, y = _images(rng, n, 96), rng.integers(1, 11, n).astype(np.uint8)  # labels stored as 1..10
        np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tofile(folder / f"{split}_X.bin")  # column-major, as published
        y.tofile(folder / f"{split}_y.bin")
        out[f"{split}_x"], out[f"{split}_y"] = x, y.astype(np.int64) - 1
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    out["names"] = names
    return out


def write_tinyimagenet(root: Path, wnids=("n01443537", "n01629819", "n01641577"), per_class: int = 3) -> dict:
    rng = np.random.default_rng(3)
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    words = {
        "n01443537": "goldfish, Carassius auratus",
        "n01629819": "European fire salamander, Salamandra salamandra",
        "n01641577": "bullfrog, Rana catesbeiana",
    }
    (folder / "words.txt").write_text("".join(f"{w}\t{words.get(w, w)}\n" for w in wnids) + "n00000000\tunused entry\n")
    annotations = []
    for label, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                images / f"{wnid}_{i}.JPEG", format="JPEG"
            )
        name = f"val_{label}.JPEG"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            folder / "val" / "images" / name, format="JPEG"
        )
        annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(reversed(annotations)) + "\n")
    return {
        "names": ["goldfish", "European fire salamander", "bullfrog"][: len(wnids)],
        "val_labels": list(reversed(range(len(wnids)))),
    }


def write_cifar101(root: Path, version: str = "v6", n: int = 8) -> dict:
    rng = np.random.default_rng(4)
    folder = root / "cifar10.1"
    folder.mkdir(parents=True, exist_ok=True)
    x, y = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), (np.arange(n) % 10).astype(np.int64)
    np.save(folder / f"cifar10.1_{version}_data.npy", x)
    np.save(folder / f"cifar10.1_{version}_labels.npy", y)
    return {"x": x.transpose(0, 3, 1, 2), "y": y}
