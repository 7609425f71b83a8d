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


def test_confusion_correlation_ranks_ties_as_scipy_does():
    """Counts tie often (many pairs are never confused): tied values share their mean rank, as scipy's Spearman."""
    from scipy.stats import spearmanr

    generator = torch.Generator().manual_seed(3)
    vectors = torch.randn(7, 5, generator=generator).round(decimals=1)
    confusion = torch.randint(0, 3, (7, 7), generator=generator)  # 42 off-diagonal counts, 3 values: all tied
    off = ~torch.eye(7, dtype=torch.bool)
    cosines = metrics.class_cosine_matrix(vectors)[off].double()
    expected = spearmanr(cosines.numpy(), confusion[off].numpy()).statistic
    assert metrics.confusion_correlation(vectors, confusion) == pytest.approx(expected, abs=1e-12)


def test_confusion_correlation_is_nan_without_mistakes():
    vectors = torch.randn(4, 3)
    assert math.isnan(metrics.confusion_correlation(vectors, torch.eye(4, dtype=torch.long) * 9))


# --- neural collapse: each definition pinned on features built so that its answer is known -----------------------


def _collapsed(classes: int = 4, dim: int = 6, per_class: int = 5, scale: float = 3.0):
    """Perfect collapse: every image of class c sits on a scaled simplex-ETF vertex, the classifier is that ETF."""
    from fixray.trial.heads import draw_class_vectors

    vertices = draw_class_vectors(classes, dim, seed=0, init="etf").double()
    labels = torch.arange(classes).repeat_interleave(per_class)
    features = scale * vertices[labels]
    return features, labels, features @ vertices.T, vertices


def test_perfectly_collapsed_features_score_zero_on_every_neural_collapse_measure():
    features, labels, logits, vertices = _collapsed()
    noisy = features + 1e-9 * torch.randn_like(features)
    assert metrics.ClassGeometry.of(noisy, labels).nc1() == pytest.approx(0.0, abs=1e-9)
    means = metrics.ClassGeometry.of(features, labels).centred
    assert metrics.etf_distance(means) == pytest.approx(0.0, abs=1e-6)  # NC2 of the means
    assert metrics.etf_distance(vertices) == pytest.approx(0.0, abs=1e-6)  # NC2 of the classifier
    assert metrics.equinorm(means) == pytest.approx(0.0, abs=1e-6)
    assert metrics.equiangularity(means) == pytest.approx(0.0, abs=1e-6)
    assert metrics.ClassGeometry.of(features, labels).nc3(vertices) == pytest.approx(0.0, abs=1e-6)
    assert metrics.ClassGeometry.of(features, labels).nc4(logits) == 0.0


def test_nc1_and_cdnv_on_spread_along_the_line_between_two_means():
    """Class 0 at x = 0.5 and 1.5, class 1 at -0.5 and -1.5: mu = (+-1, 0), Sigma_W = diag(1/4, 0),
    Sigma_B = diag(1, 0), so NC1 = tr(diag(1/4, 0)) / 2 = 1/8; Var_c = 1/4, ||mu_0 - mu_1||^2 = 4, so
    CDNV = (1/4 + 1/4) / (2 * 4) = 1/16. Spread orthogonal to the means is invisible to NC1 (pinv of Sigma_B)."""
    features = torch.tensor([[1.5, 0.0], [0.5, 0.0], [-1.5, 0.0], [-0.5, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert metrics.ClassGeometry.of(features, labels).nc1() == pytest.approx(1 / 8)
    assert metrics.ClassGeometry.of(features, labels).cdnv() == pytest.approx(1 / 16)
    sideways = torch.tensor([[1.0, 0.5], [1.0, -0.5], [-1.0, 0.5], [-1.0, -0.5]])
    assert metrics.ClassGeometry.of(sideways, labels).nc1() == pytest.approx(0.0, abs=1e-12)
    assert metrics.ClassGeometry.of(sideways, labels).cdnv() == pytest.approx(1 / 16)  # CDNV sees it


def test_nc2_equinorm_and_equiangularity_of_three_means_that_are_no_etf():
    """Means (1, 0), (0, 1), (-1, -1) (already centred): G = [[1,0,-1],[0,1,-1],[-1,-1,2]], ||G||_F = sqrt(10),
    <G, (I - 11^T/3)/sqrt(2)> = (tr G - sum G / 3)/sqrt(2) = 4/sqrt(2), so NC2^2 = 2 - 2 (4/sqrt(2))/sqrt(10)
    = 2 - 4/sqrt(5); norms 1, 1, sqrt(2); cosines 0, -1/sqrt(2), -1/sqrt(2), whose std is 1/3."""
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    labels = torch.tensor([0, 1, 2])
    means = metrics.ClassGeometry.of(features, labels).centred
    assert metrics.etf_distance(means) == pytest.approx(math.sqrt(2 - 4 / math.sqrt(5)))
    norms = torch.tensor([1.0, 1.0, math.sqrt(2)])
    assert metrics.equinorm(means) == pytest.approx((norms.std(unbiased=False) / norms.mean()).item())
    assert metrics.equiangularity(means) == pytest.approx(1 / 3)


def test_nc3_of_a_classifier_orthogonal_to_the_means_is_two():
    """W rows (0, 1), (0, -1) against means (1, 0), (-1, 0): both scaled to unit Frobenius norm they differ by
    rows (-1, 1)/sqrt(2) and (1, -1)/sqrt(2), a squared norm of 2. The same classifier scaled is the same."""
    features = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1])
    assert metrics.ClassGeometry.of(features, labels).nc3(torch.tensor([[0.0, 1.0], [0.0, -1.0]])) == pytest.approx(2.0)
    assert metrics.ClassGeometry.of(features, labels).nc3(torch.tensor([[5.0, 0.0], [-5.0, 0.0]])) == pytest.approx(0.0)


def test_nc4_counts_predictions_that_are_not_the_nearest_class_mean_and_uses_the_argmax():
    """Four images, means (+-1, 0); the logits predict class 1 for the second image of class 0, whose nearest
    mean is class 0's: NC4 = 1/4. A toolbox that took the argmin of the logits would count 3 of 4 here."""
    features = torch.tensor([[1.2, 0.0], [0.8, 0.0], [-1.2, 0.0], [-0.8, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 2.0]])
    assert metrics.ClassGeometry.of(features, labels).nc4(logits) == 0.25


def test_nc1_equals_the_textbook_trace_with_the_d_by_d_pseudo_inverse():
    """The K x d route (ClassGeometry.nc1) against tr(Sigma_W pinv(Sigma_B)) / K written out, on random clusters."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 6
    centres = 3 * torch.randn(6, 20, generator=generator, dtype=torch.float64)
    features = torch.randn(300, 20, generator=generator, dtype=torch.float64) + centres[labels]
    means = torch.stack([features[labels == c].mean(0) for c in range(6)])
    within = features - means[labels]
    between = means - means.mean(0)
    sigma_w, sigma_b = within.T @ within / 300, between.T @ between / 6
    expected = torch.trace(sigma_w @ torch.linalg.pinv(sigma_b)).item() / 6
    assert metrics.ClassGeometry.of(features, labels).nc1() == pytest.approx(expected, rel=1e-9)


def test_on_a_long_tailed_split_every_class_weighs_the_same_in_nc1_and_the_global_mean():
    """Class-balanced: Sigma_W the mean of each class's own covariance, mu_G the mean of the class means. A large
    tight class beside small spread ones: weighting images instead would let the large class hide their spread."""
    generator = torch.Generator().manual_seed(1)
    counts = [200, 20, 5]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    centres = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]], dtype=torch.float64)
    spread = torch.tensor([0.1, 1.5, 1.5], dtype=torch.float64)[labels, None]
    features = centres[labels] + spread * torch.randn(len(labels), 3, generator=generator, dtype=torch.float64)
    means = torch.stack([features[labels == c].mean(0) for c in range(3)])
    own = [(features[labels == c] - means[c]).T @ (features[labels == c] - means[c]) / n for c, n in enumerate(counts)]
    between = means - means.mean(0)
    sigma_w, sigma_b = sum(own) / 3, between.T @ between / 3
    balanced = torch.trace(sigma_w @ torch.linalg.pinv(sigma_b)).item() / 3
    within = features - means[labels]
    by_image = torch.trace(within.T @ within / len(labels) @ torch.linalg.pinv(sigma_b)).item() / 3
    geometry = metrics.ClassGeometry.of(features, labels)
    assert geometry.nc1() == pytest.approx(balanced, rel=1e-9) and by_image < balanced / 5
    torch.testing.assert_close(geometry.centred, between)  # mu_G: the mean of the means, not of the images
