"""The sweep file schema: YAML -> a validated SweepSpec, or every problem at once with its key path.

Settings that reach a trial are the trial contract's own types (trial/contract.py), so a rule (S > 0, momentum
in [0, 1)) is written once and holds in the file's defaults and in its search space alike.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Strict,
    Tag,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import PydanticUndefined

from fixray.data.corruptions import CORRUPTIONS, MIN_SIZE, Corruption
from fixray.data.registry import DATASETS
from fixray.errors import BadInput
from fixray.storage import URI_SCHEMES, is_uri
from fixray.sweep.defaults import LOCAL_STORAGE, LOCAL_TRACKING_URI, default_storage, default_tracking_uri
from fixray.trial.contract import (
    FLAT_PATHS,
    SEARCHABLE,
    Augmentation,
    BatchSize,
    Epochs,
    Every,
    Execution,
    HeadConfig,
    Interval,
    LearningRate,
    LongTail,
    Loss,
    OptimizerConfig,
    ScheduleConfig,
    TrialConfig,
    base_type,
    field_type,
)
from fixray.trial.head_kinds import DRAW_RULES, HEAD_KINDS
from fixray.trial.models import BACKBONES, feature_dim

EXTENDS_KEY = "extends"  # a sweep file may extend a base file (path relative to it); its own keys win
MAX_FILE_BYTES = 1 << 20  # a sweep file is a page of settings: 1 MiB is far past any real one
MAX_NODES = 100_000  # values in a parsed sweep file, YAML aliases expanded (no "billion laughs")
MAX_TRIALS = 10_000  # default search.max_trials: trials one sweep may plan before it is refused
NAME_CHARS = "letters, digits and . _ + = - (starting with a letter or digit, no '..', at most 128)"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}")
PATH_PART = re.compile(r"[\w .+=@~-]+")  # one folder of a storage path: no quotes, no shell or glob characters
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # an S3 or GCS bucket name
# pyarrow's options a bucket URI may carry (a private S3-compatible server); credentials come from the environment
URI_OPTIONS = {"endpoint_override": re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?"), "scheme": re.compile(r"https?")}
URI_OPTIONS |= {"region": re.compile(r"[a-z0-9-]+")}


def _identifier(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise ValueError(f"a name of {NAME_CHARS}")
    return name


def _folder_parts(parts: list[str], what: str) -> None:
    if ".." in parts or not all(PATH_PART.fullmatch(part) for part in parts):
        raise ValueError(f"{what} whose folder names hold letters, digits, spaces and . _ + = @ ~ - (no '..')")


def _storage_uri(location: str) -> str:
    uri = urlsplit(location)
    if not BUCKET.fullmatch(uri.netloc):
        raise ValueError(
            f"{uri.scheme}://BUCKET/PATH with a bucket name of lowercase letters, digits, . and - "
            "(credentials come from the environment, never the URI)"
        )
    _folder_parts([part for part in uri.path.split("/") if part], f"{uri.scheme}://{uri.netloc}/PATH")
    if uri.fragment:
        raise ValueError("a bucket URI without a '#' fragment")
    for option, value in parse_qsl(uri.query, keep_blank_values=True):
        if option not in URI_OPTIONS or not URI_OPTIONS[option].fullmatch(value):
            raise ValueError(f"bucket URI options among {', '.join(URI_OPTIONS)} (e.g. endpoint_override=host:port)")
    return location


def _storage_path(location: str) -> str:
    if is_uri(location):
        return _storage_uri(location)
    if "://" in location:
        raise ValueError(f"a folder, or a bucket URI of {', '.join(s + '://' for s in URI_SCHEMES)}")
    path = Path(location)
    _folder_parts([part for part in path.parts if part != path.anchor], "a folder path")
    return location


Identifier = Annotated[str, AfterValidator(_identifier)]  # names that become MLflow filter values and folder names


class Schema(BaseModel):
    """Unknown keys and NaN/inf are errors: a typo must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _from_trial(name: str, contract: type = TrialConfig) -> Any:
    """A schema field that is the trial contract's own: the same default and meaning (its type is written beside)."""
    trial_field = {f.name: f for f in dataclasses.fields(contract)}[name]
    default = PydanticUndefined if trial_field.default is dataclasses.MISSING else trial_field.default
    if trial_field.default_factory is not dataclasses.MISSING:
        return Field(default_factory=trial_field.default_factory, description=trial_field.metadata["doc"])
    return Field(default, description=trial_field.metadata["doc"])


class RobustnessSpec(Schema):
    """After training: accuracy on corrupted copies of the test set (paper Table 6), as robust/<name>/acc."""

    corruptions: list[Corruption] = Field(
        default_factory=lambda: list(CORRUPTIONS), min_length=1, description="imagecorruptions functions to apply"
    )
    severity: int = Field(3, ge=1, le=5, description="imagecorruptions severity 1-5; the paper does not state its own")
    seed: int = Field(0, description="the corrupted sets are drawn from this seed once, then cached on disk")


class AshaSpec(Schema):
    """Ray Tune's ASHA early stopping on the best test accuracy so far (val/acc_best, as tables rank), in epochs."""

    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(2.0, gt=1, description="1/reduction_factor of trials go on at each rung")


# --- the typed search space: one field per searchable setting, typed by the trial contract ---------------

VALUE, GRID, RANGE = "<value>", "<grid>", "<range>"  # union tags; key paths leave them out
DISTRIBUTIONS = ("loguniform", "uniform", "choice")


def _shape(value: Any) -> str:
    return GRID if isinstance(value, list) else RANGE if isinstance(value, dict) else VALUE


class RangeBase(Schema):
    """Exactly one distribution; ranges need lo < hi (and lo > 0 on a log scale)."""

    @model_validator(mode="after")
    def _one_distribution(self) -> RangeBase:
        given = [name for name in DISTRIBUTIONS if getattr(self, name, None) is not None]
        if len(given) != 1:
            allowed = ", ".join(f"{n}: [lo, hi]" if n != "choice" else "choice: [...]" for n in type(self).model_fields)
            raise ValueError(f"a mapping with exactly one of: {allowed}")
        return self


def _ascending(bounds: list[float]) -> list[float]:
    if not bounds[0] < bounds[1]:
        raise ValueError("[lo, hi] with lo < hi")
    return bounds


def _positive_low(bounds: list[float]) -> list[float]:
    if bounds[0] <= 0:
        raise ValueError("[lo, hi] with lo > 0 on a log scale")
    return bounds


def _searchable_type(flat: str) -> Any:
    """value | [grid values] | {loguniform|uniform: [lo, hi]} (numbers only) | {choice: [...]}, each value strict."""
    annotation = field_type(flat)
    if get_origin(annotation) in (Union, types.UnionType):  # X | None: None is no value to search
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    numeric = base_type(annotation) in (int, float)
    value = (
        Annotated[annotation, Strict()] if base_type(annotation) in (bool, int, float) else annotation
    )  # no "yes" for true
    pair = Annotated[list[value], Field(min_length=2, max_length=2), AfterValidator(_ascending)]
    log_pair = Annotated[pair, AfterValidator(_positive_low)]
    ranges = {"loguniform": (log_pair | None, None), "uniform": (pair | None, None)} if numeric else {}
    range_model = create_model(
        f"{flat}Range", __base__=RangeBase, **ranges, choice=(list[value] | None, Field(None, min_length=1))
    )
    grid = Annotated[list[value], Field(min_length=1), Tag(GRID)]
    return Annotated[Annotated[value, Tag(VALUE)] | grid | Annotated[range_model, Tag(RANGE)], Discriminator(_shape)]


class SpaceBase(Schema):
    _order: list[str] = PrivateAttr(default_factory=list)  # the file's order: grids and draws follow it

    @model_validator(mode="wrap")
    @classmethod
    def _in_file_order(cls, data: Any, handler) -> SpaceBase:
        space = handler(data)
        space._order = [name for name in data if getattr(space, name, None) is not None]
        if not space._order:
            raise ValueError(f"at least one parameter to search, from: {', '.join(SEARCHABLE)}")
        return space

    def parameters(self) -> dict[str, Any]:
        """The searched settings by flat name, in the file's order: a value, a grid list, or {distribution: args}."""
        values = {}
        for name in self._order:
            value = getattr(self, name)
            values[name] = value.model_dump(exclude_none=True) if isinstance(value, BaseModel) else value
        return values


SearchSpace = create_model(
    "SearchSpace",
    __base__=SpaceBase,
    __doc__="parameter -> value | [grid values] | {loguniform|uniform: [lo, hi]} | {choice: [...]}",
    **{name: (_searchable_type(name) | None, None) for name in SEARCHABLE},
)


class SearchSpec(Schema):
    """How configurations are chosen; every configuration runs once per seed."""

    method: Literal["grid", "random", "tpe"] = Field("grid", description="tpe: Optuna's TPE through Ray Tune")
    num_samples: int = Field(1, ge=1, description="random/tpe: configurations drawn from the ranges")
    space: SearchSpace = Field(description="searched settings: " + ", ".join(SEARCHABLE))
    asha: AshaSpec | None = Field(
        None, description="optional early stopping on the best test accuracy so far (val/acc_best, as tables rank)"
    )
    max_concurrent_trials: int | None = Field(None, ge=1, description="null: as many as the resources allow")
    random_seed: int = Field(0, description="seeds the random/TPE searcher, so a file draws the same configurations")
    max_trials: int = Field(
        MAX_TRIALS, ge=1, description="refuse a sweep that plans more trials (grid x draws x seeds) than this"
    )

    def grids_and_ranges(self) -> tuple[dict[str, list[Any]], dict[str, dict[str, Any]]]:
        """The space as grid lists (a value: a one-item list) and ranges to draw from; grid search lists choices."""
        space = self.space.parameters()
        if self.method == "grid":
            space = {k: v["choice"] if isinstance(v, dict) else v for k, v in space.items()}
        grids = {k: v if isinstance(v, list) else [v] for k, v in space.items() if not isinstance(v, dict)}
        return grids, {k: v for k, v in space.items() if isinstance(v, dict)}


class ResourcesSpec(Schema):
    """What one trial takes from the Ray cluster."""

    cpus_per_trial: float = Field(1.0, gt=0, description="CPU cores per training worker")
    gpus_per_trial: float = Field(0.0, ge=0, description="GPUs per training worker; 0 trains on the CPU")
    workers: int = Field(1, ge=1, description="DDP workers per trial; > 1 runs the trial through Ray Train")
    max_retries: int = Field(
        3,
        ge=0,
        description="times a trial whose process or node died is retried from its last checkpoint in the run "
        "(an error in the trial's own code is not: a rerun of the command retries it)",
    )
    checkpoint_every: Interval = _from_trial("checkpoint_every", Execution)
    channels_last: bool = _from_trial("channels_last", Execution)
    bf16: bool | None = _from_trial("bf16", Execution)
    compile: bool = _from_trial("compile", Execution)

    def execution(self) -> Execution:
        """How each training process runs its loop."""
        return Execution(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Execution)})


class TrackingSpec(Schema):
    """Where MLflow runs go."""

    uri: str | None = Field(
        None,
        description=f"MLflow tracking URI (on a cluster, the head's `mlflow server`); null: $MLFLOW_TRACKING_URI, "
        f"else {LOCAL_TRACKING_URI}",
    )
    experiment: Identifier = Field("fixray", description=f"MLflow experiment holding the parent run: {NAME_CHARS}")


class SweepSpec(Schema):
    """A sweep file: the trials' shared settings, what is searched, and where it runs and is recorded."""

    name: Identifier | None = Field(
        None, description=f"MLflow parent run and Tune experiment folder, {NAME_CHARS}; null: the file's stem"
    )
    dataset: str = Field(
        description="a registered training set: " + ", ".join(n for n, e in DATASETS.items() if e.train_set)
    )
    data_dir: Path | None = Field(
        None, description="folder holding the datasets; null: $FIXRAY_DATA or ~/.cache/fixray/datasets"
    )
    download: bool = Field(True, description="fetch missing dataset files (needs the internet); false: disk only")
    verify: bool = Field(
        True, description="check files against their publisher's md5 before reading; false: a subset or your own copy"
    )
    model: str = _from_trial("model")
    pooling: Literal["global", "authors"] = _from_trial("pooling")
    normalisation: Literal["dataset", "authors"] = _from_trial("normalisation")
    epochs: Epochs = _from_trial("epochs")
    batch_size: BatchSize = _from_trial("batch_size")
    lr: LearningRate = _from_trial("lr")
    loss: Loss = _from_trial("loss")
    nc_train_every: Every = _from_trial("nc_train_every")
    optimizer: OptimizerConfig = _from_trial("optimizer")
    schedule: ScheduleConfig = _from_trial("schedule")
    head: HeadConfig = _from_trial("head")
    augmentation: Augmentation | None = Field(None, description="null: the dataset's standard augmentation")
    long_tail: LongTail = _from_trial("long_tail")
    robustness: RobustnessSpec | None = Field(None, description="corrupted test sets measured after training (Table 6)")
    generalisation: str | None = Field(
        None, description="a registered test set with the training set's classes (e.g. cifar10.1): gen/acc"
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0], min_length=1, description="each configuration runs once per seed"
    )
    search: SearchSpec = Field(description="how configurations are chosen: method, space, early stopping")
    budget: float | None = Field(
        None,
        gt=0,
        description="GPU-hours at the compute plan's rate: whole configurations (every seed) launch in the plan's "
        "order while their planned GPU-hours stay within it; the rest are reported as not run, and a rerun with a "
        "larger budget runs them. null: every trial",
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Ray resources per trial")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="MLflow")
    storage_path: Annotated[str, AfterValidator(_storage_path)] | None = Field(
        None,
        description=f"Ray Tune's results and checkpoints (resume reads them): a folder, or on a cluster a bucket "
        f"URI (s3://bucket/prefix, gs://...) or storage every node mounts; no '..'; null: $FIXRAY_STORAGE, "
        f"else {LOCAL_STORAGE}",
    )


# --- problems -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong in a sweep file, located by its key path."""

    path: str
    value: Any
    expected: str

    def __str__(self) -> str:
        return f"{self.path}: got {self.value!r}; expected {self.expected}"


class SweepFileError(BadInput):
    """A sweep file that cannot run; lists every problem so one edit fixes them all."""

    prefix = ""

    def __init__(self, file: Path, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        lines = [f"{file}: {len(problems)} problem(s) in the sweep file:"]
        lines += [f"  {file}: {problem}" for problem in problems]
        super().__init__("\n".join(lines))


def _key_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, str) and part.startswith("<"):
            continue  # a union tag, not a key
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the schema knows at a location (for 'unknown key' messages)."""
    node: Any = SweepSpec
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and part.startswith("<")):
            continue
        node = section_type(_annotation(node, part))
    return (
        list(node.model_fields)
        if isinstance(node, type) and issubclass(node, BaseModel)
        else [f.name for f in dataclasses.fields(node)]
    )


def _annotation(node: type, key: str) -> Any:
    if isinstance(node, type) and issubclass(node, BaseModel):
        return node.model_fields[key].annotation
    return get_type_hints(node)[key]


def section_type(annotation: Any) -> type | None:
    """The model or dataclass behind Annotated[...], X | None, list[...] and tagged unions; None for a value."""
    if isinstance(annotation, type) and (issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation)):
        return annotation
    return next((found for arg in get_args(annotation) if (found := section_type(arg)) is not None), None)


def _pydantic_problems(error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            try:
                allowed = ", ".join(_keys_at(loc[:-1]))
            except (KeyError, TypeError):  # a location the walk does not know: still name the key
                allowed = "a key the schema knows here"
            problems.append(
                Problem(_key_path(loc), item["input"], f"one of the known keys here: {allowed} (this key is unknown)")
            )
        elif item["type"] == "missing":
            problems.append(Problem(_key_path(loc), None, "this required key to be set"))
        else:
            message = item["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
            problems.append(Problem(_key_path(loc), item["input"], message))
    return problems


def _values(value: Any) -> list[Any]:
    """The values a raw search-space entry can take (ranges: none that can be listed)."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        choice = value.get("choice", [])
        return choice if isinstance(choice, list) else []
    return [value]


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _registry_problems(raw: dict[str, Any], space: dict[str, Any], head: dict[str, Any]) -> list[Problem]:
    """Names that must be registered: dataset, backbone, head kind, generalisation set, wherever they are set."""
    problems = []
    train_sets = {name for name, entry in DATASETS.items() if entry.train_set}
    checks = [
        ("dataset", raw.get("dataset"), train_sets, "a registered training dataset"),
        ("generalisation", raw.get("generalisation"), set(DATASETS), "a registered dataset"),
        ("model", raw.get("model"), set(BACKBONES), "a registered model"),
        ("head.kind", head.get("kind"), set(HEAD_KINDS), "a registered head kind"),
    ]
    for name, registry, what in (
        ("model", BACKBONES, "a registered model"),
        ("kind", HEAD_KINDS, "a registered head kind"),
    ):
        entry = space.get(name)
        if isinstance(entry, list):
            checks += [(f"search.space.{name}[{i}]", v, set(registry), what) for i, v in enumerate(entry)]
        elif isinstance(entry, dict) and isinstance(entry.get("choice"), list):
            checks += [
                (f"search.space.{name}.choice[{i}]", v, set(registry), what) for i, v in enumerate(entry["choice"])
            ]
        elif entry is not None and not isinstance(entry, dict):
            checks.append((f"search.space.{name}", entry, set(registry), what))
    for path, value, registry, what in checks:
        if isinstance(value, str) and value not in registry:
            problems.append(Problem(path, value, f"{what}: {', '.join(sorted(registry))}"))
    dataset = DATASETS.get(raw.get("dataset")) if isinstance(raw.get("dataset"), str) else None
    if raw.get("robustness") is not None and dataset is not None and dataset.image_size < MIN_SIZE:
        size = f"{dataset.image_size}x{dataset.image_size}"
        expected = f"no robustness test on {size} images (imagecorruptions needs at least {MIN_SIZE}x{MIN_SIZE})"
        problems.append(Problem("robustness", raw["robustness"], expected))
    return problems


def _head_option_problems(space: dict[str, Any], head: dict[str, Any]) -> list[Problem]:
    """Head options set or searched where no swept head kind reads them (asked of the head classes)."""
    swept = _values(space.get("kind", head.get("kind", HeadConfig.kind)))
    kinds = [HEAD_KINDS[k] for k in swept if isinstance(k, str) and k in HEAD_KINDS]
    if not kinds:
        return []
    readers = {
        name: [h.name for h in HEAD_KINDS.values() if name in h.options]
        for name in FLAT_PATHS
        if FLAT_PATHS[name][0] == "head"
    }
    defaults = {f.name: f.default for f in dataclasses.fields(HeadConfig)}
    problems = []
    for name, kinds_reading in readers.items():
        if name == "kind" or any(name in h.options for h in kinds):
            continue
        who = " or ".join(kinds_reading) + " heads"
        if name in space:
            problems.append(
                Problem(
                    f"search.space.{name}",
                    space[name],
                    f"no {name} search unless {who} are swept ({name} applies to {who} only)",
                )
            )
        if name in head and head[name] != defaults[name]:
            problems.append(
                Problem(f"head.{name}", head[name], f"{name} left at {defaults[name]!r}: it applies to {who} only")
            )
    return problems


def _method_problems(search: dict[str, Any], space: dict[str, Any]) -> list[Problem]:
    if search.get("method", "grid") != "grid":
        return []
    return [
        Problem(f"search.space.{name}", value, "a list of grid values (ranges need search.method random or tpe)")
        for name, value in space.items()
        if isinstance(value, dict) and "choice" not in value
    ]


def _image_vector_problems(spec: SweepSpec) -> list[Problem]:
    """Backbones whose pooled map would be empty, and class-vector draws that need more dimensions than the image
    vectors have (each draw declares what it needs, head_kinds.DRAW_RULES)."""
    dataset = DATASETS[spec.dataset]
    space = spec.search.space.parameters()
    models = _values(space.get("model", spec.model))
    draws = _values(space.get("init", spec.head.init))
    init_path = "search.space.init" if "init" in space else "head.init"
    projections = _values(space.get("dim", spec.head.dim))
    problems = []
    for model in models:
        try:
            width = feature_dim(model, dataset.input_spec, spec.pooling)
        except ValueError as error:
            problems.append(Problem("pooling", spec.pooling, f"a pooling {model} can apply: {error}"))
            continue
        for projected, draw in itertools.product(projections, draws):
            rule = DRAW_RULES[draw]  # a draw the schema admitted: every one has its rule
            need = rule.min_dim(dataset.classes)
            dim = width if projected is None else projected
            if dim < need:
                gives = (
                    f"head.dim projects the image vectors to {dim}"
                    if projected is not None
                    else f"{model} with {spec.pooling} pooling gives {dim}-d image vectors"
                )
                expected = (
                    f"a draw that fits: {draw} class vectors need {need} dimensions for {dataset.classes} classes "
                    f"({rule.why}), and {spec.dataset} has {dataset.classes} classes while {gives}; draw normal or "
                    f"uniform_int, or give them more dimensions"
                )
                problems.append(Problem(init_path, draw, expected))
    return problems


def _loss_problems(spec: SweepSpec) -> list[Problem]:
    """Dot regression pulls image vectors toward class vectors that must stay put: a learned head would move its
    vectors toward the images instead (nothing keeps classes apart), so it trains fixed heads only."""
    space = spec.search.space.parameters()
    losses = _values(space.get("loss", spec.loss))
    learned = [f for f in _values(space.get("fixed", spec.head.fixed)) if f is False]
    if "dot_regression" not in losses or not learned:
        return []
    where = "search.space.fixed" if "fixed" in space else "head.fixed"
    expected = "true with loss dot_regression (it trains fixed class vectors only): compare learned heads in a sweep "
    return [Problem(where, space.get("fixed", spec.head.fixed), expected + "of their own, with cross_entropy")]


def _budget_problems(spec: SweepSpec) -> list[Problem]:
    """A budget admits planned trials in order: TPE plans none in advance (its num_samples is its bound)."""
    if spec.budget is None or spec.search.method != "tpe":
        return []
    expected = "no budget with search.method tpe (it draws trials as it runs): bound it by search.num_samples"
    return [Problem("budget", spec.budget, expected)]


def planned_trials_bound(spec: SweepSpec) -> int:
    """Trials a sweep plans before de-duplication, counted without listing them: grid x draws x seeds."""
    if spec.search.method == "tpe":
        return spec.search.num_samples * len(spec.seeds)
    grids, ranges = spec.search.grids_and_ranges()
    draws = spec.search.num_samples if ranges else 1
    return math.prod(len(values) for values in grids.values()) * draws * len(spec.seeds)


def _size_problems(spec: SweepSpec) -> list[Problem]:
    bound = planned_trials_bound(spec)
    if bound <= spec.search.max_trials:
        return []
    expected = (
        f"at most search.max_trials = {spec.search.max_trials} trials (grid values x draws x seeds); "
        "shrink the search, or raise search.max_trials if you mean it"
    )
    return [Problem("search", f"{bound} trials", expected)]


def _count_nodes(value: Any, limit: int) -> int:
    """Values in a parsed document with aliases expanded, counting no further than `limit`."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
    return count


def parse_sweep(raw: Any, file: Path) -> SweepSpec:
    """Validates an already-parsed sweep document; raises SweepFileError listing every problem."""
    if not isinstance(raw, dict):
        raise SweepFileError(
            file, [Problem("(top level)", raw, "a mapping of sweep settings (dataset, model, epochs, search, ...)")]
        )
    search = _mapping(raw.get("search"))
    space, head = _mapping(search.get("space")), _mapping(raw.get("head"))
    problems: list[Problem] = []
    spec = None
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as error:
        problems += _pydantic_problems(error)
    problems += (
        _registry_problems(raw, space, head) + _head_option_problems(space, head) + _method_problems(search, space)
    )
    if spec is not None and not problems:
        problems += _image_vector_problems(spec) + _loss_problems(spec) + _size_problems(spec) + _budget_problems(spec)
    if spec is not None and spec.name is None:
        try:
            spec = spec.model_copy(update={"name": _identifier(file.stem)})
        except ValueError as error:
            problems.append(Problem("name", None, f"{error}: the file's stem {file.stem!r} is not one, so set name:"))
    if spec is not None and spec.storage_path is None:
        try:
            spec = spec.model_copy(update={"storage_path": _storage_path(default_storage())})
        except ValueError as error:
            problems.append(Problem("storage_path", str(default_storage()), f"{error} (from $FIXRAY_STORAGE)"))
    if spec is not None and spec.tracking.uri is None:
        spec = spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"uri": default_tracking_uri()})})
    if problems or spec is None:
        raise SweepFileError(file, problems)
    return spec


def _read_yaml(file: Path) -> Any:
    try:
        with open(file, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        text = data.decode("utf-8")
    except OSError as error:
        raise SweepFileError(
            file, [Problem("(file)", str(file), f"a readable sweep file ({error.strerror})")]
        ) from None
    except UnicodeDecodeError as error:
        raise SweepFileError(file, [Problem("(file)", f"byte {error.start}", "UTF-8 text")]) from None
    if len(data) > MAX_FILE_BYTES:
        raise SweepFileError(file, [Problem("(file)", f"over {MAX_FILE_BYTES} bytes", "a sweep file under 1 MiB")])
    try:
        found = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        reason = getattr(error, "problem", None) or str(error)
        lines = text.splitlines()
        shown = lines[mark.line] if mark and mark.line < len(lines) else "(end of file)"
        raise SweepFileError(file, [Problem(where, shown, f"valid YAML ({reason})")]) from None
    if _count_nodes(found, MAX_NODES) > MAX_NODES:
        expected = f"at most {MAX_NODES} values with YAML aliases expanded (a sweep file is a page of settings)"
        raise SweepFileError(file, [Problem("(file)", f"over {MAX_NODES} values", expected)])
    return found


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """base with override's keys on top; mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return merged


def load_sweep(file: str | Path) -> SweepSpec:
    """Reads and validates a sweep file (and the base file it extends); nothing is started or written."""
    file = Path(file)
    raw = _read_yaml(file)
    if isinstance(raw, dict) and EXTENDS_KEY in raw:
        extends = raw.pop(EXTENDS_KEY)
        base_file = file.parent / extends if isinstance(extends, str) else None
        base = _read_yaml(base_file) if base_file is not None and base_file.is_file() else None
        if not isinstance(base, dict) or EXTENDS_KEY in base:
            expected = "the path, relative to this file, of a base sweep file (a mapping that extends no other file)"
            raise SweepFileError(file, [Problem(EXTENDS_KEY, extends, expected)])
        raw = _merged(base, raw)
    return parse_sweep(raw, file)
