"""What TensorFlow training code does with gradients, with ``tf.GradientTape``: the batch
gradient, per-example gradients by ``tf.vectorized_map`` (TensorFlow's vectorisation, the
per-example-gradient example of its own docstring) or a loop of tapes (spec §1.4, §2.12), gradient
accumulation by summing the tapes' gradients into variables over micro-batches (spec
§5.1–§5.5), and ``keras.optimizers`` steps (spec chapter 6).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from reference.batch import Batch
from reference.contract import Config
from reference.problem import Problem
from reference.types import Grads, Undefined

from .losses import per_example_loss, reduced_loss, targets, unsupported
from .model import KerasNet, build, train_mode_batchnorm

__all__ = ["METHODS", "accumulate", "floatx", "keras_optimizer", "loss_and_grad", "per_example",
           "train"]


@contextlib.contextmanager
def floatx(dtype: str) -> Iterator[None]:
    """``keras.config.set_floatx(dtype)`` for the duration: the documented way to train Keras in
    float64. Without it a Keras optimiser keeps its learning rate (and a loss its computation)
    in float32 variables, so a float64 SGD step uses fl32(η) (spec §6.1 fails at ratios ~1e5)."""
    before = keras.config.floatx()
    keras.config.set_floatx(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(before)


def _in_floatx(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(problem: Problem, config: Config, *args: Any) -> Any:
        with floatx(config.dtype):
            return fn(problem, config, *args)

    return run


def check(problem: Problem, config: Config) -> str:
    """The dtype to compute in; a clear error for what this adapter cannot do."""
    if config.device != "cpu" or config.precision != "strict":
        raise ValueError(f"tensorflow backend: computes on cpu in strict IEEE arithmetic, "
                         f"not {config}")
    why = unsupported(problem)
    if why:
        raise ValueError(f"tensorflow backend: not supported: {why}")
    return config.dtype


def _classes(problem: Problem) -> int:
    return int(problem.network.out_features)


def _data(problem: Problem, dtype: str) -> dict[str, Any]:
    """The batch as tensors, examples on axis 0: x, y_true, the loss's own sample weights s,
    the c_i, and the dropout keep-masks."""
    b = problem.batch
    y_true, s = targets(problem, _classes(problem), dtype)
    out: dict[str, Any] = {"x": tf.constant(b.inputs, dtype=dtype), "y": y_true}
    if s is not None:
        out["s"] = s
    if b.weights is not None:
        out["c"] = tf.constant(b.weights, dtype=dtype)
    if b.dropout:
        out["drop"] = {k: tf.constant(m, dtype=dtype) for k, m in b.dropout.items()}
    return out


def _grads(net: KerasNet, tape: tf.GradientTape, loss: tf.Tensor) -> list[Any]:
    grads = tape.gradient(loss, net.variables)
    return [tf.zeros_like(v) if g is None else g for g, v in zip(grads, net.variables,
                                                                  strict=True)]


def _loss(problem: Problem, net: KerasNet, d: dict[str, Any], dtype: str) -> tf.Tensor:
    out = net(d["x"], d.get("drop"))
    return reduced_loss(problem, out, d["y"], d.get("s"), d.get("c"), dtype)


@_in_floatx
def loss_and_grad(problem: Problem, config: Config) -> tuple[float, Grads]:
    """L and ∇L: the reduced Keras loss of the whole batch under one ``tf.GradientTape``."""
    dtype = check(problem, config)
    net, d = build(problem, dtype), _data(problem, dtype)
    with tf.GradientTape() as tape:
        loss = _loss(problem, net, d, dtype)
    return float(loss), net.as_params(_grads(net, tape, loss))


def _one(problem: Problem, net: KerasNet, d: dict[str, Any], dtype: str) -> tf.Tensor:
    """ℓ of the single example ``d`` (no example axis): the model called on a batch of one."""
    one = {k: ({j: m[None] for j, m in v.items()} if k == "drop" else v[None])
           for k, v in d.items()}
    out = net(one["x"], one.get("drop"))
    return per_example_loss(problem, out, one["y"], one.get("s"), dtype)[0]


def _vmap(problem: Problem, net: KerasNet, d: dict[str, Any], dtype: str) -> tuple[Any, Any]:
    def one(di: dict[str, Any]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        with tf.GradientTape() as tape:
            loss = _one(problem, net, di, dtype)
        return loss, _grads(net, tape, loss)

    d = {k: v for k, v in d.items() if k != "c"}
    losses, grads = tf.vectorized_map(one, d)
    return losses, grads


def _loop(problem: Problem, net: KerasNet, d: dict[str, Any], dtype: str) -> tuple[Any, Any]:
    losses, rows = [], []
    for i in range(problem.batch.size):
        di = {k: ({j: m[i] for j, m in v.items()} if k == "drop" else v[i])
              for k, v in d.items() if k != "c"}
        with tf.GradientTape() as tape:
            loss = _one(problem, net, di, dtype)
        losses.append(loss)
        rows.append(_grads(net, tape, loss))
    return tf.stack(losses), [tf.stack(gs) for gs in zip(*rows, strict=True)]


METHODS = {"vmap": _vmap, "loop": _loop}


@_in_floatx
def per_example(problem: Problem, config: Config, method: str) -> tuple[np.ndarray, Grads]:
    """(ℓ_i, g_i) of every example by ``method``; Undefined through a train-mode BatchNorm."""
    if method not in METHODS:
        raise ValueError(f"tensorflow backend: unknown per-example method {method!r}; it has "
                         f"{tuple(METHODS)}")
    dtype = check(problem, config)
    coupled = train_mode_batchnorm(problem)
    if coupled:
        raise Undefined(f"per-example gradients are not defined through a train-mode "
                        f"BatchNorm (layer {coupled[0]}; spec §4.3): keras.layers."
                        f"BatchNormalization(training=True) normalises with the batch's "
                        f"statistics, so each ℓ_i depends on every example")
    net, d = build(problem, dtype), _data(problem, dtype)
    losses, grads = METHODS[method](problem, net, d, dtype)
    return np.asarray(losses), net.as_params(list(grads))


@_in_floatx
def accumulate(problem: Problem, config: Config, plan: Any, method: str = "sum") -> Grads:
    """Gradient accumulation as TensorFlow custom training loops write it: one tape per
    micro-batch k of the plan, differentiating ``loss_k * s_k + t_k * (l2 / 2) * Σ‖v‖²`` at the
    same θ, its gradients added into zero-initialised accumulator variables
    (``assign_add``): a summing accumulator (spec §5.5)."""
    from reference.accumulation import micro_batches

    if method != "sum":
        raise ValueError(f"tensorflow backend: accumulator {method!r}; summing tape gradients "
                         f"into variables is method 'sum'")
    dtype = check(problem, config)
    net = build(problem, dtype)
    acc = [tf.Variable(tf.zeros_like(v)) for v in net.variables]
    for part, s, t in zip(micro_batches(problem, plan), plan.scales, plan.penalty_scales,
                          strict=True):
        d = _data(part, dtype)  # micro_batches applies the plan's reduction
        with tf.GradientTape() as tape:
            loss = _loss(part, net, d, dtype) * s
            if t:
                loss = loss + t * (plan.l2 / 2) * tf.add_n(
                    [tf.reduce_sum(tf.square(v)) for v in net.variables])
        for a, g in zip(acc, _grads(net, tape, loss), strict=True):
            a.assign_add(g)
    return net.as_params(acc)


def keras_optimizer(opt: Any) -> keras.optimizers.Optimizer:
    """The ``keras.optimizers`` object of a ``reference.update.Optimizer`` (spec §6.1). Keras's
    ``weight_decay=`` is decoupled in every optimiser: it is used for "adamw" only; the L2 of
    "sgd" and "adam" is added to the loss (``train``)."""
    if opt.name == "sgd":
        return keras.optimizers.SGD(learning_rate=opt.lr, momentum=opt.momentum, nesterov=False)
    b1, b2 = opt.betas
    if opt.name == "adam":
        return keras.optimizers.Adam(learning_rate=opt.lr, beta_1=b1, beta_2=b2,
                                     epsilon=opt.eps)
    return keras.optimizers.AdamW(learning_rate=opt.lr, beta_1=b1, beta_2=b2, epsilon=opt.eps,
                                  weight_decay=opt.weight_decay)


@_in_floatx
def train(problem: Problem, config: Config, optimizer: Any, batches: Sequence[Batch]) -> Grads:
    """One ``apply_gradients`` of the Keras optimiser per batch, from ``problem.params``: a tape
    over the batch's reduced loss (plus (λ/2)‖θ‖² for the L2 of "sgd" and "adam"); the final
    parameters."""
    dtype = check(problem, config)
    net = build(problem, dtype)
    opt = keras_optimizer(optimizer)
    l2 = optimizer.weight_decay if optimizer.name != "adamw" else 0.0
    for batch in batches:
        part = problem.with_batch(batch)
        d = _data(part, dtype)
        with tf.GradientTape() as tape:
            loss = _loss(part, net, d, dtype)
            if l2:
                loss = loss + (l2 / 2) * tf.add_n(
                    [tf.reduce_sum(tf.square(v)) for v in net.variables])
        opt.apply_gradients(zip(_grads(net, tape, loss), net.variables, strict=True))
    return net.as_params([v.numpy() for v in net.variables])
