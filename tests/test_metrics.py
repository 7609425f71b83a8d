"""The paper's measurements on hand-built cases whose answers are known."""

import math

import pytest
import torch

from fixray.trial import metrics


def test_accuracy_counts_top1_hits():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0], [0.0, 1.0]])
    assert metrics.accuracy(logits, torch.tensor([0, 1, 1, 1])) == pytest.approx(0.75)


def test_compactness_is_one_for_perfect_alignment_and_zero_for_orthogonal():
    vectors = torch.eye(3)
    predictions = torch.tensor([0, 1, 2, 2])
    aligned = vectors[predictions] * torch.tensor([[0.5], [2.0], [7.0], [1.0]])
    assert metrics.compactness(aligned, vectors, predictions) == pytest.approx(1.0)
    orthogonal = vectors[(predictions + 1) % 3]
    assert metrics.compactness(orthogonal, vectors, predictions) == pytest.approx(0.0, abs=1e-7)


def test_compactness_uses_the_predicted_class_vector():
    vectors = torch.eye(2)
    features = torch.tensor([[1.0, 0.0]])
    assert metrics.compactness(features, vectors, torch.tensor([0])) == pytest.approx(1.0)
    assert metrics.compactness(features, vectors, torch.tensor([1])) == pytest.approx(0.0, abs=1e-7)


def test_separability_of_a_regular_simplex():
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    vectors = torch.stack([angles.cos(), angles.sin()], dim=1) * 3
    cosines = metrics.class_cosine_matrix(vectors)
    assert torch.allclose(cosines.diagonal(), torch.ones(3, dtype=cosines.dtype), atol=1e-6)
    assert torch.allclose(cosines, cosines.T)
    mean, largest = metrics.class_vector_cosines(vectors)
    assert mean == pytest.approx(-0.5, abs=1e-6) and largest == pytest.approx(-0.5, abs=1e-6)


def test_confusion_matrix_counts_true_class_rows_and_predicted_columns():
    confusion = metrics.confusion_matrix(torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 0, 0]), 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 1, 0], [2, 0, 1]]


def _confusion_from_cosines(vectors: torch.Tensor, sign: float) -> torch.Tensor:
    """Mistake counts rising (sign +1) or falling (sign -1) strictly with cos(w_i, w_j), symmetric as the cosines."""
    _, dense_rank = torch.unique(sign * metrics.class_cosine_matrix(vectors), return_inverse=True)
    return dense_rank + torch.eye(len(vectors), dtype=torch.long) * 1000


def test_confusion_correlation_is_one_when_mistakes_grow_with_cosine():
    vectors = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    assert metrics.confusion_correlation(vectors, _confusion_from_cosines(vectors, 1.0)) == pytest.approx(1.0)
    assert metrics.confusion_correlation(vectors, _confusion_from_cosines(vectors, -1.0)) == pytest.approx(-1.0)


def test_confusion_correlation_is_nan_without_mistakes():
    vectors = torch.randn(4, 3)
    assert math.isnan(metrics.confusion_correlation(vectors, torch.eye(4, dtype=torch.long) * 9))
