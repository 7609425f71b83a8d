"""The sweep file schema: YAML -> validated SweepSpec -> one plain TrialConfig per trial."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fixray.corruptions import CORRUPTIONS, MIN_SIZE, Corruption
from fixray.data import DATASETS
from fixray.heads import HeadKind, Margin, VectorDraw
from fixray.models import BACKBONES


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid")


class OptimizerSpec(Strict):
    """SGD as in the authors' public code."""

    momentum: float = Field(0.9, ge=0, lt=1)  # SGD momentum, dimensionless
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)  # L2 coefficient; the paper uses it for dot-product heads only


class ScheduleSpec(Strict):
    """Learning-rate schedule; `plateau` watches test accuracy as the authors' code does."""

    kind: Literal["plateau", "cosine", "none"] = "plateau"
    factor: float = Field(0.2, gt=0, lt=1)  # plateau: LR multiplier when accuracy stalls
    patience: int = Field(3, ge=0)  # plateau: epochs without improvement before the LR drops


class HeadSpec(Strict):
    """Head settings used where the search space does not set them."""

    kind: HeadKind = "dot"
    fixed: bool = False
    S: float = Field(1.0, gt=0)  # cosine scale; ignored by dot-product heads
    bias: bool | None = None  # None: a bias for dot-product heads, none for cosine heads
    init: VectorDraw = "normal"  # how class vectors are drawn (fixed or initial)
    learn_S: bool = False  # cosine heads: S becomes a trained parameter starting at S
    margin: Margin = "none"  # cosine heads: additive margin on the true class
    m: float = Field(0.0, ge=0)  # the margin: cosine units (cosface) or radians (arcface)


class AugmentationSpec(Strict):
    """Training-time augmentation; left out, the dataset's standard one is used (none for digits)."""

    crop_padding: int = Field(0, ge=0)  # pixels of zero padding before a random crop back to size
    flip: bool = False  # random horizontal flips


class RobustnessSpec(Strict):
    """After training: accuracy on corrupted copies of the test set (paper Table 6), as robust/<name>/acc."""

    corruptions: list[Corruption] = Field(default_factory=lambda: list(CORRUPTIONS), min_length=1)
    severity: int = Field(3, ge=1, le=5)  # imagecorruptions severity; the paper does not state its own
    seed: int = 0  # the corrupted sets are drawn from this seed once, then cached on disk


class AshaSpec(Strict):
    """Ray Tune's ASHA early stopping on test accuracy, in epochs."""

    grace_period: int = Field(1, ge=1)  # epochs every trial runs before it can be stopped
    reduction_factor: float = Field(2.0, gt=1)  # 1/reduction_factor of trials go on at each rung


class SearchSpec(Strict):
    method: Literal["grid", "random", "tpe"] = "grid"
    num_samples: int = Field(1, ge=1)  # random/tpe: configurations drawn from the ranges (each runs once per seed)
    space: dict[str, Any]  # parameter -> value | [grid values] | {loguniform|uniform: [lo, hi]} | {choice: [...]}
    asha: AshaSpec | None = None
    max_concurrent_trials: int | None = Field(None, ge=1)  # None: as many as the resources allow
    random_seed: int = 0  # seeds the random/TPE searcher so a sweep draws the same configurations again


class ResourcesSpec(Strict):
    cpus_per_trial: float = Field(1.0, gt=0)  # CPU cores per training worker
    gpus_per_trial: float = Field(0.0, ge=0)  # GPUs per training worker; 0 trains on the CPU
    workers: int = Field(1, ge=1)  # DDP workers per trial; >1 runs the trial through Ray Train


class TrackingSpec(Strict):
    uri: str = "sqlite:///mlflow.db"  # MLflow tracking URI; on a cluster, an `mlflow server` address
    experiment: str = "fixray"  # MLflow experiment that holds the sweep's parent run


class SweepSpec(Strict):
    name: str | None = Field(None, min_length=1)  # None: the sweep file's stem
    dataset: str
    data_dir: Path | None = None  # None: $FIXRAY_DATA or ~/.cache/fixray/datasets
    download: bool = True  # fetch missing dataset files (needs the internet); false: only use what is on disk
    model: str
    epochs: int = Field(ge=1)
    batch_size: int = Field(128, ge=1)  # images per optimiser step (per worker under DDP)
    lr: float = Field(0.1, gt=0)  # initial learning rate where the search space does not set it
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    head: HeadSpec = HeadSpec()
    augmentation: AugmentationSpec | None = None  # None: the dataset's standard augmentation
    robustness: RobustnessSpec | None = None
    generalisation: str | None = None  # a registered set with the training set's classes (e.g. cifar10.1): gen/acc
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)  # each configuration runs once per seed
    search: SearchSpec
    resources: ResourcesSpec = ResourcesSpec()
    tracking: TrackingSpec = TrackingSpec()
    storage_path: Path = Path("fixray-runs")  # Ray Tune's results and checkpoints; resume reads them


@dataclass(frozen=True)
class TrialConfig:
    """Everything one training run needs, flat and plain, so it pickles and logs as MLflow params."""

    dataset: str
    data_dir: str | None
    model: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    schedule: str
    plateau_factor: float
    plateau_patience: int
    kind: str
    fixed: bool
    S: float | None  # None for dot-product heads, which have no scale
    bias: bool
    seed: int
    init: str = "normal"
    learn_S: bool = False
    margin: str = "none"
    m: float = 0.0
    workers: int = 1
    use_gpu: bool = False
    crop_padding: int = 0
    flip: bool = False

    def as_params(self) -> dict[str, Any]:
        return asdict(self)


def _one_of(choices: tuple[str, ...]) -> tuple[Any, str]:
    return (lambda v: v in choices, "one of: " + ", ".join(repr(c) for c in choices))


# Parameters a sweep may search, with the check each value must pass and what that check expects.
SEARCHABLE: dict[str, tuple[Any, str]] = {
    "lr": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "S": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "momentum": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "fixed": (lambda v: isinstance(v, bool), "true or false"),
    "bias": (lambda v: isinstance(v, bool), "true or false"),
    "kind": _one_of(get_args(HeadKind)),
    "init": _one_of(get_args(VectorDraw)),
    "model": _one_of(tuple(sorted(BACKBONES))),
    "margin": _one_of(get_args(Margin)),
    "m": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
}
NUMERIC = {"lr", "S", "weight_decay", "momentum", "m"}
COSINE_ONLY = ("S", "margin", "m")  # meaningless for dot-product heads
DISTRIBUTIONS = ("loguniform", "uniform", "choice")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a sweep file, located by its key path."""

    path: str
    value: Any
    expected: str

    def __str__(self) -> str:
        return f"{self.path}: got {self.value!r}; expected {self.expected}"


class SweepFileError(Exception):
    """A sweep file that cannot run; lists every problem so one edit fixes them all."""

    def __init__(self, file: Path, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        lines = [f"{file}: {len(problems)} problem(s) in the sweep file:"]
        lines += [f"  {file}: {problem}" for problem in problems]
        super().__init__("\n".join(lines))


def _key_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _pydantic_problems(error: ValidationError, model: type[BaseModel]) -> list[Problem]:
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            problems.append(Problem(_key_path(loc), item["input"], f"one of the known keys here: {allowed} (this key is unknown)"))
        elif item["type"] == "missing":
            problems.append(Problem(_key_path(loc), None, "this required key to be set"))
        else:
            message = item["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
            problems.append(Problem(_key_path(loc), item["input"], message))
    return problems


def _allowed_keys(model: type[BaseModel], parent: tuple[Any, ...]) -> str:
    for part in parent:
        annotation = model.model_fields[part].annotation
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        model = next(a for a in candidates if issubclass(a, BaseModel))
    return ", ".join(model.model_fields)


def _check_value(name: str, value: Any, path: str) -> list[Problem]:
    check, expected = SEARCHABLE[name]
    return [] if check(value) else [Problem(path, value, expected)]


def _space_problems(space: dict[str, Any], head: HeadSpec, method: str) -> list[Problem]:
    base = "search.space"
    if not space:
        return [Problem(base, space, f"at least one parameter to search, from: {', '.join(SEARCHABLE)}")]
    problems: list[Problem] = []
    for name, value in space.items():
        path = f"{base}.{name}"
        if name not in SEARCHABLE:
            problems.append(Problem(path, value, f"a searchable parameter: {', '.join(SEARCHABLE)}"))
        elif isinstance(value, list):
            if not value:
                problems.append(Problem(path, value, "a non-empty list of grid values"))
            for i, item in enumerate(value):
                problems += _check_value(name, item, f"{path}[{i}]")
        elif isinstance(value, dict):
            problems += _distribution_problems(name, value, path)
            if method == "grid" and "choice" not in value:
                problems.append(Problem(path, value, "a list of grid values (ranges need search.method random or tpe)"))
        else:
            problems += _check_value(name, value, path)
    if "cosine" not in _values_of(space.get("kind", head.kind)):
        for name in COSINE_ONLY:
            if name in space:
                problems.append(Problem(f"{base}.{name}", space[name], f"no {name} search unless a cosine head is swept ({name} applies to cosine heads only)"))
        if getattr(head, "margin", "none") != "none" or getattr(head, "learn_S", False):
            problems.append(Problem("head", {"margin": getattr(head, "margin", None), "learn_S": getattr(head, "learn_S", None)}, "margin 'none' and learn_S false for dot-product heads (both need a cosine head)"))
    return problems


def _values_of(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value.get("choice", []))
    return [value]


def _distribution_problems(name: str, value: dict[str, Any], path: str) -> list[Problem]:
    if len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        return [Problem(path, value, "a mapping with exactly one of: loguniform: [lo, hi], uniform: [lo, hi], choice: [...]")]
    dist, args = next(iter(value.items()))
    path = f"{path}.{dist}"
    if dist == "choice":
        if not isinstance(args, list) or not args:
            return [Problem(path, args, "a non-empty list of values")]
        return [p for i, item in enumerate(args) for p in _check_value(name, item, f"{path}[{i}]")]
    if name not in NUMERIC:
        return [Problem(path, args, f"choice (or a grid list) for {name}; {dist} needs a numeric parameter")]
    if not isinstance(args, list) or len(args) != 2:
        return [Problem(path, args, "[lo, hi]: two numbers")]
    problems = [p for i, item in enumerate(args) for p in _check_value(name, item, f"{path}[{i}]")]
    if not problems and args[0] >= args[1]:
        problems.append(Problem(path, args, "lo < hi"))
    return problems


def _registry_problems(raw: dict[str, Any]) -> list[Problem]:
    problems = []
    train_sets = {name for name, entry in DATASETS.items() if entry.train_set}
    for key, registry, what in (("dataset", train_sets, "training dataset"), ("model", BACKBONES, "model")):
        if isinstance(raw.get(key), str) and raw[key] not in registry:
            problems.append(Problem(key, raw[key], f"a registered {what}: {', '.join(sorted(registry))}"))
    gen = raw.get("generalisation")
    if isinstance(gen, str) and gen not in DATASETS:
        problems.append(Problem("generalisation", gen, f"a registered dataset: {', '.join(sorted(DATASETS))}"))
    dataset = DATASETS.get(raw.get("dataset")) if isinstance(raw.get("dataset"), str) else None
    if raw.get("robustness") is not None and dataset is not None and dataset.image_size < MIN_SIZE:
        problems.append(Problem("robustness", raw["robustness"], f"no robustness test on {dataset.image_size}x{dataset.image_size} images (imagecorruptions needs at least {MIN_SIZE}x{MIN_SIZE})"))
    return problems


def parse_sweep(raw: Any, file: Path) -> SweepSpec:
    """Validates an already-parsed sweep document; raises SweepFileError listing every problem."""
    if not isinstance(raw, dict):
        raise SweepFileError(file, [Problem("(top level)", raw, "a mapping of sweep settings (dataset, model, epochs, search, ...)")])
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as error:
        problems = _pydantic_problems(error, SweepSpec) + _registry_problems(raw)
        search = raw.get("search")
        if isinstance(search, dict) and isinstance(search.get("space"), dict):
            head = raw.get("head") if isinstance(raw.get("head"), dict) else {}
            head_spec = HeadSpec.model_construct(**{"kind": "dot", **head})
            problems += _space_problems(search["space"], head_spec, search.get("method", "grid"))
        raise SweepFileError(file, problems) from None
    problems = _space_problems(spec.search.space, spec.head, spec.search.method) + _registry_problems(raw)
    if problems:
        raise SweepFileError(file, problems)
    if spec.name is None:
        spec = spec.model_copy(update={"name": file.stem})
    return spec


def load_sweep(file: str | Path) -> SweepSpec:
    """Reads and validates a sweep file; nothing is started or written."""
    file = Path(file)
    try:
        text = file.read_text()
    except OSError as error:
        raise SweepFileError(file, [Problem("(file)", str(file), f"a readable sweep file ({error.strerror})")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        reason = getattr(error, "problem", None) or str(error)
        lines = text.splitlines()
        shown = lines[mark.line] if mark and mark.line < len(lines) else "(end of file)"
        raise SweepFileError(file, [Problem(where, shown, f"valid YAML ({reason})")]) from None
    return parse_sweep(raw, file)


def trial_config(spec: SweepSpec, params: dict[str, Any]) -> TrialConfig:
    """One trial's settings: the sweep's defaults overridden by the searched parameters."""
    kind = params.get("kind", spec.head.kind)
    bias = params.get("bias", spec.head.bias)
    augmentation = spec.augmentation or DATASETS[spec.dataset].augmentation
    return TrialConfig(
        dataset=spec.dataset,
        data_dir=str(spec.data_dir) if spec.data_dir else None,
        model=params.get("model", spec.model),
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        lr=float(params.get("lr", spec.lr)),
        momentum=float(params.get("momentum", spec.optimizer.momentum)),
        nesterov=spec.optimizer.nesterov,
        weight_decay=float(params.get("weight_decay", spec.optimizer.weight_decay)),
        schedule=spec.schedule.kind,
        plateau_factor=spec.schedule.factor,
        plateau_patience=spec.schedule.patience,
        kind=kind,
        fixed=bool(params.get("fixed", spec.head.fixed)),
        S=float(params.get("S", spec.head.S)) if kind == "cosine" else None,
        bias=(kind == "dot") if bias is None else bool(bias),
        seed=int(params["seed"]),
        init=params.get("init", spec.head.init),
        learn_S=spec.head.learn_S and kind == "cosine",
        margin=params.get("margin", spec.head.margin) if kind == "cosine" else "none",
        m=float(params.get("m", spec.head.m)) if kind == "cosine" else 0.0,
        workers=spec.resources.workers,
        use_gpu=spec.resources.gpus_per_trial > 0,
        crop_padding=augmentation.crop_padding,
        flip=augmentation.flip,
    )
