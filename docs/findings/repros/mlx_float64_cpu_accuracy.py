"""Repro: MLX 0.32.4 on the CPU — float64 exp and erf have float32-level accuracy, and Adam's
bias corrections are computed in float32 (also for float64 parameters).

Run: python docs/findings/repros/mlx_float64_cpu_accuracy.py  (needs only mlx[cpu] and numpy).
Exits 1 while a deviation is present, 0 when all are fixed.
"""

import math
import sys

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

mx.set_default_device(mx.cpu)  # float64 is a CPU dtype in MLX
z = np.linspace(-6.0, 6.0, 121) + 0.01
x = mx.array(z, dtype=mx.float64)
bad = False
print("mlx", mx.__version__)
print("exp(1.0) in float64:", repr(float(np.array(mx.exp(mx.array([1.0], dtype=mx.float64)))[0])),
      "vs math.e", repr(math.e))
for name, got, want in (
        ("exp", mx.exp(x), np.exp(z)),
        ("erf", mx.erf(x), np.array([math.erf(v) for v in z])),
        ("sigmoid", mx.sigmoid(x), 1.0 / (1.0 + np.exp(-z))),
        ("logaddexp(z, 0)", mx.logaddexp(x, mx.array(0.0, dtype=mx.float64)),
         np.logaddexp(z, 0.0)),
        ("tanh (fine)", mx.tanh(x), np.tanh(z))):
    rel = float(np.max(np.abs(np.array(got) - want) / np.abs(want)))
    ok = rel < 1e-14
    bad |= not ok
    print(f"float64 {name:16s} largest relative error {rel:.3g}  {'ok' if ok else 'DEVIATES'}")

# one Adam step with bias correction: θ = 0, g = −2, η = 1/16 → θ' = η·2/(2 + ε)
for dt in (mx.float32, mx.float64):
    params = {"b": mx.array([0.0], dtype=dt)}
    opt = optim.Adam(learning_rate=0.0625, betas=[0.9, 0.999], eps=1e-8, bias_correction=True)
    params = opt.apply_gradients({"b": mx.array([-2.0], dtype=dt)}, params)
    got, want = float(np.array(params["b"])[0]), 0.0625 * 2.0 / (2.0 + 1e-8)
    rel = abs(got - want) / want
    ok = rel < (1e-6 if dt == mx.float32 else 1e-14)
    bad |= not ok
    print(f"Adam step 1 in {dt}: {got!r}, expected {want!r}, relative error {rel:.3g}  "
          f"{'ok' if ok else 'DEVIATES'}")
sys.exit(1 if bad else 0)
