"""The JAX adapter: ``--backend tests.backends.jax_backend:backend``.

Gradients come from JAX's own autodiff of the loss as a JAX user writes it: ``jax.nn``
activations, ``optax`` losses, ``jax.value_and_grad`` of the reduced loss, ``jax.vmap(jax.grad(ℓ))``
for per-example gradients ("vmap") and a Python loop over a jitted single-example gradient
("loop"). float64 needs ``jax_enable_x64``, switched on at import; every array is created with an
explicit dtype, so float32 runs stay float32. Matmuls use ``Precision.HIGHEST`` (IEEE arithmetic
in the requested dtype; config.precision must be "strict").

Why buckets
-----------
``jax.jit`` compiles once per pytree structure, shape and dtype of its arguments. Property tests
draw a fresh network (depth, widths, activations) and batch size per example, so a jitted function
per problem would recompile every time (0.1-0.7 s each). Instead every problem is embedded in one
fixed-shape *padded* problem, and everything else that varies is traced data, so the jitted
programs depend only on (dtype, method, size buckets): 2 x 3 = 6 compilations per session for
all problems of widths ≤ 16, batches ≤ 16, ≤ 4 Dense layers and activation runs ≤ 2.

* normal form: blocks b = 0..B-1, each an optional Dense layer (``live[b]``; block 0, which
  holds the activations applied to the input, has none) followed by a run of activation slots;
  runs are padded with ``identity`` (exactly x). Block j+1 holds the j-th Dense layer.
* activations: each slot is a traced integer selecting one of the seven ``jax.nn`` functions
  with ``jax.lax.switch`` (only the chosen branch runs, forward and backward); blocks and slots
  are ``jax.lax.scan`` loops, so program size does not grow with depth.
* loss: a traced flag picks the optax loss with ``jax.lax.cond``.
* widths: every width is padded to one bucket ``Wb`` (next power of two, at least
  ``MIN_WIDTH``); weights become (Wb, Wb) with zero rows/columns, biases get zeros (a bias-free
  Dense gets a zero bias whose gradient is dropped).
* depth: ``B - 1`` Dense blocks (a power of two ≥ ``MIN_DEPTH``); blocks past the real layers
  are skipped by ``jnp.where(live, z, a)``.
* batch: ``Nb`` examples; padded examples have zero inputs/targets, label 0 and coefficient 0.
  "loop" calls the single-example program, whose shapes depend on the buckets only.

Why the answer is unchanged (exactly, up to the order of summation inside a matmul)
----------------------------------------------------------------------------------
Forward: a real unit's pre-activation is Σ_j W_ij a_j over real j plus terms 0·a_j = ±0 over
padded j (a_j is finite: activations of finite numbers are finite), and adding ±0 is exact.
Padded units may hold nonzero values (σ(0) = ½ for sigmoid), but only ever meet zero weights.
Skipped layers pass a through ``jnp.where``, exactly. Loss: squared error masks padded outputs
to 0 and divides by the real D (a traced scalar); cross-entropy replaces padded logits by
``finfo.min/2`` so exp(· − max) underflows to exactly 0 and the log-sum-exp is that of the real
logits. Reduction: L = Σ_i c_i ℓ_i / s with c_i = 0 on padded examples and s = N, 1 or Σ c_i
(traced), so L is the real reduction. Backward: the cotangent of every padded example is
c_i·(…) = 0 and that of a padded output is 0 (``where`` sends zero to the branch not taken);
into a real unit the backward matmul adds z̄_o·0 = 0 from padded units o, so real gradients see
exactly the real terms; ``where`` in a skipped layer gives zero to its parameters. Gradients of
real parameters are sliced out; the rest is discarded. No inf or NaN is produced anywhere, so no
0·inf arises. Only the grouping of a dot product's terms can change (covered by the spec's
γ_n bound "in any order or blocking").

``BATCHGRAD_JAX_BUCKETS=0`` turns all of this off: the problem is then traced as written (static
network, exact shapes, ``jnp.mean`` etc.), recompiling per problem, which certifies the unpadded
semantics. ``BATCHGRAD_JAX_CACHE`` names a persistent compilation cache directory ("0", "off" or
"" disables it; default: ``batchgrad-jax-cache`` in the system temp dir); with a warm cache a new
process loads the six programs instead of compiling them. ``trace_counts()`` reports how many
programs were traced (compiled or loaded) so far.
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

from reference.contract import Config, Grads
from reference.problem import ACTIVATION_NAMES, Batch, Dense, Network, Problem

jax.config.update("jax_enable_x64", True)

MIN_WIDTH = 16
"""Smallest width bucket; widths in 1..16 all share one bucket."""
MIN_BATCH = 16
"""Smallest batch bucket."""
MIN_DEPTH = 4
"""Smallest depth bucket (number of Dense layers)."""
MIN_SLOTS = 2
"""Smallest number of activation slots per run."""

CPU_COMPILER_OPTIONS: dict[str, Any] = (
    {"xla_cpu_use_fusion_emitters": False} if os.environ.get("BATCHGRAD_JAX_FAST_COMPILE") else {}
)
"""XLA options for the bucketed CPU programs: stock by default, so what is tested is what JAX
users run. ``BATCHGRAD_JAX_FAST_COMPILE=1`` selects the legacy loop emitters, which compile these
small programs about 30% faster and gave bit-identical results on 150 problems checked (with six
programs per session the saving is a few seconds)."""

CACHE_MAX_BYTES = 256 * 2**20
"""Size limit of the persistent compilation cache (the six bucketed programs take < 1 MB; an
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


# -- semantics: activations, losses, dense -------------------------------------------------------
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": lambda z: z,
    "relu": jax.nn.relu,  # relu'(0) = 0
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # exact erf form
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
}
_BRANCHES = tuple(ACTIVATIONS[name] for name in ACTIVATION_NAMES)
_IDENTITY = ACTIVATION_NAMES.index("identity")


def _dense(a: jax.Array, w: jax.Array, b: jax.Array | None) -> jax.Array:
    """z = a Wᵀ + b (torch.nn.Linear layout), IEEE arithmetic in a's dtype."""
    z = jnp.matmul(a, w.T, precision=HIGHEST)
    return z if b is None else z + b


# -- the bucketed (padded) formulation -----------------------------------------------------------
class Net(NamedTuple):
    """Everything but θ and the examples: the network's structure and loss, as traced data."""

    live: jax.Array  # (B,) bool: block b holds a real Dense layer (block 0, the input run, never)
    acts: jax.Array  # (B, S) int32 activation ids, runs padded with identity
    out_mask: jax.Array  # (Wb,) bool: the real outputs
    d_out: jax.Array  # () the real number of outputs D (compute dtype)
    is_ce: jax.Array  # () bool: softmax_cross_entropy, else squared_error


class Examples(NamedTuple):
    """Examples, batched (leading axis Nb) or one example."""

    x: jax.Array  # (…, Wb) inputs
    y: jax.Array  # (…, Wb) squared_error targets (zeros for cross-entropy)
    labels: jax.Array  # (…,) int32 cross-entropy labels (zeros for squared_error)


def _padded_forward(params: tuple[jax.Array, jax.Array], net: Net, x: jax.Array) -> jax.Array:
    """Blocks b = 0..B-1: a ← live_b ? a W_bᵀ + b_b : a, then the activation run acts[b]."""

    def activation(a: jax.Array, act: jax.Array) -> tuple[jax.Array, None]:
        return jax.lax.switch(act, _BRANCHES, a), None

    def block(a: jax.Array, blk: tuple) -> tuple[jax.Array, None]:
        w, b, live, acts = blk
        a = jnp.where(live, _dense(a, w, b), a)
        return jax.lax.scan(activation, a, acts)[0], None

    ws, bs = params
    return jax.lax.scan(block, x, (ws, bs, net.live, net.acts))[0]


def _padded_losses(params: tuple[jax.Array, jax.Array], net: Net, ex: Examples) -> jax.Array:
    """ℓ of each example in ``ex`` (or of the one example): optax losses over the real outputs."""
    f = _padded_forward(params, net, ex.x)

    def squared_error(f: jax.Array) -> jax.Array:
        se = jnp.where(net.out_mask, optax.squared_error(f, ex.y), 0)
        return jnp.sum(se, axis=-1) / net.d_out

    def cross_entropy(f: jax.Array) -> jax.Array:
        logits = jnp.where(net.out_mask, f, jnp.finfo(f.dtype).min / 2)
        return optax.softmax_cross_entropy_with_integer_labels(logits, ex.labels)

    return jax.lax.cond(net.is_ce, cross_entropy, squared_error, f)


def _padded_batch(params, net, ex, coef, denom, wsum):
    """(L, ∇L) with L = Σ c_i ℓ_i / s, s = Σ c_i (weighted_mean, ``wsum``) or ``denom``."""
    TRACES["padded_batch"] += 1

    def reduced_loss(params: tuple[jax.Array, jax.Array]) -> jax.Array:
        losses = _padded_losses(params, net, ex)
        return jnp.sum(coef * losses) / jnp.where(wsum, jnp.sum(coef), denom)

    return jax.value_and_grad(reduced_loss)(params)


def _padded_vmap(params, net, ex):
    """(ℓ, g) for every example: ``jax.vmap(jax.value_and_grad(ℓ))``."""
    TRACES["padded_vmap"] += 1
    return jax.vmap(jax.value_and_grad(_padded_losses), in_axes=(None, None, 0))(params, net, ex)


def _padded_single(params, net, ex):
    """(ℓ, g) for one example: ``jax.value_and_grad(ℓ)``."""
    TRACES["padded_single"] += 1
    return jax.value_and_grad(_padded_losses)(params, net, ex)


def _jit(fn: Callable) -> dict[str, Callable]:
    """``fn`` jitted for the CPU (with CPU_COMPILER_OPTIONS) and for accelerators (stock)."""
    return {"cpu": jax.jit(fn, compiler_options=CPU_COMPILER_OPTIONS), "other": jax.jit(fn)}


def _on(table: dict[str, Callable], device: jax.Device) -> Callable:
    return table["cpu" if device.platform == "cpu" else "other"]


PADDED_BATCH, PADDED_VMAP, PADDED_SINGLE = map(_jit, (_padded_batch, _padded_vmap, _padded_single))


def _bucket(n: int, minimum: int) -> int:
    return max(minimum, 1 << (n - 1).bit_length())


@dataclass(frozen=True)
class Layout:
    """The normal form of a network: Dense layers with the activation run after each."""

    dense: tuple[tuple[int, Dense], ...]  # (index in network.layers, layer)
    runs: tuple[tuple[int, ...], ...]  # activation ids: runs[0] on the input, runs[j+1] after j
    widths: tuple[int, ...]  # input width, then each Dense's out_features


@functools.lru_cache(maxsize=4096)
def _layout(network: Network) -> Layout:
    runs: list[list[int]] = [[]]
    for layer in network.layers:
        if isinstance(layer, Dense):
            runs.append([])
        else:
            runs[-1].append(ACTIVATION_NAMES.index(layer.name))
    dense = tuple(network.dense_layers())
    widths = (dense[0][1].in_features,) + tuple(d.out_features for _, d in dense)
    return Layout(dense, tuple(map(tuple, runs)), widths)


@dataclass(frozen=True, eq=False)
class Padded:
    """A problem embedded in its bucket, as numpy arrays in the compute dtype."""

    layout: Layout
    params: tuple[np.ndarray, np.ndarray]  # ws (B, Wb, Wb), bs (B, Wb); block j+1 = Dense j
    net: Net
    ex: Examples  # Nb examples
    coef: np.ndarray  # (Nb,) c_i, 0 on padded examples
    denom: np.ndarray  # () N (mean) or 1
    wsum: np.ndarray  # () bool: divide by Σ c_i (weighted_mean)


def _pad(problem: Problem, dtype: np.dtype) -> Padded:
    lay = _layout(problem.network)
    n, n_dense, d_out = problem.batch.size, len(lay.dense), lay.widths[-1]
    wb = _bucket(max(lay.widths), MIN_WIDTH)
    blocks = 1 + _bucket(n_dense, MIN_DEPTH)
    slots = _bucket(max(max(len(r) for r in lay.runs), 1), MIN_SLOTS)
    nb = _bucket(n, MIN_BATCH)

    ws = np.zeros((blocks, wb, wb), dtype)
    bs = np.zeros((blocks, wb), dtype)
    for j, (k, d) in enumerate(lay.dense):
        ws[j + 1, : d.out_features, : d.in_features] = problem.params[f"{k}.weight"]
        if d.bias:
            bs[j + 1, : d.out_features] = problem.params[f"{k}.bias"]
    acts = np.full((blocks, slots), _IDENTITY, np.int32)
    for j, run in enumerate(lay.runs):
        acts[j, : len(run)] = run
    is_ce = problem.loss.name == "softmax_cross_entropy"
    net = Net(
        live=(np.arange(blocks) >= 1) & (np.arange(blocks) <= n_dense),
        acts=acts,
        out_mask=np.arange(wb) < d_out,
        d_out=np.asarray(d_out, dtype),
        is_ce=np.asarray(is_ce),
    )

    b = problem.batch
    ex = Examples(np.zeros((nb, wb), dtype), np.zeros((nb, wb), dtype), np.zeros(nb, np.int32))
    ex.x[:n, : lay.widths[0]] = b.inputs
    if is_ce:
        ex.labels[:n] = b.targets
    else:
        ex.y[:n, :d_out] = b.targets
    coef = np.zeros(nb, dtype)
    coef[:n] = b.weights if problem.reduction.weighted else 1.0
    red = problem.reduction.name
    denom = np.asarray(n if red == "mean" else 1, dtype)
    return Padded(lay, (ws, bs), net, ex, coef, denom, np.asarray(red == "weighted_mean"))


def _unpad(lay: Layout, ws: np.ndarray, bs: np.ndarray, lead: tuple) -> Grads:
    """Real parameters' gradients out of padded (…, B, Wb, Wb) / (…, B, Wb) arrays."""
    grads: Grads = {}
    for j, (k, d) in enumerate(lay.dense):
        grads[f"{k}.weight"] = ws[lead + (j + 1, slice(d.out_features), slice(d.in_features))]
        if d.bias:
            grads[f"{k}.bias"] = bs[lead + (j + 1, slice(d.out_features))]
    return grads


# -- the plain formulation (BATCHGRAD_JAX_BUCKETS=0): the problem as written ---------------------
def _plain_forward(params: Mapping[str, jax.Array], network: Network, x: jax.Array) -> jax.Array:
    for k, layer in enumerate(network.layers):
        if isinstance(layer, Dense):
            x = _dense(x, params[f"{k}.weight"], params.get(f"{k}.bias"))
        else:
            x = ACTIVATIONS[layer.name](x)
    return x


def _plain_losses(f: jax.Array, y: jax.Array, loss: str) -> jax.Array:
    if loss == "squared_error":
        return jnp.mean(optax.squared_error(f, y), axis=-1)
    return optax.softmax_cross_entropy_with_integer_labels(f, y)


def _plain_example_loss(params, x, y, *, network, loss):
    return _plain_losses(_plain_forward(params, network, x), y, loss)


def _plain_reduced_loss(params, x, y, w, *, network, loss, reduction):
    losses = _plain_losses(_plain_forward(params, network, x), y, loss)
    if reduction == "mean":
        return jnp.mean(losses)
    if reduction == "sum":
        return jnp.sum(losses)
    if reduction == "weighted":
        return jnp.sum(w * losses)
    return jnp.sum(w * losses) / jnp.sum(w)


_PLAIN_STATIC = ("network", "loss")


@functools.partial(jax.jit, static_argnames=(*_PLAIN_STATIC, "reduction"))
def _plain_batch(params, x, y, w, *, network, loss, reduction):
    TRACES["plain_batch"] += 1
    fn = functools.partial(_plain_reduced_loss, network=network, loss=loss, reduction=reduction)
    return jax.value_and_grad(fn)(params, x, y, w)


@functools.partial(jax.jit, static_argnames=_PLAIN_STATIC)
def _plain_vmap(params, x, y, *, network, loss):
    TRACES["plain_vmap"] += 1
    fn = jax.value_and_grad(functools.partial(_plain_example_loss, network=network, loss=loss))
    return jax.vmap(fn, in_axes=(None, 0, 0))(params, x, y)


@functools.partial(jax.jit, static_argnames=_PLAIN_STATIC)
def _plain_single(params, x, y, *, network, loss):
    TRACES["plain_single"] += 1
    fn = functools.partial(_plain_example_loss, network=network, loss=loss)
    return jax.value_and_grad(fn)(params, x, y)


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
        loss = problem.loss.name
        if self._bucketed():
            p = _pad(problem, dtype)
            args = jax.device_put((p.params, p.net, p.ex, p.coef, p.denom, p.wsum), device)
            value, (gw, gb) = jax.device_get(_on(PADDED_BATCH, device)(*args))
            return float(value), _unpad(p.layout, gw, gb, ())
        params, x, y, w = _plain_inputs(problem, dtype, device)
        value, grads = _plain_batch(params, x, y, w, network=problem.network, loss=loss,
                                    reduction=problem.reduction.name)
        return float(value), {k: np.asarray(v) for k, v in jax.device_get(grads).items()}

    def per_example(
        self, problem: Problem, config: Config, method: str
    ) -> tuple[np.ndarray, Grads]:
        if method not in ("vmap", "loop"):
            raise ValueError(f"unknown per-example method {method!r}; jax has vmap, loop")
        dtype, device = _check(config)
        n = problem.batch.size
        if self._bucketed():
            p = _pad(problem, dtype)
            params, net = jax.device_put((p.params, p.net), device)
            if method == "vmap":
                out = _on(PADDED_VMAP, device)(params, net, jax.device_put(p.ex, device))
            else:
                rows = jax.device_put([Examples(*(a[i] for a in p.ex)) for i in range(n)], device)
                single = _on(PADDED_SINGLE, device)
                out = _stack([single(params, net, ex) for ex in rows])
            losses, (gw, gb) = jax.device_get(out)
            return np.asarray(losses)[:n], _unpad(p.layout, gw, gb, (slice(n),))
        params, x, y, _ = _plain_inputs(problem, dtype, device)
        static = {"network": problem.network, "loss": problem.loss.name}
        if method == "vmap":
            out = _plain_vmap(params, x, y, **static)
        else:
            out = _stack([_plain_single(params, x[i], y[i], **static) for i in range(n)])
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


def _stack(rows: list[Any]) -> Any:
    """Per-example results (device arrays) → one pytree with a leading example axis (numpy)."""
    rows = jax.device_get(rows)
    return jax.tree.map(lambda *leaves: np.stack(leaves), *rows)


def _plain_inputs(problem: Problem, dtype: np.dtype, device: jax.Device) -> tuple:
    b = problem.batch
    params = {k: v.astype(dtype) for k, v in problem.params.items()}
    y = b.targets.astype(np.int32) if b.targets.dtype.kind in "iu" else b.targets.astype(dtype)
    w = np.ones(b.size, dtype) if b.weights is None else b.weights.astype(dtype)
    return jax.device_put((params, b.inputs.astype(dtype), y, w), device)


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
