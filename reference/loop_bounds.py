"""The tolerance of a training loop's results (spec chapter 10, derived by the method of §7.1).

A backend's epoch is checked window by window along its own trajectory (``reference.loop.
shadow_loop``): θ̂_{w+1} against the reference's step from θ̂_w. The error of that step comes
from three places, each bounded here elementwise and added as §7.2 adds bounds:

1. the window's gradient Ĝ_w: the chapter-5 tolerance of an accumulation over the window's
   micro-batches (and, with R ranks, over their shards), for either exact scheme a backend may
   use — local means scaled by Ω_k/Ω, or local sums divided by the global Ω (§5.1, §5.2) — the
   larger of the two (``reference.accumulation.full_batch_tolerance``); under DP-SGD the
   chapter-7 bounds of the per-example gradients instead;
2. clipping, G ↦ φ(‖G‖)G with φ(x) = min(1, c/x) (``clip_bound``). φ is continuous — at
   ‖G‖ = c both branches give 1 — and Lipschitz, |φ(a) − φ(b)| ≤ c|a − b| / max(c, min(a, b))²,
   so the branch a backend takes near the threshold needs no band excluded: a flip moves φ by
   no more than the norm's error allows. The norm's error is ‖e‖₂ (the gradient's errors) plus
   its rounding, γ_{n+2}(‖G‖ + ‖e‖₂) for n elements (squares, an n-term sum in any blocking,
   per-tensor norms combined, the square root) plus √(n·tiny) for underflowing squares, plus
   the ε ≤ ``CLIP_EPSILON`` a conforming backend may add to the norm (a convention). The factor
   then errs by the Lipschitz term and its own two roundings (c and the division), and each
   element φg_i by φe_i + |g_i|Δφ + u|φg_i|;
3. the optimizer step: ``reference.update.update_step_bound`` from the clipped gradient's value
   and bound, with the optimizer state carried from window to window.

Loss scaling by a power of two and unscaling by its inverse are exact (short of overflow, which
is the skipped step, and of underflow, which a scale ≥ 1 only reduces), so they add nothing. A
skipped window's tolerance is zero: the parameters must come back bit for bit (spec §10.3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .accumulation import count_weighted, full_batch_tolerance, global_normaliser
from .bounds import error_bound, problem_tolerance
from .grads import batch_grad, per_example_grads
from .loop import Loop, clip_factor, global_norm, loop_batches, window_problem
from .numerics import REFERENCE, Precision, R, gamma, precision
from .parallel import SCALE_ROUNDINGS, even_sizes, shards
from .problem import Problem
from .types import Grads, Params
from .update import UpdateState, update_step_bound

__all__ = ["clip_bound", "gradient_tolerance", "loop_tolerance", "loss_tolerance",
           "window_sizes"]


def window_sizes(problem: Problem, loop: Loop, idx: Sequence[int]) -> list[tuple[int, ...]]:
    """The splits of a window a backend may sum over: its micro-batches, and with R > 1 ranks
    every micro-batch's R shards."""
    sizes = tuple(loop.micro_batches[i] for i in idx)
    out = [sizes]
    if loop.ranks > 1:
        out.append(tuple(s for n in sizes for s in even_sizes(n, loop.ranks)))
    return out


def _plans(at: Problem, loop: Loop, idx: Sequence[int]) -> list:
    plans = []
    for sizes in window_sizes(at, loop, idx):
        plans.append(count_weighted(at, sizes))
        if at.reduction.name in ("mean", "weighted_mean"):
            plans.append(global_normaliser(at, sizes))
    return plans


def gradient_tolerance(at: Problem, loop: Loop, idx: Sequence[int], dtype: str,
                       mode: str = "strict") -> dict[str, np.ndarray]:
    """Bound on |Ĝ_w − G_w| of a window's unclipped gradient (item 1 of the module docstring),
    ``at`` the window's problem rounded to ``dtype``."""
    tols = [full_batch_tolerance(at, plan, dtype, mode) for plan in _plans(at, loop, idx)]
    return {k: np.max([t[k] for t in tols], axis=0) for k in tols[0]}


def loss_tolerance(at: Problem, loop: Loop, idx: Sequence[int], dtype: str,
                   mode: str = "strict") -> float:
    """Bound on the reported loss's error: Σ_k s_k L_k over the parts of either scheme (each
    part's chapter-7 loss bound scaled, SCALE_ROUNDINGS roundings of each scale, an n-term sum
    at γ_n), at the backend's u and the reference's, plus the reference's own bound on L_w."""
    worst = 0.0
    for plan in _plans(at, loop, idx):
        parts = shards(at if plan.reduction is None else at.with_reduction(plan.reduction),
                       plan.sizes)
        terms = [abs(s * batch_grad(p)[0]) for p, s in zip(parts, plan.scales, strict=True)]
        e = sum(abs(s) * problem_tolerance(p, dtype, mode).loss
                for p, s in zip(parts, plan.scales, strict=True))
        for p in (precision(dtype, mode), REFERENCE):
            e += (SCALE_ROUNDINGS * p.u + float(gamma(len(parts), p.u))) * sum(terms)
            e += SCALE_ROUNDINGS * p.tiny * len(parts)
        worst = max(worst, e)
    return worst + error_bound(at, REFERENCE).loss


def clip_bound(g: Mapping[str, np.ndarray], e: Mapping[str, np.ndarray], c: float,
               p: Precision, *, lead: int = 0, eps: float = 0.0
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Clipping by norm c in the arithmetic p (item 2 of the module docstring): (φ_ε g, bound).
    With ``lead`` = 1 the arrays are per-example (N, *shape) and each row is clipped by its own
    norm. ``eps``: the ε added to the norm, in the value and the reference alike."""
    if lead:
        rows = [clip_bound({k: v[i] for k, v in g.items()}, {k: v[i] for k, v in e.items()},
                           c, p, eps=eps) for i in range(next(iter(g.values())).shape[0])]
        return ({k: np.stack([r[0][k] for r in rows]) for k in g},
                {k: np.stack([r[1][k] for r in rows]) for k in g})
    n = sum(int(np.size(v)) for v in g.values())
    x, ex = global_norm(g), global_norm(e)
    dx = ex + float(gamma(n + 2, p.u)) * (x + ex) + np.sqrt(n * p.tiny)
    phi = clip_factor(x, c, eps)
    dphi = c * dx / max(c, x - dx) ** 2 + (2 * p.u * phi if x + eps + dx > c else 0.0)
    value = {k: phi * v for k, v in g.items()}
    bound = {k: phi * e[k] + np.abs(v) * dphi + p.u * np.abs(value[k]) + p.tiny * (v != 0)
             for k, v in g.items()}
    return value, bound


def _dp_sgd(at: Problem, loop: Loop, p: Precision, e_per: Mapping[str, np.ndarray],
            eps: float) -> tuple[Grads, dict[str, np.ndarray]]:
    """Σ_i φ(‖g_i‖) g_i / B and its bound at p from per-example errors ``e_per``: clipped,
    summed (γ_N), divided by B (u)."""
    _, per = per_example_grads(at)
    clipped, bound = clip_bound(per, e_per, loop.per_example_clip or 1.0, p, lead=1, eps=eps)
    n, b = at.batch.size, float(loop.expected_batch_size or 1)
    value = {k: v.sum(axis=0) / b for k, v in clipped.items()}
    err = {k: (bound[k].sum(axis=0) + float(gamma(n, p.u)) * np.abs(clipped[k]).sum(axis=0)) / b
           + p.u * np.abs(value[k]) + p.tiny for k in clipped}
    return value, err


def loop_tolerance(problem: Problem, loop: Loop, iterates: Sequence[Params], dtype: str,
                   mode: str = "strict", eps: float = 0.0) -> list[dict[str, np.ndarray]]:
    """Tolerances for a backend's θ̂_{w+1}, one per window, against ``shadow_loop(problem, loop,
    iterates)`` (``iterates[w]`` = θ̂_w, ``problem.params`` first, exact in ``dtype``). Two chains
    as in ``reference.update.update_tolerance``: the backend's arithmetic fed the gradient's
    tolerance (which already holds the reference's gradient error), and the reference's own
    float64 arithmetic from an exact gradient; their bounds are added. ``problem`` must already
    be rounded to ``dtype``; ``eps`` is the backend's declared clipping ε."""
    batches, skipped = loop_batches(problem, loop), loop.skipped()
    chains = {"backend": precision(dtype, mode), "reference": REFERENCE}
    states = {who: UpdateState() for who in chains}
    out = []
    for w, (idx, theta) in enumerate(zip(loop.windows, iterates, strict=True)):
        if w in skipped:
            out.append({k: np.zeros_like(np.asarray(v, np.float64)) for k, v in theta.items()})
            continue
        at = window_problem(problem.with_params(theta), batches, idx)
        total: dict[str, np.ndarray] = {}
        for who, p in chains.items():
            if loop.per_example_clip is not None:
                per = (problem_tolerance(at, dtype, mode).grads if who == "backend"
                       else {k: np.zeros_like(v) for k, v in per_example_grads(at)[1].items()})
                g, e = _dp_sgd(at, loop, p, per, eps)
            else:
                g = batch_grad(at)[1]
                e = (gradient_tolerance(at, loop, idx, dtype, mode) if who == "backend"
                     else {k: np.zeros_like(v) for k, v in g.items()})
            if loop.clip_norm is not None:
                g, e = clip_bound(g, e, loop.clip_norm, p, eps=eps)
            new, states[who] = update_step_bound(loop.optimizer, at.params,
                                                 {k: R(g[k], e[k]) for k in g}, states[who], p)
            for k, x in new.items():
                total[k] = total.get(k, 0.0) + x.e
        out.append(total)
    return out
