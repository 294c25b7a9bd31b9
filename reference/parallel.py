"""Data parallelism in the reference: shards, all-reduce combinations, their tolerance (spec ch. 5).

R ranks (processes or devices) each hold the same θ and a shard of the batch: shard r holds
n_r consecutive examples, Σ_r n_r = N. Rank r differentiates its own loss L_r (its shard's
problem), and an all-reduce combines the ranks' gradients. Every scheme frameworks use is a
combination

    G = Σ_r S_r ∇L_r(θ) + (Σ_r T_r) λθ,

with S_r the scale of rank r's loss gradient and T_r that of the L2 penalty (λ/2)‖θ‖² when rank r
adds the penalty to its loss (spec §5.6–§5.11):

    rank mean (DDP's average)      S_r = 1/R               exact iff the Ω_r are equal (§5.6)
    count weighted                 S_r = Ω_r/Ω             exact for any shard sizes (§5.7)
    summed (all-reduce SUM)        S_r = 1                 R × ∇L for equal shards (§5.8)
    global normaliser              ∇L_r of the shard's *sum-type* loss Σ a_i ℓ_i, S_r = 1/Ω (§5.11)

where Ω_r is the normaliser of the shard's reduction (``normaliser``: N_r = Σ ω_i for ``mean``,
Σ c_i for ``weighted_mean``, 1 for the sums) and Ω = Σ_r Ω_r the global one.

The tolerance of a combination is derived in the style of spec chapter 7 (§7.1, §7.2), from the
chapter-7 bound of each shard and the rounding of the combination itself
(``combination_tolerance``); it is equally the tolerance of gradient accumulation over
micro-batches (spec §5.1–§5.5), which is the same sum computed one micro-batch after another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .bounds import problem_tolerance
from .grads import batch_grad
from .numerics import REFERENCE, gamma, precision
from .problem import Problem
from .types import Grads

__all__ = [
    "AVERAGING", "PENALTY_ROUNDINGS", "SCALE_ROUNDINGS", "SCHEMES", "Combination", "Penalty",
    "ScaleError", "combination", "combination_tolerance", "count_weighted_scales", "counts",
    "data_parallel", "even_sizes", "normaliser", "normaliser_error", "rank_mean_scales", "shards",
    "sum_type", "summed_scales",
]

SCALE_ROUNDINGS = 4
"""Roundings between an exact scale S_r and its application to a gradient: the scale computed as
a float (n_r/N, 1/R, R·Ω_r/Ω), its product into the loss or the backward seed, and the world-size
average after the backward pass, which DistributedDataParallel's reducer forms as a
multiplication by a rounded reciprocal, fl(1/R) (``reducer.cpp``), not as a division: two
roundings, fl(1/R) and the product. Each is one correctly rounded operation, relative error ≤ u
(spec §5.6, §7.1)."""

PENALTY_ROUNDINGS = 2
"""Roundings in the gradient λθ of the penalty (λ/2)‖θ‖² as autodiff computes it: the constant
λ/2 (exact for the strategies' λ, rounded once in general) and its product with θ; the doubling
(λ/2)·2θ is exact."""


# -- shards ---------------------------------------------------------------------------------------
def even_sizes(n: int, ranks: int) -> tuple[int, ...]:
    """Shard sizes as ``numpy.array_split`` makes them: the first N mod R shards one larger."""
    if ranks < 1 or n < ranks:
        raise ValueError(f"cannot split N={n} examples over R={ranks} ranks, one at least each")
    q, extra = divmod(n, ranks)
    return tuple(q + 1 if r < extra else q for r in range(ranks))


def shards(problem: Problem, sizes: Sequence[int]) -> list[Problem]:
    """The problem of each rank: ``problem`` on the consecutive examples of its shard.

    Shard r holds examples n_0 + … + n_{r−1} to n_0 + … + n_r − 1 with its own reduction (a
    ``mean`` shard divides by its own N_r: that is what each rank of a data-parallel job computes).
    """
    sizes = [int(s) for s in sizes]
    if any(s < 1 for s in sizes) or sum(sizes) != problem.batch.size:
        raise ValueError(f"shard sizes {sizes} must be >= 1 and sum to N={problem.batch.size}")
    bounds = np.cumsum([0, *sizes])
    return [problem.with_batch(problem.batch.take(np.arange(a, b)))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def counts(problem: Problem) -> np.ndarray:
    """ω_i, what each example counts in a ``mean`` (spec §3.1): 1 unless the problem says
    otherwise (class weights, ignored labels, valid tokens)."""
    omega = getattr(problem, "counts", None)  # the reference's ω_i where it defines them
    return np.ones(problem.batch.size) if omega is None else np.asarray(omega, dtype=np.float64)


def normaliser(problem: Problem) -> float:
    """Ω of the problem's reduction, L = (Σ_i a_i ℓ_i) / Ω: Σ ω_i (``mean``), Σ c_i
    (``weighted_mean``), 1 for the sums (``sum``, ``weighted``)."""
    name = problem.reduction.name
    if name == "mean":
        return float(np.sum(counts(problem)))
    if name == "weighted_mean":
        assert problem.batch.weights is not None
        return float(np.sum(problem.batch.weights))
    if name in ("sum", "weighted"):
        return 1.0
    raise ValueError(f"reduction {name!r} has no single normaliser Ω")


def sum_type(problem: Problem) -> Problem:
    """The problem with its reduction's numerator only, Σ_i a_i ℓ_i: ``mean`` → ``sum``,
    ``weighted_mean`` → ``weighted``; sums are returned unchanged."""
    name = problem.reduction.name
    if name == "mean":
        return problem.with_reduction("sum")
    if name == "weighted_mean":
        return problem.with_reduction("weighted")
    if name in ("sum", "weighted"):
        return problem
    raise ValueError(f"reduction {name!r} has no sum-type numerator")


# -- the combinations -----------------------------------------------------------------------------
def rank_mean_scales(ranks: int) -> list[float]:
    """S_r = 1/R: the all-reduce average of DistributedDataParallel, ``lax.pmean``."""
    return [1.0 / ranks] * ranks


def summed_scales(ranks: int) -> list[float]:
    """S_r = 1: an all-reduce SUM with nothing divided."""
    return [1.0] * ranks


def count_weighted_scales(parts: Sequence[Problem]) -> list[float]:
    """S_r = Ω_r/Ω: each rank's gradient weighted by its share of the global normaliser."""
    omega = [normaliser(p) for p in parts]
    total = float(np.sum(omega))
    return [w / total for w in omega]


@dataclass(frozen=True)
class Penalty:
    """The L2 penalty (λ/2)‖θ‖² added to rank r's loss with scale T_r (0: rank r adds none)."""

    lam: float
    scales: tuple[float, ...]

    @property
    def total(self) -> float:
        """Σ_r T_r: the penalty's gradient in the combination is (Σ_r T_r) λθ (§5.10)."""
        return float(np.sum(self.scales))


def combination(parts: Sequence[Problem], scales: Sequence[float],
                penalty: Penalty | None = None) -> Grads:
    """G = Σ_r S_r ∇L_r (+ Σ_r T_r λθ), exact (float64 reference) for the parts' own losses."""
    if len(parts) != len(scales):
        raise ValueError(f"{len(parts)} parts but {len(scales)} scales")
    out: Grads = {}
    for part, s in zip(parts, scales, strict=True):
        for k, g in batch_grad(part)[1].items():
            out[k] = out.get(k, 0.0) + s * g
    if penalty is not None:
        theta = parts[0].params
        out = {k: v + penalty.total * penalty.lam * theta[k] for k, v in out.items()}
    return out


# -- the tolerance --------------------------------------------------------------------------------
ScaleError = Callable[[float], Sequence[float]]
"""u ↦ the relative error of each computed scale beyond its SCALE_ROUNDINGS, at unit roundoff u
(e.g. a normaliser summed from weights: ``normaliser_error``)."""


def _sum_error(values: np.ndarray) -> Callable[[float], float]:
    """u ↦ relative error of Σ values computed in floating point: 0 for small integers (exact
    in float32 below 2²⁴), else γ_n Σ|v| / |Σ v| (an n-term sum in any order, spec §7.1)."""
    n, total = len(values), float(np.sum(values))
    if np.all(values == np.round(values)) and float(np.sum(np.abs(values))) < 2.0**24:
        return lambda u: 0.0
    ratio = float(np.sum(np.abs(values))) / abs(total)
    return lambda u: float(gamma(n, u)) * ratio


def _weights(problem: Problem) -> np.ndarray:
    """The a_i of Ω = Σ a_i: ω_i for ``mean``, c_i for ``weighted_mean``."""
    if problem.reduction.name == "weighted_mean":
        assert problem.batch.weights is not None
        return problem.batch.weights
    return counts(problem)


def normaliser_error(parts: Sequence[Problem], *, local: bool = False) -> ScaleError:
    """u ↦ the relative error of each rank's scale when the engine computes it from the data:
    the global normaliser Ω = Σ_r Ω_r summed over all N examples (local sums, then the
    all-reduce: one N-term sum in some blocking), and with ``local`` (S_r ∝ Ω_r/Ω) rank r's own
    Ω_r as well. Integer counts are exact; weights c_i or class weights w_{y_i} err by
    γ_n Σ|a_i| / |Σ a_i| (spec §7.1). Sums (Ω = 1) have no normaliser to err."""
    if any(p.reduction.name not in ("mean", "weighted_mean") for p in parts):
        return lambda u: [0.0] * len(parts)
    everything = _sum_error(np.concatenate([_weights(p) for p in parts]))
    own = [_sum_error(_weights(p)) for p in parts]
    return lambda u: [everything(u) + (o(u) if local else 0.0) for o in own]


def combination_tolerance(parts: Sequence[Problem], scales: Sequence[float], dtype: str,
                          mode: str = "strict", *, penalty: Penalty | None = None,
                          scale_error: ScaleError | None = None,
                          roundings: int = SCALE_ROUNDINGS) -> dict[str, np.ndarray]:
    """Tolerance for a backend's Σ_r S_r ∇L_r (+ Σ_r T_r λθ) at (dtype, mode) (spec §5.6, §7.2).

    Each part must already be rounded to ``dtype``. With B_r the chapter-7 tolerance of part r's
    gradient (``problem_tolerance(part, dtype, mode).batch_grads``: the backend's bound plus the
    float64 reference's) and v_r = S_r ∇L_r + T_r λθ rank r's contribution, elementwise:

        Σ_r |S_r| B_r                               each rank's own gradient error, scaled
      + Σ_r (k + ε_r/u) u |S_r ∇L_r|                the scale: k = ``roundings`` roundings
                                                    (SCALE_ROUNDINGS) plus the relative error
                                                    ε_r of a computed scale (``scale_error``)
      + Σ_r (PENALTY_ROUNDINGS + k) u |T_r λθ|      the penalty's gradient and its scale
      + Σ_r u |v_r|                                 adding the penalty to the loss gradient
      + γ_R Σ_r |v_r|                               the all-reduce: an R-term sum, any order
      + Σ_r k · tiny · [S_r ∇L_r ≠ 0]               underflow of the scaled products

    every rounding term counted at the backend's u and at the reference's (u = 2⁻⁵³), as §7.2
    adds the two bounds. First order, like chapter 7. An accumulation over K micro-batches is the
    same sum with R = K (spec §5.1).
    """
    if len(parts) != len(scales):
        raise ValueError(f"{len(parts)} parts but {len(scales)} scales")
    if penalty is not None and len(penalty.scales) != len(parts):
        raise ValueError(f"{len(parts)} parts but {len(penalty.scales)} penalty scales")
    ranks = len(parts)
    precisions = (precision(dtype, mode), REFERENCE)
    theta = parts[0].params
    total: dict[str, np.ndarray] = {}

    def add(k: str, v: np.ndarray) -> None:
        total[k] = total.get(k, 0.0) + v

    contributions: list[Mapping[str, np.ndarray]] = []
    for r, (part, s) in enumerate(zip(parts, scales, strict=True)):
        bound = problem_tolerance(part, dtype, mode).batch_grads
        grads = batch_grad(part)[1]
        t = 0.0 if penalty is None else penalty.scales[r]
        v: dict[str, np.ndarray] = {}
        for k, g in grads.items():
            sg = np.abs(s * g)
            pen = np.abs(t * penalty.lam * theta[k]) if penalty is not None else np.zeros_like(g)
            v[k] = np.abs(s * g + (t * penalty.lam * theta[k] if penalty is not None else 0.0))
            add(k, abs(s) * bound[k])
            for p in precisions:
                eps = 0.0 if scale_error is None else float(scale_error(p.u)[r])
                add(k, (roundings * p.u + eps) * sg + roundings * p.tiny * (sg > 0))
                if penalty is not None:
                    add(k, (PENALTY_ROUNDINGS + roundings) * p.u * pen + p.u * v[k]
                        + (PENALTY_ROUNDINGS + roundings) * p.tiny * (pen > 0))
        contributions.append(v)
    for k in total:
        magnitude = np.sum([c[k] for c in contributions], axis=0)
        for p in precisions:
            add(k, gamma(ranks, p.u) * magnitude)
    return total


# -- the schemes of spec chapter 5 -----------------------------------------------------------------
SCHEMES = ("rank_mean", "count_weighted", "global_normaliser", "summed")
"""What a data-parallel engine can be asked to compute (``data_parallel`` gives each as a
``Combination``):

rank_mean          rank r's loss is its shard's own reduced loss; the gradients are averaged over
                   the R ranks (DistributedDataParallel; ``grad`` of ``lax.pmean`` of the loss)
count_weighted     rank r's loss is scaled by R·Ω_r/Ω (Ω = Σ_r Ω_r all-reduced), then averaged
global_normaliser  rank r's loss is its shard's sum-type loss divided by the global Ω; the
                   gradients are summed (all-reduce SUM)
summed             rank r's loss is its shard's own reduced loss; the gradients are summed and not
                   divided

A rank r that adds the penalty a_r (λ/2)‖θ‖² to its loss contributes T_r = a_r/R under the
averaging schemes and T_r = a_r under the summing ones."""

AVERAGING = ("rank_mean", "count_weighted")


@dataclass(frozen=True)
class Combination:
    """A data-parallel computation as a combination Σ_r S_r ∇L_r (+ Σ_r T_r λθ) (spec §5.6)."""

    parts: list[Problem]  # the problem rank r differentiates
    scales: list[float]  # S_r
    penalty: Penalty | None
    scale_error: ScaleError | None

    def expected(self) -> Grads:
        """The exact combination (float64 reference)."""
        return combination(self.parts, self.scales, self.penalty)

    def combination_tolerance(self, dtype: str, mode: str = "strict") -> dict[str, np.ndarray]:
        """``combination_tolerance`` of this combination; the parts must be rounded to
        ``dtype``."""
        return combination_tolerance(self.parts, self.scales, dtype, mode, penalty=self.penalty,
                                     scale_error=self.scale_error)


def data_parallel(problem: Problem, sizes: Sequence[int], scheme: str, *, lam: float = 0.0,
                  penalty_ranks: Sequence[float] = ()) -> Combination:
    """The combination ``scheme`` computes over ``problem`` split into shards of ``sizes``, with
    rank r adding ``penalty_ranks[r]`` × (λ/2)‖θ‖² to its loss (none when empty)."""
    own = shards(problem, sizes)
    ranks = len(own)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown data-parallel scheme {scheme!r}; choose one of {SCHEMES}")
    penalty = None
    if penalty_ranks:
        if len(penalty_ranks) != ranks:
            raise ValueError(f"penalty_ranks {list(penalty_ranks)} needs one entry per rank")
        d = 1.0 / ranks if scheme in AVERAGING else 1.0
        penalty = Penalty(lam, tuple(d * a for a in penalty_ranks))
    if scheme == "rank_mean":
        return Combination(own, rank_mean_scales(ranks), penalty, None)
    if scheme == "summed":
        return Combination(own, summed_scales(ranks), penalty, None)
    if scheme == "count_weighted":
        return Combination(own, count_weighted_scales(own), penalty,
                           normaliser_error(own, local=True))
    total = float(np.sum([normaliser(p) for p in own]))
    return Combination([sum_type(p) for p in own], [1.0 / total] * ranks, penalty,
                normaliser_error(own))
