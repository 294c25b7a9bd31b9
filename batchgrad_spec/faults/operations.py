"""Faults in one operation of the network's forward or backward pass (spec §1.1, §1.5, §2.12), and
``MLP``, the hand-written pass of Dense and activation layers they and the TF32 backends of
``precision`` are built on:

* ``relu_slope_one_at_zero``  relu'(0) = 1 instead of 0 (§1.5)
* ``gelu_tanh_for_gelu``      the tanh approximation computed where the exact GELU is asked (§1.1)
* ``squared_error_vjp_without_2``  a hand-written squared-error VJP (f − y)/D, missing the 2 (§2.12)
* ``inaccurate_tanh``     a tanh kernel off by a relative 10⁻⁴ (float32 allows 8u ≈ 4.8·10⁻⁷,
  §7.1.4): an accuracy finding, which ``python -m batchgrad_spec.accuracy`` traces to tanh
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from reference.activations import Activation
from reference.contract import Config
from reference.grads import loss_data
from reference.layers import Dense, Network
from reference.ops import ACTIVATIONS, LOSSES
from reference.problem import Problem
from reference.types import Grads

from .base import Faulty, PerExample, reduced

__all__ = ["MLP", "gelu_tanh_for_gelu", "inaccurate_tanh", "relu_slope_one_at_zero",
           "squared_error_vjp_without_2"]


class MLP(Faulty):
    """The numpy backend's own forward and backward pass of Dense and activation layers, written
    out once more with two hooks a subclass sets: ``operand`` (applied to both operands of every
    matrix product, forward and backward) and ``slope`` (an activation's derivative). Per-example
    results are exact outer products; the batch results are Σ κ_i ℓ_i and Σ κ_i g_i of them."""

    def operand(self, a: np.ndarray) -> np.ndarray:
        return a

    def slope(self, layer: Activation, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """σ'(z) of the activation ``layer`` at its input z (output a)."""
        return ACTIVATIONS[layer.name][1](z, a)

    def value(self, layer: Activation, z: np.ndarray) -> np.ndarray:
        """σ(z) of the activation ``layer``."""
        return ACTIVATIONS[layer.name][0](z)

    def run(self, problem: Problem, dtype: np.dtype,
            seed_scale: np.ndarray | None = None) -> PerExample:
        """Forward and backward; per-example gradients (N, …) when ``seed_scale`` is None, else
        the batch gradient of Σ κ_i ℓ_i (κ = ``seed_scale``) with W̄ = Δᵀ A as one matrix
        product. The per-example losses ℓ_i either way."""
        op = self.operand
        layers = problem.network.layers
        a = problem.batch.inputs.astype(dtype)
        inputs, outputs = [], []
        for k, layer in enumerate(layers):
            inputs.append(a)
            if isinstance(layer, Dense):
                z = op(a) @ op(problem.params[f"{k}.weight"].astype(dtype)).T
                a = z + problem.params[f"{k}.bias"].astype(dtype) if layer.bias else z
            else:
                a = self.value(layer, a)
            outputs.append(a)
        t, extra = loss_data(problem, a)
        loss_fn, loss_vjp = LOSSES[problem.loss.name]
        losses, g = loss_fn(a, t, *extra), loss_vjp(a, t, *extra)
        if seed_scale is not None:
            g = seed_scale.astype(dtype)[:, None] * g
        grads: Grads = {}
        for k in range(len(layers) - 1, -1, -1):
            layer, x = layers[k], inputs[k]
            if isinstance(layer, Dense):
                w = problem.params[f"{k}.weight"].astype(dtype)
                if seed_scale is None:
                    grads[f"{k}.weight"] = np.einsum("no,ni->noi", op(g), op(x))
                    if layer.bias:
                        grads[f"{k}.bias"] = g
                else:
                    grads[f"{k}.weight"] = op(g).T @ op(x)
                    if layer.bias:
                        grads[f"{k}.bias"] = g.sum(axis=0)
                g = op(g) @ op(w)
            else:
                assert isinstance(layer, Activation)
                g = g * self.slope(layer, x, outputs[k])
        return losses, {name: grads[name] for name in problem.network.param_shapes()}

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        if method not in self.per_example_methods():
            raise ValueError(f"unknown per-example method {method!r}")
        return self.run(problem, np.dtype(config.dtype))

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        losses, grads = self.run(problem, np.dtype(config.dtype))
        return reduced(losses, grads, problem.coefficients)


class ReluSlopeOneAtZero(MLP):
    """relu'(0) = 1 (the convention of ``z >= 0``) instead of the spec's 0 (§1.5). Right
    wherever no relu pre-activation is exactly 0."""

    fault = "relu'(0) = 1"

    def slope(self, layer: Activation, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        slope = super().slope(layer, z, a)
        if layer.name == "relu":
            slope = np.where(z == 0, slope.dtype.type(1.0), slope)
        return slope


class SquaredErrorVJPWithout2(Faulty):
    """A hand-written squared-error backward (f − y)/D instead of 2(f − y)/D: every gradient of a
    squared-error problem is half the true one, in ``loss_and_grad`` and ``per_example`` alike
    (so the backend agrees with itself, §2.13); losses are right."""

    fault = "squared-error VJP missing the factor 2"

    def _halved(self, problem: Problem, grads: Grads) -> Grads:
        if problem.loss.name != "squared_error":
            return grads
        return {k: v * v.dtype.type(0.5) for k, v in grads.items()}

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = super().loss_and_grad(problem, config)
        return loss, self._halved(problem, grads)

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        losses, grads = super().per_example(problem, config, method)
        return losses, self._halved(problem, grads)


class GeluTanhForGelu(Faulty):
    """Asked for the exact GELU z Φ(z), computes the tanh approximation (``jax.nn.gelu``'s
    default, ``approximate=True``): every answer is that of the problem with each ``gelu`` layer
    replaced by ``gelu_tanh``. Values differ by up to ≈ 5·10⁻⁴ (§1.5)."""

    fault = "gelu computed as gelu_tanh"

    @staticmethod
    def _swapped(problem: Problem) -> Problem:
        layers = tuple(Activation("gelu_tanh") if isinstance(x, Activation) and x.name == "gelu"
                       else x for x in problem.network.layers)
        return replace(problem, network=Network(layers))

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        return super().loss_and_grad(self._swapped(problem), config)

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        return super().per_example(self._swapped(problem), config, method)


class InaccurateTanh(MLP):
    """tanh(z)·(1 + 10⁻⁴): a tanh kernel less accurate than §7.1.4 assumes (200 times its 8u in
    float32), and the slope 1 − a² computed from that value; everything else exact. Only
    ``Dense`` and activation layers (the hand-written pass of ``MLP``)."""

    fault = "tanh off by a relative 1e-4"

    def value(self, layer: Activation, z: np.ndarray) -> np.ndarray:
        a = super().value(layer, z)
        return a * a.dtype.type(1.0 + 1e-4) if layer.name == "tanh" else a


relu_slope_one_at_zero = ReluSlopeOneAtZero("relu_slope_one_at_zero")
inaccurate_tanh = InaccurateTanh("inaccurate_tanh")
gelu_tanh_for_gelu = GeluTanhForGelu("gelu_tanh_for_gelu")
squared_error_vjp_without_2 = SquaredErrorVJPWithout2("squared_error_vjp_without_2")
