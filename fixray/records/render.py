"""Reports as values, and their renderings: Markdown (MLflow's run notes, piped output), the terminal, HTML.

A report is a list of blocks, each a titled paragraph or a titled table of text cells; the sweep table, the answer
and the paper's tables build these values, and nothing parses a rendering back.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate


@dataclass(frozen=True)
class Paragraph:
    """A line of text with a bold title, e.g. the answer's headline."""

    title: str
    text: str = ""


@dataclass(frozen=True)
class Table:
    """A titled table of text cells; `empty` is what shows in its place when it has no rows."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""  # after the title: units, what a cell holds
    empty: str = "(no rows)"


Block = Paragraph | Table


@dataclass(frozen=True)
class Report:
    """Blocks to print, and the MLflow runs whose figures illustrate them (caption, run), for the HTML page."""

    blocks: list[Block]
    figures: list[tuple[str, Any]] = field(default_factory=list)

    def render(self, style: Callable[[Block], str]) -> str:
        return "\n\n".join(style(block) for block in self.blocks)


def _title(block: Block) -> str:
    note = f" {block.note}" if isinstance(block, Table) and block.note else ""
    return f"**{block.title}**{note}" if block.title else note.strip()


def as_markdown(block: Block) -> str:
    """Pipe tables without padding (diffs stay small); titles in bold."""
    if isinstance(block, Paragraph):
        return f"{_title(block)}: {block.text}" if block.text else _title(block)
    lines = [_title(block), ""] if block.title or block.note else []
    if not block.rows:
        return "\n".join(lines + [block.empty]).strip()
    lines += ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
    lines += ["| " + " | ".join(row) + " |" for row in block.rows]
    return "\n".join(lines)


def as_terminal(block: Block) -> str:
    """Aligned columns for a person at a terminal."""
    if isinstance(block, Paragraph):
        return f"{block.title}: {block.text}" if block.text else block.title
    title = f"{block.title} {block.note}".strip()
    if not block.rows:
        return f"{title}\n{block.empty}".strip()
    table = tabulate(block.rows, headers=block.header, tablefmt="simple", disable_numparse=True)
    return f"{title}\n{table}".strip()


def as_html(block: Block) -> str:
    """Escaped HTML: a paragraph, or a table with its title above it."""
    title = f"<b>{html.escape(block.title)}</b>" if block.title else ""
    if isinstance(block, Paragraph):
        return f"<p>{title}{': ' if block.text else ''}{html.escape(block.text)}</p>"
    caption = f"<p>{title} {html.escape(block.note)}</p>"
    if not block.rows:
        return f"{caption}<p>{html.escape(block.empty)}</p>"
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in block.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
    return f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
