"""What the loop measures of a model: its image vectors and logits on a split, the paper's measurements and neural
collapse on it, the class vectors' geometry, accuracy on the extra test sets, and the paper's figures. Pure functions
of tensors and models; the loop decides when each runs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fixray.crossing import metric_keys as keys
from fixray.crossing.contract import TrialConfig
from fixray.crossing.images import Splits
from fixray.trial import figures, metrics
from fixray.trial.augment import normalise
from fixray.trial.device import Device
from fixray.trial.models import Classifier


@torch.inference_mode()
def embed(
    model: Classifier, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, on: Device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image vectors h (those the head scores) and logits of a split, in float32 whatever the autocast."""
    model.eval()
    step = on.eval_batch()
    with on.autocast():
        batches = [
            model.embed_and_classify(on.images(normalise(images[i : i + step], mean, std)))
            for i in range(0, len(images), step)
        ]
    features, logits = zip(*batches)
    return torch.cat(features).float(), torch.cat(logits).float()


def measure(
    features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, vectors: torch.Tensor
) -> dict[str, float]:
    """Accuracy, loss, the paper's geometry measurements and neural collapse on the test split (each epoch)."""
    predictions = logits.argmax(dim=1)
    separability_mean, separability_max = metrics.image_separability(features, labels, vectors.shape[0])
    confusion = metrics.confusion_matrix(labels, predictions, vectors.shape[0])
    vector_norms = vectors.double().norm(dim=1)
    return {
        keys.VAL_LOSS: F.cross_entropy(logits, labels).item(),
        keys.VAL_ACC: metrics.accuracy(logits, labels),
        keys.COMPACTNESS: metrics.compactness(features, vectors, predictions),
        keys.SEPARABILITY_MEAN: separability_mean,
        keys.SEPARABILITY_MAX: separability_max,
        keys.CONFUSION_SPEARMAN: metrics.confusion_correlation(vectors, confusion),
        keys.NC2_WEIGHTS: metrics.etf_distance(vectors),
        keys.VECTOR_NORM_MEAN: vector_norms.mean().item(),
        keys.VECTOR_NORM_STD: vector_norms.std(unbiased=False).item(),
    } | neural_collapse(features, logits, labels, vectors, keys.VAL_COLLAPSE)


def neural_collapse(
    features: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    vectors: torch.Tensor,
    named: dict[str, str] = keys.VAL_COLLAPSE,
) -> dict[str, float]:
    """Neural-collapse measurements of one split's image vectors against the class vectors (metrics.py says each),
    under that split's keys (`named`: keys.VAL_COLLAPSE or keys.TRAIN_COLLAPSE)."""
    geometry = metrics.ClassGeometry.of(features, labels)  # the class means and offsets, once for all below
    feature_norms = geometry.features.norm(dim=1)
    found = {
        "nc1": geometry.nc1(),
        "cdnv": geometry.cdnv(),
        "nc2_means": metrics.etf_distance(geometry.centred),
        "equinorm_means": metrics.equinorm(geometry.centred),
        "equiangularity_means": metrics.equiangularity(geometry.centred),
        "nc3": geometry.nc3(vectors),
        "nc4": geometry.nc4(logits),
        "feature_norm_mean": feature_norms.mean().item(),
        "feature_norm_std": feature_norms.std(unbiased=False).item(),
    }
    return {named[name]: value for name, value in found.items()}


def class_vector_geometry(vectors: torch.Tensor) -> dict[str, float]:
    """The class vectors' cosines and distance from a simplex ETF: logged once, of the best epoch's vectors."""
    cos_mean, cos_max = metrics.class_vector_cosines(vectors)
    return {
        keys.VECTOR_COS_MEAN: cos_mean,
        keys.VECTOR_COS_MAX: cos_max,
        keys.VECTOR_ABS_COS_MAX: metrics.class_vector_abs_cos_max(vectors),
        keys.VECTOR_ETF_DISTANCE: metrics.etf_distance(vectors),
    }


def extra_accuracies(model: Classifier, splits: Splits, mean, std, on: Device, last: bool = False) -> dict[str, float]:
    """Accuracy on each extra test set (corrupted, generalisation) as <prefix>/acc; <prefix>/acc_last if `last`."""
    accuracies = {}
    for prefix, extra in splits.extra.items():
        logits = embed(model, on.tensor(extra.x), mean, std, on)[1]
        accuracies[keys.extra_acc(prefix, last)] = metrics.accuracy(logits, on.tensor(extra.y))
    return accuracies


def draw_figures(
    cfg: TrialConfig,
    features: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    vectors: torch.Tensor,
    names: tuple[str, ...],
) -> dict[str, bytes]:
    """The paper's three figures for this trial, as PNG files by name."""
    head = cfg.head.label()
    confusion = metrics.confusion_matrix(labels, logits.argmax(dim=1), vectors.shape[0])
    return {
        "class_vector_cosines.png": figures.class_cosine_png(vectors, names, f"class-vector cosines ({head})"),
        "mistakes_vs_cosine.png": figures.mistakes_vs_cosine_png(
            vectors, confusion, f"mistakes vs class-vector cosine ({head})"
        ),
        "image_vectors_2d.png": figures.image_vectors_png(features, labels, names, head),
    }
