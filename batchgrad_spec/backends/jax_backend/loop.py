"""The optional training loop (spec chapter 10, §8.10) as optax users write it.

One optax transformation does the whole loop's bookkeeping:

    optax.MultiSteps(
        optax.apply_if_finite(                      # a non-finite window: zero update, the
            optax.chain(optax.clip_by_global_norm(c),   # inner state (Adam's count) kept
                        <the optimiser>),               # (``update.optax_optimizer``)
            max_consecutive_errors=W),
        every_k_schedule=lambda t: size of window t,   # the last window may be shorter
        accumulator_dtype=<the dtype>)

fed one gradient per micro-batch: K_w · s_k ∇L_k, so that MultiSteps' running mean over the
window (``use_grad_mean=True``) is G_w = Σ_k s_k ∇L_k, with s_k = 1/Ω_window on the micro-batch's
sum-type loss (``global_normaliser``) or Ω_k/Ω on its mean (``count_weighted``, the other
reductions). Ranks (``loop.ranks``) are simulated in one process: each rank's shard of a
micro-batch is differentiated separately and the gradients added (the all-reduce's sum) before
they are fed. Loss scaling multiplies the gradient by S and the fed gradient by 1/S (both exact,
powers of two; ``jax.grad`` of S·L is S·∇L exactly); the NaN of an overflowing micro-batch reaches
the accumulator, and ``apply_if_finite`` skips the window. DP-SGD: per-example gradients by the
backend's ``per_example(…, "vmap")`` (``jax.vmap(jax.grad(…))``),
``optax.per_example_global_norm_clip`` (Σ_i min(1, C/‖g_i‖) g_i), divided by B.

Finding (spec §10.3, docs/findings/optax-multisteps-nonfinite-accumulator.md): MultiSteps resets
its accumulator by multiplying it by (1 − emit), and NaN·0 is NaN, so a non-finite window's NaN
stays in the accumulator and every later window is non-finite too: ``apply_if_finite`` skips them
all (and after ``max_consecutive_errors`` applies a NaN update). ``train_loop`` works around it as
a user must — after a window that ``apply_if_finite`` rejected, the accumulator is set to zeros
by hand (``workaround=True``); ``adapter.multisteps_as_is`` runs without the workaround, for
the strict xfail that records the finding.

Every ∇ comes from the backend's jitted, bucketed programs. The optax transformation runs in one
jitted program per window (``WINDOW``; eagerly, ``MultiSteps``' ``lax.cond`` would compile on
every call): the parameters travel as one flattened vector padded with zeros to a bucket (every
step here is elementwise or a global norm, which zeros do not change; padded entries stay 0),
the fed gradients as a bucketed number of rows of which the first k are fed, and the
hyperparameters as traced scalars, so programs are compiled once per dtype, bucket and
optimizer name, not per loop: the transformation has one structure for every loop of an
optimizer — the clip always there (c = inf when the loop asks for none: its factor is exactly
1), ``apply_if_finite`` always there (a no-op on finite gradients), SGD's ``trace`` with
momentum 0 (b = g exactly), the decay term with λ = 0 (g + 0·θ = g). The step counter reported
is the inner optimiser's ``count`` (Adam), or, for SGD (which keeps none), the windows
MultiSteps applied less those ``apply_if_finite`` rejected.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from reference.accumulation import count_weighted, global_normaliser, micro_batches
from reference.batch import Batch
from reference.contract import Config
from reference.loop import window_problem
from reference.parallel import even_sizes
from reference.problem import Problem
from reference.types import Grads

from .buckets import bucket
from .compilation import TRACES
from .devices import check

__all__ = ["MIN_PARAMS", "MIN_ROWS", "MIN_WINDOWS", "WINDOW", "train_loop"]

MIN_PARAMS = 64
"""Smallest bucket of the flattened parameter vector."""
MIN_ROWS = 4
"""Smallest bucket of the number of gradients fed in one window."""
MIN_WINDOWS = 8
"""Smallest bucket of the table of window sizes (``every_k_schedule``)."""
STRUCTURE = ("name", "workaround")
"""The static arguments of the window program: the optimizer (the optax state's structure), and
whether to zero the accumulator after a rejected window."""


def _transformation(h: dict[str, jax.Array], dtype: Any, *, name: str
                    ) -> optax.GradientTransformation:
    """The module docstring's transformation from traced hyperparameters ``h``: "sgd" →
    ``optax.sgd`` (momentum as ``trace``), "adam" → ``optax.adam``, "adamw" → ``optax.adamw``
    (all with eps_root 0), L2 of sgd and adam as ``optax.add_decayed_weights`` chained before
    (as ``update.optax_optimizer``)."""
    if name == "sgd":
        inner = optax.sgd(h["lr"], momentum=h["momentum"], nesterov=False)
    elif name == "adam":
        inner = optax.adam(h["lr"], b1=h["b1"], b2=h["b2"], eps=h["eps"], eps_root=0.0)
    else:
        inner = optax.adamw(h["lr"], b1=h["b1"], b2=h["b2"], eps=h["eps"], eps_root=0.0,
                            weight_decay=h["decay"])
    if name != "adamw":
        inner = optax.chain(optax.add_decayed_weights(h["decay"]), inner)
    inner = optax.chain(optax.clip_by_global_norm(h["clip"]), inner)
    inner = optax.apply_if_finite(inner, max_consecutive_errors=h["windows"])
    sizes, last = h["sizes"], h["windows"] - 1
    return optax.MultiSteps(inner, every_k_schedule=lambda t: sizes[jnp.minimum(t, last)],
                            accumulator_dtype=dtype)


def _rejected(state: Any) -> jax.Array:
    found = optax.tree_utils.tree_get(state, "total_notfinite")
    return jnp.zeros([], jnp.int32) if found is None else found


@functools.partial(jax.jit, static_argnames=STRUCTURE)
def _init(theta: jax.Array, h: dict[str, jax.Array], **structure: Any) -> Any:
    return _transformation(h, theta.dtype, name=structure["name"]).init(theta)


@functools.partial(jax.jit, static_argnames=STRUCTURE)
def _window_program(theta: jax.Array, state: Any, rows: jax.Array, k: jax.Array,
                    h: dict[str, jax.Array], **structure: Any) -> tuple[jax.Array, Any]:
    """Feed rows[:k] to the transformation, applying its updates; after a window that
    ``apply_if_finite`` rejected, zero MultiSteps' accumulator when ``workaround``."""
    TRACES["train_loop_window"] += 1
    tx = _transformation(h, theta.dtype, name=structure["name"])
    before = _rejected(state)

    def feed(i: jax.Array, carry: tuple[jax.Array, Any]) -> tuple[jax.Array, Any]:
        theta, state = carry
        updates, state = tx.update(rows[i], state, theta)
        return optax.apply_updates(theta, updates), state

    theta, state = jax.lax.fori_loop(0, k, feed, (theta, state))
    if structure["workaround"]:  # NaN·(1 − emit) is NaN: MultiSteps keeps it (module docstring)
        reset = _rejected(state) > before
        state = state._replace(acc_grads=jnp.where(reset, jnp.zeros_like(state.acc_grads),
                                                   state.acc_grads))
    return theta, state


WINDOW = _window_program
"""The jitted window program (see the module docstring)."""


def _hyper(loop: Any, dtype: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(traced hyperparameters, static structure) of ``loop``."""
    opt = loop.optimizer
    windows = len(loop.windows)
    sizes = np.zeros(bucket(windows, MIN_WINDOWS), np.int32)
    sizes[:windows] = [len(w) for w in loop.windows]
    h = {"lr": opt.lr, "momentum": opt.momentum, "b1": opt.betas[0], "b2": opt.betas[1],
         "eps": opt.eps, "decay": opt.weight_decay,
         "clip": math.inf if loop.clip_norm is None else loop.clip_norm}
    hyper = {k: np.asarray(v, dtype) for k, v in h.items()}
    hyper.update(sizes=sizes, windows=np.int32(windows))
    return hyper, {"name": opt.name}


def _field(state: Any, name: str) -> int | None:
    """The one field ``name`` of an optax state tree, as an int; None if it has none."""
    try:
        value = optax.tree_utils.tree_get(state, name)
    except (KeyError, ValueError):
        return None
    return None if value is None else int(value)


def _counter(state: Any) -> int:
    count = _field(state, "count")
    if count is not None:
        return count
    return int(state.gradient_step) - (_field(state, "total_notfinite") or 0)


def _fed(loss_and_grad: Callable[[Problem, Config], tuple[float, Grads]],
         per_example: Callable[[Problem, Config, str], tuple[np.ndarray, Grads]],
         window: Problem, config: Config, loop: Any, idx: Sequence[int], dtype: Any
         ) -> tuple[list[Grads], float]:
    """(what is fed to MultiSteps for each micro-batch of the window, the reported loss)."""
    k_w, scale = dtype.type(len(idx)), dtype.type(loop.loss_scale or 1.0)
    fed: list[Grads] = []
    if loop.per_example_clip is not None:
        start, b = 0, dtype.type(loop.expected_batch_size)
        for i in idx:
            m = loop.micro_batches[i]
            part = window.with_batch(window.batch.take(list(range(start, start + m))))
            start += m
            _, per = per_example(part, config, "vmap")
            clipped, _ = optax.per_example_global_norm_clip(
                [jnp.asarray(per[n], dtype) for n in sorted(per)], loop.per_example_clip)
            fed.append({n: np.asarray(g) * k_w / b for n, g in zip(sorted(per), clipped,
                                                                    strict=True)})
        return fed, loss_and_grad(window, config)[0]
    sizes = [s for i in idx for s in even_sizes(loop.micro_batches[i], loop.ranks)]
    plan = (global_normaliser(window, sizes) if window.reduction.name in ("mean", "weighted_mean")
            else count_weighted(window, sizes))
    parts = list(zip(micro_batches(window, plan), plan.scales, strict=True))
    loss = 0.0
    for i in range(len(idx)):  # the R shards of micro-batch i, all-reduced (summed)
        total: dict[str, np.ndarray] = {}
        for part, s in parts[i * loop.ranks:(i + 1) * loop.ranks]:
            lk, gk = loss_and_grad(part, config)
            loss += float(lk) * s
            for n, g in gk.items():
                scaled = np.asarray(g, dtype) * dtype.type(s) * scale  # ∇(S·s_k L_k)
                total[n] = total[n] + scaled if n in total else scaled
        fed.append({n: g * k_w / scale for n, g in total.items()})
    return fed, loss


def train_loop(loss_and_grad: Callable[[Problem, Config], tuple[float, Grads]],
               per_example: Callable[[Problem, Config, str], tuple[np.ndarray, Grads]],
               problem: Problem, config: Config, loop: Any, batches: Sequence[Batch],
               workaround: bool = True) -> dict:
    """One epoch of ``loop`` from ``problem.params`` over ``batches`` (module docstring);
    ``workaround``: zero MultiSteps' accumulator after a rejected window."""
    dtype, device = check(config)
    names = sorted(problem.params)
    shapes = [problem.params[n].shape for n in names]
    cuts = np.cumsum([0] + [int(np.prod(sh)) for sh in shapes])
    width = bucket(int(cuts[-1]), MIN_PARAMS)

    def flat(g: Grads) -> np.ndarray:
        out = np.zeros(width, dtype)
        out[: cuts[-1]] = np.concatenate([np.asarray(g[n], dtype).reshape(-1) for n in names])
        return out

    def unflat(v: np.ndarray) -> dict[str, np.ndarray]:
        return {n: np.asarray(v[a:b]).reshape(sh)
                for n, a, b, sh in zip(names, cuts[:-1], cuts[1:], shapes, strict=True)}

    hyper, structure = _hyper(loop, dtype)
    structure["workaround"] = workaround
    with jax.default_device(device):
        theta = jax.device_put(flat(problem.params), device)
        state = _init(theta, hyper, **structure)
        losses: list[float] = []
        skipped: list[int] = []
        for w, idx in enumerate(loop.windows):
            rejected = _field(state, "total_notfinite") or 0
            now = {k: np.asarray(v, np.float64) for k, v in unflat(jax.device_get(theta)).items()}
            window = window_problem(problem.with_params(now), batches, idx)
            fed, loss = _fed(loss_and_grad, per_example, window, config, loop, idx, dtype)
            rows = np.zeros((bucket(len(fed), MIN_ROWS), width), dtype)
            for i, g in enumerate(fed):
                rows[i] = flat(g)
            theta, state = WINDOW(theta, state, rows, np.int32(len(fed)), hyper, **structure)
            if (_field(state, "total_notfinite") or 0) > rejected:
                skipped.append(w)
                loss = math.nan
            losses.append(loss)
        params = unflat(jax.device_get(theta))
    return {"params": params, "optimizer_steps": _counter(state), "skipped": tuple(skipped),
            "reported_losses": tuple(losses)}
