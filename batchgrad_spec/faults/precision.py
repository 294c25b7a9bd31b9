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
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from reference.contract import Config
from reference.numpy_backend import NumpyBackend
from reference.problem import Problem
from reference.types import Grads

from .operations import MLP

__all__ = ["round_to_tf32", "tf32", "tf32_emulation", "tf32_in_strict_mode"]


def tf32(a: np.ndarray) -> np.ndarray:
    """float32 rounded to TF32: 10 explicit mantissa bits (11 significant), to nearest with ties
    away from zero as NVIDIA's ``cvt.rna.tf32.f32`` does; the exponent range is float32's.
    Relative error ≤ 2⁻¹¹."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


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
