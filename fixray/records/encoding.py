"""MLflow's strings, both ways: a setting as a param string and back to its type, a value as a filter literal, and
which reported keys are metrics of fixray's (the metric catalogue says) rather than Ray Tune's bookkeeping."""

from __future__ import annotations

from typing import Any

from fixray.crossing import metric_keys as keys
from fixray.crossing.contract import FLAT_PATHS, base_type, field_type


def param_value(value: Any) -> str:
    """MLflow params are strings; None (e.g. S of a dot-product head) is logged as 'none'."""
    return "none" if value is None else str(value)


def read_params(params: dict[str, str]) -> dict[str, Any]:
    """MLflow's string params back to typed values ('True' -> True, '0.1' -> 0.1, 'none' -> None); others stay str."""
    return {name: _parse(field_type(name), text) if name in FLAT_PATHS else text for name, text in params.items()}


def _parse(annotation: Any, text: str) -> Any:
    if text == "none":
        return None
    base = base_type(annotation)
    if base is bool:
        return {"True": True, "False": False}.get(text, text)
    if base in (int, float):
        try:
            return base(text)
        except ValueError:
            return text
    return text


def quoted(value: str) -> str:
    """A string literal for an MLflow filter: single quotes, or double quotes around a value holding a single one."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise ValueError(f"{value!r} holds both quote characters, which no MLflow filter string can compare against")


def is_tracked_metric(key: str, value: Any) -> bool:
    """fixray's own metrics, as the metric catalogue declares them; Ray Tune's bookkeeping (pid, timestamp, ...)
    stays out of MLflow."""
    return keys.declared(key) is not None and isinstance(value, (int, float)) and not isinstance(value, bool)
