"""Backends that compute in a precision mode other than strict IEEE (spec §7.4).

* ``tf32_emulation``  the numpy backend's float32 computation with both operands of every matrix
  product rounded to TF32 first (products exact, accumulated in float32) — what cuBLAS does with
  ``allow_tf32 = True`` and XLA with JAX's default matmul precision on Ampere and later GPUs,
  emulated on the CPU. float64 is unaffected (TF32 touches float32 products only). It is wrong
  for the strict float32 tolerance and right for the ``tf32`` one:
  ``tests/meta/test_precision_modes.py`` checks both.

Loadable as ``--backend batchgrad_spec.faults.precision:tf32_emulation`` (run it with
``--precision tf32`` to see it pass).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from batchgrad_spec.faults.core import tf32
from reference.contract import Config
from reference.grads import loss_data
from reference.layers import Dense
from reference.numpy_backend import NumpyBackend
from reference.ops import ACTIVATIONS, LOSSES
from reference.problem import Problem
from reference.types import Grads

PerExample = tuple[np.ndarray, Grads]


round_to_tf32 = tf32
"""float32 → TF32, round to nearest with ties away from zero (``batchgrad_spec.faults.tf32``, shared
with the gallery's ``tf32_in_strict_mode``). Relative error ≤ 2⁻¹¹; float32's exponent range."""


class TF32Emulation(NumpyBackend):
    """The numpy backend, with matrix-product operands rounded to TF32 in float32."""

    def __init__(self, name: str) -> None:
        self.name = name

    def versions(self) -> Mapping[str, str]:
        return {**super().versions(), "emulates": "TF32 matmuls (allow_tf32=True)"}

    @staticmethod
    def _op(a: np.ndarray) -> np.ndarray:
        return round_to_tf32(a) if a.dtype == np.float32 else a

    def _run(self, problem: Problem, dtype: np.dtype, seed_scale: np.ndarray | None
             ) -> tuple[np.ndarray, Grads]:
        """Forward and backward; per-example gradients (N, …) when ``seed_scale`` is None, else
        the batch gradient of Σ κ_i ℓ_i with W̄ = Δᵀ A as one TF32 matrix product."""
        op = self._op
        layers = problem.network.layers
        a = problem.batch.inputs.astype(dtype)
        inputs, outputs = [], []
        for k, layer in enumerate(layers):
            inputs.append(a)
            if isinstance(layer, Dense):
                z = op(a) @ op(problem.params[f"{k}.weight"].astype(dtype)).T
                a = z + problem.params[f"{k}.bias"].astype(dtype) if layer.bias else z
            else:
                a = ACTIVATIONS[layer.name][0](a)
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
                g = g * ACTIVATIONS[layer.name][1](x, outputs[k])
        return losses, {name: grads[name] for name in problem.network.param_shapes()}

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        dtype = np.dtype(config.dtype)
        kappa = problem.coefficients
        losses, grads = self._run(problem, dtype, kappa)
        return float(np.sum(kappa.astype(dtype) * losses)), grads

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        if method not in self.per_example_methods():
            raise ValueError(f"unknown per-example method {method!r}")
        return self._run(problem, np.dtype(config.dtype), None)


tf32_emulation = TF32Emulation("tf32_emulation")
