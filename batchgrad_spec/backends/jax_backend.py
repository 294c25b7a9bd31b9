"""The JAX adapter: ``--backend batchgrad_spec.backends.jax_backend:backend``.

Gradients come from JAX's own autodiff of the loss as a JAX user writes it: ``jax.nn``
activations, ``optax`` losses, ``jax.value_and_grad`` of the reduced loss, ``jax.vmap(jax.grad(ℓ))``
for per-example gradients ("vmap") and a Python loop over a jitted single-example gradient
("loop"). float64 needs ``jax_enable_x64``, switched on at import; every array is created with an
explicit dtype, so float32 runs stay float32. Matmuls use ``Precision.HIGHEST`` (IEEE arithmetic
in the requested dtype; config.precision must be "strict").

As JAX users write it (spec chapters 3-4)
-----------------------------------------
* Activations: ``jax.nn`` (``ACTIVATIONS``). ``jax.nn.leaky_relu(x, 0.01)`` is
  ``jnp.where(x >= 0, x, 0.01 x)``: its slope at exactly 0 is 1 (also at −0.0), where the spec
  and PyTorch take 0.01 (§4.6). It is used as is: the kink tests are strict xfails on jax (a
  finding). ``jax.nn.elu`` (α = 1) has slope 1 at 0 from both sides, as the spec.
* LayerNorm / BatchNorm without flax: μ = mean(a), v = mean((a − μ)²) (biased; not flax's
  default "fast variance" E[a²] − μ²), then ``(a - μ) * jax.lax.rsqrt(v + 1e-5) * γ + β``
  (``normalize``). LayerNorm over the features, train-mode BatchNorm over the batch axis of the
  batched loss, eval-mode BatchNorm with the running statistics as data.
* Dropout: ``jnp.where(m, a / (1 - p), 0)`` (``flax.linen.Dropout``'s form) with the keep-mask m
  taken from ``batch.dropout`` as data.
* Losses: ``optax.squared_error``, ``optax.sigmoid_binary_cross_entropy``,
  ``optax.huber_loss(delta=δ)``, Gaussian NLL written out as ½(log v + (f − y)²/v) (optax has
  none), each averaged over the D outputs. Cross-entropy of integer labels without smoothing:
  ``w[y] * optax.softmax_cross_entropy_with_integer_labels`` (no multiply without class
  weights); with smoothing or probability targets: ``optax.softmax_cross_entropy(logits, w * q̃)``
  with q̃ = ``optax.smooth_labels`` = (1 − ε) q + ε/C (``smoothed_cross_entropy``).
* Ignored labels (optax has no ``ignore_index``) and masked tokens: ``jnp.where(kept, ℓ, 0)``,
  counts ω = ``jnp.where(kept, w[y], 0)``; ℓ_i of a sequence is the sum over its tokens.
  ``mean`` is ``safe_mean(Σ ℓ_i, Σ ω_i)``: the guarded ``jnp.where(Σω != 0, Σℓ / jnp.where(Σω
  != 0, Σω, 1), 0)``, which gives L = 0 and ∇L = 0 when every label is ignored (§3.4).
  Measured (jax 0.10.2, optax 0.2.8, float32 and float64 alike) with every label ignored: the
  naive ``jnp.sum(mask * ℓ) / jnp.sum(mask)`` returns loss NaN and a gradient that is NaN in
  every entry; ``jnp.where(count > 0, jnp.sum(mask * ℓ) / count, 0)`` returns loss 0 but still
  an all-NaN gradient (the untaken branch's cotangent is 0 · 1/0; JAX FAQ "gradients contain
  NaN where using where"); ``jnp.maximum(count, 1)`` returns 0 and 0 but divides by the wrong
  number whenever class weights make 0 < Σω < 1. ``sequence_mean`` is
  ``jnp.mean(ℓ_i / T_i)``.
* Train-mode BatchNorm, ``per_example``: raises ``reference.types.Undefined`` (§4.3). What a
  JAX user gets instead, measured (N = 4, Dense → BatchNorm → Dense, squared error): (a) the
  batched loss's code vmapped, ``jax.vmap(jax.grad(ℓ_one))`` with ``mean(axis=0)`` inside, takes
  the statistics over the one example's *features* (a LayerNorm without saying so), silently;
  (b) ``ℓ_one = ℓ(x_i[None])``, a batch of one: v = 0, x̂ = 0 exactly, losses that are not the
  ℓ_i, and gradients exactly 0 for γ and everything below the BatchNorm, silently; (c)
  ``jax.lax.pmean`` over a vmap ``axis_name`` (flax's ``BatchNorm(axis_name=...)``): the losses
  are the coupled ℓ_i and the lanes sum to ∇Σℓ_i exactly, but lane i is not ∂ℓ_i/∂θ (it
  differed from the Jacobian row by 0.68 in a weight below the BatchNorm; γ's agreed). None
  raises. ``loss_and_grad`` on a batch of one computes v = 0, x̂ = 0 (L from β alone, zero
  gradient below the BatchNorm), the reference's value; PyTorch raises ValueError there.

Why buckets
-----------
``jax.jit`` compiles once per pytree structure, shape and dtype of its arguments. Property tests
draw a fresh network (depth, widths, layers) and batch per example, so a jitted function per
problem would recompile every time (0.1-0.7 s each). Instead every problem is embedded in a
fixed-shape *padded* problem, and everything else that varies is traced data, so the jitted
programs depend only on (dtype, method, tier, size buckets): 2 x 3 = 6 compilations per tier
and token bucket for all problems of widths ≤ 16, batches ≤ 16, ≤ 4 Dense layers, runs of ≤ 4
layers between Dense layers, and sequences of ≤ 4 tokens.

* normal form: blocks b = 0..B-1, each an optional Dense layer (``live[b]``; block 0, which
  holds the layers applied to the input, has none) followed by a run of slots; runs are padded
  with ``identity`` (exactly x). Block j+1 holds the j-th Dense layer.
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
* tiers (a static flag, ``Padded.full``): problems without norms whose loss is squared error or
  integer-label cross-entropy without smoothing (chapters 1-2, plus leaky_relu, elu, Dropout,
  class weights, ignored labels, every reduction, sequences) run the *core* programs, which
  lack the norm branch and the other losses; the rest runs the *full* programs. The full
  programs are about twice as large (≈190k vs 92k characters of StableHLO; 61k before chapters
  3-4) and take about twice as long to compile, so chapter 1-2 sessions do not pay for them.
* widths: every width is padded to one bucket ``Wb`` (next power of two, at least
  ``MIN_WIDTH``); weights become (Wb, Wb) with zero rows/columns, biases get zeros (a bias-free
  Dense gets a zero bias whose gradient is dropped); γ, β get zeros.
* depth: ``B - 1`` Dense blocks (a power of two ≥ ``MIN_DEPTH``); blocks past the real layers
  are skipped by ``jnp.where(live, z, a)``; ``S`` slots per block (≥ ``MIN_SLOTS``).
* batch: ``Nb`` examples of ``Tb`` tokens each (Tb = 1 without sequences, else a bucket ≥
  ``MIN_TOKENS``); padded examples and tokens have zero inputs/targets, label 0, variance 1,
  coefficient 0 and are not "kept". "loop" calls the single-example program, whose shapes
  depend on the buckets only.

Why the answer is unchanged (exactly, up to the order of summation)
--------------------------------------------------------------------
Forward: a real unit's pre-activation is Σ_j W_ij a_j over real j plus terms 0·a_j = ±0 over
padded j (a_j is finite), and adding ±0 is exact. Padded units may hold nonzero values (σ(0) = ½
for sigmoid, β = 0 after a norm), but only ever meet zero weights. Skipped layers pass a through
``jnp.where``, exactly; identity slots divide by 1, exactly. Norm statistics are masked sums
over the real features (LayerNorm) or the real examples and tokens (BatchNorm), divided by their
real number: padded units and padded examples never enter them (``jnp.where`` gives them zero
cotangent as well). Loss: elementwise losses mask padded outputs to 0 and divide by the real D
(a traced scalar); cross-entropy replaces padded logits by ``finfo.min/2`` so exp(· − max)
underflows to exactly 0 and the log-sum-exp is that of the real logits, and padded classes have
weight 0 (so 0 · q̃ on them). Reduction: L = Σ_i c_i v_i / s with c_i = 0 on padded examples and
s = Σ ω_i, N, Σ c_i or 1 (traced), so L is the real reduction. Backward: the cotangent of every
padded example is c_i·(…) = 0 and that of a padded output or token is 0 (``where`` sends zero to
the branch not taken); into a real unit the backward matmul adds z̄_o·0 = 0 from padded units o,
so real gradients see exactly the real terms; ``where`` in a skipped layer gives zero to its
parameters. Gradients of real parameters are sliced out; the rest is discarded. No inf or NaN is
produced anywhere (denominators are ≥ 1 or guarded, variances 1 where padded), so no 0·inf
arises. Only the grouping of a sum's terms can change (covered by the spec's γ_n bound "in any
order or blocking").

``BATCHGRAD_JAX_BUCKETS=0`` turns all of this off: the problem is then traced as written (static
network and loss, exact shapes, ``jnp.mean`` etc.), recompiling per problem, which certifies the
unpadded semantics. ``BATCHGRAD_JAX_CACHE`` names a persistent compilation cache directory ("0",
"off" or "" disables it; default: ``batchgrad-jax-cache`` in the system temp dir); with a warm
cache a new process loads the programs instead of compiling them. ``trace_counts()`` reports how
many programs were traced (compiled or loaded) so far, the full tier's with a ``/full`` suffix.
"""

from __future__ import annotations

import collections
import functools
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from reference.activations import ACTIVATION_NAMES, Activation
from reference.batch import Batch
from reference.contract import Config
from reference.layers import Dense, Dropout, Layer, Network
from reference.losses import REDUCTION_NAMES
from reference.norms import NORM_EPS, BatchNorm, LayerNorm
from reference.problem import Problem
from reference.types import Grads, Undefined

jax.config.update("jax_enable_x64", True)

MIN_WIDTH = 16
"""Smallest width bucket; widths in 1..16 all share one bucket."""
MIN_BATCH = 16
"""Smallest batch bucket."""
MIN_DEPTH = 4
"""Smallest depth bucket (number of Dense layers)."""
MIN_SLOTS = 4
"""Smallest number of slots (activations, norms, dropouts) per run: an activation plus up to
three layers of chapter 4 share one bucket (4 slots cost ~0.07 ms a call more than 2)."""
MIN_TOKENS = 4
"""Smallest token bucket of sequence batches (batchgrad_spec/strategies.py draws T ≤ 4); batches of
single examples have one token per example (Tb = 1)."""

CPU_COMPILER_OPTIONS: dict[str, Any] = (
    {"xla_cpu_use_fusion_emitters": False} if os.environ.get("BATCHGRAD_JAX_FAST_COMPILE") else {}
)
"""XLA options for the bucketed CPU programs: stock by default, so what is tested is what JAX
users run. ``BATCHGRAD_JAX_FAST_COMPILE=1`` selects the legacy loop emitters, which compile these
small programs about 30% faster and gave bit-identical results on 150 problems checked (with 6-24
programs per session the saving is a few seconds)."""

CACHE_MAX_BYTES = 256 * 2**20
"""Size limit of the persistent compilation cache (the bucketed programs take < 1 MB each; an
unpadded run, BATCHGRAD_JAX_BUCKETS=0, adds ~60 kB per problem)."""

HIGHEST = jax.lax.Precision.HIGHEST

TRACES: collections.Counter[str] = collections.Counter()
"""How often each jitted function was traced (= compiled, or loaded from the persistent cache)."""


def _configure_persistent_cache() -> None:
    path = os.environ.get("BATCHGRAD_JAX_CACHE")
    if path is None:
        if jax.config.jax_compilation_cache_dir:  # the user configured one already
            return
        path = os.path.join(tempfile.gettempdir(), "batchgrad-jax-cache")
    if path.strip().lower() in ("", "0", "off", "none", "false"):
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)  # LRU eviction


_configure_persistent_cache()


def _buckets_enabled() -> bool:
    return os.environ.get("BATCHGRAD_JAX_BUCKETS", "1").strip().lower() not in ("0", "off", "false")


# -- semantics: layers and losses as JAX users write them (shared by both formulations) ----------
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": lambda z: z,
    "relu": jax.nn.relu,  # relu'(0) = 0
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # exact erf form
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    # jnp.where(x >= 0, x, 0.01 x): slope 1 at exactly 0, where the spec (§4.6) and PyTorch say
    # 0.01. Kept as JAX users get it: the kink tests xfail it on jax (a finding, not hidden).
    "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=0.01),
    "elu": jax.nn.elu,  # α = 1: jnp.where(x > 0, x, expm1(x)); slope 1 at 0 from both sides
}
_IDENTITY = ACTIVATION_NAMES.index("identity")


def _dense(a: jax.Array, w: jax.Array, b: jax.Array | None) -> jax.Array:
    """z = a Wᵀ + b (torch.nn.Linear layout), IEEE arithmetic in a's dtype."""
    z = jnp.matmul(a, w.T, precision=HIGHEST)
    return z if b is None else z + b


def normalize(a: jax.Array, mean: jax.Array, var: jax.Array, gamma: jax.Array,
              beta: jax.Array) -> jax.Array:
    """(a − μ) · rsqrt(v + ε) · γ + β, left to right, as written by hand without flax (spec §4.1,
    §4.4); ε = 1e-5 is a Python float, rounded to the dtype like any weakly typed constant.
    ``jax.lax.rsqrt`` on XLA:CPU is 1/sqrt (bit-identical results; ≤ 1.24 u in float32)."""
    return (a - mean) * jax.lax.rsqrt(var + NORM_EPS) * gamma + beta


def dropout(a: jax.Array, keep: jax.Array, keep_prob: jax.Array | float) -> jax.Array:
    """flax.linen.Dropout with the keep-mask given as data: select(m, a / (1 − p), 0)."""
    return jnp.where(keep, a / keep_prob, 0)


def gaussian_nll(f: jax.Array, y: jax.Array, var: jax.Array) -> jax.Array:
    """½(log v + (f − y)²/v) elementwise; optax has no Gaussian NLL, so it is written in jnp."""
    return 0.5 * (jnp.log(var) + jnp.square(f - y) / var)


ELEMENTWISE: dict[str, Callable[..., jax.Array]] = {
    "squared_error": lambda f, y, var, delta: optax.squared_error(f, y),
    "bce_with_logits": lambda f, y, var, delta: optax.sigmoid_binary_cross_entropy(f, y),
    "huber": lambda f, y, var, delta: optax.huber_loss(f, y, delta=delta),
    "gaussian_nll": lambda f, y, var, delta: gaussian_nll(f, y, var),
}
"""Elementwise losses (per output d): ℓ is their mean over the D outputs (spec §1.1)."""


def smoothed_cross_entropy(logits: jax.Array, q: jax.Array, class_weights: jax.Array | None,
                           one_minus_eps: Any, eps_over_c: Any) -> jax.Array:
    """−Σ_k w_k q̃_k log softmax(z)_k with q̃ = ``optax.smooth_labels``'s (1 − ε) q + ε/C, the
    class weights applied as users do: ``optax.softmax_cross_entropy(logits, w * q̃)``."""
    q = one_minus_eps * q + eps_over_c
    return optax.softmax_cross_entropy(logits, q if class_weights is None else class_weights * q)


def safe_mean(total: jax.Array, count: jax.Array) -> jax.Array:
    """total / count, and 0 (with gradient 0) when count = 0 (spec §3.4: every label ignored).

    The denominator is guarded too: ``jnp.where(count > 0, total / count, 0)`` alone has value 0
    but gradient NaN (the where's untaken branch still gets cotangent 0 · 1/0 = NaN; JAX FAQ
    "gradients contain NaN where using where"), and the plain ``total / count`` is NaN with a NaN
    gradient. ``jnp.maximum(count, 1)`` would be wrong for class weights summing to less than 1."""
    ok = count != 0
    return jnp.where(ok, total / jnp.where(ok, count, 1), 0)


# -- the bucketed (padded) formulation -----------------------------------------------------------
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
        a = jnp.where(live, _dense(a, w, b), a)

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


def _jit(fn: Callable) -> dict[str, Callable]:
    """``fn`` jitted for the CPU (with CPU_COMPILER_OPTIONS) and for accelerators (stock), with
    the tier ``full`` static."""
    return {"cpu": jax.jit(fn, static_argnames="full", compiler_options=CPU_COMPILER_OPTIONS),
            "other": jax.jit(fn, static_argnames="full")}


def _on(table: dict[str, Callable], device: jax.Device) -> Callable:
    return table["cpu" if device.platform == "cpu" else "other"]


PADDED_BATCH, PADDED_VMAP, PADDED_SINGLE = map(_jit, (_padded_batch, _padded_vmap, _padded_single))


def _bucket(n: int, minimum: int) -> int:
    return max(minimum, 1 << (n - 1).bit_length())


@dataclass(frozen=True)
class Layout:
    """The normal form of a network: Dense layers with the run of other layers after each."""

    dense: tuple[tuple[int, Dense], ...]  # (index in network.layers, layer)
    runs: tuple[tuple[tuple[int, int], ...], ...]  # (slot kind, layer index): runs[0] on the
    # input, runs[j+1] after Dense j
    widths: tuple[int, ...]  # input width, then each Dense's out_features


def _slot_kind(layer: Layer) -> int:
    if isinstance(layer, Activation):
        return ACTIVATION_NAMES.index(layer.name)
    if isinstance(layer, Dropout):
        return _IDENTITY
    return SLOT_KINDS.index("norm")


@functools.lru_cache(maxsize=4096)
def _layout(network: Network) -> Layout:
    runs: list[list[tuple[int, int]]] = [[]]
    for k, layer in enumerate(network.layers):
        if isinstance(layer, Dense):
            runs.append([])
        else:
            runs[-1].append((_slot_kind(layer), k))
    dense = tuple(network.dense_layers())
    widths = (dense[0][1].in_features,) + tuple(d.out_features for _, d in dense)
    return Layout(dense, tuple(map(tuple, runs)), widths)


@dataclass(frozen=True, eq=False)
class Padded:
    """A problem embedded in its bucket, as numpy arrays in the compute dtype."""

    layout: Layout
    params: Params  # numpy arrays
    net: Net
    ex: Examples  # Nb examples
    coef: np.ndarray  # (Nb,) c_i (or 1), 0 on padded examples
    reduction: np.ndarray  # () int32 index in REDUCTION_NAMES
    full: bool  # the full tier: norms or losses beyond the core tier's


def _pad(problem: Problem, dtype: np.dtype) -> Padded:
    lay, net_, b, loss = _layout(problem.network), problem.network, problem.batch, problem.loss
    n, n_dense, d_out = b.size, len(lay.dense), lay.widths[-1]
    t = b.inputs.shape[1] if b.sequence else 1
    wb = _bucket(max(lay.widths), MIN_WIDTH)
    blocks = 1 + _bucket(n_dense, MIN_DEPTH)
    slots = _bucket(max(max(len(r) for r in lay.runs), 1), MIN_SLOTS)
    nb = _bucket(n, MIN_BATCH)
    tb = _bucket(t, MIN_TOKENS) if b.sequence else 1

    params = Params(np.zeros((blocks, wb, wb), dtype), np.zeros((blocks, wb), dtype),
                    np.zeros((blocks, slots, wb), dtype), np.zeros((blocks, slots, wb), dtype))
    for j, (k, d) in enumerate(lay.dense):
        params.ws[j + 1, : d.out_features, : d.in_features] = problem.params[f"{k}.weight"]
        if d.bias:
            params.bs[j + 1, : d.out_features] = problem.params[f"{k}.bias"]
    width = np.array(lay.widths + (lay.widths[-1],) * (blocks - len(lay.widths)))
    kinds = np.full((blocks, slots), _IDENTITY, np.int32)
    stats = np.zeros((blocks, slots), np.int32)
    rmean, rvar = np.zeros((blocks, slots, wb), dtype), np.ones((blocks, slots, wb), dtype)
    keep = np.ones((blocks, slots), dtype)
    drop = np.ones((nb, blocks, slots, tb, wb), bool)
    for j, run in enumerate(lay.runs):
        for s, (kind, k) in enumerate(run):
            kinds[j, s], layer, w = kind, net_.layers[k], width[j]
            if isinstance(layer, (LayerNorm, BatchNorm)):
                params.gammas[j, s, :w] = problem.params[f"{k}.weight"]
                params.betas[j, s, :w] = problem.params[f"{k}.bias"]
                stats[j, s] = NORM_STATS.index(
                    "layer_norm" if isinstance(layer, LayerNorm) else
                    "batch_norm_train" if layer.training else "batch_norm_eval")
                if isinstance(layer, BatchNorm) and not layer.training:
                    rmean[j, s, :w], rvar[j, s, :w] = layer.running_mean, layer.running_var
            elif isinstance(layer, Dropout):
                keep[j, s] = 1.0 - layer.p
                assert b.dropout is not None
                drop[:n, j, s, :t, :w] = b.dropout[k].reshape(n, t, w) != 0

    hard = loss.name == "softmax_cross_entropy" and b.targets.dtype.kind in "iu"
    if loss.elementwise:
        kind = LOSS_KINDS.index(loss.name)
    elif hard and loss.label_smoothing == 0:
        kind = LOSS_KINDS.index("ce_integer_labels")
    else:
        kind = LOSS_KINDS.index("ce_probabilities")
    class_w = np.zeros(wb, dtype)
    class_w[:d_out] = 1.0 if loss.class_weights is None else loss.class_weights
    eps = loss.label_smoothing
    net = Net(
        live=(np.arange(blocks) >= 1) & (np.arange(blocks) <= n_dense), kinds=kinds, stats=stats,
        feat=np.arange(wb) < width[:, None], nfeat=width.astype(dtype), rmean=rmean, rvar=rvar,
        keep=keep, loss=np.asarray(kind, np.int32), out_mask=np.arange(wb) < d_out,
        d_out=np.asarray(d_out, dtype), class_w=class_w, hard=np.asarray(hard),
        soft=np.asarray(not loss.elementwise and not hard),
        one_minus_eps=np.asarray(1.0 - eps, dtype), eps_over_c=np.asarray(eps / d_out, dtype),
        delta=np.asarray(loss.delta, dtype))

    rows = np.zeros((nb, tb), bool)
    rows[:n, :t] = True
    live = rows.copy()
    if b.sequence:
        live[:n, :t] = b.token_mask
    ex = Examples(np.zeros((nb, tb, wb), dtype), np.zeros((nb, tb, wb), dtype),
                  np.ones((nb, tb, wb), dtype), np.zeros((nb, tb), np.int32), live, rows, drop)
    ex.x[:n, :t, : lay.widths[0]] = b.inputs.reshape(n, t, -1)
    if hard:
        labels = b.targets.reshape(n, t)
        if loss.ignore_index is not None:
            live[:n, :t] &= labels != loss.ignore_index
        ex.labels[:n, :t] = np.where(live[:n, :t], labels, 0)
    else:
        ex.y[:n, :t, :d_out] = b.targets.reshape(n, t, d_out)
    if b.variances is not None:
        ex.var[:n, :t, :d_out] = b.variances.reshape(n, t, d_out)
    coef = np.zeros(nb, dtype)
    coef[:n] = b.weights if problem.reduction.weighted else 1.0
    red = np.asarray(REDUCTION_NAMES.index(problem.reduction.name), np.int32)
    full = bool(np.any(kinds == SLOT_KINDS.index("norm"))) or kind >= CORE_LOSS_KINDS
    return Padded(lay, params, net, ex, coef, red, full)


def _unpad(problem: Problem, lay: Layout, grads: Params, lead: tuple) -> Grads:
    """Real parameters' gradients out of padded arrays (with leading axes ``lead``)."""
    out: Grads = {}
    for j, (k, d) in enumerate(lay.dense):
        out[f"{k}.weight"] = grads.ws[lead + (j + 1, slice(d.out_features), slice(d.in_features))]
        if d.bias:
            out[f"{k}.bias"] = grads.bs[lead + (j + 1, slice(d.out_features))]
    for j, run in enumerate(lay.runs):
        for s, (_, k) in enumerate(run):
            layer = problem.network.layers[k]
            if isinstance(layer, (LayerNorm, BatchNorm)):
                out[f"{k}.weight"] = grads.gammas[lead + (j, s, slice(layer.features))]
                out[f"{k}.bias"] = grads.betas[lead + (j, s, slice(layer.features))]
    return out


# -- the plain formulation (BATCHGRAD_JAX_BUCKETS=0): the problem as written ---------------------
def _plain_forward(params: Mapping[str, jax.Array], network: Network, x: jax.Array,
                   drop: Mapping[int, jax.Array]) -> jax.Array:
    for k, layer in enumerate(network.layers):
        if isinstance(layer, Dense):
            x = _dense(x, params[f"{k}.weight"], params.get(f"{k}.bias"))
        elif isinstance(layer, Activation):
            x = ACTIVATIONS[layer.name](x)
        elif isinstance(layer, Dropout):
            x = dropout(x, drop[k], 1.0 - layer.p)
        else:
            if isinstance(layer, LayerNorm):
                mean = jnp.mean(x, axis=-1, keepdims=True)
                var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
            elif layer.training:  # batch statistics (never reached per example: §4.3)
                mean = jnp.mean(x, axis=0)
                var = jnp.mean(jnp.square(x - mean), axis=0)
            else:
                assert layer.running_mean is not None and layer.running_var is not None
                mean = jnp.asarray(layer.running_mean, x.dtype)
                var = jnp.asarray(layer.running_var, x.dtype)
            x = normalize(x, mean, var, params[f"{k}.weight"], params[f"{k}.bias"])
    return x


def _plain_losses(params, data, *, network, loss, sequence):
    """(ℓ, ω, T) for the examples in ``data`` (or the one example), as a JAX user writes it:
    per-token losses, ignored labels and masked tokens zeroed by ``jnp.where``, summed over
    tokens."""
    f = _plain_forward(params, network, data["x"], data.get("drop", {}))
    y = data["y"]
    cw = None if loss.class_weights is None else jnp.asarray(loss.class_weights, f.dtype)
    live = data.get("mask")  # token mask (sequences)
    count = jnp.ones(f.shape[:-1], f.dtype)
    if loss.elementwise:
        per_token = jnp.mean(ELEMENTWISE[loss.name](f, y, data.get("var"), loss.delta), axis=-1)
    elif jnp.issubdtype(y.dtype, jnp.integer):
        if loss.ignore_index is not None:
            live = y != loss.ignore_index
            y = jnp.where(live, y, 0)
        if loss.label_smoothing == 0:
            per_token = optax.softmax_cross_entropy_with_integer_labels(f, y)
            if cw is not None:
                per_token = cw[y] * per_token
        else:
            q = optax.smooth_labels(jax.nn.one_hot(y, f.shape[-1], dtype=f.dtype),
                                    loss.label_smoothing)
            per_token = optax.softmax_cross_entropy(f, q if cw is None else cw * q)
        if cw is not None:
            count = cw[y]
    else:
        eps = loss.label_smoothing
        per_token = smoothed_cross_entropy(f, y, cw, 1.0 - eps, eps / f.shape[-1])
    if live is not None:
        per_token, count = jnp.where(live, per_token, 0), jnp.where(live, count, 0)
    if not sequence:
        return per_token, count, jnp.ones_like(count)
    return (jnp.sum(per_token, axis=-1), jnp.sum(count, axis=-1),
            jnp.sum(data["mask"], axis=-1).astype(f.dtype))


def _plain_example_loss(params, data, *, network, loss, sequence):
    return _plain_losses(params, data, network=network, loss=loss, sequence=sequence)[0]


def _plain_reduced_loss(params, data, w, *, network, loss, sequence, reduction):
    losses, counts, tokens = _plain_losses(params, data, network=network, loss=loss,
                                           sequence=sequence)
    if reduction == "mean":
        return safe_mean(jnp.sum(losses), jnp.sum(counts))
    if reduction == "sequence_mean":
        return jnp.mean(losses / tokens)
    if reduction == "sum":
        return jnp.sum(losses)
    if reduction == "weighted":
        return jnp.sum(w * losses)
    return jnp.sum(w * losses) / jnp.sum(w)


_PLAIN_STATIC = ("network", "loss", "sequence")


@functools.partial(jax.jit, static_argnames=(*_PLAIN_STATIC, "reduction"))
def _plain_batch(params, data, w, *, network, loss, sequence, reduction):
    TRACES["plain_batch"] += 1
    fn = functools.partial(_plain_reduced_loss, network=network, loss=loss, sequence=sequence,
                           reduction=reduction)
    return jax.value_and_grad(fn)(params, data, w)


@functools.partial(jax.jit, static_argnames=_PLAIN_STATIC)
def _plain_vmap(params, data, *, network, loss, sequence):
    TRACES["plain_vmap"] += 1
    fn = functools.partial(_plain_example_loss, network=network, loss=loss, sequence=sequence)
    return jax.vmap(jax.value_and_grad(fn), in_axes=(None, 0))(params, data)


@functools.partial(jax.jit, static_argnames=_PLAIN_STATIC)
def _plain_single(params, data, *, network, loss, sequence):
    TRACES["plain_single"] += 1
    fn = functools.partial(_plain_example_loss, network=network, loss=loss, sequence=sequence)
    return jax.value_and_grad(fn)(params, data)


PLAIN_CACHE_LIMIT = 64
"""The unpadded programs compiled between two clearings of their jit caches. Every problem
compiles its own programs and jit keeps each executable: ``BATCHGRAD_JAX_BUCKETS=0`` on
tests/test_ch3_losses.py and tests/test_ch4_layers.py (≈1,750 programs) grew to 3.7 GB and died
twice in a segmentation fault inside a jitted call; bounded, it stays under 1 GB and passes."""
_PLAIN_CLEARED = collections.Counter()


def _bound_plain_caches() -> None:
    traced = sum(TRACES[k] for k in ("plain_batch", "plain_vmap", "plain_single"))
    if traced - _PLAIN_CLEARED["at"] >= PLAIN_CACHE_LIMIT:
        for fn in (_plain_batch, _plain_vmap, _plain_single):
            fn.clear_cache()
        _PLAIN_CLEARED["at"] = traced


# -- the backend ---------------------------------------------------------------------------------
class JaxBackend:
    """JAX adapter. ``buckets`` None reads BATCHGRAD_JAX_BUCKETS at every call (default on)."""

    name = "jax"

    def __init__(self, buckets: bool | None = None) -> None:
        self.buckets = buckets

    def versions(self) -> Mapping[str, str]:
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "optax": optax.__version__}

    def devices(self) -> Sequence[str]:
        return ("cpu", "gpu") if _gpu() is not None else ("cpu",)

    def dtypes(self) -> Sequence[str]:
        return ("float64", "float32")

    def per_example_methods(self) -> Sequence[str]:
        return ("vmap", "loop")

    @staticmethod
    def trace_counts() -> dict[str, int]:
        """Compilations so far, per jitted function (for performance reports)."""
        return dict(TRACES)

    def _bucketed(self) -> bool:
        return _buckets_enabled() if self.buckets is None else self.buckets

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        dtype, device = _check(config)
        with jax.default_device(device):  # numpy arguments: jit transfers them (cheaper)
            if self._bucketed():
                p = _pad(problem, dtype)
                fn = _on(PADDED_BATCH, device)
                value, grads = jax.device_get(fn(p.params, p.net, p.ex, p.coef, p.reduction,
                                                 full=p.full))
                return float(value), _unpad(problem, p.layout, grads, ())
            _bound_plain_caches()
            params, data, w = _plain_inputs(problem, dtype)
            value, grads = _plain_batch(params, data, w, **_plain_static(problem),
                                        reduction=problem.reduction.name)
        return float(value), {k: np.asarray(v) for k, v in jax.device_get(grads).items()}

    def per_example(
        self, problem: Problem, config: Config, method: str
    ) -> tuple[np.ndarray, Grads]:
        if method not in ("vmap", "loop"):
            raise ValueError(f"unknown per-example method {method!r}; jax has vmap, loop")
        dtype, device = _check(config)
        coupled = [k for k, la in enumerate(problem.network.layers)
                   if isinstance(la, BatchNorm) and la.training]
        if coupled:
            raise Undefined(
                f"per-example gradients are not defined through a train-mode BatchNorm (layer "
                f"{coupled[0]}; spec §4.3): each ℓ_i depends on every example through the batch "
                f"statistics. JAX raises nothing here: jax.vmap(jax.grad(ℓ_one)) silently "
                f"computes something else (statistics over the one example's features when "
                f"the batch code's mean(axis=0) is vmapped; variance 0, x̂ = 0 and zero "
                f"gradients below the BatchNorm for a batch of one; with lax.pmean over a vmap "
                f"axis_name, lanes that sum to ∇Σℓ_i but are not ∇ℓ_i)")
        n = problem.batch.size
        with jax.default_device(device):
            if self._bucketed():
                p = _pad(problem, dtype)
                if method == "vmap":
                    out = _on(PADDED_VMAP, device)(p.params, p.net, p.ex, full=p.full)
                else:
                    params, net, ex = jax.device_put((p.params, p.net, p.ex), device)
                    single = _on(PADDED_SINGLE, device)
                    out = _stack([single(params, net, ex, np.int32(i), full=p.full)
                                  for i in range(n)])
                losses, grads = jax.device_get(out)
                return np.asarray(losses)[:n], _unpad(problem, p.layout, Params(*grads),
                                                      (slice(n),))
            _bound_plain_caches()
            params, data, _ = _plain_inputs(problem, dtype)
            static = _plain_static(problem)
            if method == "vmap":
                out = _plain_vmap(params, data, **static)
            else:
                rows = [jax.tree.map(lambda a, i=i: a[i], data) for i in range(n)]
                out = _stack([_plain_single(params, row, **static) for row in rows])
        losses, grads = jax.device_get(out)
        return np.asarray(losses), {k: np.asarray(v) for k, v in grads.items()}

    # -- the optional update step (spec chapter 6) ------------------------------------------------
    def train(self, problem: Problem, config: Config, optimizer: Any,
              batches: Sequence[Batch]) -> Grads:
        """One optax update per batch from ``problem.params``; the final parameters.

        Each step takes ∇L of the batch from ``loss_and_grad`` (the jitted ``jax.value_and_grad``
        programs above, at the current parameters) and applies the optax transformation of
        ``optax_optimizer`` eagerly — ``tx.update`` then ``optax.apply_updates``, in the dtype,
        un-jitted, so no program is compiled per optimiser or network.
        """
        dtype, device = _check(config)
        tx = optax_optimizer(optimizer)
        params = jax.device_put({k: v.astype(dtype) for k, v in problem.params.items()}, device)
        state = tx.init(params)
        for batch in batches:
            now = {k: np.asarray(v, np.float64) for k, v in jax.device_get(params).items()}
            _, grads = self.loss_and_grad(problem.with_params(now).with_batch(batch), config)
            grads = jax.device_put({k: np.asarray(g, dtype) for k, g in grads.items()}, device)
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return {k: np.asarray(v) for k, v in jax.device_get(params).items()}

    # -- the optional gradient accumulation (spec §5.1–§5.5) --------------------------------------
    def accumulation_methods(self) -> Sequence[str]:
        return ("sum", "average")

    def accumulate(self, problem: Problem, config: Config, plan: Any,
                   method: str = "sum") -> Grads:
        """Gradient accumulation over the micro-batches of a ``reference.accumulation.
        Accumulation`` plan, J_k = s_k L_k + t_k (λ/2)‖θ‖², all at the same θ.

        Each micro-batch's ∇L_k comes from ``loss_and_grad`` (the jitted ``jax.value_and_grad``
        programs above, under ``plan.reduction``); the rest is one jitted program
        (``_accumulation_program``): the penalty's gradient ``jax.grad`` of
        ``(l2 / 2) * jnp.sum(θ ** 2)``, ∇J_k = s_k ∇L_k + t_k ∇P, and then

        method "sum": the ∇J_k added in order (``jax.lax.scan`` of ``jnp.add``), as JAX training
        loops accumulate (``jax.tree.map(jnp.add, acc, grads)``). method "average":
        ``optax.MultiSteps(optax.identity(), every_k_schedule=K, accumulator_dtype=<the model's
        dtype>)`` with its default ``use_grad_mean=True``, fed ∇(K J_k) = K s_k ∇L_k + K t_k ∇P;
        after the K-th ``update`` it emits the running mean of what it was fed, which is G. (Fed
        the plain ∇L_k — s_k = t_k = 1/K, K s_k = 1 exactly — it is what MultiSteps users run:
        spec §5.5.) ``accumulator_dtype`` defaults to float32 in optax 0.2.8, which rounds a
        float64 accumulation to float32 at every micro-step but the last (spec §5.5); it is
        passed explicitly so that float64 stays float64.

        Bucketed like the gradient programs (compiled once per dtype and bucket, not per
        problem): the parameters travel as one flattened vector padded with zeros (every step
        here is elementwise, so this is the arithmetic of the pytree; padded entries stay 0),
        the micro-batches as a fixed number of rows, rows past the K-th with s = t = 0 (adding
        their zeros is exact; MultiSteps' output is read at micro-step K), K traced.
        """
        from reference.accumulation import micro_batches

        if method not in ("sum", "average"):
            raise ValueError(f"jax backend: accumulator {method!r}; jax has 'sum' "
                             f"(jnp.add) and 'average' (optax.MultiSteps)")
        dtype, device = _check(config)
        parts = micro_batches(problem, plan)
        k = len(parts)
        factor = float(k) if method == "average" else 1.0
        names = sorted(problem.params)
        shapes = [problem.params[n].shape for n in names]
        cuts = np.cumsum([0] + [int(np.prod(sh)) for sh in shapes])
        rows = _bucket(k, MIN_STEPS)
        grads = np.zeros((rows, _bucket(int(cuts[-1]), MIN_PARAMS)), dtype)
        for i, part in enumerate(parts):
            _, g = self.loss_and_grad(part, config)
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


def _stack(rows: list[Any]) -> Any:
    """Per-example results (device arrays) → one pytree with a leading example axis (numpy)."""
    rows = jax.device_get(rows)
    return jax.tree.map(lambda *leaves: np.stack(leaves), *rows)


def _plain_static(problem: Problem) -> dict[str, Any]:
    return {"network": problem.network, "loss": problem.loss,
            "sequence": problem.batch.sequence}


def _plain_inputs(problem: Problem, dtype: np.dtype) -> tuple:
    """(θ, per-example data, c) as numpy arrays in the dtype: data holds x, y and, where the
    problem has them, the token mask, the variances and the dropout keep-masks (bool) by layer
    index."""
    b = problem.batch
    params = {k: v.astype(dtype) for k, v in problem.params.items()}
    y = b.targets.astype(np.int32) if b.targets.dtype.kind in "iu" else b.targets.astype(dtype)
    data: dict[str, Any] = {"x": b.inputs.astype(dtype), "y": y}
    if b.sequence:
        data["mask"] = b.token_mask
    if b.variances is not None:
        data["var"] = b.variances.astype(dtype)
    if b.dropout:
        data["drop"] = {k: m != 0 for k, m in b.dropout.items()}
    w = np.ones(b.size, dtype) if b.weights is None else b.weights.astype(dtype)
    return params, data, w


def optax_optimizer(opt: Any) -> optax.GradientTransformation:
    """The optax transformation realising a ``reference.update.Optimizer`` (spec §6.1): "sgd" →
    ``optax.sgd`` (momentum as ``trace``, nesterov False), "adam" → ``optax.adam``, "adamw" →
    ``optax.adamw``; L2 weight decay of sgd and adam as ``optax.add_decayed_weights`` chained
    before the optimiser (g + λθ)."""
    if opt.name == "sgd":
        tx = optax.sgd(opt.lr, momentum=opt.momentum or None, nesterov=False)
    elif opt.name == "adam":
        tx = optax.adam(opt.lr, b1=opt.betas[0], b2=opt.betas[1], eps=opt.eps, eps_root=0.0)
    else:
        return optax.adamw(opt.lr, b1=opt.betas[0], b2=opt.betas[1], eps=opt.eps, eps_root=0.0,
                           weight_decay=opt.weight_decay)
    if opt.weight_decay:
        return optax.chain(optax.add_decayed_weights(opt.weight_decay), tx)
    return tx


@functools.cache
def _gpu() -> jax.Device | None:
    try:
        return jax.devices("gpu")[0]
    except Exception:  # no GPU backend (RuntimeError) or a broken one: report "cpu" only
        return None


def _check(config: Config) -> tuple[np.dtype, jax.Device]:
    if config.precision not in ("strict", "tf32"):  # tf32 (spec §7.4): computed at HIGHEST still
        raise ValueError(f"precision {config.precision!r}: the jax backend supports 'strict' and "
                         f"'tf32' (computed at matmul precision HIGHEST, within either tolerance)")
    if config.device == "cpu":
        device = jax.devices("cpu")[0]
    elif config.device in ("gpu", "cuda"):
        device = _gpu()
        if device is None:
            raise ValueError(f"device {config.device!r}: jax sees no GPU here")
    else:
        raise ValueError(f"device {config.device!r}: the jax backend has 'cpu' and 'gpu'")
    return np.dtype(config.dtype), device


backend = JaxBackend()
