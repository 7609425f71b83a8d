"""The data one sweep reads, loaded once in the driver: the training set, its corrupted copies, a generalisation set.

Ray-free, so `fixray validate` checks the same files `fixray sweep` would read, with the same messages.
"""

from __future__ import annotations

from dataclasses import replace

from fixray.crossing.images import ImageSet, Splits
from fixray.data.corruptions import corrupted_test_set
from fixray.data.registry import DATASETS, default_data_dir, load_dataset, load_test_set, on_disk
from fixray.errors import DataError
from fixray.sweep.spec.schema import SweepSpec
from fixray.trial.long_tail import long_tailed


def _with_generalisation(spec: SweepSpec, splits: Splits) -> dict[str, ImageSet]:
    if spec.generalisation is None:
        return {}
    data_dir = spec.data_dir or default_data_dir()
    test, names = load_test_set(spec.generalisation, data_dir, spec.download, spec.verify)
    if tuple(names) != splits.class_names:
        raise DataError(
            f"generalisation set {spec.generalisation!r} has classes {list(names)[:5]}..., which are not "
            f"{spec.dataset!r}'s {list(splits.class_names)[:5]}...: name a set with the training set's classes"
        )
    return {"gen": test}


def _long_tail_ratios(spec: SweepSpec) -> list[float]:
    """The long-tail ratios the sweep's trials train at (each trial cuts its own training set)."""
    return sorted({r for r in spec.values("long_tail_ratio").listed if r is not None and r < 1}, reverse=True)


def prepare_data(spec: SweepSpec) -> Splits:
    """Loads (or downloads) the data once, in the driver, with its extra test sets; Tune shares it with every trial."""
    data_dir = spec.data_dir or default_data_dir()
    splits = load_dataset(spec.dataset, data_dir, spec.download, spec.verify)
    extra: dict[str, ImageSet] = {}
    if spec.robustness is not None:
        cache = data_dir / "fixray-corrupted"
        for name in spec.robustness.corruptions:
            extra[f"robust/{name}"] = corrupted_test_set(
                splits.test, spec.dataset, name, spec.robustness.severity, spec.robustness.seed, cache
            )
    splits = replace(splits, extra=extra | _with_generalisation(spec, splits))
    _ = splits.channel_stats  # computed once here and shipped with the data, not once per trial
    return splits


def check_data(spec: SweepSpec) -> str:
    """Reads (never fetches or writes) the files a sweep would read; raises DataError; says what it found."""
    data_dir = spec.data_dir or default_data_dir()
    later = f"not in {data_dir} yet: `fixray sweep` downloads it"
    if spec.download and not on_disk(spec.dataset, data_dir):
        return f"{spec.dataset} {later}"
    entry = DATASETS[spec.dataset]
    if not entry.required and not _long_tail_ratios(spec) and spec.generalisation is None:
        return f"{spec.dataset}: no files to check, {entry.source}"  # e.g. digits, inside scikit-learn
    splits = load_dataset(spec.dataset, data_dir, download=False, verify=spec.verify)
    found = f"{spec.dataset} in {data_dir}: {'md5 checked, ' if spec.verify else ''}"
    found += f"{len(splits.train)} train and {len(splits.test)} test images read as data"
    for ratio in _long_tail_ratios(spec):
        kept = len(long_tailed(splits.train, ratio, spec.long_tail.seed))
        found += f" ({kept} train images long-tailed at ratio {ratio:g})"
    if spec.generalisation and spec.download and not on_disk(spec.generalisation, data_dir):
        return f"{found}; {spec.generalisation} {later}"
    extra = _with_generalisation(spec.model_copy(update={"download": False}), splits)
    return found + "".join(f", {len(images)} {spec.generalisation} images" for images in extra.values())
