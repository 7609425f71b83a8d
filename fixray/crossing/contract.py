"""The trial contract: what crosses from the sweep driver to a trial, nested like the sweep file, flat for Tune and
MLflow and back.

The driver settles each trial's config once (head-kind defaults resolved) and sends it in the trial's Tune config
under TRIAL_KEY; the trial reads it back with `from_params` and trusts it. Plain frozen dataclasses: the loop
imports neither pydantic nor yaml, nor (through this module) torch; the sweep schema (sweep/spec/schema.py) is made
from these same types and pydantic enforces the `annotated_types` rules written on their fields. Each field is one
setting's only declaration (see `doc`).
"""

from __future__ import annotations

import dataclasses
import functools
import types
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from annotated_types import Ge, Gt, Le, Lt

from fixray.crossing.head_kinds import HEAD_KINDS, Margin, VectorDraw

# Sections of a sweep file are validated as these dataclasses: unknown keys and NaN/inf are errors.
SECTION_CONFIG = {"extra": "forbid", "allow_inf_nan": False}

LearningRate = Annotated[float, Gt(0)]
Epochs = Annotated[int, Ge(1)]
BatchSize = Annotated[int, Ge(1)]
Scale = Annotated[float, Gt(0)]
NonNegative = Annotated[float, Ge(0)]
Interval = Annotated[int, Ge(1)]
Every = Annotated[int, Ge(0)]  # epochs between measurements; 0: never
# The training objective; each is a function in losses.py under this name.
Loss = Literal["cross_entropy", "dot_regression"]

# In each trial's Tune config, what the driver sends: {"config": the settled config as flat params, "run_name": its
# MLflow run name, "identity": what it computes, hashed}. Read with sent_params, sent_run_name and sent_identity.
TRIAL_KEY = "trial"
# What a trial reports beside its metrics, and where its checkpoint keeps its figures: read by the driver.
NODES_KEY, RESOURCES_KEY = "node_ids", "resources"  # in each result: where the trial trains (Ray node ids)
FIGURES_DIR = "figures"  # in a trial's last checkpoint, and the artifact folder of its child run


def doc(
    text: str,
    default: Any = dataclasses.MISSING,
    *,
    flat: str | None = None,
    searchable: bool = False,
    from_dataset: bool = False,
    **kwargs,
) -> Any:
    """A setting's one declaration: its meaning (for the sweep-file reference), its flat MLflow name if not its own,
    whether a sweep may search it, and whether a sweep file that leaves it out takes the dataset's own value."""
    metadata = {"doc": text, "searchable": searchable, "from_dataset": from_dataset} | ({"flat": flat} if flat else {})
    return field(default=default, metadata=metadata, **kwargs)


@dataclass(frozen=True)
class Registered:
    """A name that must be in one of the driver's registries (backbones, head kinds, datasets), checked where the
    sweep file is validated: the schema passes the registries as pydantic's validation context, so this module
    imports neither pydantic nor a registry that loads torch."""

    registry: str  # the key of the registry in the validation context
    what: str  # e.g. 'a registered model', for the message

    def check(self, name: Any, info: Any) -> Any:
        """The name itself, or ValueError listing what is registered."""
        registry = (info.context or {}).get(self.registry)
        if registry is None:
            raise ValueError(f"{self.what} (validated without the {self.registry} registry)")
        if name not in registry:
            raise ValueError(f"{self.what}: {', '.join(sorted(registry))}")
        return name

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> dict[str, Any]:
        # pydantic-core's after-validator schema (core_schema.with_info_after_validator_function), written as the
        # plain dict it is so that a trial process never imports pydantic.
        return {
            "type": "function-after",
            "function": {"type": "with-info", "function": self.check},
            "schema": handler(source),
        }


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD as in the authors' public code."""

    __pydantic_config__ = SECTION_CONFIG
    momentum: Annotated[float, Ge(0), Lt(1)] = doc("SGD momentum, dimensionless", 0.9, searchable=True)
    nesterov: bool = doc("Nesterov momentum (only with momentum > 0)", True)
    weight_decay: NonNegative | None = doc(
        "L2 coefficient; null: the head kind's default (dot 5e-4, cosine 0: the authors'); a learned S is not decayed",
        None,
        searchable=True,
    )


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule; `plateau` watches test accuracy as the authors' code does."""

    __pydantic_config__ = SECTION_CONFIG
    kind: Literal["plateau", "cosine", "none"] = doc(
        "plateau (ReduceLROnPlateau on test accuracy), cosine or none", "plateau", flat="schedule"
    )
    factor: Annotated[float, Gt(0), Lt(1)] = doc(
        "plateau: LR multiplier when accuracy stalls", 0.2, flat="plateau_factor"
    )
    patience: Annotated[int, Ge(0)] = doc(
        "plateau: epochs without improvement before the LR drops", 3, flat="plateau_patience"
    )
    threshold_mode: Literal["abs", "rel"] = doc(
        "plateau: abs (the authors'): an epoch improves when test accuracy in percent rises by over 1e-4",
        "abs",
        flat="plateau_threshold_mode",
    )


@dataclass(frozen=True)
class HeadConfig:
    """The classification head; which options a kind reads is its declaration's to say (head_kinds.py)."""

    __pydantic_config__ = SECTION_CONFIG
    kind: Annotated[str, Registered("head_kinds", "a registered head kind")] = doc(
        f"head kind, a registered one: {', '.join(HEAD_KINDS)}", "dot", searchable=True
    )
    fixed: bool = doc("true: class vectors (and bias) drawn once and frozen; false: learned", False, searchable=True)
    bias: bool | None = doc(
        "a bias per class; null: the head kind's default (dot: yes, cosine: no)", None, searchable=True
    )
    init: VectorDraw = doc(
        "how class vectors are drawn (fixed, or the start of learned ones): normal, uniform_int (the authors'), "
        "hadamard, etf (simplex ETF), orthoplex (+-e_i), cube (hypercube vertices)",
        "normal",
        searchable=True,
    )
    draw_seed: int | None = doc(
        "seeds the class-vector draw apart from the weights, so a sweep can hold one and vary the other; null (logged "
        "as none): the trial's seed, which then varies both",
        None,
        searchable=True,
    )
    dim: Annotated[int, Ge(1)] | None = doc(
        "width of the image vectors the class vectors live in: null, the backbone's; a number, a learned linear layer "
        "first projects f(x) to it (Pernici et al. set it to their polytope's own d: K-1 for etf, ceil(K/2) for "
        "orthoplex, ceil(log2 K) for cube); the measurements then see the projected vectors",
        None,
        searchable=True,
    )
    S: Scale = doc("cosine scale S: logits = S * cos(w_j, f(x))", 1.0, searchable=True)
    learn_S: bool = doc("cosine: S becomes a trained parameter starting at S", False)
    margin: Margin = doc("cosine: additive margin on the true class, in training only", "none", searchable=True)
    m: NonNegative = doc("the margin: cosine units (cosface) or radians (arcface)", 0.0, searchable=True)

    def settled(self) -> HeadConfig:
        """Options this kind does not read back at their defaults, bias resolved: one config per distinct head."""
        head = HEAD_KINDS[self.kind]
        unused = {
            f.name: f.default for f in dataclasses.fields(self) if f.name not in head.options and f.name != "kind"
        }
        return dataclasses.replace(self, **unused, bias=head.default_bias if self.bias is None else self.bias)

    def options(self) -> dict[str, Any]:
        """The options this kind reads, by name, as its constructor takes them."""
        settled = self.settled()
        return {name: getattr(settled, name) for name in HEAD_KINDS[self.kind].options}

    def label(self, digits: int = 6) -> str:
        """e.g. 'cosine-fixed-S10', 'dot-learned': kind, fixed or learned, and the options the kind shows (numbers to
        `digits` significant digits); a head behind a learned projection says so ('-proj64'): its class vectors are
        not fixed in the backbone's space."""
        settled = self.settled()
        shown = "".join(f"-{name}{getattr(settled, name):.{digits}g}" for name in HEAD_KINDS[self.kind].shown)
        projected = f"-proj{self.dim}" if self.dim is not None else ""
        return f"{self.kind}-{'fixed' if self.fixed else 'learned'}{shown}{projected}"


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation, applied per image to each batch; left out, the dataset's standard one."""

    __pydantic_config__ = SECTION_CONFIG
    crop_padding: Annotated[int, Ge(0)] = doc("pixels of zero padding before a random crop back to size; 0: no crop", 0)
    flip: bool = doc("random horizontal flip with probability 1/2", False)


@dataclass(frozen=True)
class LongTail:
    """A long-tailed training set (CIFAR-10/100-LT as Cao et al. 2019 build them): class c keeps
    n_max * ratio^(c/(K-1)) of its images, chosen by a seeded shuffle; the test set is untouched."""

    __pydantic_config__ = SECTION_CONFIG
    ratio: Annotated[float, Gt(0), Le(1)] | None = doc(
        "n_min / n_max: the last class keeps this share of the largest (0.01: CIFAR-10-LT's); 1 or null: the whole set",
        None,
        flat="long_tail_ratio",
        searchable=True,
    )
    seed: int = doc(
        "which images each class keeps (a seeded shuffle), the same for every trial", 0, flat="long_tail_seed"
    )


@dataclass(frozen=True)
class TrialConfig:
    """One training run: the model, the recipe and the head, all the loop reads and nothing more."""

    model: Annotated[str, Registered("models", "a registered model")] = doc(
        "backbone, a registered one (fixray/trial/backbones.py)", searchable=True
    )
    epochs: Epochs = doc("passes over the training set")
    seed: int = doc("seeds the weights, the class-vector draw, the shuffle and the augmentation")
    pooling: Literal["global", "authors"] = doc(
        "global: average over the whole feature map; authors: avg_pool2d(4) then flatten (ResNet18: 512-d at 32 px, "
        "2048 at 64, 4608 at 96)",
        "global",
    )
    standardise_features: bool = doc(
        "false: the pooled features as the backbone's last ReLU leaves them, all >= 0 (the authors'); true: each "
        "standardised by its batch statistics (a batch norm with no learned scale or shift), the last layer every "
        "head shares, so class vectors with negative entries (Hadamard, cube, orthoplex) can win and a fixed head "
        "stays fixed",
        False,
        searchable=True,
    )
    normalisation: Literal["dataset", "authors"] = doc(
        "dataset: per-channel mean and std of the training images; authors: (x - 0.5) / 0.5", "dataset"
    )
    batch_size: BatchSize = doc("images per optimiser step (per worker under DDP)", 128)
    lr: LearningRate = doc("initial learning rate", 0.1, searchable=True)
    loss: Loss = doc(
        "cross_entropy on the logits, or dot_regression (Yang et al. 2022: 1/2 (w_y.h - ||w_y|| ||h||)^2 / ||h|| on "
        "unit image vectors h, pulling each toward its class vector; fixed heads only, as a learned head would move "
        "its vectors instead)",
        "cross_entropy",
        searchable=True,
    )
    nc_train_every: Every = doc(
        "epochs between neural-collapse measurements on the training set (one forward pass over it, unaugmented, "
        "logged as train/nc1 ...) and at the last epoch; 0: never (the test split is measured every epoch)",
        0,
    )
    optimizer: OptimizerConfig = doc("SGD settings", default_factory=OptimizerConfig)
    schedule: ScheduleConfig = doc("learning-rate schedule", default_factory=ScheduleConfig)
    head: HeadConfig = doc("the classification head", default_factory=HeadConfig)
    augmentation: Augmentation = doc(
        "training-time augmentation; left out of a sweep file: the dataset's standard one",
        default_factory=Augmentation,
        from_dataset=True,
    )
    long_tail: LongTail = doc("the training set: whole, or long-tailed", default_factory=LongTail)

    def settled(self) -> TrialConfig:
        """Defaults that depend on the head kind resolved (bias, weight decay), unread head options reset: the
        planner's one call per trial; every later stage takes the result as it is."""
        decay = self.optimizer.weight_decay
        decay = HEAD_KINDS[self.head.kind].default_weight_decay if decay is None else decay
        optimizer = dataclasses.replace(self.optimizer, weight_decay=decay)
        return dataclasses.replace(self, head=self.head.settled(), optimizer=optimizer)


@dataclass(frozen=True)
class Execution:
    """How the loop runs on its device: speed, not the science (bf16 changes rounding, never the recipe)."""

    checkpoint_every: Interval = doc(
        "epochs between a trial's checkpoints, its last epoch always having one: a retried or resumed trial redoes "
        "at most this many minus one epochs (MLflow still holds each once); each is the model and optimiser state "
        "(about 90 MB for ResNet18, to shared storage on a cluster)",
        5,
    )
    channels_last: bool = doc(
        "images and weights in channels-last memory order: faster convolutions on a GPU's tensor cores, and on the "
        "CPU too (measured: benchmarks/gpu.py --device cpu --quick)",
        True,
    )
    bf16: bool | None = doc(
        "bfloat16 autocast for forward passes; null: on with a GPU, off on a CPU (fast only where the CPU has bf16 "
        "instructions: measure with benchmarks/gpu.py --device cpu --quick)",
        None,
    )
    compile: bool = doc(
        "torch.compile the training forward pass (CUDA graphs on a GPU): faster steps after a compile of about a "
        "minute per trial; off until benchmarks/gpu.py measures it faster on your GPU",
        False,
    )

    def on(self, device_type: str) -> Execution:
        """The settings left to the device (null) chosen for `device_type` ('cuda', 'cpu')."""
        return dataclasses.replace(self, bf16=device_type == "cuda" if self.bf16 is None else self.bf16)


# The Execution settings that change a trial's arithmetic (a replay must use the same): each child run logs them.
REPLAYED_EXECUTION = ("channels_last", "bf16", "compile")


@dataclass(frozen=True)
class TrialResources:
    """What every trial of a sweep takes from the Ray cluster and how its loop runs: sent once, with the trainable."""

    workers: int = 1  # DDP workers per trial; > 1 runs the trial through a Ray Train TorchTrainer
    cpus: float = 1.0  # CPU cores per worker (also its torch threads)
    gpus: float = 0.0  # GPUs per worker; below 1, packed trials, each bounded to its share of GPU memory
    execution: Execution = Execution()
    storage: str = ""  # the sweep's storage root (a folder or bucket URI): attempt numbers and DDP checkpoints go there
    sweep: str = ""  # the sweep's name: its folder in the storage; a DDP trainer's run is named after it and its trial


@functools.cache
def flat_paths(cls: type | None = None) -> dict[str, tuple[str, ...]]:
    """Flat name (MLflow param, search-space key) -> path of attribute names in a trial contract (TrialConfig)."""
    return _flat_paths(cls or TrialConfig)


def _flat_paths(cls: type, prefix: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    paths: dict[str, tuple[str, ...]] = {}
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            paths |= _flat_paths(hints[f.name], prefix + (f.name,))
        else:
            paths[f.metadata.get("flat", f.name)] = prefix + (f.name,)
    return paths


def _section_of(flat: str, cls: type | None) -> tuple[type, str]:
    """The dataclass (TrialConfig or one of its sections) that declares a flat setting, and the field's name there."""
    owner: type = cls or TrialConfig
    *sections, name = flat_paths(owner)[flat]
    for section in sections:
        owner = get_type_hints(owner)[section]
    return owner, name


def declaration(flat: str, cls: type | None = None) -> dataclasses.Field:
    """The dataclass field that declares a flat setting (its default, meaning and flags)."""
    owner, name = _section_of(flat, cls)
    return {f.name: f for f in dataclasses.fields(owner)}[name]


@functools.cache
def searchable(cls: type | None = None) -> tuple[str, ...]:
    """What a sweep may search, in declaration order: the settings whose effect is the question (declared with
    searchable=True), not the run's bookkeeping."""
    return tuple(flat for flat in flat_paths(cls) if declaration(flat, cls).metadata["searchable"])


FLAT_PATHS: dict[str, tuple[str, ...]] = flat_paths(TrialConfig)
SEARCHABLE: tuple[str, ...] = searchable(TrialConfig)


@functools.cache
def field_type(flat: str, cls: type | None = None) -> Any:
    """The annotated type of a flat setting, with its rules (e.g. Annotated[float, Gt(0)] for lr)."""
    owner, name = _section_of(flat, cls)
    return get_type_hints(owner, include_extras=True)[name]


def with_values(cfg: TrialConfig, values: dict[str, Any]) -> TrialConfig:
    """cfg with settings replaced by flat name (e.g. {'lr': 0.01, 'S': 10})."""
    paths = flat_paths(type(cfg))
    for flat, value in values.items():
        cfg = _replace_at(cfg, paths[flat], value)
    return cfg


def _replace_at(obj: Any, path: tuple[str, ...], value: Any) -> Any:
    head, *rest = path
    return dataclasses.replace(obj, **{head: _replace_at(getattr(obj, head), tuple(rest), value) if rest else value})


def require_settled(cfg: TrialConfig) -> TrialConfig:
    """cfg itself, or ValueError if its head-kind defaults are unresolved (call cfg.settled() first)."""
    if cfg.head.bias is None or cfg.optimizer.weight_decay is None:
        raise ValueError("a trial takes a settled config: pass cfg.settled() (head-kind defaults resolved)")
    return cfg


def to_params(cfg: TrialConfig) -> dict[str, Any]:
    """Every setting of a settled config under its flat name; options its head kind does not read are None."""
    require_settled(cfg)
    used = HEAD_KINDS[cfg.head.kind].options
    params = {}
    for flat, path in flat_paths(type(cfg)).items():
        value: Any = cfg
        for name in path:
            value = getattr(value, name)
        params[flat] = None if path[0] == "head" and path[-1] not in used and path[-1] != "kind" else value
    return params


def from_params(params: dict[str, Any], cls: type | None = None) -> TrialConfig:
    """The config `to_params` flattened, rebuilt as it was (None: an option the head kind does not read, at its
    default). What a trial does with the flat config the driver sent it: a decode, never a plan."""
    cls = cls or TrialConfig
    nested: dict[str, Any] = {}
    for flat, value in params.items():
        if value is None:
            continue
        *sections, name = flat_paths(cls)[flat]
        node = nested
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = value
    return _build(cls, nested)


def sent_params(tune_config: dict[str, Any]) -> dict[str, Any]:
    """The settled config the driver sent a trial, as flat params (from_params rebuilds it)."""
    return tune_config[TRIAL_KEY]["config"]


def sent_run_name(tune_config: dict[str, Any]) -> str:
    """The MLflow run name the driver gave a trial."""
    return tune_config[TRIAL_KEY]["run_name"]


def sent_identity(tune_config: dict[str, Any]) -> str | None:
    """What the trial computes, as the driver hashed it (None: a trial planned before identities were sent)."""
    return tune_config[TRIAL_KEY].get("identity")


def sent_resume(tune_config: dict[str, Any]) -> str | None:
    """The checkpoint an earlier Tune experiment of the sweep left the trial (a path on the sweep storage's
    filesystem), where Tune holds none of it; None: it starts from its first epoch."""
    return tune_config[TRIAL_KEY].get("resume")


def _build(cls: type, values: dict[str, Any]) -> Any:
    hints = get_type_hints(cls)
    return cls(**{k: _build(hints[k], v) if dataclasses.is_dataclass(hints[k]) else v for k, v in values.items()})


def base_type(annotation: Any) -> Any:
    """int, float, bool or str behind Annotated[...], X | None and Literal[...]."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
        return base_type(annotation)
    if get_origin(annotation) is Literal:
        return type(get_args(annotation)[0])
    return annotation
