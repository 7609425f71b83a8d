"""The sweep file's schema: the sections, the typed search space, and SweepSpec.

The settings that reach a trial are not restated here: `sweep_schema` makes one field of the sweep file per field of
the trial contract (crossing/contract.py), with its type, rule, default and meaning, and one search-space entry per
setting declared searchable; a rule (S > 0, momentum in [0, 1)) is written once and holds in the file's defaults and
in its search space alike. Registered names (model, head kind, dataset) are checked by the schema against the
registries it is given as validation context.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Strict,
    Tag,
    create_model,
    model_validator,
)
from pydantic_core import PydanticUndefined

from fixray.crossing.contract import (
    Execution,
    Registered,
    TrialConfig,
    base_type,
    field_type,
    flat_paths,
    searchable,
)
from fixray.crossing.head_kinds import HEAD_KINDS
from fixray.data.corruptions import CORRUPTIONS, Corruption
from fixray.data.registry import DATASETS
from fixray.storage import URI_SCHEMES, is_uri
from fixray.sweep.defaults import EXPERIMENT, LOCAL_STORAGE, LOCAL_TRACKING_URI
from fixray.sweep.methods import SEARCH_METHODS, SearchMethod
from fixray.sweep.spec.values import DRAWERS, SettingValues
from fixray.trial.backbones import BACKBONES

SEED = "seed"  # the trial contract's seed: a sweep file lists `seeds`, and every configuration runs once per seed
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


# --- the typed search space: one entry per searchable setting, typed by the trial contract -------------

VALUE, GRID, RANGE = "<value>", "<grid>", "<range>"  # union tags; key paths leave them out


def _shape(value: Any) -> str:
    return GRID if isinstance(value, list) else RANGE if isinstance(value, dict) else VALUE


class RangeBase(Schema):
    """Exactly one distribution; ranges need lo < hi (and lo > 0 on a log scale)."""

    @model_validator(mode="after")
    def _one_distribution(self) -> RangeBase:
        given = [name for name in DRAWERS if getattr(self, name, None) is not None]
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


def _searchable_type(flat: str, contract: type) -> Any:
    """value | [grid values] | {loguniform|uniform: [lo, hi]} (numbers only) | {choice: [...]}, each value strict."""
    annotation = field_type(flat, contract)
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
            raise ValueError(f"at least one parameter to search, from: {', '.join(cls.model_fields)}")
        return space

    def parameters(self) -> dict[str, Any]:
        """The searched settings by flat name, in the file's order: a value, a grid list, or {distribution: args}."""
        values = {}
        for name in self._order:
            value = getattr(self, name)
            values[name] = value.model_dump(exclude_none=True) if isinstance(value, BaseModel) else value
        return values


class SearchSpecBase(Schema):
    """How configurations are chosen; every configuration runs once per seed (the space: see sweep_schema)."""

    method: Literal[tuple(SEARCH_METHODS)] = Field(
        "grid", description="; ".join(f"{m.name}: {m.description}" for m in SEARCH_METHODS.values())
    )
    num_samples: int = Field(1, ge=1, description="random/tpe: configurations drawn from the ranges")
    asha: AshaSpec | None = Field(
        None, description="optional early stopping on the best test accuracy so far (val/acc_best, as tables rank)"
    )
    max_concurrent_trials: int | None = Field(None, ge=1, description="null: as many as the resources allow")
    random_seed: int = Field(0, description="seeds the random/TPE searcher, so a file draws the same configurations")
    max_trials: int = Field(
        MAX_TRIALS, ge=1, description="refuse a sweep that plans more trials (grid x draws x seeds) than this"
    )

    @property
    def search_method(self) -> SearchMethod:
        """The method's rules: what it takes, whether it plans ahead, its configurations."""
        return SEARCH_METHODS[self.method]


class ResourcesBase(Schema):
    """What one trial takes from the Ray cluster (and, from the contract's Execution, how its loop runs)."""

    cpus_per_trial: float = Field(1.0, gt=0, description="CPU cores per training worker")
    gpus_per_trial: float = Field(0.0, ge=0, description="GPUs per training worker; 0 trains on the CPU")
    workers: int = Field(1, ge=1, description="DDP workers per trial; > 1 runs the trial through Ray Train")
    max_retries: int = Field(
        3,
        ge=0,
        description="times a trial whose process or node died is retried from its last checkpoint in the run "
        "(an error in the trial's own code is not: a rerun of the command retries it)",
    )

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
    experiment: Identifier = Field(EXPERIMENT, description=f"MLflow experiment holding the parent run: {NAME_CHARS}")


def contract_fields(contract: type, leave_out: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """The schema's fields for a contract's settings, each with the contract's own type, rule, default and meaning
    (a setting declared with from_dataset=True may be left out: null, the dataset's own)."""
    hints = get_type_hints(contract, include_extras=True)
    fields = {}
    for declared in dataclasses.fields(contract):
        if declared.name in leave_out:
            continue
        meaning = declared.metadata["doc"]
        if declared.metadata.get("from_dataset"):
            fields[declared.name] = (hints[declared.name] | None, Field(None, description=meaning))
        elif declared.default_factory is not dataclasses.MISSING:
            fields[declared.name] = (
                hints[declared.name],
                Field(default_factory=declared.default_factory, description=meaning),
            )
        else:
            default = PydanticUndefined if declared.default is dataclasses.MISSING else declared.default
            fields[declared.name] = (hints[declared.name], Field(default, description=meaning))
    return fields


ResourcesSpec = create_model("ResourcesSpec", __base__=ResourcesBase, **contract_fields(Execution))


class SweepSpecBase(Schema):
    """A sweep file: the trials' shared settings, what is searched, and where it runs and is recorded. Its fields are
    made by sweep_schema; here, what every reader asks of it."""

    contract: ClassVar[type] = TrialConfig  # the trial contract whose settings the file sets and searches

    def configurations(self) -> Iterator[dict[str, Any]]:
        """Each configuration's searched values, in the plan's order, as the search method chooses them."""
        search = self.search
        return search.search_method.configurations(self.searched(), search.num_samples, search.random_seed)

    def trials_bound(self) -> int:
        """Trials the sweep plans before de-duplication (grid x draws x seeds), or a drawing method's bound."""
        return self.search.search_method.bound(self.searched(), self.search.num_samples, len(self.seeds))

    def searched(self) -> dict[str, SettingValues]:
        """The settings the file searches, in its order, with their values."""
        return {name: self.values(name) for name in self.search.space.parameters()}

    def values(self, flat: str) -> SettingValues:
        """The values a setting (flat name, or 'seed') takes in this sweep: the one place every reader asks."""
        if flat == SEED:
            return SettingValues(tuple(self.seeds))
        entry = self.search.space.parameters().get(flat)
        if entry is not None:
            return SettingValues.of(entry, self.search.search_method.draws)
        value: Any = self.base_trial()
        for name in flat_paths(self.contract)[flat]:
            value = getattr(value, name)
        return SettingValues((value,))

    def as_data(self) -> dict[str, Any]:
        """The spec as plain data (JSON types), its search space in the file's order: what a saved sweep keeps of it,
        so Tune's saved state never names this schema's classes (made from the contract, they may move)."""
        data = self.model_dump(mode="json", exclude={"search": {"space"}})
        data["search"]["space"] = self.search.space.parameters()
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> SweepSpecBase:
        """The spec `as_data` wrote, validated again by this schema (against the registries)."""
        return cls.model_validate(data, context=registries())

    def base_trial(self, seed: int | None = None) -> TrialConfig:
        """The trial the file describes before its search (unsettled): every setting as written, the dataset's own
        where a from_dataset setting is left out; seed: the first of `seeds` unless given."""
        settings = {}
        for declared in dataclasses.fields(self.contract):
            if declared.name == SEED:
                continue
            value = getattr(self, declared.name)
            if value is None and declared.metadata.get("from_dataset"):
                value = getattr(DATASETS[self.dataset], declared.name)
            settings[declared.name] = value
        return self.contract(seed=self.seeds[0] if seed is None else seed, **settings)


# The sweep's own fields around the trial's settings (which sweep_schema makes from the contract), in file order.
WHAT_AND_WHERE = {
    "name": (
        Identifier | None,
        Field(None, description=f"MLflow parent run and Tune experiment folder, {NAME_CHARS}; null: the file's stem"),
    ),
    "dataset": (
        Annotated[str, Registered("train_sets", "a registered training dataset")],
        Field(description="a registered training set: " + ", ".join(n for n, e in DATASETS.items() if e.train_set)),
    ),
    "data_dir": (
        Path | None,
        Field(None, description="folder holding the datasets; null: $FIXRAY_DATA or ~/.cache/fixray/datasets"),
    ),
    "download": (bool, Field(True, description="fetch missing dataset files (needs the internet); false: disk only")),
    "verify": (
        bool,
        Field(
            True,
            description="check files against their publisher's md5 before reading; false: a subset or your own copy",
        ),
    ),
}
MEASURED_AND_RUN = {
    "robustness": (
        RobustnessSpec | None,
        Field(None, description="corrupted test sets measured after training (Table 6)"),
    ),
    "generalisation": (
        Annotated[str, Registered("datasets", "a registered dataset")] | None,
        Field(None, description="a registered test set with the training set's classes (e.g. cifar10.1): gen/acc"),
    ),
    "seeds": (
        list[int],
        Field(default_factory=lambda: [0], min_length=1, description="each configuration runs once per seed"),
    ),
}
RECORDED = {
    "budget": (
        float | None,
        Field(
            None,
            gt=0,
            description="GPU-hours at the compute plan's rate: whole configurations (every seed) launch in the plan's "
            "order while their planned GPU-hours stay within it; the rest are reported as not run, and a rerun with a "
            "larger budget runs them. null: every trial",
        ),
    ),
    "resources": (ResourcesSpec, Field(default_factory=ResourcesSpec, description="Ray resources per trial")),
    "tracking": (TrackingSpec, Field(default_factory=TrackingSpec, description="MLflow")),
    "storage_path": (
        Annotated[str, AfterValidator(_storage_path)] | None,
        Field(
            None,
            description=f"Ray Tune's results and checkpoints (resume reads them): a folder, or on a cluster a bucket "
            f"URI (s3://bucket/prefix, gs://...) or storage every node mounts; no '..'; null: $FIXRAY_STORAGE, "
            f"else {LOCAL_STORAGE}",
        ),
    ),
}


def sweep_schema(contract: type = TrialConfig) -> type[SweepSpecBase]:
    """The sweep file's schema for a trial contract: one field per trial setting (a file lists `seeds` instead of
    `seed`), one search-space entry per searchable setting. Adding a setting to the contract adds it here."""
    names = searchable(contract)
    space = create_model(
        "SearchSpace",
        __base__=SpaceBase,
        __doc__="parameter -> value | [grid values] | {loguniform|uniform: [lo, hi]} | {choice: [...]}",
        **{name: (_searchable_type(name, contract) | None, None) for name in names},
    )
    search = create_model(
        "SearchSpec",
        __base__=SearchSpecBase,
        space=(space, Field(description="searched settings: " + ", ".join(names))),
    )
    search_field = (search, Field(description="how configurations are chosen: method, space, early stopping"))
    schema = create_model(
        "SweepSpec",
        __base__=SweepSpecBase,
        **WHAT_AND_WHERE,
        **contract_fields(contract, leave_out=(SEED,)),
        **MEASURED_AND_RUN,
        search=search_field,
        **RECORDED,
    )
    schema.contract = contract
    return schema


SweepSpec = sweep_schema()


def registries() -> dict[str, Any]:
    """The registries a sweep file's names are checked against (pydantic's validation context, see Registered)."""
    return {
        "models": BACKBONES,
        "head_kinds": HEAD_KINDS,
        "train_sets": {name: entry for name, entry in DATASETS.items() if entry.train_set},
        "datasets": DATASETS,
    }


def section_type(annotation: Any) -> type | None:
    """The model or dataclass behind Annotated[...], X | None, list[...] and tagged unions; None for a value."""
    if isinstance(annotation, type) and (issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation)):
        return annotation
    return next((found for arg in get_args(annotation) if (found := section_type(arg)) is not None), None)
