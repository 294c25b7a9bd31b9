"""Deliberately wrong loss reductions (spec chapter 3): the mistakes chapter 3's properties catch.

Each wraps the numpy reference backend, exactly right except for the one documented fault, and
is loadable as ``--backend batchgrad_spec.faults.losses:<name>`` (and, for the gallery, as
``batchgrad_spec.faults:<name>``). ``tests/meta/test_loss_faults.py`` runs each through the property
of the clause that catches it:

* ``class_weighted_mean_over_n``   class-weighted cross-entropy ``mean`` divided by N instead of
  Σ w[y_i] (§3.3; spec/appendix-b-pitfalls.md#p6)
* ``ignored_targets_counted``      ignored labels counted in the ``mean``'s denominator, one each,
  as ``F.cross_entropy(..., reduction="none").mean()`` does (§3.4; spec/appendix-b-pitfalls.md#p7)
* ``smoothing_over_ignored_rows``  label smoothing's uniform term taken over every row, ignored
  ones included, as reported of PyTorch in pytorch/pytorch#73205 (§3.5;
  spec/appendix-b-pitfalls.md#p8)

The fourth fault of the chapter, squared error's ``mean`` divided by N instead of N·D (§3.2), is
``batchgrad_spec.faults:mse_summed_over_outputs``, already in the gallery for §2.1.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from reference.contract import Config
from reference.losses import Loss
from reference.problem import Problem
from reference.types import Grads

from .base import Faulty, PerExample

__all__ = ["class_weighted_mean_over_n", "ignored_targets_counted",
           "smoothing_over_ignored_rows"]


def _labelled(problem: Problem) -> bool:
    """Cross-entropy with integer labels on single predictions (not sequences)."""
    return (problem.loss.name == "softmax_cross_entropy" and not problem.batch.sequence
            and problem.batch.targets.dtype.kind in "iu")


class _MeanDivisor(Faulty):
    """Labelled cross-entropy under ``mean`` where ``applies``: Σ ℓ_i / ``divisor`` instead of
    the right normaliser; right otherwise."""

    def applies(self, problem: Problem) -> bool:
        raise NotImplementedError

    def divisor(self, problem: Problem) -> float:
        raise NotImplementedError

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        if (problem.reduction.name != "mean" or not _labelled(problem)
                or not self.applies(problem)):
            return super().loss_and_grad(problem, config)
        n = problem.batch.size
        return self.reduced_by(problem, config, np.full(n, 1.0 / self.divisor(problem)))


class ClassWeightedMeanOverN(_MeanDivisor):
    """Class-weighted cross-entropy under ``mean`` is Σ_i w[y_i] nll_i / N: the weights enter
    each ℓ_i but the normaliser is the batch size (``(w[y] * nll).mean()``), not Σ w[y_i] as
    PyTorch's ``weight=`` divides by. Right only when Σ_i w[y_i] = N."""

    fault = "class-weighted mean divided by N"

    def applies(self, problem: Problem) -> bool:
        return problem.loss.class_weights is not None

    def divisor(self, problem: Problem) -> float:
        return problem.batch.size


class IgnoredTargetsCounted(_MeanDivisor):
    """Under ``mean``, every ignored label counts one in the denominator: Σ ℓ_i / (Σ_kept w[y_i]
    + #ignored) — N without class weights, as ``F.cross_entropy(reduction="none").mean()`` or
    ``jnp.mean(optax_losses)`` over masked examples gives (spec/appendix-b-pitfalls.md#p16). Right
    when no label is ignored."""

    fault = "ignored labels counted in the mean"

    def applies(self, problem: Problem) -> bool:
        return problem.loss.ignore_index is not None

    def divisor(self, problem: Problem) -> float:
        ignored = problem.batch.targets == problem.loss.ignore_index
        return float(problem.counts.sum()) + float(ignored.sum())


class SmoothingOverIgnoredRows(Faulty):
    """Label smoothing's uniform term (ε/C) Σ_k w_k (−log p_ik) is added for every row, ignored
    rows included, while the label term and the denominator skip them: the bug of
    pytorch/pytorch#73205 ("the uniform part of the loss incorrectly takes into account ignored
    samples"). Computed as the reference's probability targets q = e_{y_i} for kept rows and
    q = 0 for ignored ones (so q̃ = ε/C there), reduced with the problem's own κ_i; ``per_example``
    reports those ℓ_i and g_i too. Right when ε = 0 or no label is ignored."""

    fault = "label smoothing over ignored rows"

    @staticmethod
    def _smeared(problem: Problem) -> Problem | None:
        loss = problem.loss
        if not _labelled(problem) or loss.ignore_index is None or loss.label_smoothing == 0:
            return None
        y = problem.batch.targets
        kept = y != loss.ignore_index
        q = np.eye(problem.network.out_features)[np.where(kept, y, 0)] * kept[:, None]
        soft = Loss(loss.name, class_weights=loss.class_weights,
                    label_smoothing=loss.label_smoothing)
        return replace(problem, loss=soft, batch=replace(problem.batch, targets=q))

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        smeared = self._smeared(problem)
        return super().per_example(smeared or problem, config, method)

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        smeared = self._smeared(problem)
        if smeared is None:
            return super().loss_and_grad(problem, config)
        return self.reduced_by(smeared, config, problem.coefficients)


class_weighted_mean_over_n = ClassWeightedMeanOverN("class_weighted_mean_over_n")
ignored_targets_counted = IgnoredTargetsCounted("ignored_targets_counted")
smoothing_over_ignored_rows = SmoothingOverIgnoredRows("smoothing_over_ignored_rows")
