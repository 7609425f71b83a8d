"""The generated reference pages: every sweep-file key from the schema and the registries, every metric from
its catalogue, so the docs cannot drift from the code.

`python -m fixray.sweep.reference` (or `make reference`) rewrites the sections between the markers in docs/; a test
fails when a page and the code disagree.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import annotated_types as at
from pydantic import BaseModel

from fixray.crossing import metric_keys
from fixray.crossing.contract import field_type, searchable
from fixray.crossing.head_kinds import HEAD_KINDS
from fixray.data.registry import DATASETS
from fixray.sweep.spec.schema import SweepSpec, SweepSpecBase, section_type
from fixray.trial.backbones import BACKBONES

START, END = "<!-- sweep-reference:start -->", "<!-- sweep-reference:end -->"
METRICS_START, METRICS_END = "<!-- metric-reference:start -->", "<!-- metric-reference:end -->"
RULES = {at.Gt: ">", at.Ge: ">=", at.Lt: "<", at.Le: "<=", at.MinLen: "at least {} items"}


def _rules(metadata: list[Any]) -> list[str]:
    rules = []
    for item in metadata:
        for kind, symbol in RULES.items():
            if isinstance(item, kind):
                (value,) = (getattr(item, f.name) for f in dataclasses.fields(item))
                rules.append(symbol.format(value) if "{}" in symbol else f"{symbol} {value:g}")
    return rules


def describe_type(annotation: Any, metadata: list[Any] = ()) -> str:
    """e.g. 'number > 0', 'true/false', 'normal, uniform_int or hadamard', 'list of integer, at least 1 items'."""
    rules = _rules(list(metadata))
    while get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        rules += _rules(extra)
    if get_origin(annotation) in (Union, types.UnionType):
        options = [describe_type(a, metadata) for a in get_args(annotation) if a is not type(None)]
        return " or ".join(options) + (" or null" if type(None) in get_args(annotation) else "")
    if get_origin(annotation) is Literal:
        *first, last = (str(a) for a in get_args(annotation))
        text = f"{', '.join(first)} or {last}" if first else last
    elif get_origin(annotation) is list:
        text = f"list of {describe_type(get_args(annotation)[0])}"
    else:
        names = {bool: "true/false", int: "integer", float: "number", str: "text", Path: "path"}
        text = names.get(
            annotation, "section" if section_type(annotation) else getattr(annotation, "__name__", "value")
        )
    bounds = [r for r in rules if not r.startswith("at least")]
    sizes = [r for r in rules if r.startswith("at least")]
    return ", ".join([f"{text} {', '.join(bounds)}".strip(), *sizes])


def _default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if dataclasses.is_dataclass(value) or isinstance(value, BaseModel) or value is dataclasses.MISSING:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _fields(section: type) -> list[tuple[str, Any, list[Any], Any, str]]:
    """(key, annotation, constraint metadata, default, meaning) of a schema model or a trial dataclass."""
    if issubclass(section, BaseModel):
        rows = []
        for name, info in section.model_fields.items():
            default = info.default_factory() if info.default_factory is not None else info.default
            default = "(required)" if info.is_required() else default
            rows.append((name, info.annotation, info.metadata, default, info.description or ""))
        return rows
    hints = get_type_hints(section, include_extras=True)
    rows = []
    for f in dataclasses.fields(section):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rows.append((f.name, hints[f.name], [], default, f.metadata.get("doc", "")))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a pipe would end the table cell


def _rows(section: type, prefix: str = "") -> list[str]:
    lines = []
    for name, annotation, metadata, default, meaning in _fields(section):
        key = f"{prefix}{name}"
        inner = section_type(annotation)
        if inner is not None and name != "space":
            optional = type(None) in get_args(annotation)
            kind = f"section{' or null' if optional else ''}"
            lines.append(f"| `{key}` | {kind} | {_cell(_default(default))} | {_cell(meaning)} |")
            lines += _rows(inner, f"{key}.")
        else:
            shown = "(required)" if default == "(required)" else _default(default)
            cells = [describe_type(annotation, metadata), shown, meaning]
            lines.append(f"| `{key}` | " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def render(schema: type[SweepSpecBase] = SweepSpec) -> str:
    """docs/sweep-files.md's reference: every key with its type, rule, default and meaning, and what is registered."""
    contract = schema.contract
    searched = ", ".join(f"`{name}` ({describe_type(field_type(name, contract))})" for name in searchable(contract))
    heads = "; ".join(f"`{kind}` reads {', '.join(head.options)}" for kind, head in HEAD_KINDS.items())
    train_sets = ", ".join(f"`{n}`" for n, e in DATASETS.items() if e.train_set)
    test_sets = ", ".join(f"`{n}`" for n, e in DATASETS.items() if not e.train_set)
    lines = [
        START,
        "<!-- generated by `make reference` from fixray/sweep/spec/schema.py, fixray/crossing/contract.py and the "
        "registries -->",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
        *_rows(schema),
        "",
        f"`search.space` searches these settings: {searched}. Each takes a value, a list (a grid: every value "
        "is crossed with everything else), `{choice: [...]}`, or for numbers a range `{loguniform: [lo, hi]}` or "
        "`{uniform: [lo, hi]}` (random and TPE search only); every value obeys the same rule as the setting.",
        "",
        f"Registered backbones (`model`): {', '.join(f'`{b}`' for b in BACKBONES)}. Training sets (`dataset`): "
        f"{train_sets}; test-only sets (`generalisation`): {test_sets}. Head kinds (`head.kind`): {heads}; an "
        "option a kind does not read is logged as `none` and may not be set or searched unless a kind that reads "
        "it is swept.",
        END,
    ]
    return "\n".join(lines)


def render_metrics() -> str:
    """The metrics page's table, from fixray/crossing/metric_keys.py."""
    note = "<!-- generated by `make reference` from fixray/crossing/metric_keys.py: edit that -->"
    return "\n".join([METRICS_START, note, "", metric_keys.reference_table(), METRICS_END])


# Page (relative to the repository root) -> its generated section's markers and what fills it.
PAGES = {
    "docs/sweep-files.md": (START, END, render),
    "docs/measurements.md": (METRICS_START, METRICS_END, render_metrics),
}


def rewrite(root: Path) -> list[str]:
    """Puts each generated section between its page's markers; returns the pages that changed."""
    changed = []
    for page, (start, end, make) in PAGES.items():
        path = root / page
        text = path.read_text()
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        updated = before + make() + after
        if updated != text:
            path.write_text(updated)
            changed.append(page)
    return changed


if __name__ == "__main__":
    changed = rewrite(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print(f"rewrote {', '.join(changed)}" if changed else "the generated reference is current")
