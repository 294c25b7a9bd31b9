"""The TensorFlow backend: ``--backend batchgrad_spec.backends.tf_backend:backend`` (or
``--backend tensorflow``).

TensorFlow 2 with Keras 3 on its TensorFlow backend, as their users write training code: the
network from ``keras.layers`` (``Dense``, ``LayerNormalization``, ``BatchNormalization``) and
``keras.activations``, losses from ``keras.losses`` with their own ``reduction=`` (and ``dtype=``),
gradients by ``tf.GradientTape``, per-example gradients by ``tf.vectorized_map`` ("vmap") or a
loop of tapes ("loop"), accumulation by summing tape gradients into variables, and
``keras.optimizers`` SGD, Adam and AdamW for ``train``. CPU only (the ``tensorflow-cpu`` wheel);
float64 and float32.

Rooms, one concern each (imports go one way, down this list): ``adapter`` (the contract),
``training`` (tapes, vectorised map, accumulation, optimisers), ``losses`` (Keras losses and
reductions), ``model`` (Keras layers with the problem's parameters).

Threads: importing this package sets TensorFlow's intra- and inter-op thread pools to 1 (unless
``BATCHGRAD_TF_THREADS`` says otherwise; 0 keeps TensorFlow's default): the problems are tiny, and
the CI machine has 2 cores. TensorFlow's C++ log level is set to errors only
(``TF_CPP_MIN_LOG_LEVEL=2``) unless already set, and Keras is told to use TensorFlow
(``KERAS_BACKEND=tensorflow``) unless a backend is already chosen.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

_THREADS = int(os.environ.get("BATCHGRAD_TF_THREADS", "1") or 0)
if _THREADS > 0:
    try:
        tf.config.threading.set_intra_op_parallelism_threads(_THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(_THREADS)
    except RuntimeError:  # TensorFlow already initialised by the caller: keep its pools
        pass

# ruff: noqa: E402  (the environment and thread pools are set before Keras is imported)
from .adapter import CAPABILITIES, TensorFlowBackend, backend

__all__ = ["CAPABILITIES", "TensorFlowBackend", "backend"]
