"""The paper's figures as PNG bytes: class-vector cosines (Fig. 2/4 left, middle), mistakes vs cosine
(Fig. 2/4 right) and the test image vectors in 2-D (Fig. 3/5, here a PCA projection of f(x))."""

from __future__ import annotations

import io

import torch

from fixray.trial import metrics

MAX_TICK_LABELS = 20  # beyond this many classes the axes show indices, not names
MAX_LEGEND = 10  # beyond this many classes the 2-D view colours by class index, without a legend


def _pyplot():
    """matplotlib's pyplot, drawing to files only (trials run without a display); imported when a figure is drawn, not
    in every trial's start (a third of a second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def class_cosine_png(vectors: torch.Tensor, names: tuple[str, ...], title: str) -> bytes:
    cosines = metrics.class_cosine_matrix(vectors).cpu().numpy()
    figure, axes = _pyplot().subplots(figsize=(6, 5))
    image = axes.imshow(cosines, cmap="RdBu_r", vmin=-1, vmax=1)
    if len(names) <= MAX_TICK_LABELS:
        axes.set_xticks(range(len(names)), names, rotation=90)
        axes.set_yticks(range(len(names)), names)
    figure.colorbar(image, ax=axes, label="cos(w_i, w_j)")
    axes.set_title(title)
    return _png(figure)


def mistakes_vs_cosine_png(vectors: torch.Tensor, confusion: torch.Tensor, title: str) -> bytes:
    cosines = metrics.class_cosine_matrix(vectors)
    off = ~torch.eye(len(cosines), dtype=torch.bool)
    rho = metrics.confusion_correlation(vectors, confusion)
    figure, axes = _pyplot().subplots(figsize=(6, 4))
    axes.scatter(cosines[off].cpu().numpy(), confusion[off].cpu().numpy(), s=12, alpha=0.7)
    axes.set_xlabel("cos(w_i, w_j)")
    axes.set_ylabel("test images of class i predicted as j")
    axes.set_title(f"{title}\nSpearman rho = {rho:.2f}")
    return _png(figure)


def image_vectors_png(features: torch.Tensor, labels: torch.Tensor, names: tuple[str, ...], title: str) -> bytes:
    centred = features.double() - features.double().mean(0)
    _, _, basis = torch.linalg.svd(centred, full_matrices=False)
    points = (centred @ basis[:2].T).cpu().numpy()
    figure, axes = _pyplot().subplots(figsize=(6, 5))
    labels = labels.cpu().numpy()
    if len(names) <= MAX_LEGEND:
        for index, name in enumerate(names):
            chosen = labels == index
            if chosen.any():
                axes.scatter(points[chosen, 0], points[chosen, 1], s=6, label=name)
        axes.legend(fontsize=7, markerscale=2, loc="best")
    else:
        axes.scatter(points[:, 0], points[:, 1], c=labels, cmap="viridis", s=6)
    axes.set_title(f"{title}\ntest image vectors f(x), first two principal components")
    return _png(figure)
