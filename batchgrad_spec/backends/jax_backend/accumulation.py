"""Gradient accumulation as JAX training loops write it (spec §5.1–§5.5).

Over the micro-batches of a ``reference.accumulation.Accumulation`` plan, J_k = s_k L_k + t_k
(λ/2)‖θ‖², all at the same θ. Each micro-batch's ∇L_k comes from the backend's
``loss_and_grad`` (the jitted ``jax.value_and_grad`` programs, under ``plan.reduction``); the rest
is one jitted program (``_accumulation_program``): the penalty's gradient ``jax.grad`` of
``(l2 / 2) * jnp.sum(θ ** 2)``, ∇J_k = s_k ∇L_k + t_k ∇P, and then

method "sum": the ∇J_k added in order (``jax.lax.scan`` of ``jnp.add``), as JAX training loops
accumulate (``jax.tree.map(jnp.add, acc, grads)``). method "average": ``optax.MultiSteps(
optax.identity(), every_k_schedule=K, accumulator_dtype=<the model's dtype>)`` with its default
``use_grad_mean=True``, fed ∇(K J_k) = K s_k ∇L_k + K t_k ∇P; after the K-th ``update`` it emits
the running mean of what it was fed, which is G. (Fed the plain ∇L_k — s_k = t_k = 1/K, K s_k =
1 exactly — it is what MultiSteps users run: spec §5.5.) ``accumulator_dtype`` defaults to
float32 in optax 0.2.8, which rounds a float64 accumulation to float32 at every micro-step but
the last (spec §5.5); it is passed explicitly so that float64 stays float64.

Bucketed like the gradient programs (compiled once per dtype and bucket, not per problem): the
parameters travel as one flattened vector padded with zeros (every step here is elementwise, so
this is the arithmetic of the pytree; padded entries stay 0), the micro-batches as a fixed
number of rows, rows past the K-th with s = t = 0 (adding their zeros is exact; MultiSteps'
output is read at micro-step K), K traced.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from reference.contract import Config
from reference.problem import Problem
from reference.types import Grads

from .buckets import bucket
from .compilation import TRACES
from .devices import check

__all__ = ["ACCUMULATE_AVERAGE", "ACCUMULATE_SUM", "METHODS", "MIN_PARAMS", "MIN_STEPS",
           "accumulate"]

METHODS = ("sum", "average")
"""The accumulators: "sum" (jnp.add) and "average" (optax.MultiSteps)."""
MIN_PARAMS = 64
"""Smallest bucket of the flattened parameter vector of the accumulation programs."""
MIN_STEPS = 8
"""Smallest bucket of the number of micro-batches of the accumulation programs."""


def _accumulation_program(grads: jax.Array, scales: jax.Array, weights: jax.Array,
                          theta: jax.Array, half: jax.Array, k: jax.Array,
                          average: bool) -> tuple[jax.Array, jax.Array]:
    """(G, emitted) from the rows ∇L_k of ``grads``: ∇J_k = s_k ∇L_k + t_k ∇P with ∇P =
    ``jax.grad`` of ``half * jnp.sum(θ ** 2)``, then the sum of the rows (``average`` False) or
    ``optax.MultiSteps(optax.identity(), every_k_schedule=k)`` over them, read at micro-step k
    (``average`` True; ``emitted``: whether MultiSteps emitted there)."""
    TRACES["accumulate_average" if average else "accumulate_sum"] += 1
    penalty = jax.grad(lambda v: half * jnp.sum(v ** 2))(theta)
    fed = scales[:, None] * grads + weights[:, None] * penalty
    if not average:
        total = jax.lax.scan(lambda acc, g: (acc + g, None), jnp.zeros_like(theta), fed)[0]
        return total, jnp.asarray(True)
    multi = optax.MultiSteps(optax.identity(), every_k_schedule=lambda step: k,
                             accumulator_dtype=fed.dtype)

    def step(state: Any, g: jax.Array) -> tuple[Any, tuple[jax.Array, jax.Array]]:
        updates, state = multi.update(g, state, theta)
        return state, (updates, multi.has_updated(state))

    _, (updates, emitted) = jax.lax.scan(step, multi.init(theta), fed)
    return updates[k - 1], emitted[k - 1]


ACCUMULATE_SUM = jax.jit(functools.partial(_accumulation_program, average=False))
ACCUMULATE_AVERAGE = jax.jit(functools.partial(_accumulation_program, average=True))


def accumulate(loss_and_grad: Callable[[Problem, Config], tuple[float, Grads]],
               problem: Problem, config: Config, plan: Any, method: str = "sum") -> Grads:
    """G of ``plan`` over ``problem`` by the accumulator ``method`` (see the module docstring),
    each ∇L_k from ``loss_and_grad``."""
    from reference.accumulation import micro_batches

    if method not in METHODS:
        raise ValueError(f"jax backend: accumulator {method!r}; jax has 'sum' "
                         f"(jnp.add) and 'average' (optax.MultiSteps)")
    dtype, device = check(config)
    parts = micro_batches(problem, plan)
    k = len(parts)
    factor = float(k) if method == "average" else 1.0
    names = sorted(problem.params)
    shapes = [problem.params[n].shape for n in names]
    cuts = np.cumsum([0] + [int(np.prod(sh)) for sh in shapes])
    rows = bucket(k, MIN_STEPS)
    grads = np.zeros((rows, bucket(int(cuts[-1]), MIN_PARAMS)), dtype)
    for i, part in enumerate(parts):
        _, g = loss_and_grad(part, config)
        grads[i, : cuts[-1]] = np.concatenate([np.asarray(g[n], dtype).reshape(-1)
                                               for n in names])
    theta = np.zeros(grads.shape[1], dtype)
    theta[: cuts[-1]] = np.concatenate([problem.params[n].astype(dtype).reshape(-1)
                                        for n in names])
    scales, weights = np.zeros(rows, dtype), np.zeros(rows, dtype)
    scales[:k] = [factor * s for s in plan.scales]
    weights[:k] = [factor * t for t in plan.penalty_scales]
    args = (grads, scales, weights, theta, np.asarray(plan.l2 / 2, dtype), np.int32(k))
    program = ACCUMULATE_AVERAGE if method == "average" else ACCUMULATE_SUM
    total, emitted = jax.device_get(program(*jax.device_put(args, device)))
    if not bool(emitted):
        raise RuntimeError(f"optax.MultiSteps did not emit after {k} micro-steps")
    return {n: np.asarray(total[a:b]).reshape(sh)
            for n, a, b, sh in zip(names, cuts[:-1], cuts[1:], shapes, strict=True)}
