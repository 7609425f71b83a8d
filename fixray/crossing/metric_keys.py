"""Every metric a trial reports, declared once: its key, meaning, unit and direction.

The loop writes these keys, tables and figures read them, and docs/measurements.md's table and the MLflow
run description are generated from this list. Keys use `/` sections (`val/acc`); MLflow's step is the epoch.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

Direction = Literal["higher", "lower", "none"]  # which way is better; "none": a measurement, not a score
ON_TEST_EACH_EPOCH = "each epoch, on the test split"


@dataclass(frozen=True)
class MetricKey:
    """One reported metric: `key` may hold a <placeholder> for a family (robust/<corruption>/acc)."""

    key: str
    meaning: str
    unit: str  # "fraction" (0-1), "cosine" (-1..1), "Spearman rho", "nats", ...
    direction: Direction
    when: str = ON_TEST_EACH_EPOCH

    def __str__(self) -> str:
        return self.key


METRICS: dict[str, MetricKey] = {}


def declare(key: str, meaning: str, unit: str, direction: Direction, when: str = ON_TEST_EACH_EPOCH) -> str:
    """Adds a metric to the catalogue; returns its key, the name code uses."""
    METRICS[key] = MetricKey(key, meaning, unit, direction, when)
    return key


EPOCH = "epoch"  # in every report: the epoch it closes (MLflow's step), not a metric
TRAIN_LOSS = declare(
    "train/loss",
    "the training loss (the trial's `loss`) over the epoch, all DDP workers",
    "nats",
    "lower",
    "each epoch",
)
TRAIN_ACC = declare(
    "train/acc", "training top-1 accuracy over the epoch, all DDP workers", "fraction", "higher", "each epoch"
)
VAL_LOSS = declare("val/loss", "cross-entropy on the held-out test split", "nats", "lower")
VAL_ACC = declare("val/acc", "top-1 accuracy on the held-out test split", "fraction", "higher")
BEST_ACC = declare(
    "val/acc_best", "the best val/acc so far: the authors' best_acc, what paper tables show", "fraction", "higher"
)
BEST_EPOCH = declare("val/acc_best_epoch", "the epoch of val/acc_best", "epoch", "none")
COMPACTNESS = declare(
    "val/compactness",
    "mean cos(f(x), w of the predicted class): intra-class compactness (paper Table 4)",
    "cosine",
    "higher",
)
SEPARABILITY_MEAN = declare(
    "val/separability_mean",
    "mean off-diagonal cosine between the class-mean image vectors of the true classes (paper Sec. 1)",
    "cosine",
    "lower",
)
SEPARABILITY_MAX = declare(
    "val/separability_max", "largest off-diagonal cosine between class-mean image vectors", "cosine", "lower"
)
CONFUSION_SPEARMAN = declare(
    "val/confusion_spearman",
    "Spearman over ordered pairs i != j of cos(w_i, w_j) and images of i predicted as j (Sec. 2-3)",
    "Spearman rho",
    "none",
)

# Neural collapse of one split's image vectors h (those the head scores), measured on the test split every epoch and
# on the training set every `nc_train_every` epochs: name -> (meaning, unit, better).
NEURAL_COLLAPSE = {
    "nc1": (
        "NC1: within- against between-class spread of the image vectors, tr(Sigma_W pinv(Sigma_B))/K; every class "
        "weighs the same in Sigma_W and in the global mean",
        "ratio",
        "lower",
    ),
    "cdnv": ("class-distance normalised variance (Galanti et al.), averaged over class pairs", "ratio", "lower"),
    "nc2_means": (
        "NC2: distance of the centred class means' Gram matrix from a simplex ETF's (Zhu et al.'s form)",
        "Frobenius",
        "lower",
    ),
    "equinorm_means": ("std / mean of the centred class means' norms (Papyan et al.)", "ratio", "lower"),
    "equiangularity_means": ("std of the cosines between centred class means (Papyan et al.)", "cosine", "lower"),
    "nc3": ("NC3, self-duality: ||W/||W|| - M/||M|||^2 of class vectors and centred class means", "squared", "lower"),
    "nc4": (
        "NC4: share of images whose prediction (argmax of the logits) is not the nearest class mean's",
        "fraction",
        "lower",
    ),
    "feature_norm_mean": ("mean norm of the image vectors h", "norm", "none"),
    "feature_norm_std": ("std of the norms of the image vectors h", "norm", "none"),
}
TRAIN_NC_WHEN = "every nc_train_every epochs and the last, on the unaugmented training set"


def _declare_collapse(split: str, when: str) -> dict[str, str]:
    return {
        name: declare(f"{split}/{name}", meaning, unit, better, when)
        for name, (meaning, unit, better) in NEURAL_COLLAPSE.items()
    }


VAL_COLLAPSE = _declare_collapse("val", ON_TEST_EACH_EPOCH)  # name -> key, e.g. "nc1" -> "val/nc1"
TRAIN_COLLAPSE = _declare_collapse("train", TRAIN_NC_WHEN)
NC1, NC2_MEANS, NC4 = VAL_COLLAPSE["nc1"], VAL_COLLAPSE["nc2_means"], VAL_COLLAPSE["nc4"]
NC2_WEIGHTS = declare(
    "val/nc2_weights",
    "NC2 of the class vectors: 0 for a simplex ETF (for learned heads, how near their vectors come to one)",
    "Frobenius",
    "none",
)
VECTOR_NORM_MEAN = declare("val/class_vector_norm_mean", "mean ||w_c|| (1 for fixed heads)", "norm", "none")
VECTOR_NORM_STD = declare("val/class_vector_norm_std", "std of ||w_c|| (0 for fixed heads)", "norm", "none")

# The class vectors' geometry, once per trial: a covariate of every fixed-vs-learned result (a random normal draw at
# d = 512 is no ETF). Of the best epoch's vectors: for fixed heads the draw itself.
ONCE_AT_BEST = "after the last epoch, of the best epoch's class vectors (fixed heads: the draw)"
VECTOR_COS_MEAN = declare(
    "class_vectors/cos_mean", "mean off-diagonal cos(w_i, w_j) (paper Fig. 2/4)", "cosine", "none", ONCE_AT_BEST
)
VECTOR_COS_MAX = declare("class_vectors/cos_max", "largest off-diagonal cos(w_i, w_j)", "cosine", "none", ONCE_AT_BEST)
VECTOR_ABS_COS_MAX = declare(
    "class_vectors/abs_cos_max",
    "largest off-diagonal |cos(w_i, w_j)|: 1/(K-1) for an ETF, 1 for an orthoplex's opposite pairs",
    "cosine",
    "none",
    ONCE_AT_BEST,
)
VECTOR_ETF_DISTANCE = declare(
    "class_vectors/etf_distance", "NC2 of the class vectors: 0 for a simplex ETF", "Frobenius", "none", ONCE_AT_BEST
)
LR = declare(
    "train/lr", "the learning rate the epoch trained at (the param lr is the first)", "1/step", "none", "each epoch"
)
DIVERGED = declare(
    "train/diverged", "1 when the loss turned NaN or infinite (the trial stops)", "flag", "lower", "each epoch"
)
HEAD_SCALAR = declare("head/<name>", "a learned head scalar, e.g. head/S with learn_S: true", "as the head's", "none")
ROBUST_ACC = declare(
    "robust/<corruption>/acc",
    "top-1 accuracy on the corrupted test set (Table 6), with the best epoch's weights",
    "fraction",
    "higher",
    "after the last epoch",
)
ROBUST_ACC_LAST = declare(
    "robust/<corruption>/acc_last",
    "top-1 accuracy on the corrupted test set with the last epoch's weights",
    "fraction",
    "higher",
    "after the last epoch",
)
GEN_ACC = declare(
    "gen/acc",
    "top-1 accuracy on the generalisation set (Table 5), with the best epoch's weights",
    "fraction",
    "higher",
    "after the last epoch",
)
GEN_ACC_LAST = declare(
    "gen/acc_last",
    "top-1 accuracy on the generalisation set with the last epoch's weights",
    "fraction",
    "higher",
    "after the last epoch",
)
TRIAL_SECONDS = declare(
    "time/trial_seconds",
    "seconds the trial has trained so far, over every retry and resume (Tune's time_total_s): what it cost",
    "s",
    "none",
    "each epoch, by the driver (a replay does not reproduce it)",
)
DDP_WEIGHT_DIFF = declare(
    "ddp/max_weight_diff", "largest weight difference between DDP workers (0: in sync)", "weight", "lower", "at the end"
)


def declared(key: str) -> MetricKey | None:
    """The catalogue's entry for a reported key, a family's (robust/<corruption>/acc) included; None: not a metric
    of fixray's (Ray Tune's bookkeeping: pid, timestamp, ...)."""
    found = METRICS.get(key)
    if found is not None:
        return found
    return next((metric for metric in METRICS.values() if _family(metric.key).fullmatch(key)), None)


@functools.cache
def _family(key: str) -> re.Pattern:
    """A family's key as a pattern: each <placeholder> stands for one section."""
    return re.compile(re.sub(r"<[a-z_]+>", "[^/]+", re.escape(key)))


def at_best_epoch(key: str) -> bool:
    """Whether tables read a metric at the run's best epoch: one measured on the test split every epoch, other than
    val/acc_best (its last value is the best's) and its epoch."""
    metric = METRICS.get(key)
    return metric is not None and metric.when == ON_TEST_EACH_EPOCH and key not in (BEST_ACC, BEST_EPOCH)


def head_scalar(name: str) -> str:
    """head/<name>: a learned head scalar's key."""
    return HEAD_SCALAR.replace("<name>", name)


def extra_acc(prefix: str, last: bool = False) -> str:
    """<prefix>/acc (robust/<corruption>, gen): accuracy on an extra test set; _last for the last epoch's weights."""
    return f"{prefix}/acc" + ("_last" if last else "")


def robust_acc(corruption: str) -> str:
    return extra_acc(f"robust/{corruption}")


def reference_table() -> str:
    """docs/measurements.md's table of every metric, from this catalogue."""
    lines = ["| key | meaning | unit | better | when |", "|---|---|---|---|---|"]
    for metric in METRICS.values():
        lines.append(f"| `{metric.key}` | {metric.meaning} | {metric.unit} | {metric.direction} | {metric.when} |")
    return "\n".join(lines)
