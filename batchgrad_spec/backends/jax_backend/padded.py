"""The bucketed programs: one padded problem per shape bucket, everything else traced data.

``jax.jit`` compiles once per pytree structure, shape and dtype of its arguments. Property tests
draw a fresh network (depth, widths, layers) and batch per example, so a jitted function per
problem would recompile every time (0.1-0.7 s each). Instead every problem is embedded in a
fixed-shape *padded* problem (``buckets``), and everything else that varies is traced data, so
the jitted programs here depend only on (dtype, method, tier, size buckets): 2 x 3 = 6
compilations per tier and token bucket for all problems of widths ≤ 16, batches ≤ 16, ≤ 4 Dense
layers, runs of ≤ 4 layers between Dense layers, and sequences of ≤ 4 tokens.

* blocks b = 0..B-1, each an optional Dense layer (``Net.live[b]``; block 0, which holds the
  layers applied to the input, has none) followed by a run of slots; runs are padded with
  ``identity`` (exactly x). Block j+1 holds the j-th Dense layer.
* slots: a traced kind selects a ``jax.lax.switch`` branch (only the chosen one runs, forward
  and backward): the ``jax.nn`` activations, and a norm. Branch 0 is ``where(m, a / (1 − p),
  0)``, which serves identity (m = 1, 1 − p = 1: exactly a) and Dropout (its mask and 1 − p are
  per-slot data). The norm branch forms LayerNorm, train-mode and eval-mode BatchNorm
  statistics and a traced per-slot index selects one (``jnp.where``; the unselected ones are
  finite and get cotangent exactly 0); γ, β are per-slot parameters. Blocks and slots are
  ``jax.lax.scan`` loops, so program size does not grow with depth.
* loss: a traced index picks the loss with ``jax.lax.switch``; Huber δ, class weights, ε, the
  one-hot/probability rows, variances, label-kept and token masks are traced data. One
  cross-entropy branch serves integer labels with class weights and ignored labels, the other
  smoothing and probability targets.
* reduction: a traced index; L = Σ_i c_i v_i / s (``_padded_batch``).
* tiers (a static flag ``full``): problems without norms whose loss is squared error or
  integer-label cross-entropy without smoothing (chapters 1-2, plus leaky_relu, elu, Dropout,
  class weights, ignored labels, every reduction, sequences) run the *core* programs, which
  lack the norm branch and the other losses; the rest runs the *full* programs. The full
  programs are about twice as large (≈190k vs 92k characters of StableHLO; 61k before chapters
  3-4) and take about twice as long to compile, so chapter 1-2 sessions do not pay for them.

The programs: ``PADDED_BATCH`` (L, ∇L), ``PADDED_VMAP`` (``jax.vmap(jax.value_and_grad(ℓ))``)
and ``PADDED_SINGLE`` (one example of the batch, by a traced index: the "loop" method), each
jitted for the CPU and for accelerators (``compilation.jit_per_platform``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from reference.activations import ACTIVATION_NAMES
from reference.losses import REDUCTION_NAMES

from .compilation import TRACES, jit_per_platform
from .losses import ELEMENTWISE, safe_mean, smoothed_cross_entropy
from .ops import ACTIVATIONS, dense, dropout, normalize

__all__ = ["CORE_LOSS_KINDS", "LOSS_KINDS", "NORM_STATS", "PADDED_BATCH", "PADDED_SINGLE",
           "PADDED_VMAP", "SLOT_KINDS", "Examples", "Net", "Params"]

SLOT_KINDS = (*ACTIVATION_NAMES, "norm")
"""The ``lax.switch`` branches of a slot: the activations (by ACTIVATION_NAMES index), then the
norms. Branch 0 serves identity and Dropout alike: where(m, a / (1 − p), 0), which is exactly a
for m = 1, p = 0 (x / 1 = x in IEEE arithmetic)."""
NORM_STATS = ("layer_norm", "batch_norm_train", "batch_norm_eval")
"""Which statistics a norm slot uses (``Net.stats``)."""
LOSS_KINDS = ("squared_error", "ce_integer_labels", "bce_with_logits", "huber", "gaussian_nll",
              "ce_probabilities")
"""Loss branches: squared error; cross-entropy of integer labels without label smoothing
(``optax.softmax_cross_entropy_with_integer_labels`` × w_y); the other elementwise losses; and
cross-entropy of probability rows (soft targets, or smoothed one-hot labels:
``smoothed_cross_entropy``). The first ``CORE_LOSS_KINDS`` are the core tier's."""
CORE_LOSS_KINDS = 2

_SEQUENCE_MEAN = REDUCTION_NAMES.index("sequence_mean")


class Net(NamedTuple):
    """Everything but θ and the examples: the network's structure and loss, as traced data."""

    live: jax.Array  # (B,) bool: block b holds a real Dense layer (block 0, the input run, never)
    kinds: jax.Array  # (B, S) int32 slot kinds (SLOT_KINDS), runs padded with identity
    stats: jax.Array  # (B, S) int32 statistics of a norm slot (NORM_STATS)
    feat: jax.Array  # (B, Wb) bool: the real features of block b's output (LayerNorm statistics)
    nfeat: jax.Array  # (B,) their number (compute dtype)
    rmean: jax.Array  # (B, S, Wb) running mean of an eval-mode BatchNorm slot (else 0)
    rvar: jax.Array  # (B, S, Wb) running variance (else 1)
    keep: jax.Array  # (B, S) 1 − p of a Dropout slot (else 1)
    loss: jax.Array  # () int32: LOSS_KINDS
    out_mask: jax.Array  # (Wb,) bool: the real outputs
    d_out: jax.Array  # () the real number of outputs D (compute dtype)
    class_w: jax.Array  # (Wb,) class weights (1 without; 0 on padded classes)
    hard: jax.Array  # () bool: integer labels (ω = w_y), else ω = 1
    soft: jax.Array  # () bool: probability targets in Examples.y, else one-hot labels
    one_minus_eps: jax.Array  # () 1 − ε of label smoothing
    eps_over_c: jax.Array  # () ε / C
    delta: jax.Array  # () Huber δ


class Examples(NamedTuple):
    """Examples, batched (leading axis Nb) or one example; Tb tokens each (1 unless sequences)."""

    x: jax.Array  # (…, Tb, Wb) inputs
    y: jax.Array  # (…, Tb, Wb) float targets: elementwise targets or probability rows
    var: jax.Array  # (…, Tb, Wb) gaussian_nll variances (1 elsewhere)
    labels: jax.Array  # (…, Tb) int32 labels, 0 where ignored or unused
    live: jax.Array  # (…, Tb) bool: the token counts in ℓ_i (real, in the mask, not ignored)
    rows: jax.Array  # (…, Tb) bool: a real token of a real example (BatchNorm statistics)
    drop: jax.Array  # (…, B, S, Tb, Wb) bool: Dropout keep-masks of each slot (1 elsewhere)


class Params(NamedTuple):
    """θ in the bucket: every Dense weight and bias, every norm slot's γ and β."""

    ws: jax.Array  # (B, Wb, Wb) Dense weights, block j+1 = Dense j
    bs: jax.Array  # (B, Wb) Dense biases
    gammas: jax.Array  # (B, S, Wb) γ of a norm slot
    betas: jax.Array  # (B, S, Wb) β of a norm slot


def _masked_mean(a: jax.Array, mask: jax.Array, axes: Any, count: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(mask, a, 0), axis=axes, keepdims=True) / count


def _padded_forward(params: Params, net: Net, ex: Examples, full: bool) -> jax.Array:
    """Blocks b = 0..B-1: a ← live_b ? a W_bᵀ + b_b : a, then the slot run kinds[b]. ``full``
    (static): the full tier, whose slots may hold norms; the core tier has no norm branch."""
    rows = ex.rows[..., None]
    row_axes = tuple(range(ex.x.ndim - 1))
    n_rows = jnp.maximum(jnp.sum(ex.rows), 1).astype(ex.x.dtype)  # ≥ 1 on padded examples
    drops = jnp.moveaxis(ex.drop, (-4, -3), (0, 1))  # (B, S, …, Tb, Wb)

    def block(a: jax.Array, blk: tuple) -> tuple[jax.Array, None]:
        w, b, live, kinds, keep, drop, norms = blk
        a = jnp.where(live, dense(a, w, b), a)

        def slot(a: jax.Array, s: tuple) -> tuple[jax.Array, None]:
            kind, kp, m, norm_slot = s

            def scale(a: jax.Array) -> jax.Array:  # Dropout; identity is m = 1, 1 − p = 1
                return dropout(a, m, kp)

            def norm(a: jax.Array) -> jax.Array:
                # LayerNorm: over the real features; BatchNorm (train): over the real examples
                # (tokens); BatchNorm (eval): the running statistics. All three are formed
                # (finite) and ``stat`` selects one: unselected ones get cotangent exactly 0.
                feat, nfeat, _ = norms
                stat, g, be, rm, rv = norm_slot
                ln_mean = _masked_mean(a, feat, -1, nfeat)
                ln_var = _masked_mean(jnp.square(a - ln_mean), feat, -1, nfeat)
                bn_mean = _masked_mean(a, rows, row_axes, n_rows)
                bn_var = _masked_mean(jnp.square(a - bn_mean), rows, row_axes, n_rows)
                mean = jnp.where(stat == 0, ln_mean, jnp.where(stat == 1, bn_mean, rm))
                var = jnp.where(stat == 0, ln_var, jnp.where(stat == 1, bn_var, rv))
                return normalize(a, mean, var, g, be)

            branches = [scale, *(ACTIVATIONS[name] for name in ACTIVATION_NAMES[1:])]
            return jax.lax.switch(kind, [*branches, norm] if full else branches, a), None

        run = (kinds, keep, drop, None if norms is None else norms[2])
        return jax.lax.scan(slot, a, run)[0], None

    # the core tier scans no norm data at all (smaller program)
    norms = (net.feat, net.nfeat, (net.stats, params.gammas, params.betas, net.rmean, net.rvar))
    blocks = (params.ws, params.bs, net.live, net.kinds, net.keep, drops, norms if full else None)
    return jax.lax.scan(block, ex.x, blocks)[0]


def _padded_losses(params: Params, net: Net, ex: Examples, full: bool,
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(ℓ, ω, T) of each example in ``ex`` (or of the one example): ℓ_i = Σ_t live_it ℓ_it, the
    count ω_i = Σ_t live_it (w_{y_it} for integer labels, else 1), T_i = Σ_t live_it."""
    f = _padded_forward(params, net, ex, full)

    def elementwise(fn: Callable[..., jax.Array]) -> Callable[[jax.Array], jax.Array]:
        def branch(f: jax.Array) -> jax.Array:  # mean over the real outputs
            e = fn(f, ex.y, ex.var, net.delta)
            return jnp.sum(jnp.where(net.out_mask, e, 0), axis=-1) / net.d_out
        return branch

    def logits(f: jax.Array) -> jax.Array:  # padded classes: exp(· − max) underflows to 0
        return jnp.where(net.out_mask, f, jnp.finfo(f.dtype).min / 2)

    def ce_integer_labels(f: jax.Array) -> jax.Array:
        nll = optax.softmax_cross_entropy_with_integer_labels(logits(f), ex.labels)
        return net.class_w[ex.labels] * nll

    def ce_probabilities(f: jax.Array) -> jax.Array:
        q = jnp.where(net.soft, ex.y, jax.nn.one_hot(ex.labels, f.shape[-1], dtype=f.dtype))
        return smoothed_cross_entropy(logits(f), q, net.class_w, net.one_minus_eps,
                                      net.eps_over_c)

    branches = [elementwise(ELEMENTWISE["squared_error"]), ce_integer_labels,
                *(elementwise(ELEMENTWISE[name]) for name in LOSS_KINDS[2:5]), ce_probabilities]
    per_token = jax.lax.switch(net.loss, branches if full else branches[:CORE_LOSS_KINDS], f)
    count = jnp.where(net.hard, net.class_w[ex.labels], 1).astype(f.dtype)
    losses = jnp.sum(jnp.where(ex.live, per_token, 0), axis=-1)
    counts = jnp.sum(jnp.where(ex.live, count, 0), axis=-1)
    return losses, counts, jnp.sum(ex.live, axis=-1).astype(f.dtype)


def _padded_loss(params: Params, net: Net, ex: Examples, full: bool) -> jax.Array:
    return _padded_losses(params, net, ex, full)[0]


def _padded_batch(params, net, ex, coef, reduction, full):
    """(L, ∇L): L = Σ_i c_i v_i / s, v_i = ℓ_i (ℓ_i/T_i for sequence_mean), c_i the weights or 1
    (0 on padded examples), s = Σ ω_i (mean, guarded), N (sequence_mean), Σ c_i
    (weighted_mean) or 1."""
    TRACES["padded_batch" + "/full" * full] += 1

    def reduced_loss(params: Params) -> jax.Array:
        losses, counts, tokens = _padded_losses(params, net, ex, full)
        per_sequence = losses / jnp.where(tokens > 0, tokens, 1)
        terms = jnp.where(reduction == _SEQUENCE_MEAN, per_sequence, losses)
        one = jnp.ones((), losses.dtype)
        # REDUCTION_NAMES order: mean, sum, weighted, weighted_mean, sequence_mean
        denom = jnp.stack([jnp.sum(counts), one, one, jnp.sum(coef), jnp.sum(coef)])[reduction]
        return safe_mean(jnp.sum(coef * terms), denom)

    return jax.value_and_grad(reduced_loss)(params)


def _padded_vmap(params, net, ex, full):
    """(ℓ, g) for every example: ``jax.vmap(jax.value_and_grad(ℓ))``."""
    TRACES["padded_vmap" + "/full" * full] += 1
    fn = jax.value_and_grad(functools.partial(_padded_loss, full=full))
    return jax.vmap(fn, in_axes=(None, None, 0))(params, net, ex)


def _padded_single(params, net, ex, i, full):
    """(ℓ, g) for example i of ``ex``: ``jax.value_and_grad(ℓ)`` of that one example (the batch
    stays on the device; only the index changes from call to call)."""
    TRACES["padded_single" + "/full" * full] += 1
    one = Examples(*(a[i] for a in ex))
    return jax.value_and_grad(functools.partial(_padded_loss, full=full))(params, net, one)


# The jitted functions keep their names (_padded_batch, …): a program's name is part of its key in
# the persistent compilation cache. ``_padded_batch`` un-jitted is also what the data-parallel
# engine (batchgrad_spec/distributed/jax_shard.py) runs inside its shard_map.
PADDED_BATCH, PADDED_VMAP, PADDED_SINGLE = map(jit_per_platform,
                                               (_padded_batch, _padded_vmap, _padded_single))
