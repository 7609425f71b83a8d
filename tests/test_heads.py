"""ClassHead: what 'fixed' and 'cosine' promise, checked as properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from fixray.crossing.contract import HeadConfig
from fixray.crossing.head_kinds import HEAD_KINDS
from fixray.trial.heads import CosineHead, DotProductHead, build_head, draw_class_vectors
from fixray.trial.models import InputSpec, build_classifier


def _model(kind: str, fixed: bool, seed: int = 0):
    return build_classifier(
        "small_cnn", InputSpec(1, 8), 10, HeadConfig(kind=kind, fixed=fixed, S=10.0, bias=True), seed=seed
    )


def _sgd_steps(model, steps: int = 100) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 1, 8, 8, generator=generator)
        y = torch.randint(0, 10, (16,), generator=generator)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("kind", sorted(HEAD_KINDS))
def test_fixed_head_is_bit_identical_after_100_optimiser_steps(kind):
    model = _model(kind, fixed=True)
    weight, bias = model.head.weight.clone(), model.head.bias.clone()
    backbone_before = [p.clone() for p in model.backbone.parameters()]
    _sgd_steps(model)
    assert torch.equal(model.head.weight, weight)
    assert torch.equal(model.head.bias, bias)
    assert any(not torch.equal(a, b) for a, b in zip(backbone_before, model.backbone.parameters())), (
        "the backbone must train"
    )


@pytest.mark.parametrize("kind", sorted(HEAD_KINDS))
def test_fixed_head_tensors_are_buffers_never_given_to_an_optimiser(kind):
    model = _model(kind, fixed=True)
    names = dict(model.named_parameters())
    assert "head.weight" not in names and "head.bias" not in names
    assert {"head.weight", "head.bias"} <= set(dict(model.named_buffers()))
    assert {"head.weight", "head.bias"} <= set(model.state_dict())
    head_ids = {id(model.head.weight), id(model.head.bias)}
    assert not head_ids & {id(p) for p in model.parameters()}


@pytest.mark.parametrize("kind", sorted(HEAD_KINDS))
def test_learned_head_trains_from_the_same_initial_vectors(kind):
    fixed, learned = _model(kind, fixed=True), _model(kind, fixed=False)
    assert torch.equal(fixed.head.weight, learned.head.weight.detach())
    start = learned.head.weight.detach().clone()
    _sgd_steps(learned, steps=5)
    assert not torch.equal(start, learned.head.weight.detach())


def test_class_vectors_are_unit_rows_and_reproducible_from_the_seed():
    a, b, c = (
        draw_class_vectors(100, 64, seed=3),
        draw_class_vectors(100, 64, seed=3),
        draw_class_vectors(100, 64, seed=4),
    )
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.allclose(a.norm(dim=1), torch.ones(100), atol=1e-6)
    assert torch.equal(DotProductHead(64, 100, fixed=True, seed=3).class_vectors, a)


@pytest.mark.parametrize("scale", [1.0, 10.0, 64.0])
def test_cosine_logits_lie_within_plus_minus_S(scale):
    head = CosineHead(32, 50, fixed=False, S=scale, bias=False)
    features = torch.randn(256, 32) * torch.logspace(-3, 3, 256).unsqueeze(1)
    logits = head(features)
    assert logits.abs().max() <= scale * (1 + 1e-5)
    assert logits.max() > 0.5 * scale * 0.1  # not trivially zero


def test_a_biased_cosine_head_gives_exactly_S_cos_plus_b():
    head = CosineHead(4, 3, S=7.0, bias=True, seed=0)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    features = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    cosines = F.cosine_similarity(features[:, None, :], head.weight[None, :, :], dim=2)
    torch.testing.assert_close(head(features), 7.0 * cosines + torch.tensor([0.5, -1.0, 2.0]))


def test_cosine_head_reproduces_the_best_softmax_probability_of_paper_eq4():
    """m = 200 classes, S = 1: p_max = e / (e + 199/e) ~ 0.036, reached when the others point away."""
    m, bound = 200, math.e / (math.e + 199 / math.e)
    head = CosineHead(4, m, fixed=True, S=1.0, bias=False)
    direction = torch.tensor([1.0, 0.0, 0.0, 0.0])
    head.weight.copy_(-direction.expand(m, 4))
    head.weight[0] = direction
    best = head(direction.unsqueeze(0) * 5).softmax(dim=1)[0, 0].item()
    assert best == pytest.approx(bound, rel=1e-5)
    assert bound == pytest.approx(0.036, abs=5e-4)


def test_no_training_beats_the_eq4_bound_with_S_1():
    m, bound = 200, math.e / (math.e + 199 / math.e)
    head = CosineHead(16, m, fixed=False, S=1.0, bias=False)
    features = torch.randn(8, 16, requires_grad=True)
    optimizer = torch.optim.Adam([features, *head.parameters()], lr=0.05)
    target = torch.zeros(8, dtype=torch.long)
    for _ in range(300):
        loss = F.cross_entropy(head(features), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    probability = head(features).softmax(dim=1)[:, 0]
    assert probability.max().item() <= bound + 1e-6
    assert probability.min().item() > 0.9 * bound  # training did push towards the bound


def test_bad_head_settings_are_refused():
    with pytest.raises(ValueError, match="S must be > 0"):
        CosineHead(8, 3, S=0.0)
    with pytest.raises(ValueError, match="head kind must be one of"):
        build_head("arc", 8, 3, seed=0)


def test_hadamard_vectors_are_mutually_orthogonal_when_the_feature_size_allows():
    vectors = draw_class_vectors(10, 64, seed=0, init="hadamard")
    gram = vectors @ vectors.T
    assert torch.allclose(gram, torch.eye(10), atol=1e-6)
    assert torch.equal(vectors, draw_class_vectors(10, 64, seed=5, init="hadamard"))  # no randomness in it


def test_uniform_int_vectors_follow_the_authors_code():
    generator = torch.Generator().manual_seed(3)
    expected = F.normalize(torch.randint(-100, 100, (10, 32), generator=generator).float(), dim=1)
    assert torch.equal(draw_class_vectors(10, 32, seed=3, init="uniform_int"), expected)


def test_learned_scale_is_a_parameter_and_trains():
    head = CosineHead(8, 4, fixed=True, S=2.0, bias=False, learn_S=True)
    assert [name for name, _ in head.named_parameters()] == ["scale"]
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
    loss = F.cross_entropy(head(torch.randn(16, 8)), torch.randint(0, 4, (16,)))
    loss.backward()
    optimizer.step()
    assert head.scale.item() != 2.0


@pytest.mark.parametrize(
    "margin,expected",
    [
        ("cosface", lambda c, m: c - m),
        # ArcFace's standard form: cos(theta + m) up to theta + m = pi, then cos(theta) - m sin(m)
        ("arcface", lambda c, m: math.cos(math.acos(c) + m) if math.acos(c) + m <= math.pi else c - m * math.sin(m)),
    ],
)
def test_margins_move_only_the_true_class_logit_and_only_in_training(margin, expected):
    head = CosineHead(4, 3, fixed=True, S=10.0, bias=False, margin=margin, m=0.3)
    features = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 0, 1])
    plain, trained = head(features), head(features, labels)
    cosines = plain / 10
    for i, label in enumerate(labels.tolist()):
        for j in range(3):
            want = 10 * expected(cosines[i, j].item(), 0.3) if j == label else plain[i, j].item()
            assert trained[i, j].item() == pytest.approx(want, abs=1e-4)
    assert torch.equal(head(features), plain)  # evaluation never sees the margin


def test_arcface_falls_back_past_pi_instead_of_rewarding_a_worse_angle():
    """cos(theta + m) rises again once theta + m passes pi: the standard ArcFace takes cos(theta) - m sin(m)."""
    head = CosineHead(2, 2, fixed=True, S=1.0, bias=False, margin="arcface", m=0.5)
    head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    thetas = torch.tensor([0.3, 2.0, 2.9, 3.1])  # the last two lie past pi - m
    features = torch.stack([thetas.cos(), thetas.sin()], dim=1)
    target = head(features, torch.zeros(4, dtype=torch.long))[:, 0]
    for theta, logit in zip(thetas.tolist(), target.tolist()):
        want = math.cos(theta + 0.5) if theta + 0.5 <= math.pi else math.cos(theta) - 0.5 * math.sin(0.5)
        assert logit == pytest.approx(want, abs=1e-5)
    assert target[3] < target[2] < target[1] < target[0]  # a worse angle never scores better


@pytest.mark.parametrize(("classes", "dim"), [(10, 9), (10, 10), (10, 512), (100, 99), (2, 1)])
def test_an_etf_has_every_pairwise_cosine_minus_one_over_k_minus_one_in_any_d_from_k_minus_one(classes, dim):
    vectors = draw_class_vectors(classes, dim, seed=0, init="etf").double()
    gram = vectors @ vectors.T
    expected = torch.full((classes, classes), -1.0 / (classes - 1), dtype=torch.float64).fill_diagonal_(1.0)
    assert torch.allclose(gram, expected, atol=1e-5)
    assert torch.allclose(vectors.sum(0), torch.zeros(dim, dtype=torch.float64), atol=1e-5)  # centred: sum 0
    again = draw_class_vectors(classes, dim, seed=0, init="etf")
    assert torch.equal(again, draw_class_vectors(classes, dim, seed=0, init="etf"))  # the seed alone decides
    if dim > 1:
        assert not torch.allclose(again, draw_class_vectors(classes, dim, seed=1, init="etf"))  # placed anew


def test_an_orthoplex_pairs_opposite_vectors_on_the_axes_and_a_cube_uses_distinct_vertices():
    orthoplex = draw_class_vectors(5, 3, seed=0, init="orthoplex")
    assert torch.equal(orthoplex, torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1.0]]))
    cube = draw_class_vectors(7, 5, seed=0, init="cube")  # ceil(log2 7) = 3 dimensions, in the first three
    assert len({tuple(row.tolist()) for row in cube}) == 7
    assert torch.allclose(cube[:, :3].abs(), torch.full((7, 3), 1 / math.sqrt(3))) and not cube[:, 3:].any()


@pytest.mark.parametrize("classes", [10, 100, 200])
def test_a_cubes_largest_cosine_is_that_of_two_neighbours_which_no_choice_of_vertices_avoids(classes):
    """At the smallest width d, K > 2^(d-1): more than half the vertices, so two of them are neighbours (cosine
    (d-2)/d) whatever the choice; the first K codes have no closer pair."""
    dim = math.ceil(math.log2(classes))
    cube = draw_class_vectors(classes, dim, seed=0, init="cube")
    cosines = cube @ cube.T - 2 * torch.eye(classes)
    assert classes > 2 ** (dim - 1) and cosines.max().item() == pytest.approx((dim - 2) / dim)


@pytest.mark.parametrize(("init", "dim"), [("etf", 8), ("orthoplex", 4), ("cube", 2), ("hadamard", 9)])
def test_a_draw_refuses_fewer_dimensions_than_its_classes_need(init, dim):
    with pytest.raises(ValueError, match=f"{init} class vectors for 10 classes need"):
        draw_class_vectors(10, dim, seed=0, init=init)


def test_the_draw_seed_holds_the_class_vectors_while_the_trial_seed_varies_the_weights():
    def built(seed, draw_seed):
        head = HeadConfig(kind="dot", fixed=True, draw_seed=draw_seed)
        return build_classifier("small_cnn", InputSpec(1, 8), 10, head, seed=seed)

    held = [built(seed, draw_seed=7) for seed in (0, 1)]
    assert torch.equal(held[0].head.weight, held[1].head.weight)  # one draw for both seeds
    first = next(held[0].backbone.parameters())
    assert not torch.equal(first, next(held[1].backbone.parameters()))  # the weights still follow the seed
    assert not torch.equal(built(0, None).head.weight, built(1, None).head.weight)  # null: the seed varies both
