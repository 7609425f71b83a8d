import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

GOOD_SWEEP = """\
name: tiny
dataset: digits
model: small_cnn
epochs: 2
batch_size: 64
seeds: [0]
search:
  method: grid
  space:
    fixed: [true, false]
"""


@pytest.fixture
def write_sweep(tmp_path):
    """Writes a sweep file into the test's folder and returns its path."""

    def write(text: str, name: str = "sweep.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write
