"""Training loops (spec chapter 10): accumulation windows, clipping, loss scaling, the reported
loss. The float64 reference of what one epoch of a training loop computes.

A ``Loop`` reads the problem's batch as a data loader would hand it out: consecutive
micro-batches of sizes ``micro_batches`` (n_1, …, n_M, summing to N). Every ``accumulation_steps``
(K) consecutive micro-batches form one *window*, and each window is one optimizer step; the last
window of the epoch has fewer than K micro-batches when K does not divide M (spec §10.5). For
window w, at the parameters θ the previous step left (every micro-batch of the window at the same
θ, spec §2.5):

    G_w     = ∇L_w(θ), L_w the problem's reduction over ALL examples (tokens) of the window:
              the gradient of the window's mean loss, however the backend splits it over
              micro-batches and ranks (spec §5.1–§5.3, §10.1)
    DP-SGD  G_w = (1/B) Σ_{i ∈ window} φ_C(‖g_i‖) g_i,  g_i = ∇ℓ_i (spec §1), B the expected
            batch size, when ``per_example_clip`` C is set (noise 0, spec §10.2)
    clip    G_w ← φ_c(‖G_w‖) G_w, ‖·‖ over every element of every parameter, once per window,
            after accumulation, all-reduction and unscaling, when ``clip_norm`` c is set
            (spec §10.1)
    step    θ ← reference.update.step(optimizer, θ, G_w, state) (spec chapter 6)

with the clipping factor φ_C(x) = min(1, C/x). Under loss scaling (``loss_scale`` S, a power
of two) the backend differentiates S·L and unscales by 1/S before anything inspects the
gradient: exact in binary floating point, so the reference skips both. A window whose gradient
is not finite is *skipped* (spec §10.3): nothing advances — not θ, not the optimizer state, not
the step counter t used for bias correction. In this suite a non-finite gradient is made on
purpose: every input of the micro-batches listed in ``overflow`` is NaN (``loop_batches``), as
an fp16 overflow would make it. The *reported loss* of window w is L_w(θ) (spec §10.4): the
mean over all examples (tokens) of the window, not the mean of micro-batch means.

``run_loop`` computes all of it (in float64, or in another dtype for the ``numpy`` backend);
``shadow_loop`` evaluates the reference's steps along a trajectory a backend reported, which
``reference.loop_bounds.loop_tolerance`` bounds (spec §7.2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .batch import Batch
from .capabilities import register
from .grads import batch_grad, per_example_grads
from .problem import Problem
from .types import DType, Grads, Params
from .update import Optimizer, State, step

__all__ = [
    "CLIP_EPSILON", "LOOP_FEATURES", "Loop", "LoopError", "LoopResult", "clip_factor",
    "global_norm", "loop_batches", "prefix", "run_loop", "shadow_loop", "window_gradient",
    "window_problem",
]

LOOP_FEATURES = {
    "loop:clip_norm": "gradient clipping by global norm once per optimizer step (spec §10.1)",
    "loop:per_example_clip": "per-example clipping, DP-SGD with noise 0 (spec §10.2)",
    "loop:loss_scale": "loss scaling; a non-finite step is skipped (spec §10.3)",
    "loop:reported_loss": "the loss a trainer reports per optimizer step (spec §10.4)",
}
"""The capability names of chapter 10, name → one-line description (registered in
``reference.capabilities.VOCABULARY`` at import)."""
for _name, _description in LOOP_FEATURES.items():
    register(_name, _description)

CLIP_EPSILON = 1e-6
"""The largest ε a conforming clip may add to the norm, φ = min(1, C/(‖g‖ + ε)), when the backend
declares it (``clip_epsilon``, spec §8.10): PyTorch's ``clip_grad_norm_`` and Opacus add 10⁻⁶,
optax adds none (spec §10.1, a convention). The reference then clips with the same ε."""


class LoopError(ValueError):
    """A ``Loop`` that does not fit its problem (sizes, overflow, per-example clipping)."""


@dataclass(frozen=True)
class Loop:
    """One epoch of a training loop over the problem's batch.

    optimizer            the update rule (``reference.update.Optimizer``)
    micro_batches        sizes n_1..n_M of the consecutive micro-batches (each ≥ 1, Σ = N)
    accumulation_steps   K ≥ 1 micro-batches per optimizer step; the last window may be shorter
    clip_norm            c > 0: clip the window's gradient by its global norm; None: no clipping
    per_example_clip     C > 0: DP-SGD, each g_i clipped to norm C, Σ/B; None: no
    expected_batch_size  B ≥ 1, the DP-SGD divisor (per optimizer step); with per_example_clip
    loss_scale           S: a power of two ≥ 1 (static, or the initial dynamic scale); None: no
    overflow             indices of micro-batches whose gradient is non-finite (every input NaN);
                         needs loss_scale
    ranks                R ≥ 1: each micro-batch split over R data-parallel ranks (even shards,
                         ``reference.parallel.even_sizes``), gradients all-reduced before clipping
    """

    optimizer: Optimizer
    micro_batches: tuple[int, ...]
    accumulation_steps: int = 1
    clip_norm: float | None = None
    per_example_clip: float | None = None
    expected_batch_size: int | None = None
    loss_scale: float | None = None
    overflow: tuple[int, ...] = ()
    ranks: int = 1

    def __post_init__(self) -> None:
        sizes = tuple(int(n) for n in self.micro_batches)
        object.__setattr__(self, "micro_batches", sizes)
        object.__setattr__(self, "overflow", tuple(sorted({int(i) for i in self.overflow})))
        if not sizes or min(sizes) < 1:
            raise LoopError(f"{self!r}: micro_batches must be one or more sizes >= 1")
        if not (isinstance(self.accumulation_steps, int) and self.accumulation_steps >= 1):
            raise LoopError(f"{self!r}: accumulation_steps must be an integer >= 1")
        if not (isinstance(self.ranks, int) and 1 <= self.ranks <= min(sizes)):
            raise LoopError(f"{self!r}: ranks must be an integer in 1..min(micro_batches)")
        for name in ("clip_norm", "per_example_clip"):
            c = getattr(self, name)
            if c is not None and not (math.isfinite(c) and c > 0):
                raise LoopError(f"{self!r}: {name} must be None or finite and > 0")
        if (self.per_example_clip is None) != (self.expected_batch_size is None):
            raise LoopError(f"{self!r}: per_example_clip and expected_batch_size go together")
        if self.expected_batch_size is not None and self.expected_batch_size < 1:
            raise LoopError(f"{self!r}: expected_batch_size must be >= 1")
        s = self.loss_scale
        if s is not None and not (math.isfinite(s) and s >= 1 and math.frexp(s)[0] == 0.5):
            raise LoopError(f"{self!r}: loss_scale must be None or a power of two >= 1 "
                            f"(unscaling by 1/S is then exact)")
        if self.overflow and s is None:
            raise LoopError(f"{self!r}: overflow needs loss_scale (without a scaler a "
                            f"non-finite gradient is not a skipped step, it is a failure)")
        if any(not 0 <= i < len(sizes) for i in self.overflow):
            raise LoopError(f"{self!r}: overflow indices must name micro-batches "
                            f"0..{len(sizes) - 1}")

    @property
    def windows(self) -> list[tuple[int, ...]]:
        """Micro-batch indices of each optimizer step, in order (the last may be shorter)."""
        m, k = len(self.micro_batches), self.accumulation_steps
        return [tuple(range(j, min(j + k, m))) for j in range(0, m, k)]

    def skipped(self) -> tuple[int, ...]:
        """Windows with an overflowing micro-batch: the steps a conforming loop skips."""
        bad = set(self.overflow)
        return tuple(w for w, idx in enumerate(self.windows) if bad.intersection(idx))

    def features(self) -> frozenset[str]:
        """The capability names this loop uses (``reference.capabilities``)."""
        on = {"loop:clip_norm": self.clip_norm is not None,
              "loop:per_example_clip": self.per_example_clip is not None,
              "loop:loss_scale": self.loss_scale is not None}
        return frozenset(k for k, v in on.items() if v)

    def __repr__(self) -> str:
        out = f"Loop({self.optimizer!r}, micro_batches={self.micro_batches!r}"
        defaults = Loop.__dataclass_fields__
        for name in ("accumulation_steps", "clip_norm", "per_example_clip",
                     "expected_batch_size", "loss_scale", "overflow", "ranks"):
            value = getattr(self, name)
            if value != defaults[name].default:
                out += f", {name}={value!r}"
        return out + ")"


@dataclass(frozen=True)
class LoopResult:
    """What a training loop reports after its epoch (``Backend.train_loop``, spec §8.10).

    params            {name: θ} after the last window
    optimizer_steps   the optimizer's step counter t (the one bias correction uses): the
                      number of windows not skipped
    skipped           indices of the windows whose step was skipped (non-finite gradient)
    reported_losses   one loss per window (any value for a skipped one), or None where the
                      trainer reports none
    """

    params: Params
    optimizer_steps: int
    skipped: tuple[int, ...] = ()
    reported_losses: tuple[float, ...] | None = field(default=None)


def prefix(problem: Problem, loop: Loop, w: int) -> tuple[Problem, Loop]:
    """The same loop over its first ``w`` ≥ 1 windows only: the problem cut to their examples."""
    m = sum(len(idx) for idx in loop.windows[:w])
    loop = replace(loop, micro_batches=loop.micro_batches[:m],
                   overflow=tuple(i for i in loop.overflow if i < m))
    return problem.with_batch(problem.batch.take(list(range(sum(loop.micro_batches))))), loop


def loop_batches(problem: Problem, loop: Loop) -> list[Batch]:
    """The micro-batches a loader hands out: consecutive examples of ``problem.batch``, with
    every input of the ``loop.overflow`` micro-batches NaN. Raises ``LoopError`` when the sizes
    do not sum to N, or when an overflow could be masked (a label equal to ignore_index, a
    sequence mask, or dropout: a NaN there need not reach the gradient)."""
    n = problem.batch.size
    if sum(loop.micro_batches) != n:
        raise LoopError(f"{loop!r}: micro_batches sum to {sum(loop.micro_batches)}, but the "
                        f"batch has N = {n}")
    b = problem.batch
    if loop.overflow and (problem.loss.ignore_index is not None or b.mask is not None
                          or b.dropout is not None):
        raise LoopError(f"{loop!r}: overflow needs a problem without ignore_index, sequence "
                        f"masks and dropout, where a NaN input always reaches the gradient")
    out, start = [], 0
    for j, m in enumerate(loop.micro_batches):
        part = b.take(list(range(start, start + m)))
        if j in loop.overflow:
            part = replace(part, inputs=np.full_like(part.inputs, np.nan))
        out.append(part)
        start += m
    return out


def window_problem(problem: Problem, batches: Sequence[Batch], idx: Sequence[int]) -> Problem:
    """The problem of one window: its micro-batches' examples as one batch (same θ)."""
    first = batches[idx[0]]
    if len(idx) == 1:
        return problem.with_batch(first)

    def cat(name: str) -> np.ndarray | None:
        parts = [getattr(batches[i], name) for i in idx]
        return None if parts[0] is None else np.concatenate(parts)

    drop = None if first.dropout is None else {
        k: np.concatenate([batches[i].dropout[k] for i in idx])  # type: ignore[index]
        for k in first.dropout}
    inputs = np.concatenate([batches[i].inputs for i in idx])
    targets = np.concatenate([batches[i].targets for i in idx])
    return problem.with_batch(Batch(inputs, targets, cat("weights"), cat("mask"),
                                    cat("variances"), drop))


def global_norm(grads: Mapping[str, np.ndarray]) -> float:
    """‖G‖ over every element of every tensor, in float64."""
    return math.sqrt(sum(float(np.sum(np.square(np.asarray(v, np.float64))))
                         for v in grads.values()))


def clip_factor(norm: float, c: float, eps: float = 0.0) -> float:
    """φ_c(x) = min(1, c/(x + ε)) (1 at x + ε = 0)."""
    return 1.0 if norm + eps <= c else c / (norm + eps)


def window_gradient(problem: Problem, loop: Loop, dtype: DType = np.float64, eps: float = 0.0
                    ) -> tuple[float, Grads]:
    """(L_w, G_w) of a window's problem at its θ: the reduced loss and the gradient after
    per-example clipping and global-norm clipping as ``loop`` asks, computed in ``dtype``
    (norms and factors in float64, applied once in ``dtype``), the norms + ``eps``."""
    dt = np.dtype(dtype)
    loss, g = batch_grad(problem, dt)
    if loop.per_example_clip is not None:
        _, per = per_example_grads(problem, dt)
        n = problem.batch.size
        phi = np.array([clip_factor(global_norm({k: v[i] for k, v in per.items()}),
                                    loop.per_example_clip, eps) for i in range(n)])
        b = dt.type(loop.expected_batch_size)
        g = {k: np.sum(v * phi.astype(dt).reshape((n,) + (1,) * (v.ndim - 1)), axis=0) / b
             for k, v in per.items()}
    if loop.clip_norm is not None:
        phi_g = dt.type(clip_factor(global_norm(g), loop.clip_norm, eps))
        g = {k: v * phi_g for k, v in g.items()}
    return float(loss), g


def run_loop(problem: Problem, loop: Loop, dtype: DType = np.float64) -> LoopResult:
    """The loop's epoch from ``problem.params`` (module docstring): θ and the optimizer state in
    ``dtype``, the final θ returned in float64."""
    dt = np.dtype(dtype)
    batches = loop_batches(problem, loop)
    theta = {k: v.astype(dt) for k, v in problem.params.items()}
    state, losses, skipped = State(), [], loop.skipped()
    for w, idx in enumerate(loop.windows):
        if w in skipped:
            losses.append(math.nan)
            continue
        at = window_problem(problem.with_params(theta), batches, idx)
        loss, g = window_gradient(at, loop, dt)
        losses.append(loss)
        theta, state = step(loop.optimizer, theta, g, state, dt)
    return LoopResult({k: v.astype(np.float64) for k, v in theta.items()}, state.t, skipped,
                      tuple(losses))


def shadow_loop(problem: Problem, loop: Loop, iterates: Sequence[Params], eps: float = 0.0
                ) -> list[dict[str, np.ndarray]]:
    """The reference's step along a reported trajectory θ̂_0 = problem.params, θ̂_1, …: entry w
    is the float64 step of window w from θ̂_w, with the optimizer state accumulated along the
    windows before it that were not skipped; a skipped window's entry is θ̂_w itself. ``eps``:
    the backend's declared clipping ε."""
    windows = loop.windows
    if len(iterates) != len(windows):
        raise ValueError("need one iterate (the parameters before the step) per window")
    batches, skipped = loop_batches(problem, loop), loop.skipped()
    state, out = State(), []
    for w, (idx, theta) in enumerate(zip(windows, iterates, strict=True)):
        theta = {k: np.asarray(v, np.float64) for k, v in theta.items()}
        if w in skipped:
            out.append(theta)
            continue
        _, g = window_gradient(window_problem(problem.with_params(theta), batches, idx), loop,
                               eps=eps)
        new, state = step(loop.optimizer, theta, g, state)
        out.append(new)
    return out
