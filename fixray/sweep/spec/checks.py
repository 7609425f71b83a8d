"""A sweep file's checks: every problem at once, each located by its key path. The schema's own (types, rules,
registered names) come from pydantic; the rules that read several settings together are the functions in CHECKS,
each asking the spec for the values a setting takes. Adding a rule is one function here, listed in CHECKS.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import BaseModel, ValidationError

from fixray.crossing.contract import HeadConfig, flat_paths
from fixray.crossing.head_kinds import DRAW_RULES, HEAD_KINDS
from fixray.data.corruptions import MIN_SIZE
from fixray.data.registry import DATASETS
from fixray.errors import BadInput
from fixray.sweep.defaults import default_storage, default_tracking_uri
from fixray.sweep.methods import SEARCH_METHODS
from fixray.sweep.spec.schema import (
    SweepSpec,
    SweepSpecBase,
    _identifier,
    _storage_path,
    registries,
    section_type,
)
from fixray.trial.backbones import feature_dim


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


# --- the schema's problems, as key paths ------------------------------------------------------------------


def _key_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, str) and part.startswith("<"):
            continue  # a union tag, not a key
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _keys_at(schema: type, loc: tuple[Any, ...]) -> list[str]:
    """The keys the schema knows at a location (for 'unknown key' messages)."""
    node: Any = schema
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


def _pydantic_problems(schema: type, error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            try:
                allowed = ", ".join(_keys_at(schema, loc[:-1]))
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


# --- rules that read several settings together ------------------------------------------------------------


def _where(spec: SweepSpecBase, flat: str) -> str:
    """The key path that sets a setting's values in this file: its search-space entry, or its own key."""
    return f"search.space.{flat}" if spec.values(flat).searched else ".".join(flat_paths(spec.contract)[flat])


def head_option_problems(spec: SweepSpecBase) -> list[Problem]:
    """Head options set or searched where no swept head kind reads them (asked of the head kinds' declarations)."""
    kinds = [HEAD_KINDS[kind] for kind in spec.values("kind").listed]
    defaults = {f.name: f.default for f in dataclasses.fields(HeadConfig)}
    searched = spec.searched()
    problems = []
    for name, path in flat_paths(spec.contract).items():
        if path[0] != "head" or name == "kind" or any(name in kind.options for kind in kinds):
            continue
        who = " or ".join(h.name for h in HEAD_KINDS.values() if name in h.options) + " heads"
        if name in searched:
            expected = f"no {name} search unless {who} are swept ({name} applies to {who} only)"
            problems.append(Problem(f"search.space.{name}", spec.search.space.parameters()[name], expected))
        value = getattr(spec.head, path[-1])
        if value != defaults[path[-1]]:
            problems.append(
                Problem(f"head.{name}", value, f"{name} left at {defaults[name]!r}: it applies to {who} only")
            )
    return problems


def method_problems(spec: SweepSpecBase) -> list[Problem]:
    """Ranges only where the search method draws."""
    if spec.search.search_method.draws:
        return []
    methods = " or ".join(name for name, method in SEARCH_METHODS.items() if method.draws)
    return [
        Problem(
            f"search.space.{name}",
            spec.search.space.parameters()[name],
            f"a list of grid values (ranges need search.method {methods})",
        )
        for name, values in spec.searched().items()
        if values.bounds is not None
    ]


def image_vector_problems(spec: SweepSpecBase) -> list[Problem]:
    """Backbones whose pooled map would be empty, and class-vector draws that need more dimensions than the image
    vectors have (each draw declares what it needs, head_kinds.DRAW_RULES)."""
    dataset = DATASETS[spec.dataset]
    problems = []
    for model in spec.values("model").listed:
        try:
            width = feature_dim(model, dataset.input_spec, spec.pooling)
        except ValueError as error:
            problems.append(Problem("pooling", spec.pooling, f"a pooling {model} can apply: {error}"))
            continue
        for projected, draw in itertools.product(spec.values("dim").listed, spec.values("init").listed):
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
                problems.append(Problem(_where(spec, "init"), draw, expected))
    return problems


def loss_problems(spec: SweepSpecBase) -> list[Problem]:
    """Dot regression pulls image vectors toward class vectors that must stay put: a learned head would move its
    vectors toward the images instead (nothing keeps classes apart), so it trains fixed heads only; and Yang et al.
    define it for a simplex ETF, whose equal angles its equal pull relies on."""
    if "dot_regression" not in spec.values("loss").listed:
        return []
    problems = []
    fixed, init = spec.values("fixed"), spec.values("init")
    if False in fixed.listed:
        value = list(fixed.listed) if fixed.searched else fixed.listed[0]
        expected = "true with loss dot_regression (it trains fixed class vectors only): compare learned heads in a "
        problems.append(Problem(_where(spec, "fixed"), value, expected + "sweep of their own, with cross_entropy"))
    if set(init.listed) != {"etf"}:
        value = list(init.listed) if init.searched else init.listed[0]
        expected = "etf with loss dot_regression (Yang et al. 2022 define it for a fixed simplex ETF; with "
        expected += (
            "standardise_features: true for the batch norm they apply before it): other draws with cross_entropy"
        )
        problems.append(Problem(_where(spec, "init"), value, expected))
    return problems


def draw_seed_problems(spec: SweepSpecBase) -> list[Problem]:
    """Searching head.draw_seed where every draw searched is one construction (hadamard, orthoplex, cube) would train
    the same trial under several names."""
    seeds, draws = spec.values("draw_seed"), spec.values("init").listed
    several = seeds.bounds is not None or len(seeds.listed) > 1
    if not several or any(DRAW_RULES[draw].random for draw in draws):
        return []
    expected = f"one draw_seed with {', '.join(draws)} class vectors, which do not depend on it (a random draw does)"
    return [Problem(_where(spec, "draw_seed"), list(seeds.listed) or seeds.bounds, expected)]


def budget_problems(spec: SweepSpecBase) -> list[Problem]:
    """A budget admits planned trials in order: a method that draws as it runs plans none in advance."""
    if spec.budget is None or spec.search.search_method.plans_ahead:
        return []
    expected = (
        f"no budget with search.method {spec.search.method} (it draws trials as it runs): bound it by "
        "search.num_samples"
    )
    return [Problem("budget", spec.budget, expected)]


def size_problems(spec: SweepSpecBase) -> list[Problem]:
    bound = spec.trials_bound()
    if bound <= spec.search.max_trials:
        return []
    expected = (
        f"at most search.max_trials = {spec.search.max_trials} trials (grid values x draws x seeds); "
        "shrink the search, or raise search.max_trials if you mean it"
    )
    return [Problem("search", f"{bound} trials", expected)]


def robustness_problems(spec: SweepSpecBase) -> list[Problem]:
    """imagecorruptions' functions need images of at least MIN_SIZE pixels a side."""
    size = DATASETS[spec.dataset].image_size
    if spec.robustness is None or size >= MIN_SIZE:
        return []
    expected = f"no robustness test on {size}x{size} images (imagecorruptions needs at least {MIN_SIZE}x{MIN_SIZE})"
    return [Problem("robustness", spec.robustness.model_dump(), expected)]


# Run on a spec the schema admitted, in this order; the last three only when the first three found nothing.
CHECKS: tuple[Callable[[SweepSpecBase], list[Problem]], ...] = (
    robustness_problems,
    head_option_problems,
    method_problems,
)
CHECKS_ON_A_SOUND_SPEC: tuple[Callable[[SweepSpecBase], list[Problem]], ...] = (
    image_vector_problems,
    loss_problems,
    draw_seed_problems,
    size_problems,
    budget_problems,
)


def parse_sweep(raw: Any, file: Path, schema: type[SweepSpecBase] = SweepSpec) -> SweepSpecBase:
    """Validates an already-parsed sweep document; raises SweepFileError listing every problem."""
    if not isinstance(raw, dict):
        raise SweepFileError(
            file, [Problem("(top level)", raw, "a mapping of sweep settings (dataset, model, epochs, search, ...)")]
        )
    try:
        spec = schema.model_validate(raw, context=registries())
    except ValidationError as error:
        raise SweepFileError(file, _pydantic_problems(schema, error)) from None
    problems = [problem for check in CHECKS for problem in check(spec)]
    if not problems:
        problems = [problem for check in CHECKS_ON_A_SOUND_SPEC for problem in check(spec)]
    if spec.name is None:
        try:
            spec = spec.model_copy(update={"name": _identifier(file.stem)})
        except ValueError as error:
            problems.append(Problem("name", None, f"{error}: the file's stem {file.stem!r} is not one, so set name:"))
    if spec.storage_path is None:
        try:
            spec = spec.model_copy(update={"storage_path": _storage_path(default_storage())})
        except ValueError as error:
            problems.append(Problem("storage_path", str(default_storage()), f"{error} (from $FIXRAY_STORAGE)"))
    if spec.tracking.uri is None:
        spec = spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"uri": default_tracking_uri()})})
    if problems:
        raise SweepFileError(file, problems)
    return spec
