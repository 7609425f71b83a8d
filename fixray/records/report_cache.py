"""A report printed again from a local store that nothing has written to since: the same text, read back without
importing MLflow (whose client alone costs about 3 s on 2 cores). A SQLite store's files say whether anything was
written (their sizes and modification times); a server says nothing cheaply, so its reports are always read anew."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from fixray.records.location import local_store_path

REPORT_CACHE_DIR = Path("~/.cache/fixray/reports")  # one file per store and question, the newest report of it


def _code_stamp() -> str:
    """The code a report is made by (the records room and its table layouts), and the version of fixray."""
    from fixray import __version__

    digest = hashlib.sha256(__version__.encode())
    folder = Path(__file__).parent
    for path in sorted(folder.glob("*.py")) + sorted(folder.glob("*.yaml")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ReportCache:
    """Where the newest report of one question (store, sweep or table, options) is kept, and the store's state then."""

    path: Path
    store: Path

    @classmethod
    def of(cls, tracking_uri: str, question: list[str]) -> ReportCache | None:
        """None for a store that is not a SQLite file here (a server, a folder of files)."""
        store = local_store_path(tracking_uri)
        if store is None or not tracking_uri.startswith("sqlite:") or not store.is_file():
            return None
        store = store.resolve()
        name = hashlib.sha256(json.dumps([str(store), *question]).encode()).hexdigest()[:32]
        folder = Path(os.environ.get("FIXRAY_REPORT_CACHE") or REPORT_CACHE_DIR).expanduser()
        return cls(folder / f"{name}.json", store)

    def stamp(self) -> list:
        """The store's files as they are now (SQLite's journal and write-ahead log too) and the code."""
        files = [
            self.store,
            self.store.with_name(f"{self.store.name}-wal"),
            self.store.with_name(f"{self.store.name}-journal"),
        ]
        stats = [(f.stat().st_size, f.stat().st_mtime_ns) if f.exists() else None for f in files]
        return [stats, _code_stamp()]

    def read(self) -> str | None:
        """The report kept for this question, if nothing was written to the store since; else None."""
        try:
            kept = json.loads(self.path.read_text())
            return kept["text"] if kept["stamp"] == json.loads(json.dumps(self.stamp())) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, text: str, stamp: list) -> None:
        """Keeps `text`, made from the store as `stamp` (taken before it was read) found it."""
        with contextlib.suppress(OSError):  # a read-only home: read anew next time
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps({"stamp": stamp, "text": text}))
            partial.replace(self.path)
