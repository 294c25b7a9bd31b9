"""Losses and reductions with ``keras.losses`` and their own ``reduction=`` argument (spec
chapters 1-3), as Keras users write them.

Every loss object is made with ``dtype=`` the run's dtype: a Keras 3 loss without it converts
``y_pred`` to ``keras.backend.floatx()`` (float32) before computing, so a float64 model would
silently get a float32 loss and gradient (Appendix A, lessons).

* ``squared_error`` → ``MeanSquaredError``, ``bce_with_logits`` →
  ``BinaryCrossentropy(from_logits=True)``, ``huber`` → ``Huber(delta=)``: each is the mean over
  the last axis (the D outputs), which is the spec's ℓ_i.
* ``softmax_cross_entropy`` with integer labels → ``SparseCategoricalCrossentropy(
  from_logits=True, ignore_class=)``; with label smoothing the labels are one-hot encoded and
  ``CategoricalCrossentropy(from_logits=True, label_smoothing=)`` is used (Keras's sparse loss has
  no smoothing), the ignored rows given sample weight 0; soft targets →
  ``CategoricalCrossentropy(from_logits=True)``. Class weights are Keras's ``class_weight``
  idiom: example i gets sample weight w[y_i].
* reductions: mean → ``"sum_over_batch_size"`` (Keras divides by the number of unmasked
  examples when ``ignore_class`` masks some), or ``"mean_with_sample_weight"`` (Σ s_i ℓ_i / Σ s_i)
  where examples carry sample weights (class weights, a smoothing mask); sum → ``"sum"``;
  weighted → ``"sum"`` with ``sample_weight=c``; weighted_mean → ``"mean_with_sample_weight"``
  with ``sample_weight=c`` (with class weights too: ``"sum"`` of c_i w[y_i] ℓ_i over Σ c_i).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from reference.problem import Problem

__all__ = ["per_example_loss", "reduced_loss", "targets", "unsupported"]


def unsupported(problem: Problem) -> str | None:
    """Why the problem cannot be expressed with Keras losses, or None."""
    loss, b = problem.loss, problem.batch
    if b.sequence:
        return "sequence inputs (input:sequence) are not implemented by this adapter"
    if loss.name == "gaussian_nll":
        return "Keras 3 has no Gaussian negative log-likelihood loss"
    if problem.reduction.name == "sequence_mean":
        return "sequence_mean needs sequence inputs"
    if loss.name == "softmax_cross_entropy" and b.targets.dtype.kind == "f" and (
            loss.class_weights is not None):
        return "Keras has no class weights for probability targets"
    return None


def _loss_object(problem: Problem, dtype: str, reduction: str | None) -> Any:
    loss = problem.loss
    if loss.name == "squared_error":
        return keras.losses.MeanSquaredError(reduction=reduction, dtype=dtype)
    if loss.name == "bce_with_logits":
        return keras.losses.BinaryCrossentropy(from_logits=True, reduction=reduction, dtype=dtype)
    if loss.name == "huber":
        return keras.losses.Huber(delta=loss.delta, reduction=reduction, dtype=dtype)
    assert loss.name == "softmax_cross_entropy", loss.name
    if problem.batch.targets.dtype.kind == "f" or loss.label_smoothing:
        return keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=loss.label_smoothing, reduction=reduction,
            dtype=dtype)
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=loss.ignore_index, reduction=reduction, dtype=dtype)


def targets(problem: Problem, classes: int, dtype: str) -> tuple[tf.Tensor, tf.Tensor | None]:
    """y_true as Keras is given it (integer labels, a one-hot encoding for label smoothing, or
    the float targets) and the per-example sample weights of the loss itself (class weights
    w[y_i]; 0 for an ignored row of a one-hot-encoded smoothed target), or None."""
    loss, b = problem.loss, problem.batch
    if b.targets.dtype.kind == "f":
        return tf.constant(b.targets, dtype=dtype), None
    labels = b.targets
    if loss.name != "softmax_cross_entropy":
        raise ValueError(f"tensorflow backend: integer targets for {loss!r}")
    kept = (np.ones(labels.shape, dtype=bool) if loss.ignore_index is None
            else labels != loss.ignore_index)
    weights = None
    if loss.class_weights is not None:
        w = np.asarray(loss.class_weights)
        weights = np.where(kept, w[np.where(kept, labels, 0)], 0.0)
    if loss.label_smoothing:
        y_true = tf.one_hot(np.where(kept, labels, 0), classes, dtype=dtype)
        if weights is None and not kept.all():
            weights = kept.astype(np.float64)
    else:
        y_true = tf.constant(labels, dtype=tf.int64)
    return y_true, (None if weights is None else tf.constant(weights, dtype=dtype))


def per_example_loss(problem: Problem, out: tf.Tensor, y_true: Any, s: Any,
                     dtype: str) -> tf.Tensor:
    """ℓ_i, shape (N,): the Keras loss with ``reduction=None``; ``y_true`` and the sample weights
    ``s`` of the loss itself from ``targets``."""
    return _loss_object(problem, dtype, None)(y_true, out, sample_weight=s)


def reduced_loss(problem: Problem, out: tf.Tensor, y_true: Any, s: Any, c: tf.Tensor | None,
                 dtype: str) -> tf.Tensor:
    """L by the Keras loss's own reduction (module docstring); ``c`` the c_i of the weighted
    reductions."""
    name = problem.reduction.name
    if name == "mean":
        reduction = "sum_over_batch_size" if s is None else "mean_with_sample_weight"
        return _loss_object(problem, dtype, reduction)(y_true, out, sample_weight=s)
    if name == "sum":
        return _loss_object(problem, dtype, "sum")(y_true, out, sample_weight=s)
    assert c is not None, name
    if name == "weighted":
        return _loss_object(problem, dtype, "sum")(y_true, out,
                                                    sample_weight=c if s is None else c * s)
    if s is None:
        return _loss_object(problem, dtype, "mean_with_sample_weight")(y_true, out,
                                                                        sample_weight=c)
    return _loss_object(problem, dtype, "sum")(y_true, out, sample_weight=c * s) / tf.reduce_sum(c)
