"""``TensorFlowBackend``: the backend contract (spec chapter 8) answered by TensorFlow and Keras 3,
each method a call into ``training``."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from reference.batch import Batch
from reference.contract import Config
from reference.problem import Problem
from reference.types import Grads

from . import training
from .model import ACTIVATIONS

__all__ = ["CAPABILITIES", "TensorFlowBackend", "backend"]

CAPABILITIES = frozenset(
    {"layer:dense", "layer:layernorm", "layer:batchnorm", "layer:dropout"}
    | {f"activation:{a}" for a in ACTIVATIONS}
    | {f"loss:{name}" for name in ("squared_error", "softmax_cross_entropy", "bce_with_logits",
                                   "huber")}
    | {"loss:class_weights", "loss:ignore_index", "loss:label_smoothing", "loss:soft_targets"}
    | {f"reduction:{r}" for r in ("mean", "sum", "weighted", "weighted_mean")}
)
"""What this adapter implements (spec §8.6 capabilities): no ``input:sequence`` (nor
``reduction:sequence_mean``), no ``loss:gaussian_nll`` (Keras 3 has none)."""


class TensorFlowBackend:
    name = "tensorflow"

    def versions(self) -> Mapping[str, str]:
        return {lib: importlib.metadata.version(dist) for lib, dist in
                (("tensorflow", "tensorflow-cpu"), ("keras", "keras"))
                if _installed(dist)} or {"tensorflow": _tf_version()}

    def devices(self) -> Sequence[str]:
        return ("cpu",)

    def dtypes(self) -> Sequence[str]:
        return ("float64", "float32")

    def per_example_methods(self) -> Sequence[str]:
        return tuple(training.METHODS)

    def capabilities(self) -> Iterable[str]:
        return CAPABILITIES

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        return training.loss_and_grad(problem, config)

    def per_example(self, problem: Problem, config: Config,
                    method: str) -> tuple[np.ndarray, Grads]:
        return training.per_example(problem, config, method)

    def train(self, problem: Problem, config: Config, optimizer: Any,
              batches: Sequence[Batch]) -> Grads:
        return training.train(problem, config, optimizer, batches)

    def accumulation_methods(self) -> Sequence[str]:
        return ("sum",)

    def accumulate(self, problem: Problem, config: Config, plan: Any,
                   method: str = "sum") -> Grads:
        return training.accumulate(problem, config, plan, method)


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _tf_version() -> str:
    import tensorflow as tf

    return str(tf.__version__)


backend = TensorFlowBackend()
