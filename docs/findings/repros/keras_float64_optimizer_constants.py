"""Repro: Keras 3 (TensorFlow backend) rounds a Python-float hyperparameter to float32 in
``keras.ops.cast(x, "float64")``, so float64 SGD-with-momentum and Adam use fl32(μ), fl32(β).

Run: python docs/findings/repros/keras_float64_optimizer_constants.py  (tensorflow-cpu, keras, numpy).
Exits 1 while the deviation is present.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

keras.config.set_floatx("float64")  # the documented way to train in float64
print("tensorflow", tf.__version__, "keras", keras.__version__)
print("keras.ops.cast(0.9, 'float64') =", repr(float(keras.ops.cast(0.9, "float64"))))
v = keras.Variable(np.array([1.0]), dtype="float64")
opt = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
for _ in range(2):
    opt.apply_gradients([(tf.constant([1.0], tf.float64), v)])
got, want = float(v.numpy()[0]), 1.0 - 0.1 - 0.1 * (0.9 + 1.0)
print(f"two SGD(momentum=0.9) steps in float64: {got!r}, expected {want!r} "
      f"(relative error {abs(got - want) / want:.3g})")
sys.exit(0 if abs(got - want) <= 4e-16 * abs(want) else 1)
