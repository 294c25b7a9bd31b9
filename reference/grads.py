"""Forward pass, per-example gradients and batch gradients of a Problem (spec chapters 1–2).

Two independent routes to the batch gradient, so that each checks the other (spec §2.1–§2.4):

* ``per_example_grads`` returns every g_i = ∇_θ ℓ_i as an array with a leading batch axis,
  built from outer products z̄_i a_iᵀ; ``combine`` then forms Σ_i κ_i g_i.
* ``batch_grad`` seeds the backward pass with κ_i ∂ℓ_i/∂f_i and contracts over the batch in
  matrix form, W̄ = Δᵀ A, never materialising a per-example gradient.

Both are vectorised over the batch; neither loops over examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .contract import Undefined
from .ops import (
    ACTIVATIONS,
    LOSSES,
    affine,
    dense,
    dropout,
    normalize,
    smoothed_targets,
    standardize,
    vjp_dense_input,
    vjp_dense_params_batch,
    vjp_dense_params_per_example,
    vjp_normalize,
)
from .problem import NORM_EPS, Activation, Dense, Dropout, LayerNorm, Params, Problem

Grads = dict[str, np.ndarray]
DType = type[np.floating] | np.dtype


@dataclass(frozen=True, eq=False)
class Trace:
    """What the backward pass needs from the forward pass.

    ``inputs[k]`` is the input to layer k, shape (N, width) or (N, T, width) for sequences;
    ``outputs[k]`` its output; ``norms[k]`` = (x̂, s) of a LayerNorm/BatchNorm at k. The network
    output f(x) is ``outputs[-1]``.
    """

    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    norms: dict[int, tuple[np.ndarray, np.ndarray]]

    @property
    def output(self) -> np.ndarray:
        return self.outputs[-1]


def _param(problem: Problem, name: str, dtype: DType) -> np.ndarray:
    return problem.params[name].astype(dtype, copy=False)  # read only: no copy in float64


def forward(problem: Problem, dtype: DType = np.float64) -> Trace:
    """Layer by layer, keeping each layer's input and output. ``dtype`` float32 runs the same
    code in float32 (the ``numpy`` backend's float32 mode); the reference itself is float64.
    Every layer acts on the last axis, so a sequence batch (N, T, d) runs token by token."""
    a = problem.batch.inputs.astype(dtype)
    inputs, outputs, norms = [], [], {}
    for k, layer in enumerate(problem.network.layers):
        inputs.append(a)
        if isinstance(layer, Dense):
            bias = _param(problem, f"{k}.bias", dtype) if layer.bias else None
            a = dense(a, _param(problem, f"{k}.weight", dtype), bias)
        elif isinstance(layer, Activation):
            a = ACTIVATIONS[layer.name][0](a)
        elif isinstance(layer, Dropout):
            assert problem.batch.dropout is not None
            a = dropout(a, problem.batch.dropout[k].astype(dtype), layer.p)
        else:
            if isinstance(layer, LayerNorm):
                xhat, s = normalize(a, -1, NORM_EPS)
            elif layer.training:
                xhat, s = normalize(a, 0, NORM_EPS)
            else:
                assert layer.running_mean is not None and layer.running_var is not None
                xhat, s = standardize(a, np.asarray(layer.running_mean, dtype),
                                      np.asarray(layer.running_var, dtype), NORM_EPS)
            norms[k] = (xhat, s)
            a = affine(xhat, _param(problem, f"{k}.weight", dtype),
                       _param(problem, f"{k}.bias", dtype))
        outputs.append(a)
    return Trace(inputs, outputs, norms)


# -- losses ----------------------------------------------------------------------------------------
def _rows(x: np.ndarray, lead: int) -> np.ndarray:
    """(N, [T,] ...) → (rows, ...): examples, or tokens of a sequence batch, as rows."""
    return x.reshape((-1,) + x.shape[lead:])


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
        layer, a = problem.network.layers[k], trace.inputs[k]
        if isinstance(layer, Dense):
            w_bar, b_bar = param_rule(g, a)
            grads[f"{k}.weight"] = w_bar
            if layer.bias:
                grads[f"{k}.bias"] = b_bar
            if k > first:
                g = vjp_dense_input(g, _param(problem, f"{k}.weight", g.dtype))
        elif isinstance(layer, Activation):
            g = g * ACTIVATIONS[layer.name][1](a, trace.outputs[k])
        elif isinstance(layer, Dropout):
            assert problem.batch.dropout is not None
            g = dropout(g, problem.batch.dropout[k].astype(g.dtype), layer.p)
        else:
            xhat, s = trace.norms[k]
            ones = np.ones(g.shape[:-1] + (1,), g.dtype)
            grads[f"{k}.weight"] = param_rule(g * xhat, ones)[1]
            grads[f"{k}.bias"] = param_rule(g, ones)[1]
            if k > first:
                dxhat = g * _param(problem, f"{k}.weight", g.dtype)
                if isinstance(layer, LayerNorm):
                    g = vjp_normalize(dxhat, xhat, s, -1)
                elif layer.training:
                    g = vjp_normalize(dxhat, xhat, s, 0)
                else:
                    g = dxhat * s
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
