"""A report as one self-contained HTML file: its tables, then each section's figures inline."""

from __future__ import annotations

import base64
import html
import os
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from fixray.crossing.contract import FIGURES_DIR
from fixray.records.render import Report, as_html

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a report prints its table, not progress bars
STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #bbb;padding:4px 8px}img{width:32%;margin:0.5%}"
)


def run_figures(client: MlflowClient, run) -> dict[str, bytes]:
    """The PNG figures a run holds as MLflow artifacts (none for runs that diverged)."""
    names = [a.path for a in client.list_artifacts(run.info.run_id, FIGURES_DIR)]
    if not names:
        return {}
    with tempfile.TemporaryDirectory() as folder:
        local = Path(client.download_artifacts(run.info.run_id, FIGURES_DIR, folder))
        return {path.name: path.read_bytes() for path in sorted(local.glob("*.png"))}


def html_page(report: Report, tracking_uri: str) -> str:
    """The report's blocks, then each of its runs' figures under its caption (the run's name beside it)."""
    client = MlflowClient(tracking_uri)
    sections = []
    for caption, run in report.figures:
        images = "".join(
            f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            for name, png in run_figures(client, run).items()
        )
        title = f"{caption} (run {run.info.run_name})"
        sections.append(f"<section><h3>{html.escape(title)}</h3>{images}</section>")
    head = f"<head><meta charset='utf-8'><title>fixray report</title><style>{STYLE}</style></head>"
    return f"<!doctype html><html>{head}<body>{report.render(as_html)}{''.join(sections)}</body></html>"
