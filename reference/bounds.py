"""The running error bound through a whole problem, and the tolerance derived from it (spec
chapter 7).

Every tolerance of a single problem's quantities comes from here: ``error_bound`` runs the
R arithmetic of ``reference.numerics`` forward and backward through the network, in the same
structure as ``reference.grads`` and by the same generic pass over the layers (each layer type's
bound rule is its own: ``bound_forward``/``bound_backward``, ``reference.layers``), then through
the loss (``reference.losses.loss_bound``) and the reduction. ``problem_tolerance`` is the
tolerance for comparing a backend with the reference: the backend's bound plus the reference's
own float64 bound (spec §7.2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .grads import sites_of
from .losses import coefficient_error, cotangent_factors, loss_bound
from .losses import rows as _rows
from .numerics import REFERENCE, Precision, R, Rounding, gamma, precision
from .problem import Problem
from .types import Grads, Site

__all__ = ["Bound", "Override", "error_bound", "problem_tolerance", "scaled_grads_bound"]


class _Deferred(Mapping[str, np.ndarray]):
    """Per-example bounds computed at the first look: most properties compare only the loss
    and the batch gradient, and the per-example backward bound is a third of ``error_bound``'s
    work. The values are those ``compute`` returns, computed once."""

    def __init__(self, compute: Callable[[], Grads]) -> None:
        self._compute: Callable[[], Grads] | None = compute
        self._value: Grads = {}

    def _get(self) -> Grads:
        if self._compute is not None:
            self._value, self._compute = self._compute(), None
        return self._value

    def __getitem__(self, key: str) -> np.ndarray:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


@dataclass(frozen=True, eq=False)
class Bound:
    """Absolute error bounds, same shapes as the quantities they bound. ``grads`` (per-example)
    is empty for a problem whose per-example gradients are undefined (spec §4.3)."""

    losses: np.ndarray  # (N,)
    grads: Mapping[str, np.ndarray]  # {name: (N, *shape)} per-example (computed at first look)
    loss: float  # the reduced loss
    batch_grads: Grads  # {name: shape}

    def __add__(self, other: Bound) -> Bound:
        mine, theirs = self.grads, other.grads
        return Bound(
            self.losses + other.losses,
            _Deferred(lambda: {k: v + theirs[k] for k, v in mine.items()}),
            self.loss + other.loss,
            {k: v + other.batch_grads[k] for k, v in self.batch_grads.items()},
        )


@dataclass(frozen=True, eq=False)
class _Forward:
    """The forward pass in R arithmetic, on rows (examples, or tokens of a sequence batch):
    each layer's input, and what its bound rule kept for its backward bound."""

    inputs: list[R]
    saved: list[Any]
    sites: list[Site]
    output: R


def _forward_bound(problem: Problem, r: Rounding) -> _Forward:
    lead = 2 if problem.batch.sequence else 1
    a = r.exact(_rows(problem.batch.inputs, lead))
    inputs: list[R] = []
    saved: list[Any] = []
    sites = sites_of(problem, lead=lead)
    for layer, at in zip(problem.network.layers, sites, strict=True):
        inputs.append(a)
        a, kept = layer.bound_forward(a, at, r)
        saved.append(kept)
    return _Forward(inputs, saved, sites, a)


def error_bound(problem: Problem, p: Precision,
                reference: tuple[np.ndarray, Grads] | None = None) -> Bound:
    """First-order bound on the error of a backend computing ``problem`` at precision p.

    Everything runs in R arithmetic on the problem's own values; ``reference`` is accepted for
    compatibility and unused. For a sequence batch rows are tokens: ℓ_i = Σ_t m_it ℓ_it adds
    γ_{T−1}, and the reduction over all N·T rows uses γ_{NT} (a flat sum, spec §7.1).
    """
    r = Rounding(p)
    fw = _forward_bound(problem, r)
    rows_loss, cot = loss_bound(problem.loss, problem.batch, fw.output, r)
    n = problem.batch.size
    t = problem.batch.inputs.shape[1] if problem.batch.sequence else 1
    m = problem.batch.token_mask.reshape(-1).astype(float) if problem.batch.sequence else None
    if m is not None:  # masked tokens: ℓ and ∂ℓ/∂f are multiplied by 0 exactly
        rows_loss = R(rows_loss.v * m, rows_loss.e * m)
        cot = R(cot.v * m[:, None], cot.e * m[:, None])
    losses = R(rows_loss.v.reshape(n, t).sum(axis=1),
               rows_loss.e.reshape(n, t).sum(axis=1)
               + gamma(t - 1, p.u) * np.abs(rows_loss.v).reshape(n, t).sum(axis=1)
               + r.sum_flush(R(rows_loss.v.reshape(n, t), rows_loss.e.reshape(n, t)), 1))
    kappa = problem.coefficients
    eps = coefficient_error(problem.reduction, problem.counts, problem.batch.weights, p.u)
    k_rows = np.repeat(kappa, t)
    eps_rows = np.repeat(eps, t)
    names = problem.network.param_shapes()

    # Per-example gradients: the backward pass seeded with ∂ℓ_i/∂f_i.
    per_example: Mapping[str, np.ndarray] = {}
    if not problem.network.couples_examples:
        per_example = _Deferred(lambda: {k: e for k, (e, _) in
                                         _backward_bound(problem, fw, cot, r, n).items()})

    # The batch gradient: frameworks seed the backward pass with κ_i ∂ℓ_i/∂f_i (κ_i rounded,
    # relative error ε_i), so underflow happens at the scaled magnitude; then a sum over all
    # rows (γ of the number of rows: a flat sum). A backend that instead scales per-example
    # gradients at the end makes one more rounding (u|κ_i g_i| + tiny), also added.
    # κ_i is one more factor of the seed's product, multiplied in at any point: every partial
    # product that includes it may flush (e.g. XLA forms κ_i·(1/D) first and flushes it when
    # subnormal, then scales it by 2(f − y)): steps + terms + 1 (κ_i itself may be a quotient)
    # flushes of ≤ tiny·max(1, |κ_i|)·Π max(1, |factor|) each (spec §7.1.2).
    steps, terms, gain = cotangent_factors(problem.loss, problem.batch, fw.output)
    seed = R(k_rows[:, None] * cot.v,
             np.abs(k_rows)[:, None] * cot.e
             + (eps_rows + p.u)[:, None] * np.abs(k_rows[:, None] * cot.v)
             + r.flush(steps + terms + 1, k_rows[:, None], gain) * r.maybe_nonzero(cot))
    scaled = _backward_bound(problem, fw, seed, r, n)

    def reduce(err: np.ndarray, shadow: np.ndarray, rows: int, acc_u: float = p.u
               ) -> np.ndarray:
        # per row: a scaling (κ_i g_i) and an addition, each may underflow or flush
        return (np.sum(err + p.u * shadow + 2 * p.tiny * (shadow > 0), axis=0)
                + gamma(rows, acc_u) * shadow.sum(0))

    loss_terms = np.abs(kappa) * losses.e + eps * np.abs(kappa * losses.v)
    k_abs_loss = np.abs(kappa) * (np.abs(rows_loss.v).reshape(n, t).sum(axis=1))
    return Bound(
        losses=losses.e,
        grads=per_example,
        loss=float(reduce(loss_terms, k_abs_loss, n * t)),
        batch_grads={k: reduce(*scaled[k], n * t, r.acc_u) for k in names},
    )


def _backward_bound(problem: Problem, fw: _Forward, g: R, r: Rounding,
                    n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """From the output cotangent g (rows), per parameter: (error bound, |value|) of each
    example's contribution (N, *shape): Σ over its rows of z̄ aᵀ and z̄ (Dense), ȳ ⊙ x̂ and ȳ
    (norms), the sum over T rows adding γ_{T−1} Σ|terms|."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    layers = problem.network.layers
    first = min(int(name.split(".")[0]) for name in problem.network.param_shapes())
    t = g.v.shape[0] // n

    def per_example(e: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e3, v3 = e.reshape((n, t) + e.shape[1:]), np.abs(v).reshape((n, t) + v.shape[1:])
        return (e3.sum(1) + gamma(t - 1, r.acc_u) * v3.sum(1) + r.sum_flush(R(v3, e3), 1),
                v3.sum(1))

    for k in range(len(layers) - 1, first - 1, -1):
        own, g = layers[k].bound_backward(g, fw.inputs[k], fw.saved[k], fw.sites[k], r,
                                          per_example, k > first)
        for name, v in own.items():
            out[f"{k}.{name}"] = v
    for alias, target in problem.network.tied:  # the sum over the uses: one more addition
        (e1, s1), (e2, s2) = out[target], out.pop(alias)
        out[target] = (e1 + e2 + r.u * (s1 + s2) + r.tiny * ((s1 + s2) > 0), s1 + s2)
    return {k: out[k] for k in problem.network.param_shapes()}


# -- the tolerance of a comparison with the reference ----------------------------------------------
Override = float | Mapping[str, float] | None


def problem_tolerance(problem: Problem, dtype: str, mode: str = "strict", *,
                      override: Override = None, twice: bool = False) -> Bound:
    """Tolerance for a backend at (dtype, mode) against the float64 reference (spec §7.2).

    ``problem`` must already be rounded to ``dtype`` (``Problem.rounded``). ``twice=True`` is for
    comparing two backend results with each other (both at dtype), e.g. mean of per-example
    gradients against the batch gradient (spec §2.13). ``override`` replaces the bound: one
    number for every quantity, or a dict {"loss", "grad"} of absolute tolerances.
    """
    p = precision(dtype, mode)
    b = error_bound(problem, p)
    # error_bound is a function of (problem, p): at the reference's own precision (float64
    # strict) the reference's bound is b itself, not computed a second time
    other = b if twice or p == REFERENCE else error_bound(problem, REFERENCE)
    total = b + other
    if override is None:
        return total
    spec = {"loss": override, "grad": override} if isinstance(override, float | int) else override
    lt, gt = float(spec.get("loss", 0.0)), float(spec.get("grad", 0.0))
    return Bound(
        np.full_like(total.losses, lt),
        {k: np.full_like(v, gt) for k, v in total.grads.items()},
        lt,
        {k: np.full_like(v, gt) for k, v in total.batch_grads.items()},
    )


# -- a library's per-example field s·κ_i·g_i (spec §9.8) -----------------------------------------
def scaled_grads_bound(problem: Problem, factors: np.ndarray, grads: Grads, dtype: str,
                       mode: str = "strict") -> Grads:
    """Tolerance of f_i·g_i = s·κ_i·g_i computed by backpropagating L = Σ κ_i ℓ_i (and multiplying
    by s), for ``problem`` rounded to ``dtype``: example i's f_i g_i is the batch gradient of the
    one-example problem {x_i} under the reduction "weighted" with c = f_i, so its bound is that
    problem's ``batch_grads`` tolerance (the backward pass seeded with f_i, underflow included,
    §7.1), plus |f_i g_i| times the computed κ_i's relative error (``coefficient_error``) and two
    roundings (the seed's product with ℓ_i's cotangent, the multiplication by s)."""
    from dataclasses import replace

    from .losses import Reduction

    u = precision(dtype, mode).u
    eps = coefficient_error(problem.reduction, problem.counts, problem.batch.weights, u) + 2 * u
    f = np.asarray(factors, dtype=np.float64)
    out = {k: np.zeros_like(v, dtype=np.float64) for k, v in grads.items()}
    for i in range(problem.batch.size):
        one = replace(problem.with_batch(replace(problem.batch.take([i]),
                                                 weights=np.array([f[i]]))),
                      reduction=Reduction("weighted")).rounded(dtype)
        b = problem_tolerance(one, dtype, mode)
        for k in out:
            out[k][i] = b.batch_grads[k] + eps[i] * np.abs(f[i] * grads[k][i])
    return out
