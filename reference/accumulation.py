"""Gradient accumulation over micro-batches in the reference (spec §5.1–§5.5).

A step whose batch does not fit in memory at once is computed over K micro-batches: the batch's
N examples split into consecutive micro-batches of sizes n_1, …, n_K (Σ n_k = N, each n_k ≥ 1).
An ``Accumulation`` plan says what each micro-batch's backward pass differentiates,

    J_k(θ) = s_k L_k(θ) + t_k (λ/2)‖θ‖²,

with L_k the framework's reduced loss of micro-batch k under the plan's ``reduction`` (the
problem's own by default; a ``mean`` divides by the micro-batch's own normaliser Ω_k), s_k its
``scales[k]``, and t_k its ``penalties[k]``: how many times the L2 penalty is added to that
micro-batch's loss (none when ``penalties`` is empty). The accumulated gradient is

    G = Σ_k ∇J_k(θ) = Σ_k s_k ∇L_k(θ) + (Σ_k t_k) λθ,

every ∇J_k taken at the same θ (no update between micro-batches). Two accumulators compute it:

    sum       G = Σ_k ∇J_k: PyTorch's ``.grad`` (each ``backward()`` adds into it, nothing is
              divided), ``jax.tree.map(jnp.add, …)`` over ``jax.grad`` of each micro-batch
    average   an averaging accumulator (``optax.MultiSteps``, use_grad_mean=True: the running
              mean acc ← acc + (g − acc)/(k + 1)) fed ∇(K J_k); its mean is the same G. Fed the
              plain ∇L_k (what its users do) it computes the plan s_k = t_k = 1/K.

The schemes of spec §5.1–§5.3, as plans (Ω = Σ_k Ω_k the whole batch's normaliser, Ω_k = Σ ω_i
over micro-batch k: n_k for a plain ``mean``, its valid tokens for sequences, Σ w[y_i] for
class-weighted cross-entropy; ``reference.parallel.normaliser``):

    naive            local reduced losses, s_k = 1/K        exact iff the Ω_k are equal (§5.1)
    count_weighted   local reduced losses, s_k = Ω_k/Ω      exact for any sizes (§5.1, §5.3)
    global_normaliser  local *sums* Σ a_i ℓ_i, s_k = 1/Ω     exact for any sizes (§5.2, §5.3)
    summed           local reduced losses, s_k = 1          Σ_k ∇L_k: K ∇L for equal sizes (§5.5)

and ``with_l2`` adds the penalty once per step (t = (1, 0, …, 0): λθ, §5.4) or to every
micro-batch loss (t = (1, …, 1): Kλθ). This module is the float64 reference of all of it: the
micro-batches (``micro_batches``, via ``reference.parallel.shards``), the accumulated gradient
(``accumulate``, in any dtype for the ``numpy`` backend) and its tolerance
(``accumulation_tolerance``, via
``reference.parallel.combination_tolerance``, plus the running mean's rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .bounds import error_bound
from .grads import batch_grad
from .losses import REDUCTION_NAMES
from .numerics import REFERENCE, precision
from .parallel import (
    SCALE_ROUNDINGS,
    Penalty,
    combination_tolerance,
    normaliser,
    normaliser_error,
    shards,
    sum_type,
)
from .problem import Problem
from .types import DType, Grads, ProblemError

__all__ = [
    "ACCUMULATORS", "Accumulation", "PlanError", "accumulate", "accumulation_tolerance",
    "count_weighted", "full_batch_gradient", "full_batch_tolerance", "global_normaliser",
    "micro_batches", "micro_gradients", "naive", "running_mean_error", "summed", "with_l2",
]

ACCUMULATORS = ("sum", "average")
"""How a backend combines the micro-batch gradients (``Backend.accumulate``'s ``method``):
"sum" adds them (PyTorch ``.grad``; every backend with ``accumulate`` has it), "average" takes
their running mean after feeding ∇(K J_k) (``optax.MultiSteps``)."""


class PlanError(ValueError):
    """An accumulation plan that does not fit its problem (sizes, scales, reduction)."""


@dataclass(frozen=True)
class Accumulation:
    """A micro-batch plan: J_k = s_k L_k + t_k (λ/2)‖θ‖² over consecutive micro-batches.

    sizes       n_1..n_K, each ≥ 1, summing to the batch size N
    scales      s_1..s_K, finite
    reduction   the reduction of each L_k (a name of ``REDUCTION_NAMES``); None: the problem's
    l2          λ ≥ 0 of the penalty (λ/2)‖θ‖²
    penalties   t_1..t_K, or () for no penalty
    """

    sizes: tuple[int, ...]
    scales: tuple[float, ...]
    reduction: str | None = None
    l2: float = 0.0
    penalties: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        sizes = tuple(self.sizes)
        if not sizes or any(not isinstance(n, int | np.integer) or n < 1 for n in sizes):
            raise PlanError(f"{self!r}: sizes must be one or more integers >= 1")
        object.__setattr__(self, "sizes", tuple(int(n) for n in sizes))
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "penalties", tuple(float(t) for t in self.penalties))
        k = len(self.sizes)
        if len(self.scales) != k or not all(math.isfinite(s) for s in self.scales):
            raise PlanError(f"{self!r}: needs one finite scale per micro-batch ({k})")
        if self.penalties and (len(self.penalties) != k
                               or not all(math.isfinite(t) for t in self.penalties)):
            raise PlanError(f"{self!r}: penalties must be empty or one finite number per "
                            f"micro-batch ({k})")
        if self.reduction is not None and self.reduction not in REDUCTION_NAMES:
            raise PlanError(f"{self!r}: unknown reduction; choose one of {REDUCTION_NAMES}")
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise PlanError(f"{self!r}: l2 must be finite and >= 0")
        if self.penalties and self.l2 == 0:
            raise PlanError(f"{self!r}: penalties without l2 (pass l2 > 0, or no penalties)")

    @property
    def k(self) -> int:
        """K, the number of micro-batches."""
        return len(self.sizes)

    @property
    def penalty_scales(self) -> tuple[float, ...]:
        """t_1..t_K, zeros when the plan adds no penalty."""
        return self.penalties or (0.0,) * self.k

    @property
    def penalty(self) -> Penalty | None:
        """The penalty as ``reference.parallel.Penalty`` (λ, t), or None."""
        return Penalty(self.l2, self.penalties) if self.penalties else None

    def __repr__(self) -> str:
        out = f"Accumulation(sizes={self.sizes!r}, scales={self.scales!r}"
        if self.reduction is not None:
            out += f", reduction={self.reduction!r}"
        if self.l2:
            out += f", l2={self.l2!r}"
        if self.penalties:
            out += f", penalties={self.penalties!r}"
        return out + ")"


def micro_batches(problem: Problem, plan: Accumulation) -> list[Problem]:
    """The problem of each micro-batch: its consecutive examples, under the plan's reduction.

    Raises ``PlanError`` when the plan does not fit (sizes not summing to N, a reduction the
    batch cannot have: weighted ones need ``batch.weights``, ``sequence_mean`` a sequence batch
    with a valid token in every sequence)."""
    n = problem.batch.size
    if sum(plan.sizes) != n:
        raise PlanError(f"{plan!r}: sizes sum to {sum(plan.sizes)}, but the batch has N = {n}")
    try:
        base = problem if plan.reduction is None else problem.with_reduction(plan.reduction)
    except ProblemError as exc:
        raise PlanError(f"{plan!r}: reduction {plan.reduction!r} does not fit the problem: "
                        f"{exc}") from exc
    return shards(base, plan.sizes)


# -- the schemes -----------------------------------------------------------------------------------
def naive(problem: Problem, sizes: Sequence[int], reduction: str | None = None) -> Accumulation:
    """s_k = 1/K: the mean of the micro-batch losses (micro-batch means under ``mean``), what
    ``optax.MultiSteps`` computes from the micro-batch gradients it is fed (spec §5.1, §5.5)."""
    k = len(sizes)
    return Accumulation(tuple(sizes), (1.0 / k,) * k, reduction)


def count_weighted(problem: Problem, sizes: Sequence[int]) -> Accumulation:
    """Local reduced losses with the scales that make them exact for any sizes (spec §5.1, §5.3):
    s_k = Ω_k/Ω for ``mean`` and ``weighted_mean`` (n_k/N for a plain ``mean``; Σ w[y_i] over
    the micro-batch / over the batch for class-weighted cross-entropy), n_k/N for
    ``sequence_mean`` (a mean over sequences), and 1 for the sums."""
    name = problem.reduction.name
    if name in ("sum", "weighted"):
        return summed(problem, sizes)
    if name == "sequence_mean":
        n = problem.batch.size
        return Accumulation(tuple(sizes), tuple(m / n for m in sizes))
    omega = [normaliser(p) for p in shards(problem, sizes)]
    total = float(np.sum(omega))  # 0 when every label is ignored: L = 0, ∇L = 0 (spec §3.4)
    return Accumulation(tuple(sizes), tuple(w / total if total else 0.0 for w in omega))


def global_normaliser(problem: Problem, sizes: Sequence[int]) -> Accumulation:
    """Local sums Σ a_i ℓ_i (``sum`` for ``mean``, ``weighted`` for ``weighted_mean``), each
    scaled by 1/Ω, the normaliser of the whole batch: the token-level scheme of spec §5.2."""
    if problem.reduction.name not in ("mean", "weighted_mean"):
        raise PlanError(f"global_normaliser: reduction {problem.reduction.name!r} has no "
                        f"normaliser Ω to share; it needs 'mean' or 'weighted_mean'")
    total = float(np.sum([normaliser(p) for p in shards(problem, sizes)]))
    scale = 1.0 / total if total else 0.0  # Ω = 0: every label ignored, L = 0 (spec §3.4)
    return Accumulation(tuple(sizes), (scale,) * len(sizes), sum_type(problem).reduction.name)


def summed(problem: Problem, sizes: Sequence[int], reduction: str | None = None) -> Accumulation:
    """s_k = 1: the micro-batch gradients added and not divided (spec §5.5)."""
    return Accumulation(tuple(sizes), (1.0,) * len(sizes), reduction)


def with_l2(plan: Accumulation, lam: float, penalties: Sequence[float] | str = "once"
            ) -> Accumulation:
    """``plan`` with the penalty (λ/2)‖θ‖²: "once" (added to the first micro-batch's loss: λθ
    per step), "each" (added to every micro-batch's loss: Kλθ), or explicit t_1..t_K."""
    k = plan.k
    if penalties == "once":
        t: tuple[float, ...] = (1.0,) + (0.0,) * (k - 1)
    elif penalties == "each":
        t = (1.0,) * k
    elif isinstance(penalties, str):
        raise PlanError(f"penalties={penalties!r}: 'once', 'each' or one number per micro-batch")
    else:
        t = tuple(float(x) for x in penalties)
    return replace(plan, l2=float(lam), penalties=t)


# -- the accumulated gradient ----------------------------------------------------------------------
def micro_gradients(problem: Problem, plan: Accumulation, dtype: DType = np.float64
                    ) -> list[Grads]:
    """∇J_k = s_k ∇L_k + t_k λθ of every micro-batch, computed in ``dtype`` (the scaled loss
    gradient, then the penalty's (λ/2)·2θ added, as autodiff of J_k adds the two branches)."""
    dt = np.dtype(dtype)
    theta = {k: v.astype(dt) for k, v in problem.params.items()}
    half = dt.type(plan.l2 / 2)
    out = []
    for part, s, t in zip(micro_batches(problem, plan), plan.scales, plan.penalty_scales,
                          strict=True):
        _, g = batch_grad(part, dt)
        scaled = {k: dt.type(s) * v for k, v in g.items()}
        if t:
            scaled = {k: v + dt.type(t) * (half * (2 * theta[k])) for k, v in scaled.items()}
        out.append(scaled)
    return out


def accumulate(problem: Problem, plan: Accumulation, dtype: DType = np.float64,
               accumulator: str = "sum") -> Grads:
    """G = Σ_k ∇J_k (spec §5.1): the reference in float64; in another ``dtype`` the same
    computation in that dtype (the ``numpy`` backend).

    ``accumulator`` "sum" adds the ∇J_k in order; "average" feeds ∇(K J_k) = K s_k ∇L_k +
    K t_k λθ to a running mean m ← m + (g − m)/k, as ``optax.MultiSteps`` does (spec §5.5)."""
    if accumulator not in ACCUMULATORS:
        raise PlanError(f"accumulator {accumulator!r}: choose one of {ACCUMULATORS}")
    dt = np.dtype(dtype)
    if accumulator == "average":
        k = plan.k
        plan = replace(plan, scales=tuple(k * s for s in plan.scales),
                       penalties=tuple(k * t for t in plan.penalties))
    grads = micro_gradients(problem, plan, dt)
    total = {name: np.zeros_like(v) for name, v in grads[0].items()}
    for i, g in enumerate(grads, start=1):
        if accumulator == "sum":
            total = {name: total[name] + g[name] for name in total}
        else:
            total = {name: total[name] + (g[name] - total[name]) / dt.type(i) for name in total}
    return {name: v.astype(np.float64) for name, v in total.items()}


def full_batch_gradient(problem: Problem, plan: Accumulation, times: float = 1.0) -> Grads:
    """What an exact scheme's G must equal: times × ∇L(θ) of the whole batch (the reference's
    ``batch_grad``, the problem's own reduction) + (Σ_k t_k) λθ (float64)."""
    full = batch_grad(problem)[1]
    lam = plan.l2 * float(np.sum(plan.penalty_scales))
    return {k: times * full[k] + lam * problem.params[k] for k in full}


# -- the tolerance ---------------------------------------------------------------------------------
def _scale_error(problem: Problem, plan: Accumulation) -> list[float]:
    """Relative error of each s_k as the plan computed it, in float64, beyond its one rounding
    (counted in SCALE_ROUNDINGS): normalisers summed from non-integer weights (class weights,
    c_i) err by γ_n Σ|a_i|/|Σ a_i| (``reference.parallel.normaliser_error``, local and global
    sums). Counted for every plan of such a problem, whether or not its scales derive from the
    normalisers (1/K does not): a conservative term of order 10⁻¹⁵ relative."""
    if problem.reduction.name not in ("mean", "weighted_mean"):
        return [0.0] * plan.k
    return list(normaliser_error(shards(problem, plan.sizes), local=True)(REFERENCE.u))


def running_mean_error(fed: Sequence[Grads], u: float, tiny: float) -> Grads:
    """Bound on the rounding of the running mean m_k = m_{k−1} + (g_k − m_{k−1})/k of the fed
    gradients g_1..g_K at unit roundoff u (first order, from the exact values): each step rounds
    the difference, the division and the sum,

        |m̂_k − m_k| ≤ (1 − 1/k)|m̂_{k−1} − m_{k−1}| + 2u|g_k − m_{k−1}|/k + u|m_k| + tiny,

    and 1 − 1/k ≤ 1, so the errors add up. (A mean taken as a sum then divided by K errs by
    γ_K Σ|g_k|/K + u|m_K|; ``accumulation_tolerance`` counts that too, so either implementation
    is covered.)"""
    m = {k: np.zeros_like(v) for k, v in fed[0].items()}
    err = {k: np.zeros_like(v) for k, v in fed[0].items()}
    for i, g in enumerate(fed, start=1):
        for k in m:
            d = g[k] - m[k]
            m[k] = m[k] + d / i
            err[k] = err[k] + 2 * u * np.abs(d) / i + u * np.abs(m[k]) + tiny * (d != 0)
    return err


def accumulation_tolerance(problem: Problem, plan: Accumulation, dtype: str,
                           mode: str = "strict", accumulator: str = "sum"
                           ) -> dict[str, np.ndarray]:
    """Tolerance for a backend's G against the exact Σ_k ∇J_k at (dtype, mode) (spec §5.1, §7.2).

    ``problem`` must be rounded to ``dtype``. The summing accumulator is the combination
    Σ_k s_k ∇L_k + (Σ_k t_k) λθ of ``reference.parallel.combination_tolerance`` with K parts (each
    micro-batch's chapter-7 bound scaled by |s_k|, the scale's roundings, the penalty's, and the
    K-term sum; at the backend's u and the reference's). The averaging accumulator is fed
    K s_k ∇L_k: one more rounding of the scale (K·s_k), plus ``running_mean_error`` at the
    backend's u and the final division u|G|."""
    parts = micro_batches(problem, plan)
    eps = _scale_error(problem, plan)
    average = accumulator == "average"
    tol = combination_tolerance(parts, plan.scales, dtype, mode, penalty=plan.penalty,
                                scale_error=lambda u: eps,
                                roundings=SCALE_ROUNDINGS + (1 if average else 0))
    if not average:
        return tol
    k = plan.k
    fed = micro_gradients(problem, replace(plan, scales=tuple(k * s for s in plan.scales),
                                           penalties=tuple(k * t for t in plan.penalties)))
    p = precision(dtype, mode)
    extra = running_mean_error(fed, p.u, p.tiny)
    g = accumulate(problem, plan)
    return {name: tol[name] + extra[name] + p.u * np.abs(g[name]) for name in tol}


def full_batch_tolerance(problem: Problem, plan: Accumulation, dtype: str, mode: str = "strict",
                         accumulator: str = "sum", times: float = 1.0) -> dict[str, np.ndarray]:
    """Tolerance for a backend's G against ``full_batch_gradient`` (times × ∇L + λθ Σ t_k):
    ``accumulation_tolerance`` (G against the exact combination, which equals that for an exact
    scheme)
    plus the float64 reference's own chapter-7 bound on ∇L, scaled, and the rounding of forming
    times × ∇L + λθ Σ t_k from it (at the reference's u: u|times ∇L| + 2u|λθ Σ t_k| + u|sum|)."""
    tol = accumulation_tolerance(problem, plan, dtype, mode, accumulator)
    own = error_bound(problem, REFERENCE).batch_grads
    full = batch_grad(problem)[1]
    lam = plan.l2 * float(np.sum(plan.penalty_scales))
    u = REFERENCE.u
    return {k: tol[k] + abs(times) * own[k] + u * np.abs(times * full[k])
            + 2 * u * np.abs(lam * problem.params[k])
            + u * np.abs(times * full[k] + lam * problem.params[k]) for k in tol}
