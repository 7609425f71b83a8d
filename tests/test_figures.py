"""The paper's figures render for small and large class counts."""

import torch

from fixray.trial import figures as plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_figures_render_as_png_for_10_and_200_classes():
    for classes in (10, 200):
        vectors = torch.randn(classes, 16)
        labels = torch.arange(300) % classes
        confusion = torch.randint(0, 5, (classes, classes))
        names = tuple(f"c{i}" for i in range(classes))
        pngs = [
            plots.class_cosine_png(vectors, names, "t"),
            plots.mistakes_vs_cosine_png(vectors, confusion, "t"),
            plots.image_vectors_png(torch.randn(300, 16), labels, names, "t"),
        ]
        assert all(png.startswith(PNG_MAGIC) and len(png) > 5_000 for png in pngs)
