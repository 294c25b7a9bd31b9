"""Repro: tinygrad 0.14's exact GELU uses Tensor.erf, the Abramowitz-Stegun 7.1.26 polynomial
(absolute error up to 1.5e-7), so float64 GELU(approximate="none") is accurate to ~1e-7 only.

Run: python docs/findings/repros/tinygrad_float64_gelu_erf.py  (tinygrad and numpy; its CPU device
needs clang, e.g. CC=clang-14; DEV=PYTHON runs its emulator instead). Exits 1 while the deviation is
present.
"""

import math
import sys

import numpy as np
from tinygrad import Tensor, dtypes

z = np.linspace(-6.0, 6.0, 121) + 0.01
x = Tensor(z, dtype=dtypes.float64)
erf = x.erf().numpy()
gelu = x.gelu(approximate="none").numpy()
want_erf = np.array([math.erf(v) for v in z])
want_gelu = np.array([0.5 * v * math.erfc(-v / math.sqrt(2.0)) for v in z])
e1 = float(np.max(np.abs(erf - want_erf)))
e2 = float(np.max(np.abs(gelu - want_gelu)))
print(f"float64 Tensor.erf largest absolute error {e1:.3g}; gelu(approximate='none') {e2:.3g}")
sys.exit(0 if max(e1, e2) < 1e-14 else 1)
