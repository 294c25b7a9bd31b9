"""The network as Keras 3 layers on the TensorFlow backend (spec chapters 1 and 4), as Keras users
write them, with the problem's parameters assigned into the layers' variables.

* ``Dense`` → ``keras.layers.Dense(out, use_bias=, dtype=)``; Keras stores the kernel as
  (in, out), the transpose of the problem's (out, in) ``k.weight``: transposed on the way in, and
  the gradient on the way out (``param_names``).
* activations → ``keras.activations``: ``relu``, ``tanh``, ``sigmoid``, ``softplus``,
  ``gelu(approximate=False)`` (exact) and ``gelu(approximate=True)`` (tanh form),
  ``leaky_relu(negative_slope=0.01)`` (Keras 3's default slope is 0.2, not the spec's 0.01) and
  ``elu(alpha=1.0)``.
* ``LayerNorm`` → ``keras.layers.LayerNormalization(epsilon=1e-5)``; ``BatchNorm`` →
  ``keras.layers.BatchNormalization(epsilon=1e-5)`` called with ``training=True`` (the batch's
  statistics) or ``training=False`` with the problem's running statistics assigned to its
  ``moving_mean``/``moving_variance``. γ/β are the problem's ``k.weight``/``k.bias``.
* ``Dropout`` → the keep-mask as data, ``a * m / (1 - p)`` (Keras's ``Dropout`` draws its own
  mask; a random mask could not be compared with anything, spec §4.5).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from reference.activations import Activation
from reference.layers import Dense, Dropout
from reference.norms import NORM_EPS, BatchNorm, LayerNorm
from reference.problem import Problem

__all__ = ["ACTIVATIONS", "KerasNet", "build", "train_mode_batchnorm"]

ACTIVATIONS: dict[str, Any] = {
    "identity": lambda z: z,
    "relu": keras.activations.relu,
    "tanh": keras.activations.tanh,
    "sigmoid": keras.activations.sigmoid,
    "softplus": keras.activations.softplus,
    "gelu": lambda z: keras.activations.gelu(z, approximate=False),
    "gelu_tanh": lambda z: keras.activations.gelu(z, approximate=True),
    "leaky_relu": lambda z: keras.activations.leaky_relu(z, negative_slope=0.01),
    "elu": lambda z: keras.activations.elu(z, alpha=1.0),
}
"""Activation name of the problem → the ``keras.activations`` function with the spec's
arguments (§1.5)."""

# problem parameter suffix → (Keras variable attribute, transposed?)
_VARIABLES = {
    Dense: {"weight": ("kernel", True), "bias": ("bias", False)},
    LayerNorm: {"weight": ("gamma", False), "bias": ("beta", False)},
    BatchNorm: {"weight": ("gamma", False), "bias": ("beta", False)},
}


class KerasNet:
    """The problem's layers as Keras layers (built, parameters assigned) and the forward pass.

    ``variables`` lists the trainable Keras variables in the order of ``names`` (the problem's
    parameter names); ``transposed[name]`` says whether the variable is the parameter's
    transpose (Dense kernels)."""

    def __init__(self, problem: Problem, dtype: str) -> None:
        self.problem, self.dtype = problem, dtype
        self.layers: list[Any] = []
        self.names: list[str] = []
        self.variables: list[Any] = []
        self.transposed: dict[str, bool] = {}
        width = problem.batch.inputs.shape[-1]
        for k, layer in enumerate(problem.network.layers):
            keras_layer = self._layer(layer, dtype)
            if keras_layer is not None:
                keras_layer.build((None, width))
                for suffix, (attr, t) in _VARIABLES[type(layer)].items():
                    name = f"{k}.{suffix}"
                    if name not in problem.params:
                        continue
                    var = getattr(keras_layer, attr)
                    value = problem.params[name].T if t else problem.params[name]
                    var.assign(np.asarray(value, dtype=dtype))
                    self.names.append(name)
                    self.variables.append(var)
                    self.transposed[name] = t
                if isinstance(layer, BatchNorm) and not layer.training:
                    keras_layer.moving_mean.assign(np.asarray(layer.running_mean, dtype=dtype))
                    keras_layer.moving_variance.assign(np.asarray(layer.running_var, dtype=dtype))
            self.layers.append(keras_layer)
            width = layer.out_width(width)

    @staticmethod
    def _layer(layer: Any, dtype: str) -> Any:
        if isinstance(layer, Dense):
            return keras.layers.Dense(layer.out_features, use_bias=layer.bias, dtype=dtype)
        if isinstance(layer, LayerNorm):
            return keras.layers.LayerNormalization(epsilon=NORM_EPS, dtype=dtype)
        if isinstance(layer, BatchNorm):
            return keras.layers.BatchNormalization(epsilon=NORM_EPS, dtype=dtype)
        if isinstance(layer, (Activation, Dropout)):
            return None
        raise ValueError(f"tensorflow backend: layer type {type(layer).__name__} is not "
                         f"supported (it declares no capability for it)")

    def __call__(self, x: tf.Tensor, masks: Mapping[int, tf.Tensor] | None = None) -> tf.Tensor:
        a = x
        for k, (layer, keras_layer) in enumerate(zip(self.problem.network.layers, self.layers,
                                                    strict=True)):
            if isinstance(layer, Activation):
                a = ACTIVATIONS[layer.name](a)
            elif isinstance(layer, Dropout):
                if masks is None or k not in masks:
                    raise ValueError(f"tensorflow backend: Dropout at layer {k} needs its "
                                     f"keep-mask (batch.dropout[{k}])")
                a = a * masks[k] / (1 - layer.p)
            elif isinstance(layer, BatchNorm):
                a = keras_layer(a, training=layer.training)
            else:
                a = keras_layer(a)
        return a

    def as_params(self, tensors: list[Any]) -> dict[str, np.ndarray]:
        """Gradients or values of ``variables`` (with or without a leading example axis) as
        {problem name: array in the problem's layout}."""
        out = {}
        for name, t in zip(self.names, tensors, strict=True):
            a = np.asarray(t)
            out[name] = np.swapaxes(a, -1, -2) if self.transposed[name] else a
        return out


def build(problem: Problem, dtype: str) -> KerasNet:
    return KerasNet(problem, dtype)


def train_mode_batchnorm(problem: Problem) -> list[int]:
    """Indices of the train-mode BatchNorm layers: those that couple the examples (spec §4.3)."""
    return [k for k, layer in enumerate(problem.network.layers)
            if isinstance(layer, BatchNorm) and layer.training]
