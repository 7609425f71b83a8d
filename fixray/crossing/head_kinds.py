"""What each head kind reads and what it defaults to, declared apart from its torch module (heads.py), so the trial
contract, the sweep schema and the tables ask a head's rules without importing torch.

A head kind is one declaration here and one class in heads.py, joined by `heads.register_head(declaration)`.
Validation, grid de-duplication, run names, MLflow params and report columns ask the declaration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

VectorDraw = Literal["normal", "uniform_int", "hadamard", "etf", "orthoplex", "cube"]
Margin = Literal["none", "cosface", "arcface"]
COMMON_OPTIONS = ("fixed", "bias", "init", "draw_seed", "dim")  # HeadConfig fields every head kind reads


@dataclass(frozen=True)
class HeadKind:
    """One head kind's rules: the options its class's constructor takes, which of them name a configuration, and
    its defaults where the sweep file leaves them null."""

    name: str  # the sweep file's head.kind
    options: tuple[str, ...] = COMMON_OPTIONS  # HeadConfig fields this kind reads
    shown: tuple[str, ...] = ()  # options that name a configuration of this kind (run names, figure titles, columns)
    default_bias: bool = True  # a bias per class when head.bias is null
    # L2 coefficient when optimizer.weight_decay is null: the authors' code decays dot-product runs by 5e-4 and
    # cosine runs not at all.
    default_weight_decay: float = 5e-4


HEAD_KINDS: dict[str, HeadKind] = {}


def declare_head_kind(kind: HeadKind) -> HeadKind:
    """Adds a head kind's rules under its name (heads.register_head does this for each class it registers)."""
    HEAD_KINDS[kind.name] = kind
    return kind


DOT = declare_head_kind(HeadKind("dot"))
COSINE = declare_head_kind(
    HeadKind(
        "cosine",
        options=COMMON_OPTIONS + ("S", "learn_S", "margin", "m"),
        shown=("S",),
        default_bias=False,  # logits stay within +-S, the bound the paper's analysis of S rests on
        default_weight_decay=0.0,
    )
)


@dataclass(frozen=True)
class DrawRule:
    """What a class-vector draw needs of K classes in d dimensions: validation asks it, heads.py draws."""

    min_dim: Callable[[int], int]  # K classes -> the fewest dimensions that keep every class's vector its own
    why: str  # what goes wrong with fewer
    random: bool = True  # whether head.draw_seed changes the vectors (False: one construction, whatever the seed)


DRAW_RULES: dict[str, DrawRule] = {
    "normal": DrawRule(lambda k: 1, "a vector needs a dimension"),
    "uniform_int": DrawRule(lambda k: 1, "a vector needs a dimension"),
    "hadamard": DrawRule(lambda k: k, "with fewer, classes would share a Hadamard row", random=False),
    "etf": DrawRule(lambda k: k - 1, "a simplex of K equiangular vectors spans K-1 dimensions"),  # randomly rotated
    "orthoplex": DrawRule(lambda k: math.ceil(k / 2), "+-e_i gives two classes per dimension", random=False),
    # The first K binary codes: at K = 100 the largest cosine is 5/7 = 0.71, which no choice of vertices avoids
    # (docs/measurements.md).
    "cube": DrawRule(
        lambda k: max(1, math.ceil(math.log2(k))), "a cube of d dimensions has 2^d vertices", random=False
    ),
}
