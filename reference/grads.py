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

from .ops import (
    ACTIVATIONS,
    LOSSES,
    dense,
    vjp_dense_input,
    vjp_dense_params_batch,
    vjp_dense_params_per_example,
)
from .problem import Activation, Dense, Params, Problem

Grads = dict[str, np.ndarray]
DType = type[np.floating] | np.dtype


@dataclass(frozen=True, eq=False)
class Trace:
    """What the backward pass needs from the forward pass.

    ``inputs[k]`` is the input to layer k (N, width); ``outputs[k]`` its output; the network
    output f(x) is ``outputs[-1]``.
    """

    inputs: list[np.ndarray]
    outputs: list[np.ndarray]

    @property
    def output(self) -> np.ndarray:
        return self.outputs[-1]


def _param(problem: Problem, name: str, dtype: DType) -> np.ndarray:
    return problem.params[name].astype(dtype, copy=False)  # read only: no copy in float64


def forward(problem: Problem, dtype: DType = np.float64) -> Trace:
    """Layer by layer, keeping each layer's input and output. ``dtype`` float32 runs the same
    code in float32 (the ``numpy`` backend's float32 mode); the reference itself is float64."""
    a = problem.batch.inputs.astype(dtype)
    inputs, outputs = [], []
    for k, layer in enumerate(problem.network.layers):
        inputs.append(a)
        if isinstance(layer, Dense):
            bias = _param(problem, f"{k}.bias", dtype) if layer.bias else None
            a = dense(a, _param(problem, f"{k}.weight", dtype), bias)
        else:
            a = ACTIVATIONS[layer.name][0](a)
        outputs.append(a)
    return Trace(inputs, outputs)


def per_example_losses(problem: Problem, trace: Trace | None = None) -> np.ndarray:
    """ℓ_i for every example, shape (N,) (spec §1.1)."""
    trace = trace or forward(problem)
    return LOSSES[problem.loss.name][0](trace.output, _targets(problem, trace))


def reduce_losses(problem: Problem, losses: np.ndarray) -> float:
    """L = Σ κ_i ℓ_i for the problem's reduction (spec §1.2)."""
    return float(np.sum(problem.coefficients * losses))


def batch_loss(problem: Problem) -> float:
    return reduce_losses(problem, per_example_losses(problem))


def _backward(
    problem: Problem,
    trace: Trace,
    seed: np.ndarray,
    param_rule: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> Grads:
    """Propagate the output cotangent ``seed`` (N, D) back through the network."""
    grads: Grads = {}
    g = seed
    first = problem.network.dense_layers()[0][0]  # below it, no parameter needs a cotangent
    for k in range(len(problem.network.layers) - 1, first - 1, -1):
        layer, a = problem.network.layers[k], trace.inputs[k]
        if isinstance(layer, Dense):
            w_bar, b_bar = param_rule(g, a)
            grads[f"{k}.weight"] = w_bar
            if layer.bias:
                grads[f"{k}.bias"] = b_bar
            if k > first:
                g = vjp_dense_input(g, _param(problem, f"{k}.weight", g.dtype))
        else:
            assert isinstance(layer, Activation)
            g = g * ACTIVATIONS[layer.name][1](a, trace.outputs[k])
    return {name: grads[name] for name in problem.network.param_shapes()}


def _targets(problem: Problem, trace: Trace) -> np.ndarray:
    t = problem.batch.targets
    return t if t.dtype.kind in "iu" else t.astype(trace.output.dtype)


def output_cotangent(problem: Problem, trace: Trace) -> np.ndarray:
    """∂ℓ_i/∂f(x_i) for every example, shape (N, D)."""
    return LOSSES[problem.loss.name][1](trace.output, _targets(problem, trace))


def per_example_grads(problem: Problem, dtype: DType = np.float64) -> tuple[np.ndarray, Grads]:
    """(ℓ, g): ℓ_i (N,) and g_i = ∇_θ ℓ_i as {name: (N, *shape)} (spec §1.3).

    Every g_i is taken at the same θ, and depends on example i alone.
    """
    trace = forward(problem, dtype)
    losses = per_example_losses(problem, trace)
    return losses, _backward(problem, trace, output_cotangent(problem, trace),
                             vjp_dense_params_per_example)


def batch_grad(problem: Problem, dtype: DType = np.float64) -> tuple[float, Grads]:
    """(L, ∇_θ L) by one backward pass seeded with κ_i ∂ℓ_i/∂f_i, in matrix form (Δᵀ A)."""
    trace = forward(problem, dtype)
    losses = per_example_losses(problem, trace)
    kappa = problem.coefficients.astype(dtype)
    seed = kappa[:, None] * output_cotangent(problem, trace)
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
