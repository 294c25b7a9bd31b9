"""Forward pass, per-example gradients and batch gradients of a Problem (spec chapters 1–2).

Two independent routes to the batch gradient, so that each checks the other (spec §2.1–§2.4):

* ``per_example_grads`` returns every g_i = ∇_θ ℓ_i as an array with a leading batch axis,
  built from outer products z̄_i a_iᵀ; ``combine`` then forms Σ_i κ_i g_i.
* ``batch_grad`` seeds the backward pass with κ_i ∂ℓ_i/∂f_i and contracts over the batch in
  matrix form, W̄ = Δᵀ A, never materialising a per-example gradient.

Both are vectorised over the batch; neither loops over examples. Both are generic passes over
the layers: each layer's forward and backward rules are its own (``reference.layers``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .losses import rows as _rows
from .ops import LOSSES, smoothed_targets, vjp_dense_params_batch, vjp_dense_params_per_example
from .problem import Problem
from .types import DType, Grads, Params, Site, Undefined

__all__ = [
    "Trace", "batch_grad", "batch_loss", "combine", "finite_difference_grad", "forward",
    "loss_data", "output_cotangent", "per_example_grads", "per_example_losses", "reduce_losses",
    "scaled_per_example_grads",
]


@dataclass(frozen=True, eq=False)
class Trace:
    """What the backward pass needs from the forward pass.

    ``inputs[k]`` is the input to layer k, shape (N, width) or (N, T, width) for sequences;
    ``outputs[k]`` its output; ``saved[k]`` what layer k's forward rule kept for its backward
    rule (e.g. (x̂, s) of a LayerNorm/BatchNorm); ``sites[k]`` where layer k sits. The network
    output f(x) is ``outputs[-1]``.
    """

    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    saved: list[Any]
    sites: list[Site]

    @property
    def output(self) -> np.ndarray:
        return self.outputs[-1]


def sites_of(problem: Problem, dtype: DType = np.float64, lead: int = 0) -> list[Site]:
    """Each layer's ``Site`` in ``problem``: θ (tied names bound, spec §9.5), the dtype, and its
    data (``site_data``: a dropout mask, as rows of ``lead`` leading axes when ``lead`` > 0 and
    the layer takes its data as rows, as the bound's passes use it; an attention's token mask)."""
    net, b = problem.network, problem.batch
    n, params = len(net.layers), net.with_ties(problem.params)
    make = tuple.__new__  # Site(...) without NamedTuple's Python-level __new__: 6× cheaper
    if not b.dropout and not b.sequence:
        return [make(Site, (k, params, dtype, None)) for k in range(n)]
    out = []
    for k, layer in enumerate(net.layers):
        keep = layer.site_data(k, b)
        if keep is not None and lead and layer.data_rows:
            keep = _rows(keep, lead)
        out.append(make(Site, (k, params, dtype, keep)))
    return out


def forward(problem: Problem, dtype: DType = np.float64) -> Trace:
    """Layer by layer, keeping each layer's input and output. ``dtype`` float32 runs the same
    code in float32 (the ``numpy`` backend's float32 mode); the reference itself is float64.
    Every layer acts on the last axis, so a sequence batch (N, T, d) runs token by token."""
    a = problem.batch.inputs
    a = a if problem.batch.indices else a.astype(dtype)  # indices stay integers (§9.1)
    inputs, outputs, saved = [], [], []
    sites = sites_of(problem, dtype)
    for layer, at in zip(problem.network.layers, sites, strict=True):
        inputs.append(a)
        a, kept = layer.forward(a, at)
        saved.append(kept)
        outputs.append(a)
    return Trace(inputs, outputs, saved, sites)


# -- losses ----------------------------------------------------------------------------------------
def loss_data(problem: Problem, output: np.ndarray) -> tuple[np.ndarray, tuple]:
    """(targets as rows, the loss's extra arguments) for ``ops.LOSSES[name]`` on rows of
    ``output``: cross-entropy gets q̃ (``ops.smoothed_targets``) and the class weights w."""
    loss, b = problem.loss, problem.batch
    lead = 2 if b.sequence else 1
    dt = output.dtype
    t = _rows(b.targets, lead)
    if loss.name == "softmax_cross_entropy":
        c = output.shape[-1]
        w = np.ones(c) if loss.class_weights is None else np.asarray(loss.class_weights)
        q = smoothed_targets(t, c, loss.label_smoothing, loss.ignore_index)
        return q.astype(dt), (w.astype(dt),)
    t = t.astype(dt)
    if loss.name == "huber":
        return t, (loss.delta,)
    if loss.name == "gaussian_nll":
        assert b.variances is not None
        return t, (_rows(b.variances, lead).astype(dt),)
    return t, ()


def _token_weights(problem: Problem, dtype: DType) -> np.ndarray | None:
    return problem.batch.token_mask.astype(dtype) if problem.batch.sequence else None


def per_example_losses(problem: Problem, trace: Trace | None = None) -> np.ndarray:
    """ℓ_i for every example, shape (N,) (spec §1.1); for a sequence batch ℓ_i = Σ_t m_it ℓ_it
    (spec §3.7)."""
    trace = trace or forward(problem)
    out = trace.output
    y, extra = loss_data(problem, out)
    rows = LOSSES[problem.loss.name][0](_rows(out, out.ndim - 1), y, *extra)
    m = _token_weights(problem, out.dtype)
    return rows if m is None else (rows.reshape(m.shape) * m).sum(axis=1)


def output_cotangent(problem: Problem, trace: Trace) -> np.ndarray:
    """∂ℓ_i/∂f(x_i) for every example, shape (N, D) (for sequences (N, T, D), zero on masked
    tokens)."""
    out = trace.output
    y, extra = loss_data(problem, out)
    rows = LOSSES[problem.loss.name][1](_rows(out, out.ndim - 1), y, *extra).reshape(out.shape)
    m = _token_weights(problem, out.dtype)
    return rows if m is None else rows * m[..., None]


def reduce_losses(problem: Problem, losses: np.ndarray) -> float:
    """L = Σ κ_i ℓ_i for the problem's reduction (spec §1.2)."""
    return float(np.sum(problem.coefficients * losses))


def batch_loss(problem: Problem) -> float:
    return reduce_losses(problem, per_example_losses(problem))


# -- backward --------------------------------------------------------------------------------------
def _backward(
    problem: Problem,
    trace: Trace,
    seed: np.ndarray,
    param_rule: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> Grads:
    """Propagate the output cotangent ``seed`` back through the network. ``param_rule`` turns a
    cotangent and an input into (W̄, b̄); it also serves γ̄ = rule(ȳ ⊙ x̂) and β̄ of the norms."""
    grads: Grads = {}
    g = seed
    params = problem.network.param_shapes()
    first = min(int(name.split(".")[0]) for name in params)  # below it no cotangent is needed
    for k in range(len(problem.network.layers) - 1, first - 1, -1):
        layer = problem.network.layers[k]
        own, g = layer.backward(g, trace.inputs[k], trace.outputs[k], trace.saved[k],
                                trace.sites[k], param_rule, k > first)
        for name, v in own.items():
            grads[f"{k}.{name}"] = v
    for alias, target in problem.network.tied:  # a tied parameter: the sum over its uses
        grads[target] = grads[target] + grads.pop(alias)
    return {name: grads[name] for name in params}


def per_example_grads(problem: Problem, dtype: DType = np.float64) -> tuple[np.ndarray, Grads]:
    """(ℓ, g): ℓ_i (N,) and g_i = ∇_θ ℓ_i as {name: (N, *shape)} (spec §1.3).

    Every g_i is taken at the same θ, and depends on example i alone. A train-mode BatchNorm
    breaks the second half: ℓ_i depends on every example, so there is no per-example gradient
    in this sense, and this raises ``Undefined`` (spec §4.3).
    """
    if problem.network.couples_examples:
        raise Undefined("per-example gradients are not defined through a train-mode BatchNorm: "
                        "ℓ_i depends on every example of the batch (batchgrad-spec §4.3)")
    trace = forward(problem, dtype)
    losses = per_example_losses(problem, trace)
    cot = output_cotangent(problem, trace)
    return losses, _backward(problem, trace, cot, vjp_dense_params_per_example)


def batch_grad(problem: Problem, dtype: DType = np.float64) -> tuple[float, Grads]:
    """(L, ∇_θ L) by one backward pass seeded with κ_i ∂ℓ_i/∂f_i, in matrix form (Δᵀ A)."""
    trace = forward(problem, dtype)
    losses = per_example_losses(problem, trace)
    kappa = problem.coefficients.astype(dtype)
    cot = output_cotangent(problem, trace)
    seed = kappa.reshape((-1,) + (1,) * (cot.ndim - 1)) * cot
    return float(np.sum(kappa * losses)), _backward(problem, trace, seed, vjp_dense_params_batch)


def combine(per_example: Grads, coefficients: np.ndarray) -> Grads:
    """Σ_i κ_i g_i for each parameter."""
    return {k: np.tensordot(coefficients, g, axes=1) for k, g in per_example.items()}


def scaled_per_example_grads(problem: Problem) -> Grads:
    """The other convention some libraries return: κ_i g_i (g_i/N under ``mean``; spec §1.4).

    These sum to the batch gradient; g_i itself sums to N × the mean gradient.
    """
    _, g = per_example_grads(problem)
    c = problem.coefficients
    return {k: v * c.reshape((-1,) + (1,) * (v.ndim - 1)) for k, v in g.items()}


def finite_difference_grad(
    f: Callable[[Params], float], params: Params, h: float = 1e-6
) -> Grads:
    """Central differences (f(θ + h e_j) − f(θ − h e_j)) / 2h, for the reference's own tests.

    Truncation error is h²/6 |∂³f| and rounding error about u|f|/h (spec §7.4).
    """
    out: Grads = {}
    for name, value in params.items():
        g = np.zeros_like(value)
        for j in np.ndindex(value.shape):
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][j] += h
            minus[name][j] -= h
            g[j] = (f(plus) - f(minus)) / (2 * h)
        out[name] = g
    return out
