"""Where a local tracking store lives, asked before MLflow is imported (a report printed again from an unchanged
store, the folder MLflow's UI is started in)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse


def local_store_path(tracking_uri: str) -> Path | None:
    """The file or folder a local store lives in (sqlite:///x.db, file:./mlruns, ./mlruns); None for servers."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme == "file" else tracking_uri)
    return None
