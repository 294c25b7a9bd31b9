"""Repro: TensorFlow's float64 GELU (both forms) and leaky_relu use float32-rounded constants.

Run: python docs/findings/repros/tensorflow_float64_activation_constants.py  (needs only tensorflow-cpu
and numpy). Exits 1 while the deviation is present, 0 when it is fixed.
"""

import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

z = np.linspace(-6.0, 6.0, 121) + 0.01
x = tf.constant(z, dtype=tf.float64)

exact = {
    "gelu": np.array([0.5 * v * math.erfc(-v / math.sqrt(2.0)) for v in z]),
    "gelu_tanh": np.array([0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi)
                                                      * (v + 0.044715 * v**3))) for v in z]),
    "leaky_relu": np.where(z > 0, z, 0.01 * z),
}
observed = {
    "gelu": tf.nn.gelu(x, approximate=False).numpy(),
    "gelu_tanh": tf.nn.gelu(x, approximate=True).numpy(),
    "leaky_relu": tf.nn.leaky_relu(x, alpha=0.01).numpy(),
}
print("tensorflow", tf.__version__)
print("tf.cast(0.7071067811865476, tf.float64) =", repr(float(tf.cast(0.7071067811865476,
                                                                       tf.float64))))
print("tf.cast(0.044715, tf.float64)           =", repr(float(tf.cast(0.044715, tf.float64))))
bad = False
for name in exact:
    rel = np.max(np.abs(observed[name] - exact[name]) / np.maximum(np.abs(exact[name]), 1e-300))
    ok = rel < 1e-14  # a float64 evaluation is good to a few ulps (2.2e-16 each)
    bad |= not ok
    print(f"{name:11s} float64 largest relative error {rel:.3g}  {'ok' if ok else 'DEVIATES'}")
sys.exit(1 if bad else 0)
