"""What "fixed" means: between the last layer every head shares and the fixed class vectors, a fixed head learns
nothing that could absorb them. Trained, its map from the shared features to logits stays as drawn (its bias is
fixed with it, as in the authors' code); behind a learned projection (head.dim) it would not, so such heads are
named apart and every comparison of them says so."""

import pytest
import torch
import torch.nn.functional as F

from fixray.crossing.contract import HeadConfig
from fixray.crossing.images import InputSpec
from fixray.trial.models import build_classifier

DRAWS = ["normal", "uniform_int", "hadamard", "etf", "orthoplex", "cube"]


def _trained(head: HeadConfig, standardise: bool = True, steps: int = 20):
    """A small CNN with `head` on 8x8 images, and the shared-space-to-logits map before and after `steps` SGD steps
    on random images, as the logits of fixed probe points in the shared feature space."""
    torch.manual_seed(0)
    model = build_classifier("small_cnn", InputSpec(1, 8), 10, head.settled(), seed=0, standardise_features=standardise)
    probe = torch.randn(64, model.backbone.feature_dim)

    def scores() -> torch.Tensor:
        return model.head.classify(model.head.embed(probe)).detach().clone()

    before = scores()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    images, labels = torch.randn(32, 1, 8, 8), torch.arange(32) % 10
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(images, labels), labels).backward()
        optimizer.step()
    return model, before, scores()


@pytest.mark.parametrize("kind", ["dot", "cosine"])
@pytest.mark.parametrize("init", DRAWS)
def test_a_trained_fixed_head_scores_the_shared_features_as_drawn(kind, init):
    model, before, after = _trained(HeadConfig(kind=kind, fixed=True, init=init, S=16.0))
    assert torch.equal(before, after), "a fixed head learned something that moves its class vectors"
    assert not [name for name, p in model.head.named_parameters() if p.requires_grad]


def test_a_learned_head_moves_and_a_projected_fixed_head_moves_too_so_it_is_named_apart():
    _, before, after = _trained(HeadConfig(kind="dot", fixed=False, init="hadamard"))
    assert not torch.allclose(before, after)  # the control: training moves a learned head's class vectors
    projected = HeadConfig(kind="dot", fixed=True, init="hadamard", dim=16)
    _, before, after = _trained(projected)
    assert not torch.allclose(before, after)  # its effective class vectors in the backbone's space moved
    assert projected.label() == "dot-fixed-proj16" and HeadConfig(kind="dot", fixed=True).label() == "dot-fixed"


def test_centred_features_let_every_class_vector_win_where_relu_features_let_one():
    """Against features all >= 0 a Hadamard row of ones outscores every other row on every image; the shared
    standardisation centres them, and every class wins somewhere."""
    head = HeadConfig(kind="cosine", fixed=True, init="hadamard", S=16.0).settled()
    images = torch.randn(256, 1, 8, 8)
    for standardise, classes in ((False, {0}), (True, set(range(10)))):
        torch.manual_seed(0)
        model = build_classifier("small_cnn", InputSpec(1, 8), 10, head, seed=0, standardise_features=standardise)
        features = model.backbone(images)
        assert (features.min() >= 0) == (not standardise)
        assert set(model(images).argmax(dim=1).tolist()) == classes, standardise
    assert not [p for p in model.backbone.norm.parameters()], "the normalisation must learn nothing"
