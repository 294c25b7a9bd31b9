"""TF32 matrix products (spec §7.4): float32 operands rounded to 10 mantissa bits, products exact,
accumulated in float32 — what cuBLAS does with ``allow_tf32 = True`` and XLA with JAX's default
matmul precision on Ampere and later GPUs, emulated on the CPU with the hand-written pass of
``operations.MLP``. float64 is unaffected (TF32 touches float32 products only).

* ``tf32_in_strict_mode``  the gallery's fault: TF32 products while the run certifies strict IEEE
  float32 (§2.1); per-example products, the batch results their Σ κ_i.
* ``tf32_emulation``  not a fault but a precision mode: the batch gradient as one TF32 matrix
  product per weight, wrong for the strict float32 tolerance and right for the ``tf32`` one:
  ``tests/meta/test_precision_modes.py`` checks both. Loadable as
  ``--backend batchgrad_spec.faults.precision:tf32_emulation`` (run it with ``--precision tf32``
  to see it pass).
* ``flush_to_zero``  not a fault but arithmetic the model allows (§7.1.2): numpy with every
  subnormal result and operand flushed to zero (FTZ and DAZ, as XLA on the CPU does), every
  partial product and partial sum of a matrix product included, and the batch seed formed the
  XLA way, κ_i·(1/D) first (flushed when subnormal), then ·2, then ·(f − y).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from reference.activations import Activation
from reference.contract import Config
from reference.grads import loss_data
from reference.layers import Dense
from reference.numpy_backend import NumpyBackend
from reference.ops import ACTIVATIONS, LOSSES
from reference.problem import Problem
from reference.types import Grads

from .base import PerExample
from .operations import MLP

__all__ = ["flush_to_zero", "ftz", "round_to_tf32", "tf32", "tf32_emulation",
           "tf32_in_strict_mode", "truncate_to_tf32"]


def tf32(a: np.ndarray) -> np.ndarray:
    """float32 rounded to TF32: 10 explicit mantissa bits (11 significant), to nearest with ties
    away from zero as NVIDIA's ``cvt.rna.tf32.f32`` does; the exponent range is float32's.
    Relative error ≤ 2⁻¹¹."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def truncate_to_tf32(a: np.ndarray) -> np.ndarray:
    """float32 truncated (rounded toward zero) to TF32's 10 explicit mantissa bits: what hardware
    studies report for tensor-core conversion (spec §7.4.1). Relative error < 2·2⁻¹¹."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return (bits & np.uint32(0xFFFFE000)).view(np.float32)


round_to_tf32 = tf32
"""float32 → TF32 (``tf32``), the name ``tests/meta/test_precision_modes.py`` uses."""


class TF32InStrictMode(MLP):
    """float32 matrix products with both operands rounded to TF32 (products exact, accumulated in
    float32): what cuBLAS does with ``allow_tf32 = True`` / JAX's default GPU matmul precision,
    here while the run claims strict IEEE float32 (§7.2). float64 is unaffected. Relative error
    ≈ 2⁻¹¹ per operand instead of 2⁻²⁴: right only where every operand is TF32-representable."""

    fault = "TF32 matmuls in strict float32"

    def operand(self, a: np.ndarray) -> np.ndarray:
        return tf32(a) if a.dtype == np.float32 else a


class TF32Emulation(TF32InStrictMode):
    """The numpy backend, with matrix-product operands rounded to TF32 in float32; the batch
    gradient of Σ κ_i ℓ_i with W̄ = Δᵀ A as one TF32 matrix product."""

    def versions(self) -> Mapping[str, str]:
        return {**NumpyBackend.versions(self), "emulates": "TF32 matmuls (allow_tf32=True)"}

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        dtype = np.dtype(config.dtype)
        kappa = problem.coefficients
        losses, grads = self.run(problem, dtype, kappa)
        return float(np.sum(kappa.astype(dtype) * losses)), grads


tf32_in_strict_mode = TF32InStrictMode("tf32_in_strict_mode")
tf32_emulation = TF32Emulation("tf32_emulation")


def ftz(a: np.ndarray) -> np.ndarray:
    """Subnormals flushed to zero (same dtype): FTZ on a result, DAZ on an operand."""
    a = np.asarray(a)
    return np.where(np.abs(a) < np.finfo(a.dtype).tiny, a.dtype.type(0), a)


def ftz_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w with every product and every partial sum (left to right) flushed."""
    prods = ftz(x[:, :, None] * w[None, :, :])  # (m, k, n)
    acc = prods[:, 0, :]
    for j in range(1, prods.shape[1]):
        acc = ftz(acc + prods[:, j, :])
    return acc


class FlushToZero(MLP):
    """The numpy pass of Dense and activation layers with every subnormal flushed (spec §7.1.2):
    a correct backend under the model, whatever the order of its flushes. The squared-error seed
    is formed κ_i·(1/D), then ·2, then ·(f − y), each flushed; per-example gradients take κ = 1."""

    def versions(self) -> Mapping[str, str]:
        return {**NumpyBackend.versions(self), "emulates": "flush-to-zero arithmetic (XLA CPU)"}

    def run(self, problem: Problem, dtype: np.dtype,
            seed_scale: np.ndarray | None = None) -> PerExample:
        layers, one = problem.network.layers, dtype.type(1)
        a = ftz(problem.batch.inputs.astype(dtype))
        inputs, outputs = [], []
        for k, layer in enumerate(layers):
            inputs.append(a)
            if isinstance(layer, Dense):
                a = ftz_matmul(a, ftz(problem.params[f"{k}.weight"].astype(dtype)).T)
                if layer.bias:
                    a = ftz(a + ftz(problem.params[f"{k}.bias"].astype(dtype)))
            else:
                a = ftz(ACTIVATIONS[layer.name][0](a))
            outputs.append(a)
        t, extra = loss_data(problem, a)
        loss_fn, loss_vjp = LOSSES[problem.loss.name]
        losses = ftz(loss_fn(a, t, *extra))
        kappa = (np.ones(len(a)) if seed_scale is None else seed_scale).astype(dtype)[:, None]
        if problem.loss.name == "squared_error":  # ((κ·(1/D))·2)·(f − y), XLA's order
            d = a.shape[1]
            g = ftz(ftz(ftz(kappa * dtype.type(1.0 / d)) * dtype.type(2)) * ftz(a - t))
        else:
            g = ftz(kappa * ftz(loss_vjp(a, t, *extra)))
        grads: Grads = {}
        for k in range(len(layers) - 1, -1, -1):
            layer, x = layers[k], inputs[k]
            if isinstance(layer, Dense):
                if seed_scale is None:
                    grads[f"{k}.weight"] = ftz(np.einsum("no,ni->noi", g, x))
                    if layer.bias:
                        grads[f"{k}.bias"] = g
                else:
                    grads[f"{k}.weight"] = ftz_matmul(g.T, x)
                    if layer.bias:
                        grads[f"{k}.bias"] = ftz_matmul(g.T, np.ones((len(g), 1), dtype))[:, 0]
                g = ftz_matmul(g, ftz(problem.params[f"{k}.weight"].astype(dtype)))
            else:
                assert isinstance(layer, Activation)
                g = ftz(g * ftz(self.slope(layer, x, outputs[k]) * one))
        return losses, {name: grads[name] for name in problem.network.param_shapes()}

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        dtype = np.dtype(config.dtype)
        kappa = problem.coefficients
        losses, grads = self.run(problem, dtype, kappa)
        return float(np.sum(ftz(kappa.astype(dtype) * losses))), grads


flush_to_zero = FlushToZero("flush_to_zero")
