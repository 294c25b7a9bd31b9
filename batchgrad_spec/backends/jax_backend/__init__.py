"""The JAX adapter: ``--backend batchgrad_spec.backends.jax_backend:backend``.

Gradients come from JAX's own autodiff of the loss as a JAX user writes it: ``jax.nn``
activations, ``optax`` losses, ``jax.value_and_grad`` of the reduced loss, ``jax.vmap(jax.grad(ℓ))``
for per-example gradients ("vmap") and a Python loop over a jitted single-example gradient
("loop"). float64 needs ``jax_enable_x64``, switched on at import; every array is created with an
explicit dtype, so float32 runs stay float32. Matmuls use ``Precision.HIGHEST`` (IEEE arithmetic
in the requested dtype; config.precision must be "strict" or "tf32").

The rooms, in import order (each imports only rooms above it):

* ``compilation``: float64, the persistent compilation cache (``BATCHGRAD_JAX_CACHE``), XLA
  options, ``TRACES`` (how many programs were traced: ``JaxBackend.trace_counts()``);
* ``devices``: the device and dtype of a ``Config``;
* ``ops`` and ``losses``: the layers' arithmetic and the losses as JAX users write them;
* ``padded``: the bucketed programs (slots chosen by ``lax.switch``, exact masking; 6 programs
  per tier for chapters 1-2, up to 24 in a session that uses every feature);
* ``layers``: layers as units, one table entry per layer type (``LAYERS``);
* ``buckets``: a problem embedded in its shape bucket, and its real gradients out of it;
* ``plain``: the plain programs (``BATCHGRAD_JAX_BUCKETS=0``), the problem traced as written;
  also every problem with a layer of chapter 9 (no slot in the padded programs): each new
  structure and shape compiles its own. Measured (jax 0.10.2, CPU, cold cache, 2 shared cores):
  one ``--backend jax`` run of ``tests/test_ch9_*.py`` at ``ci`` compiles 612 programs
  (plain_batch 251, plain_vmap 188, plain_single 173; 25 examples × 7 properties × 2 dtypes ×
  2 methods); ``tests/test_ch9_structured_layers.py`` alone 585, 182 s wall with stock XLA
  options, 111 s with ``BATCHGRAD_JAX_FAST_COMPILE=1`` (which covers the plain programs too);
* ``update`` and ``accumulation``: optax updates (spec chapter 6), gradient accumulation (§5.1–5);
* ``loop``: the training loop of chapter 10 (``optax.MultiSteps``, ``clip_by_global_norm``,
  ``apply_if_finite``);
* ``adapter``: ``JaxBackend``, the backend contract's methods.

This package re-exports the names other modules use (``backend``, ``JaxBackend``, ``ACTIVATIONS``,
``Padded``, ``pad``/``unpad`` and the programs; ``_padded_batch`` keeps the name it had when the
backend was one module: a program's name is part of its key in the compilation cache).
"""

from __future__ import annotations

from .accumulation import ACCUMULATE_AVERAGE, ACCUMULATE_SUM, MIN_PARAMS, MIN_STEPS
from .adapter import JaxBackend, JaxMultiStepsAsIs
from .buckets import (
    MIN_BATCH,
    MIN_DEPTH,
    MIN_SLOTS,
    MIN_TOKENS,
    MIN_WIDTH,
    Layout,
    Padded,
    bucket,
    layout,
    pad,
    unpad,
)
from .compilation import CACHE_MAX_BYTES, CPU_COMPILER_OPTIONS, TRACES
from .layers import LAYERS, LayerRule
from .losses import ELEMENTWISE, gaussian_nll, safe_mean, smoothed_cross_entropy
from .ops import ACTIVATIONS, HIGHEST, dense, dropout, normalize
from .padded import (
    CORE_LOSS_KINDS,
    LOSS_KINDS,
    NORM_STATS,
    PADDED_BATCH,
    PADDED_SINGLE,
    PADDED_VMAP,
    SLOT_KINDS,
    Examples,
    Net,
    Params,
)
from .padded import _padded_batch as _padded_batch
from .plain import PLAIN_CACHE_LIMIT
from .update import optax_optimizer

__all__ = [
    "ACCUMULATE_AVERAGE", "ACCUMULATE_SUM", "ACTIVATIONS", "CACHE_MAX_BYTES", "CORE_LOSS_KINDS",
    "CPU_COMPILER_OPTIONS", "ELEMENTWISE", "HIGHEST", "LAYERS", "LOSS_KINDS", "MIN_BATCH",
    "MIN_DEPTH", "MIN_PARAMS", "MIN_SLOTS", "MIN_STEPS", "MIN_TOKENS", "MIN_WIDTH", "NORM_STATS",
    "PADDED_BATCH", "PADDED_SINGLE", "PADDED_VMAP", "PLAIN_CACHE_LIMIT", "SLOT_KINDS", "TRACES",
    "Examples", "JaxBackend", "LayerRule", "Layout", "Net", "Padded", "Params", "backend",
    "bucket", "dense", "dropout", "gaussian_nll", "layout", "normalize", "optax_optimizer", "pad",
    "safe_mean", "smoothed_cross_entropy", "unpad",
    "JaxMultiStepsAsIs", "multisteps_as_is",
]

backend = JaxBackend()
multisteps_as_is = JaxMultiStepsAsIs()  # the §10.3 finding: optax.MultiSteps keeps a NaN
