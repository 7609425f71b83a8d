"""README is a front door and docs/ holds the rest: README stays short, every sweep example in any page validates,
every link between pages leads somewhere, and the generated references match the code."""

import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from fixray.sweep.reference import PAGES
from fixray.sweep.spec.checks import parse_sweep

PAGES_MD = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")  # a link's file, its #anchor left aside


def _sweep_examples():
    for page in PAGES_MD:
        for number, block in enumerate(YAML_BLOCK.findall(page.read_text()), start=1):
            found = yaml.safe_load(block)
            if isinstance(found, dict) and "search" in found:  # a sweep file (paper.md also shows a table block)
                yield pytest.param(page, found, id=f"{page.name}-{number}")


def test_readme_is_at_most_300_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_there_are_sweep_examples_to_check():
    assert len(list(_sweep_examples())) >= 2


@pytest.mark.parametrize("page, sweep", list(_sweep_examples()))
def test_every_sweep_example_in_every_page_validates(page, sweep):
    spec = parse_sweep(sweep, Path(f"{page.stem}-example.yaml"))
    assert spec.name not in {"quickstart", "readme"}, "an example must not resume a sweep the project runs itself"


@pytest.mark.parametrize("page", PAGES_MD, ids=lambda page: page.name)
def test_every_link_to_a_file_leads_to_one(page):
    for target in LINK.findall(page.read_text()):
        if "://" not in target:
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


@pytest.mark.parametrize("page", list(PAGES))
def test_each_generated_reference_is_the_one_the_code_makes(page):
    start, end, make = PAGES[page]
    assert make() in (ROOT / page).read_text(), f"{page}'s generated section is stale: run `make reference`"
