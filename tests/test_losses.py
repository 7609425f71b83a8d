"""Training objectives on cases whose loss is known by hand."""

import math
from typing import get_args

import pytest
import torch

from fixray.crossing.contract import Loss
from fixray.trial.losses import LOSSES, dot_regression

E1, E2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])


def test_every_loss_a_sweep_file_may_name_is_registered():
    assert set(LOSSES) == set(get_args(Loss))


@pytest.mark.parametrize(
    ("h", "w", "expected"),
    [
        (5 * E1, E1, 0.0),  # along its class vector, at any length: no loss
        (E2, E1, 0.5),  # orthogonal: 1/2 (0 - 1)^2 / 1
        (3 * E2, 2 * E1, 2.0),  # a class vector of norm 2: 1/2 (0 - 2)^2
        (E1 + E2, E1, 0.5 * (1 / math.sqrt(2) - 1) ** 2),  # 45 degrees
        (-E1, E1, 2.0),  # opposite: 1/2 (-1 - 1)^2
    ],
)
def test_dot_regression_is_half_the_squared_gap_between_w_dot_unit_h_and_their_norms(h, w, expected):
    vectors = torch.stack([w, E2])
    found = dot_regression(h[None], torch.zeros(1, 2), torch.tensor([0]), vectors)
    assert found.item() == pytest.approx(expected, abs=1e-6)


def test_dot_regression_reads_only_the_true_class_vector_and_averages_over_images():
    h = torch.stack([E2, E1])
    vectors = torch.stack([E1, E2, -E1])
    one = dot_regression(h, torch.zeros(2, 3), torch.tensor([0, 0]), vectors)  # 0.5 and 0
    assert one.item() == pytest.approx(0.25)
    other = dot_regression(h, torch.zeros(2, 3), torch.tensor([0, 0]), torch.stack([E1, -E2, E2]))
    assert other.item() == one.item()  # the other classes' vectors do not enter
