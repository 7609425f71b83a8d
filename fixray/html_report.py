"""A report as one self-contained HTML file: the Markdown tables, then each section's figures inline."""

from __future__ import annotations

import base64
import html
import os
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from fixray.trial import FIGURES_DIR

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a report prints its table, not progress bars


def _table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_to_html(markdown: str) -> str:
    """The subset fixray prints: lines that open with a **bold** title, and pipe tables."""
    parts, rows = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                rows.append(cells)
            continue
        if rows:
            parts.append(_table(rows))
            rows = []
        if line.strip():
            title, _, rest = line.strip().removeprefix("**").partition("**")
            parts.append(
                f"<p><b>{html.escape(title)}</b>{html.escape(rest)}</p>"
                if rest or line.startswith("**")
                else f"<p>{html.escape(line)}</p>"
            )
    return "\n".join(parts)


def run_figures(client: MlflowClient, run) -> dict[str, bytes]:
    """The PNG figures a child run holds as MLflow artifacts (none for runs that diverged)."""
    names = [a.path for a in client.list_artifacts(run.info.run_id, FIGURES_DIR)]
    if not names:
        return {}
    with tempfile.TemporaryDirectory() as folder:
        local = Path(client.download_artifacts(run.info.run_id, FIGURES_DIR, folder))
        return {path.name: path.read_bytes() for path in sorted(local.glob("*.png"))}


def html_page(markdown: str, sections: list[tuple[str, dict[str, bytes]]]) -> str:
    figures = []
    for caption, pngs in sections:
        images = "".join(
            f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            for name, png in pngs.items()
        )
        figures.append(f"<section><h3>{html.escape(caption)}</h3>{images}</section>")
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:4px 8px}img{width:32%;margin:0.5%}"
    )
    head = f"<head><meta charset='utf-8'><title>fixray report</title><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{markdown_to_html(markdown)}{''.join(figures)}</body></html>"
