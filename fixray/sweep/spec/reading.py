"""Reading a sweep file: the limits on what is read (size, values with YAML aliases expanded), YAML parsed as data
(never code), and `extends:` merging a base file under this one; then the checks (checks.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fixray.sweep.spec.checks import Problem, SweepFileError, parse_sweep
from fixray.sweep.spec.schema import SweepSpec, SweepSpecBase

EXTENDS_KEY = "extends"  # a sweep file may extend a base file (path relative to it); its own keys win
MAX_FILE_BYTES = 1 << 20  # a sweep file is a page of settings: 1 MiB is far past any real one
MAX_NODES = 100_000  # values in a parsed sweep file, YAML aliases expanded (no "billion laughs")


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


def load_sweep(file: str | Path, schema: type[SweepSpecBase] = SweepSpec) -> SweepSpecBase:
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
    return parse_sweep(raw, file, schema)
