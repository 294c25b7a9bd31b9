"""Backends that declare capabilities and per-feature known deviations (spec §8.6, §8.7), for the
meta-tests ``tests/meta/test_capabilities.py`` and ``tests/meta/test_capability_runs.py``.

* ``subset``: the numpy reference declaring only Dense layers, three activations, squared error
  and the mean and sum reductions; a problem with any other feature is refused (BackendError),
  and every feature it receives is appended to the file ``$BATCHGRAD_RECEIVED`` when set.
* ``legacy``: the same refusing and recording, declaring ``DEFAULT_CAPABILITIES`` (an adapter
  written for spec 0.2.0: no layer of chapter 9).
* ``misspelt``: declares ``layer:densee``, a name not in the vocabulary.
* ``elu_wrong``: right except when the network has an elu: then every gradient is 5/4 of the
  right one (a fault confined to one feature, ``activation:elu``).
* ``elu_wrong_declared``: the same, declaring it as a known deviation from §4.6.
* ``elu_fixed_declared``: the numpy reference declaring that deviation, which it does not have
  (a deviation fixed upstream: its strict expected failure must pass, XPASS(strict)).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from reference.capabilities import DEFAULT_CAPABILITIES, KnownDeviation, features_of
from reference.contract import BackendError, Config
from reference.problem import Problem
from reference.types import Grads

from .base import Faulty

__all__ = ["EluWrong", "Legacy", "Subset", "elu_fixed_declared", "elu_wrong",
           "elu_wrong_declared", "legacy", "misspelt", "subset"]

SUBSET = ("layer:dense", "activation:identity", "activation:relu", "activation:tanh",
          "loss:squared_error", "reduction:mean", "reduction:sum")


class Subset(Faulty):
    """Declares ``SUBSET`` and refuses (and records) anything else."""

    fault = "declares a subset of the vocabulary (spec §8.6)"
    declared: Sequence[str] = SUBSET

    def capabilities(self) -> Sequence[str]:
        return tuple(self.declared)

    def _received(self, problem: Problem) -> None:
        used = features_of(problem)
        path = os.environ.get("BATCHGRAD_RECEIVED")
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(" ".join(sorted(used)) + "\n")
        extra = sorted(used - set(self.declared))
        if extra:
            raise BackendError(f"backend {self.name!r} received undeclared features {extra}")

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        self._received(problem)
        return super().loss_and_grad(problem, config)

    def per_example(self, problem: Problem, config: Config,
                    method: str) -> tuple[np.ndarray, Grads]:
        self._received(problem)
        return super().per_example(problem, config, method)


class Legacy(Subset):
    """Declares ``DEFAULT_CAPABILITIES`` (spec 0.2.0) and refuses (and records) anything else."""

    fault = "declares the vocabulary of spec 0.2.0 only (no chapter 9 layer, spec §8.6)"
    declared = tuple(sorted(DEFAULT_CAPABILITIES))


class Misspelt(Faulty):
    fault = "declares a capability that is not in the vocabulary"

    def capabilities(self) -> Sequence[str]:
        return ("layer:densee",)


def _has_elu(problem: Problem) -> bool:
    return "activation:elu" in features_of(problem)


class EluWrong(Faulty):
    """Every gradient 5/4 of the right one when the network has an elu; right otherwise."""

    fault = "gradients × 5/4 whenever the network has an elu"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = super().loss_and_grad(problem, config)
        return loss, ({k: 1.25 * v for k, v in grads.items()} if _has_elu(problem) else grads)

    def per_example(self, problem: Problem, config: Config,
                    method: str) -> tuple[np.ndarray, Grads]:
        losses, grads = super().per_example(problem, config, method)
        return losses, ({k: 1.25 * v for k, v in grads.items()} if _has_elu(problem) else grads)


ELU_DEVIATION = KnownDeviation("4.6", "activation:elu", "§4.6 gradients through elu are 5/4 "
                               "of the right ones (a deliberate fault)")


class EluWrongDeclared(EluWrong):
    def known_deviations(self) -> Sequence[KnownDeviation]:
        return (ELU_DEVIATION,)


class EluFixedDeclared(Faulty):
    fault = "declares a known deviation it does not have (fixed upstream)"

    def known_deviations(self) -> Sequence[KnownDeviation]:
        return (ELU_DEVIATION,)


subset = Subset("subset")
legacy = Legacy("legacy")
misspelt = Misspelt("misspelt")
elu_wrong = EluWrong("elu_wrong")
elu_wrong_declared = EluWrongDeclared("elu_wrong_declared")
elu_fixed_declared = EluFixedDeclared("elu_fixed_declared")
