"""The update step (spec chapter 6): SGD, Adam and AdamW as PyTorch documents them.

An optimiser turns the batch gradient ∇L(θ) (spec chapter 2) into new parameters. The rules,
elementwise for every parameter tensor, at step t = 1, 2, … (one step per batch):

    L2 weight decay (sgd, adam):   g ← g + λθ                  the gradient of L + (λ/2)‖θ‖²
    sgd, momentum μ = 0:           θ ← θ − η g
    sgd, momentum μ > 0:           b ← g (t = 1), b ← μ b + g (t > 1);   θ ← θ − η b
                                   (dampening 0, nesterov False: torch.optim.SGD's defaults;
                                   optax.sgd's ``trace``)
    adam:                          m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²
                                   m̂ = m / (1 − β₁ᵗ),      v̂ = v / (1 − β₂ᵗ)
                                   θ ← θ − η m̂ / (√v̂ + ε)     (ε outside the square root)
    adamw (decoupled decay):       θ ← θ − ηλθ, then the adam step without L2

``torch.optim.SGD/Adam/AdamW`` (``weight_decay=`` is L2 for SGD and Adam, decoupled for AdamW)
and ``optax.sgd/adam/adamw`` (L2 as ``optax.chain(optax.add_decayed_weights(λ), …)``) compute
exactly these (spec §6.1–§6.6). Scalars — η, the β's, the bias corrections 1 − βᵗ and their
square roots — are computed in float64 (Python floats) and rounded once to the dtype, as PyTorch
and optax (under ``jax_enable_x64``) do.

``step`` runs one update in ``dtype`` (float32 runs the same code on float32 arrays: the
``numpy`` backend's float32 mode); ``train`` runs one step per batch from ``problem.params``,
each batch reduced with ``problem.reduction``; ``shadow`` evaluates the reference update along
a trajectory of parameters a backend reported (spec §6.2, multi-step comparisons).

Beside each rule, its error model: ``update_step_bound`` runs one step in the R arithmetic of
``reference.numerics`` (spec §7.1), and ``update_tolerance`` gives the tolerance of a backend's
parameters after each step of a trajectory (spec §6.1, §7.2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .batch import Batch
from .bounds import error_bound
from .grads import batch_grad
from .numerics import REFERENCE, Precision, R, Rounding, precision
from .problem import Problem
from .types import Grads, Params

__all__ = [
    "OPTIMIZER_NAMES", "Optimizer", "State", "UpdateState", "gradient", "sgd_decoupled_step",
    "shadow", "step", "train", "update_step_bound", "update_tolerance",
]

OPTIMIZER_NAMES = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class Optimizer:
    """An optimiser and its hyperparameters (PyTorch's names and defaults).

    ``weight_decay`` λ is L2 in the gradient (g + λθ) for "sgd" and "adam", decoupled
    (θ − ηλθ) for "adamw". ``momentum`` applies to "sgd" only, ``betas`` and ``eps`` to the
    Adam family only.
    """

    name: str
    lr: float
    momentum: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZER_NAMES:
            raise ValueError(f"Optimizer({self.name!r}): choose one of {OPTIMIZER_NAMES}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if not (self.lr > 0 and 0 <= self.momentum < 1 and self.eps > 0
                and self.weight_decay >= 0 and all(0 <= b < 1 for b in self.betas)):
            raise ValueError(f"{self!r}: need lr > 0, 0 <= momentum < 1, 0 <= betas < 1, "
                             f"eps > 0, weight_decay >= 0")

    @property
    def adam(self) -> bool:
        return self.name in ("adam", "adamw")

    @property
    def l2(self) -> float:
        """λ added to the gradient (0 for adamw, whose decay is decoupled)."""
        return 0.0 if self.name == "adamw" else self.weight_decay

    def bias_corrections(self, t: int) -> tuple[float, float]:
        """(1 − β₁ᵗ, 1 − β₂ᵗ) in float64."""
        b1, b2 = self.betas
        return 1.0 - b1**t, 1.0 - b2**t


@dataclass
class State:
    """Optimiser state after ``t`` steps: momentum buffer (sgd) or moments m, v (adam)."""

    t: int = 0
    buf: dict[str, np.ndarray] = field(default_factory=dict)
    m: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)


def step(opt: Optimizer, params: Params, grads: Mapping[str, np.ndarray], state: State,
         dtype: np.dtype | type = np.float64) -> tuple[dict[str, np.ndarray], State]:
    """One update of every parameter from its gradient; returns new parameters and state."""
    dt = np.dtype(dtype)
    t = state.t + 1
    new = State(t)
    out: dict[str, np.ndarray] = {}
    for k in params:
        theta, g = np.asarray(params[k], dt), np.asarray(grads[k], dt)
        if opt.l2:
            g = g + dt.type(opt.l2) * theta
        if opt.name == "sgd":
            if opt.momentum:
                g = g.copy() if t == 1 else dt.type(opt.momentum) * state.buf[k] + g
                new.buf[k] = g
            out[k] = theta - dt.type(opt.lr) * g
            continue
        if opt.name == "adamw" and opt.weight_decay:
            theta = theta * dt.type(1.0 - opt.lr * opt.weight_decay)
        b1, b2 = opt.betas
        m0 = state.m.get(k, np.zeros_like(theta))
        v0 = state.v.get(k, np.zeros_like(theta))
        m = dt.type(b1) * m0 + dt.type(1.0 - b1) * g
        v = dt.type(b2) * v0 + dt.type(1.0 - b2) * (g * g)
        bc1, bc2 = opt.bias_corrections(t)
        denom = np.sqrt(v) / dt.type(np.sqrt(bc2)) + dt.type(opt.eps)
        out[k] = theta - dt.type(opt.lr / bc1) * (m / denom)
        new.m[k], new.v[k] = m, v
    return out, new


def sgd_decoupled_step(params: Params, grads: Mapping[str, np.ndarray], lr: float,
                       weight_decay: float) -> dict[str, np.ndarray]:
    """θ(1 − ηλ) − η g in float64: one plain SGD step with decoupled weight decay. Equal to the
    L2 step θ − η(g + λθ) of ``step`` in exact arithmetic (spec §6.5)."""
    return {k: np.asarray(params[k], np.float64) * (1.0 - lr * weight_decay)
            - lr * np.asarray(grads[k], np.float64) for k in params}


def gradient(problem: Problem, params: Params, batch: Batch,
             dtype: np.dtype | type = np.float64) -> Grads:
    """∇L of ``batch`` (reduced with ``problem.reduction``) at ``params``."""
    return batch_grad(problem.with_params(params).with_batch(batch), np.dtype(dtype))[1]


def train(problem: Problem, opt: Optimizer, batches: Sequence[Batch],
          dtype: np.dtype | type = np.float64) -> dict[str, np.ndarray]:
    """Start at ``problem.params``; one ``step`` per batch; the final parameters (float64)."""
    dt = np.dtype(dtype)
    theta = {k: v.astype(dt) for k, v in problem.params.items()}
    state = State()
    for b in batches:
        theta, state = step(opt, theta, gradient(problem, theta, b, dt), state, dt)
    return {k: v.astype(np.float64) for k, v in theta.items()}


def shadow(problem: Problem, opt: Optimizer, batches: Sequence[Batch],
           iterates: Sequence[Params]) -> list[dict[str, np.ndarray]]:
    """The reference's step along a reported trajectory θ̂₀ = problem.params, θ̂₁, …, θ̂_{K−1}:
    entry k is the float64 update from θ̂_k with the gradient of batch k at θ̂_k and the state
    (momentum, moments, counter) accumulated from the gradients at θ̂_0..θ̂_k. Compared with the
    backend's θ̂_{k+1}, each step is checked from the point the backend actually reached."""
    if len(iterates) != len(batches):
        raise ValueError("need one iterate (the parameters before the step) per batch")
    state = State()
    out = []
    for b, theta in zip(batches, iterates, strict=True):
        theta = {k: np.asarray(v, np.float64) for k, v in theta.items()}
        new, state = step(opt, theta, gradient(problem, theta, b), state)
        out.append(new)
    return out


# -- the error model of the update step (spec §6.1, §7.1) ---------------------------------------
@dataclass
class UpdateState:
    """Optimiser state as the bound carries it: value (the float64 reference) and error bound."""

    t: int = 0
    buf: dict[str, R] = field(default_factory=dict)
    m: dict[str, R] = field(default_factory=dict)
    v: dict[str, R] = field(default_factory=dict)


def _lincomb(r: Rounding, c1: float, x: R, c2: float, y: R) -> R:
    """c₁x + c₂y with constants rounded once: |c₁|e_x + |c₂|e_y + 3u(|c₁x| + |c₂y|) + u|result|
    (+ tiny per product). 3u covers both ways frameworks write a moving average: the affine form
    (c₁, c₂ rounded, two products, one sum: 2u) and ``lerp`` x + w(y − x) (or its mirror for
    w ≥ ½), whose rounding is ≤ 3u·min(w, 1 − w)|y − x| ≤ 3u(|c₁x| + |c₂y|)."""
    a, b = np.abs(c1 * x.v), np.abs(c2 * y.v)
    v = c1 * x.v + c2 * y.v
    under = r.tiny * ((r.maybe_nonzero(x) & (c1 != 0)).astype(float)
                      + (r.maybe_nonzero(y) & (c2 != 0)).astype(float))
    return R(v, abs(c1) * x.e + abs(c2) * y.e + 3 * r.u * (a + b) + r.u * np.abs(v) + under)


def _div_by_positive(r: Rounding, x: R, y: R, floor: float) -> R:
    """x / y where the computed y is known to be ≥ ``floor`` > 0 (√v̂ + ε ≥ ε): rigorously
    |x̂/ŷ − x/y| ≤ (e_x y + |x| e_y) / (y · max(y − e_y, floor)), plus the division's rounding."""
    v = x.v / y.v
    low = np.maximum(y.v - y.e, floor)
    return R(v, (x.e * y.v + np.abs(x.v) * y.e) / (y.v * low) + r.u * np.abs(v)
             + r.tiny * r.maybe_nonzero(x))


def _worse(a: R, b: R) -> R:
    """Two evaluation orders of the same value: keep the larger error bound."""
    return R(a.v, np.maximum(a.e, b.e))


def update_step_bound(opt: Optimizer, theta: Mapping[str, np.ndarray], grads: Mapping[str, R],
                      state: UpdateState, p: Precision) -> tuple[dict[str, R], UpdateState]:
    """One optimiser step in R arithmetic: θ' (value and error bound) from exact θ and gradients
    ``grads`` (value, error bound), at precision p (spec §6.1; rules of ``reference.update``).

    Where frameworks order the arithmetic differently — PyTorch's Adam divides √v by √(1 − β₂ᵗ)
    and scales m/(·) by η/(1 − β₁ᵗ), optax divides m and v by their bias corrections first; AdamW
    multiplies θ by (1 − ηλ) in PyTorch, adds λθ to the update before scaling by −η in optax —
    both orders are bounded and the larger bound is kept. Scalars are computed in float64 and
    rounded once (``Rounding.const``)."""
    r = Rounding(p)
    t = state.t + 1
    new = UpdateState(t)
    out: dict[str, R] = {}
    for k in theta:
        th = r.exact(theta[k])
        g = grads[k]
        raw = g
        if opt.l2:
            g = r.add(g, r.mul(r.const(opt.l2), th))
        if opt.name == "sgd":
            if opt.momentum:
                g = g if t == 1 else r.add(r.mul(r.const(opt.momentum), state.buf[k]), g)
                new.buf[k] = g
            out[k] = r.sub(th, r.mul(r.const(opt.lr), g))
            if opt.l2 and (not opt.momentum or t == 1):
                # the same value written with decoupled decay, θ(1 − ηλ) − ηg (spec §6.5)
                out[k] = _worse(out[k], r.sub(r.mul(th, r.const(1.0 - opt.lr * opt.l2)),
                                              r.mul(r.const(opt.lr), raw)))
            continue
        b1, b2 = opt.betas
        zero = r.exact(np.zeros_like(theta[k]))
        m = _lincomb(r, b1, state.m.get(k, zero), 1.0 - b1, g)
        v = _lincomb(r, b2, state.v.get(k, zero), 1.0 - b2, r.mul(g, g))
        new.m[k], new.v[k] = m, v
        bc1, bc2 = opt.bias_corrections(t)
        eps = r.const(opt.eps)
        floor = opt.eps * (1.0 - 3.0 * p.u)
        # PyTorch (and reference.update): θ(1 − ηλ) − (η/bc₁) · m / (√v / √bc₂ + ε)
        denom = r.add(r.div(r.sqrt(v), r.const(math.sqrt(bc2))), eps)
        decayed = th if opt.name != "adamw" else r.mul(th, r.const(1.0 - opt.lr * opt.weight_decay))
        torch_order = r.sub(decayed, r.mul(r.const(opt.lr / bc1), _div_by_positive(r, m, denom,
                                                                                    floor)))
        # optax: θ + (−η)·(m̂ / (√v̂ + ε) [+ λθ]),  m̂ = m / bc₁, v̂ = v / bc₂
        q = _div_by_positive(r, r.div(m, r.const(bc1)),
                             r.add(r.sqrt(r.div(v, r.const(bc2))), eps), floor)
        if opt.name == "adamw":
            q = r.add(q, r.mul(r.const(opt.weight_decay), th))
        optax_order = r.sub(th, r.mul(r.const(opt.lr), q))
        out[k] = _worse(torch_order, optax_order)
    return out, new


def update_tolerance(problem: Problem, opt: Optimizer, batches: Sequence[Batch],
                     iterates: Sequence[Mapping[str, np.ndarray]], dtype: str,
                     mode: str = "strict") -> list[dict[str, np.ndarray]]:
    """Tolerances for a backend's parameters after each step, checked along its own trajectory.

    ``iterates[k]`` are the parameters the backend reported before step k (``problem.params``
    for k = 0, exact in ``dtype``); entry k bounds |θ̂_{k+1} − θ_{k+1}| where θ_{k+1} is the
    reference's step from ``iterates[k]`` (``reference.update.shadow``). The gradient of batch k
    at ``iterates[k]`` carries the chapter-7 bound of the backend's dtype and of the float64
    reference; both are propagated through the update, and through the optimiser state from
    step to step, at the backend's and at the reference's unit roundoff, and added (spec §7.2,
    §6.1). ``problem`` and the batches must already be rounded to ``dtype``.
    """
    states = {"backend": UpdateState(), "reference": UpdateState()}
    precisions = {"backend": precision(dtype, mode), "reference": REFERENCE}
    out = []
    for batch, theta in zip(batches, iterates, strict=True):
        at = problem.with_params(theta).with_batch(batch)
        _, value = batch_grad(at)
        total: dict[str, np.ndarray] = {}
        for who, p in precisions.items():
            bound = error_bound(at, p).batch_grads
            grads = {k: R(value[k], bound[k]) for k in value}
            new, states[who] = update_step_bound(opt, at.params, grads, states[who], p)
            for k, x in new.items():
                total[k] = total.get(k, 0.0) + x.e
        out.append(total)
    return out
