"""The paper's backbones: image vectors of the right size at every dataset's input size, known parameter counts."""

import pytest
import torch

from fixray.crossing.contract import HeadConfig
from fixray.trial.backbones import BACKBONES, BackboneShape
from fixray.trial.models import Backbone, InputSpec, build_classifier

FEATURES = {"resnet18": 512, "preact_resnet18": 512, "mobilenetv2": 1280, "small_cnn": 64}
# Parameters with a learned 10-class dot-product head (weights and bias), as in the common CIFAR model zoo.
PARAMETERS = {"resnet18": 11_173_962, "preact_resnet18": 11_172_170, "mobilenetv2": 2_296_922}


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("size,classes", [(32, 10), (64, 200), (96, 10)])
def test_every_backbone_gives_logits_and_image_vectors_at_every_input_size(name, size, classes):
    model = build_classifier(name, InputSpec(3, size), classes, HeadConfig(kind="cosine", fixed=True), seed=0).eval()
    with torch.no_grad():
        features, logits = model.embed_and_classify(torch.randn(2, 3, size, size))
    assert features.shape == (2, FEATURES[name]) and model.backbone.feature_dim == FEATURES[name]
    assert logits.shape == (2, classes)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_counts_match_the_cifar_model_zoo(name):
    learned = build_classifier(name, InputSpec(3, 32), 10, HeadConfig(kind="dot", fixed=False), seed=0)
    fixed = build_classifier(name, InputSpec(3, 32), 10, HeadConfig(kind="dot", fixed=True), seed=0)
    assert sum(p.numel() for p in learned.parameters()) == PARAMETERS[name]
    # A fixed head's W and b are buffers: that many fewer parameters to train.
    assert sum(p.numel() for p in fixed.parameters()) == PARAMETERS[name] - (FEATURES[name] * 10 + 10)


@pytest.mark.parametrize("pooling", ["global", "authors"])
def test_pooling_averages_the_whole_map_or_4x4_windows_flattened(pooling):
    feature_map = torch.randn(2, 3, 8, 8)  # a body that passes its input through: the map is the input
    backbone = Backbone(
        torch.nn.Sequential(), BackboneShape(channels=3, stride=1), spec=InputSpec(3, 8), pooling=pooling
    )
    if pooling == "global":
        expected = feature_map.mean(dim=(2, 3))
    else:  # windows (i, j) of 4x4 pixels, each channel's 2x2 windows in row order: the authors' avg_pool2d(4), view
        expected = feature_map.reshape(2, 3, 2, 4, 2, 4).mean(dim=(3, 5)).reshape(2, 12)
    assert backbone.feature_dim == expected.shape[1]
    torch.testing.assert_close(backbone(feature_map), expected)


def test_resnet18_is_about_11_2_million_parameters():
    assert round(PARAMETERS["resnet18"] / 1e6, 1) == 11.2


def test_registry_lists_the_papers_backbones():
    assert {"resnet18", "preact_resnet18", "mobilenetv2", "small_cnn"} <= set(BACKBONES)
