"""Deliberately wrong backends: the mistakes the property suite exists to catch.

Each is a small wrapper around a real backend — the reference's ``NumpyBackend`` (fast, and exactly
right except for the one documented fault), or for ``torch_mse_sum_over_elements`` PyTorch's —
loadable as ``--backend batchgrad_spec.faults:<name>``. They are the subjects of
``tests/meta/test_faulty_backends.py`` (which property catches which fault),
``tests/meta/test_gallery.py`` (the gallery of classic bugs, ``GALLERY`` below, and the README table
"Gallery of caught bugs") and ``tests/meta/test_contract_errors.py`` (what the user sees).

Semantic faults (the answers are well-formed but wrong), with the clause whose property catches
each in the gallery:

* ``mean_over_n_minus_1``     ``mean`` reduction normalised by N − 1 (§2.1)
* ``sequential_updates``      g_i taken after an SGD step on each earlier example (§2.5, §2.12)
* ``last_example_only``       L and ∇L of the last example only (§2.1)
* ``per_example_scaled``      per-example gradients in the scaled convention κ_i g_i (§2.12, §1.4)
* ``mutates_params``          an SGD step applied to ``problem.params`` in place (§2.5)
* ``sum_instead_of_mean``     ``mean`` computed as the sum (§2.1)
* ``weighted_mean_over_n``    ``weighted_mean`` divided by N instead of Σ c_i (§2.4)
* ``weights_ignored``         weighted reductions computed without the weights (§2.3)
* ``dropped_example``         an off-by-one loop leaves the last example out of L and ∇L (§2.2)
* ``micro_batch_means``       the mean of micro-batch means, micro-batches of 2 (§2.1)
* ``uneven_shard_means``      two shards of unequal size, their means averaged equally (§2.1)
* ``mse_summed_over_outputs`` squared error under ``mean`` divided by N, not N·D (§2.1)
* ``torch_mse_sum_over_elements``  PyTorch ``mse_loss(reduction="sum")`` taken as Σ ℓ_i: D × it
  (§2.2; needs torch)
* ``squared_error_vjp_without_2``  a hand-written squared-error VJP (f − y)/D, missing the 2 (§2.12)
* ``relu_slope_one_at_zero``  relu'(0) = 1 instead of 0 (§1.5)
* ``gelu_tanh_for_gelu``      the tanh approximation computed where the exact GELU is asked (§1.1)
* ``per_example_reversed``    per-example gradients returned in reverse order, losses in order
  (§2.12)
* ``tf32_in_strict_mode``     float32 matmuls with operands rounded to TF32 (10 mantissa bits)
  while certifying strict IEEE float32 (§2.1)
* ``class_weighted_mean_over_n``, ``ignored_targets_counted``, ``smoothing_over_ignored_rows``
  chapter 3's loss faults (§3.3, §3.4, §3.5), defined in ``faulty_losses.py`` and loaded from
  here on first use

Contract faults (spec §8.3: the contract's validation turns them into clause failures):

* ``wrong_shape``    the first gradient has an extra trailing axis
* ``returns_nan``    NaN in the first batch gradient
* ``raises``         ``loss_and_grad`` raises ``RuntimeError("boom")``
* ``not_a_backend``  an object lacking most of the contract (rejected at load, spec §8.2)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from reference.activations import Activation
from reference.contract import Config
from reference.grads import batch_grad, combine, loss_data, per_example_grads
from reference.layers import Dense, Network
from reference.numpy_backend import NumpyBackend
from reference.ops import ACTIVATIONS, LOSSES
from reference.problem import Problem
from reference.types import Grads

PerExample = tuple[np.ndarray, Grads]

LEARNING_RATE = 0.1
"""η of the SGD steps that ``sequential_updates`` and ``mutates_params`` take."""


class _Faulty(NumpyBackend):
    """The numpy reference backend under another name; subclasses override one thing."""

    fault = ""

    def __init__(self, name: str) -> None:
        self.name = name

    def versions(self) -> Mapping[str, str]:
        return {**super().versions(), "fault": self.fault}


def _first(grads: Grads) -> str:
    return next(iter(grads))


class MeanOverNMinus1(_Faulty):
    """Under ``mean``, L and ∇L are Σ ℓ_i/(N − 1) and Σ g_i/(N − 1) (the unbiased-variance
    normaliser); at N = 1 that is x/0: inf, or NaN where the sum is 0."""

    fault = "mean divides by N-1"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = super().loss_and_grad(problem, config)
        if problem.reduction.name != "mean":
            return loss, grads
        n = problem.batch.size
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.float64(n) / np.float64(n - 1)
            return float(loss * scale), {k: v * v.dtype.type(scale) for k, v in grads.items()}


class SequentialUpdates(_Faulty):
    """Per-example gradients taken one after another with an SGD step in between (both methods):
    g_1 at θ_1 = θ, θ_{i+1} = θ_i − η g_i, g_{i+1} at θ_{i+1}, … ; ℓ_i likewise at θ_i. The batch
    loss and gradient are Σ κ_i ℓ_i and Σ κ_i g_i of those. Right only when N = 1 or the steps
    are zero; steep problems can make the steps diverge to inf/NaN (a contract failure)."""

    fault = "per-example gradients after sequential SGD steps"

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        if method not in self.per_example_methods():
            raise ValueError(f"unknown per-example method {method!r}")
        dtype = np.dtype(config.dtype)
        theta = {k: v.copy() for k, v in problem.params.items()}
        losses, grads = [], []
        with np.errstate(all="ignore"):  # the steps may diverge: non-finite answers are reported
            for i in range(problem.batch.size):
                one = problem.with_batch(problem.batch.take([i])).with_params(theta)
                loss_i, g_i = per_example_grads(one, dtype)
                losses.append(loss_i)
                grads.append(g_i)
                theta = {k: theta[k] - LEARNING_RATE * g_i[k][0] for k in theta}
        return (np.concatenate(losses),
                {k: np.concatenate([g[k] for g in grads]) for k in grads[0]})

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        losses, grads = self.per_example(problem, config, "loop")
        kappa = problem.coefficients
        return float(np.sum(kappa * losses)), combine(grads, kappa)


class LastExampleOnly(_Faulty):
    """L and ∇L are those of the last example processed alone, {x_N} under the same reduction:
    ℓ_N and g_N for mean, sum and weighted_mean, c_N ℓ_N and c_N g_N for weighted. Per-example
    results are right. Right only when N = 1 or the examples' contributions coincide."""

    fault = "batch gradient of the last example only"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        last = problem.with_batch(problem.batch.take([problem.batch.size - 1]))
        return batch_grad(last, np.dtype(config.dtype))


class PerExampleScaled(_Faulty):
    """``per_example`` returns κ_i g_i (g_i/N under mean, the terms that sum to ∇L) instead of
    g_i (spec §1.4); losses ℓ_i and the batch results are right."""

    fault = "per-example gradients scaled by kappa_i"

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        losses, grads = super().per_example(problem, config, method)
        kappa = problem.coefficients
        return losses, {k: v * kappa.reshape((-1,) + (1,) * (v.ndim - 1)).astype(v.dtype)
                        for k, v in grads.items()}


class MutatesParams(_Faulty):
    """``per_example`` returns the right ℓ_i and g_i, and then takes an SGD step on the caller's
    θ in place: ``problem.params[k] -= η Σ κ_i g_i`` (an optimizer step hidden in a query)."""

    fault = "per_example updates problem.params in place"

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        losses, grads = super().per_example(problem, config, method)
        step = combine(grads, problem.coefficients)
        for k, v in problem.params.items():
            v -= LEARNING_RATE * step[k]
        return losses, grads


# -- the gallery of classic bugs (tests/meta/test_gallery.py, README "Gallery of caught bugs") -----
def _reduced(problem: Problem, losses: np.ndarray, grads: Grads,
             kappa: np.ndarray) -> tuple[float, Grads]:
    """(Σ κ_i ℓ_i, Σ κ_i g_i) for given per-example results and coefficients."""
    kappa = kappa.astype(losses.dtype)
    return float(np.sum(kappa * losses)), combine(grads, kappa)


class SumInsteadOfMean(_Faulty):
    """Under ``mean``, L and ∇L are those of ``sum``: Σ ℓ_i and Σ g_i, N times too large (a
    ``reduction="sum"`` where the training loop meant ``"mean"``). Right when N = 1."""

    fault = "mean computed as sum"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        if problem.reduction.name == "mean":
            problem = problem.with_reduction("sum")
        return super().loss_and_grad(problem, config)


class WeightedMeanOverN(_Faulty):
    """``weighted_mean`` is Σ c_i ℓ_i / N instead of Σ c_i ℓ_i / Σ c_i (the weights enter the sum
    but the normaliser is the batch size). Right only when Σ c_i = N."""

    fault = "weighted mean divided by N"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        if problem.reduction.name != "weighted_mean":
            return super().loss_and_grad(problem, config)
        loss, grads = super().loss_and_grad(problem.with_reduction("weighted"), config)
        n = problem.batch.size
        return loss / n, {k: v / v.dtype.type(n) for k, v in grads.items()}


class WeightsIgnored(_Faulty):
    """Weighted reductions computed without their weights: ``weighted`` as ``sum`` and
    ``weighted_mean`` as ``mean`` (``losses.sum()`` where ``(c * losses).sum()`` was meant).
    Right only when every c_i = 1."""

    fault = "per-example weights ignored"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        plain = {"weighted": "sum", "weighted_mean": "mean"}.get(problem.reduction.name)
        if plain is not None:
            problem = problem.with_reduction(plain)
        return super().loss_and_grad(problem, config)


class DroppedExample(_Faulty):
    """L and ∇L leave the last example out (``for i in range(n - 1)``, an off-by-one), each other
    example keeping its κ_i: Σ_{i<N} κ_i ℓ_i and Σ_{i<N} κ_i g_i. At N = 1 both are 0."""

    fault = "last example dropped from the batch"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        losses, grads = super().per_example(problem, config, "vmap")
        kappa = problem.coefficients.copy()
        kappa[-1] = 0.0
        return _reduced(problem, losses, grads, kappa)


def _mean_of_group_means(problem: Problem, losses: np.ndarray, grads: Grads,
                         groups: list[np.ndarray]) -> tuple[float, Grads]:
    """(1/K) Σ_k mean_{i ∈ group k}: every group weighs the same, whatever its size."""
    kappa = np.zeros(problem.batch.size)
    for g in groups:
        kappa[g] = 1.0 / (len(groups) * len(g))
    return _reduced(problem, losses, grads, kappa)


class MicroBatchMeans(_Faulty):
    """Gradient accumulation normalised per micro-batch: under ``mean``, the batch is cut into
    micro-batches of ``MICRO_BATCH`` = 2 examples (the last one shorter when N is odd), each
    contributes its own mean loss and gradient, and the K results are averaged equally:
    (1/K) Σ_k (1/|B_k|) Σ_{i ∈ B_k} g_i. Right when every micro-batch has the same size."""

    fault = "mean of micro-batch means"
    MICRO_BATCH = 2

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        if problem.reduction.name != "mean":
            return super().loss_and_grad(problem, config)
        losses, grads = super().per_example(problem, config, "vmap")
        n = problem.batch.size
        groups = [np.arange(s, min(s + self.MICRO_BATCH, n)) for s in range(0, n, self.MICRO_BATCH)]
        return _mean_of_group_means(problem, losses, grads, groups)


class UnevenShardMeans(_Faulty):
    """Data parallelism averaging shard means equally: under ``mean``, the batch is split into
    ``SHARDS`` = 2 contiguous shards as ``np.array_split`` does (sizes ⌈N/2⌉ and ⌊N/2⌋), each
    "device" computes its shard's mean, and the means are averaged (an all-reduce mean) as if the
    shards were equal. Right when N is even (or 1)."""

    fault = "shard means averaged equally"
    SHARDS = 2

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        if problem.reduction.name != "mean":
            return super().loss_and_grad(problem, config)
        losses, grads = super().per_example(problem, config, "vmap")
        shards = [s for s in np.array_split(np.arange(problem.batch.size), self.SHARDS) if len(s)]
        return _mean_of_group_means(problem, losses, grads, shards)


class MseSummedOverOutputs(_Faulty):
    """Squared error under ``mean`` divided by N instead of N·D: ``((f − y)**2).sum() / N``, i.e.
    each example's loss summed over its D outputs rather than averaged (§1.1, §1.2): L and ∇L are
    D times too large. Right when D = 1."""

    fault = "squared error mean divided by N, not N*D"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = super().loss_and_grad(problem, config)
        if problem.loss.name != "squared_error" or problem.reduction.name != "mean":
            return loss, grads
        d = problem.network.out_features
        return loss * d, {k: v * v.dtype.type(d) for k, v in grads.items()}


class _MLP(_Faulty):
    """The numpy backend's own forward and backward pass, written out once more with two hooks a
    subclass sets: ``operand`` (applied to both operands of every matrix product, forward and
    backward) and ``relu_slope_at_zero``. Per-example results are exact outer products; the batch
    results are Σ κ_i ℓ_i and Σ κ_i g_i of them."""

    relu_slope_at_zero = 0.0

    def operand(self, a: np.ndarray) -> np.ndarray:
        return a

    def _run(self, problem: Problem, dtype: np.dtype) -> PerExample:
        op = self.operand
        layers = problem.network.layers
        a = problem.batch.inputs.astype(dtype)
        inputs, outputs = [], []
        for k, layer in enumerate(layers):
            inputs.append(a)
            if isinstance(layer, Dense):
                z = op(a) @ op(problem.params[f"{k}.weight"].astype(dtype)).T
                a = z + problem.params[f"{k}.bias"].astype(dtype) if layer.bias else z
            else:
                a = ACTIVATIONS[layer.name][0](a)
            outputs.append(a)
        t, extra = loss_data(problem, a)
        loss_fn, loss_vjp = LOSSES[problem.loss.name]
        losses, g = loss_fn(a, t, *extra), loss_vjp(a, t, *extra)
        grads: Grads = {}
        for k in range(len(layers) - 1, -1, -1):
            layer, x = layers[k], inputs[k]
            if isinstance(layer, Dense):
                w = problem.params[f"{k}.weight"].astype(dtype)
                grads[f"{k}.weight"] = np.einsum("no,ni->noi", op(g), op(x))
                if layer.bias:
                    grads[f"{k}.bias"] = g
                g = op(g) @ op(w)
            else:
                assert isinstance(layer, Activation)
                slope = ACTIVATIONS[layer.name][1](x, outputs[k])
                if layer.name == "relu":
                    slope = np.where(x == 0, slope.dtype.type(self.relu_slope_at_zero), slope)
                g = g * slope
        return losses, {name: grads[name] for name in problem.network.param_shapes()}

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        if method not in self.per_example_methods():
            raise ValueError(f"unknown per-example method {method!r}")
        return self._run(problem, np.dtype(config.dtype))

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        losses, grads = self._run(problem, np.dtype(config.dtype))
        return _reduced(problem, losses, grads, problem.coefficients)


class ReluSlopeOneAtZero(_MLP):
    """relu'(0) = 1 (the convention of ``z >= 0``) instead of the spec's 0 (§1.5). Right
    wherever no relu pre-activation is exactly 0."""

    fault = "relu'(0) = 1"
    relu_slope_at_zero = 1.0


def tf32(a: np.ndarray) -> np.ndarray:
    """float32 rounded to TF32: 10 explicit mantissa bits (11 significant), to nearest with ties
    away from zero as NVIDIA's ``cvt.rna.tf32.f32`` does; the exponent range is float32's."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


class TF32InStrictMode(_MLP):
    """float32 matrix products with both operands rounded to TF32 (products exact, accumulated in
    float32): what cuBLAS does with ``allow_tf32 = True`` / JAX's default GPU matmul precision,
    here while the run claims strict IEEE float32 (§7.2). float64 is unaffected. Relative error
    ≈ 2⁻¹¹ per operand instead of 2⁻²⁴: right only where every operand is TF32-representable."""

    fault = "TF32 matmuls in strict float32"

    def operand(self, a: np.ndarray) -> np.ndarray:
        return tf32(a) if a.dtype == np.float32 else a


class SquaredErrorVJPWithout2(_Faulty):
    """A hand-written squared-error backward (f − y)/D instead of 2(f − y)/D: every gradient of a
    squared-error problem is half the true one, in ``loss_and_grad`` and ``per_example`` alike
    (so the backend agrees with itself, §2.13); losses are right."""

    fault = "squared-error VJP missing the factor 2"

    def _halved(self, problem: Problem, grads: Grads) -> Grads:
        if problem.loss.name != "squared_error":
            return grads
        return {k: v * v.dtype.type(0.5) for k, v in grads.items()}

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = super().loss_and_grad(problem, config)
        return loss, self._halved(problem, grads)

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        losses, grads = super().per_example(problem, config, method)
        return losses, self._halved(problem, grads)


class GeluTanhForGelu(_Faulty):
    """Asked for the exact GELU z Φ(z), computes the tanh approximation (``jax.nn.gelu``'s
    default, ``approximate=True``): every answer is that of the problem with each ``gelu`` layer
    replaced by ``gelu_tanh``. Values differ by up to ≈ 5·10⁻⁴ (§1.5)."""

    fault = "gelu computed as gelu_tanh"

    @staticmethod
    def _swapped(problem: Problem) -> Problem:
        layers = tuple(Activation("gelu_tanh") if isinstance(x, Activation) and x.name == "gelu"
                       else x for x in problem.network.layers)
        return replace(problem, network=Network(layers))

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        return super().loss_and_grad(self._swapped(problem), config)

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        return super().per_example(self._swapped(problem), config, method)


class PerExampleReversed(_Faulty):
    """``per_example`` returns ℓ_i in order but the gradients in reverse order (g_{N−1−i} at index
    i, as a stack-based loop would): every gradient is some example's, labelled as another's. Sums
    are unchanged (§2.13 holds); right when N = 1 or the gradients are symmetric."""

    fault = "per-example gradients in reverse order"

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        losses, grads = super().per_example(problem, config, method)
        return losses, {k: v[::-1].copy() for k, v in grads.items()}


def _torch_mse_sum_over_elements() -> Any:
    """PyTorch backend whose ``sum`` reduction of squared error is ``F.mse_loss(out, y,
    reduction="sum")`` itself, Σ_i Σ_d (f_id − y_id)² = D Σ ℓ_i, not divided by D (pitfalls #2:
    ``mse_loss`` reduces over elements, and ℓ_i is the mean over outputs, §1.2). Built on first
    use, so that importing this module does not need torch."""
    import torch.nn.functional as F

    from batchgrad_spec.backends import torch_backend as tb

    class TorchMseSumOverElements(tb.TorchBackend):
        name = "torch_mse_sum_over_elements"
        fault = "torch mse_loss(reduction='sum') taken as the sum of per-example losses"

        def versions(self) -> Mapping[str, str]:
            return {**super().versions(), "fault": self.fault}

        def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
            if problem.loss.name != "squared_error" or problem.reduction.name != "sum":
                return super().loss_and_grad(problem, config)
            with tb._strict(config):
                model = tb.build_model(problem, config)
                x, y, _ = tb._tensors(problem, config)
                loss = F.mse_loss(model(x), y, reduction="sum")  # Σ_i Σ_d, not Σ_i ℓ_i
                loss.backward()
                return float(loss.detach()), {n: tb._numpy(p.grad)
                                              for n, p in model.named_parameters()}

    return TorchMseSumOverElements()


class WrongShape(_Faulty):
    """The first parameter's gradient has an extra trailing axis: (*shape, 1) from
    ``loss_and_grad`` and (N, *shape, 1) from ``per_example``. Values are right."""

    fault = "gradient with an extra axis"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = super().loss_and_grad(problem, config)
        k = _first(grads)
        return loss, {**grads, k: grads[k][..., None]}

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        losses, grads = super().per_example(problem, config, method)
        k = _first(grads)
        return losses, {**grads, k: grads[k][..., None]}


class ReturnsNaN(_Faulty):
    """``loss_and_grad`` returns NaN as the first element of the first parameter's gradient."""

    fault = "NaN in a gradient"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = super().loss_and_grad(problem, config)
        k = _first(grads)
        bad = np.array(grads[k], copy=True)
        bad.flat[0] = np.nan
        return loss, {**grads, k: bad}


class Raises(_Faulty):
    """``loss_and_grad`` raises ``RuntimeError("boom")`` (a crash inside the framework)."""

    fault = "loss_and_grad raises"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        raise RuntimeError("boom")


class NotABackend:
    """Has a name, versions and loss_and_grad, but not devices, dtypes, per_example_methods or
    per_example: ``load_backend`` must refuse it, naming what is missing."""

    name = "not_a_backend"

    def versions(self) -> Mapping[str, str]:
        return {}

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        return batch_grad(problem)


mean_over_n_minus_1 = MeanOverNMinus1("mean_over_n_minus_1")
sequential_updates = SequentialUpdates("sequential_updates")
last_example_only = LastExampleOnly("last_example_only")
per_example_scaled = PerExampleScaled("per_example_scaled")
mutates_params = MutatesParams("mutates_params")
wrong_shape = WrongShape("wrong_shape")
returns_nan = ReturnsNaN("returns_nan")
raises = Raises("raises")
not_a_backend = NotABackend()
sum_instead_of_mean = SumInsteadOfMean("sum_instead_of_mean")
weighted_mean_over_n = WeightedMeanOverN("weighted_mean_over_n")
weights_ignored = WeightsIgnored("weights_ignored")
dropped_example = DroppedExample("dropped_example")
micro_batch_means = MicroBatchMeans("micro_batch_means")
uneven_shard_means = UnevenShardMeans("uneven_shard_means")
mse_summed_over_outputs = MseSummedOverOutputs("mse_summed_over_outputs")
squared_error_vjp_without_2 = SquaredErrorVJPWithout2("squared_error_vjp_without_2")
relu_slope_one_at_zero = ReluSlopeOneAtZero("relu_slope_one_at_zero")
gelu_tanh_for_gelu = GeluTanhForGelu("gelu_tanh_for_gelu")
per_example_reversed = PerExampleReversed("per_example_reversed")
tf32_in_strict_mode = TF32InStrictMode("tf32_in_strict_mode")

_LAZY: dict[str, Callable[[], Any]] = {"torch_mse_sum_over_elements": _torch_mse_sum_over_elements}
_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """Backends that need an optional framework, built when first asked for (PEP 562)."""
    if name in _LAZY:
        if name not in _built:
            _built[name] = _LAZY[name]()
        return _built[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the gallery: each classic bug, its backend here, and the property that catches it ---------
CH1 = "tests/test_ch1_definitions.py::"
CH2 = "tests/test_ch2_core.py::"
CH3 = "tests/test_ch3_losses.py::"


@dataclass(frozen=True)
class Bug:
    """One gallery entry: ``backend`` (an attribute of this module) reproduces ``bug``, and the
    property ``test`` of §``clause`` catches it on ``dtype`` (per-example ``method`` when the
    property takes one). ``needs`` names an optional framework the backend imports."""

    bug: str
    backend: str
    clause: str
    test: str
    dtype: str = "float64"
    method: str | None = None
    needs: str | None = None


MEAN = CH2 + "test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients"
SUM = CH2 + "test_gradient_of_the_summed_loss_is_the_sum_of_per_example_gradients"
PER_EXAMPLE = CH2 + "test_backend_per_example_gradients_match_the_reference"
SAME_THETA = CH2 + "test_every_per_example_gradient_is_taken_at_the_same_parameters"

GALLERY: tuple[Bug, ...] = (
    Bug("sum instead of mean", "sum_instead_of_mean", "2.1", MEAN),
    Bug("mean over N − 1", "mean_over_n_minus_1", "2.1", MEAN),
    Bug("gradient of only the last example", "last_example_only", "2.1", MEAN),
    Bug("a dropped example (off-by-one loop over the batch)", "dropped_example", "2.2", SUM),
    Bug("weights updated between examples", "sequential_updates", "2.5", SAME_THETA,
        method="vmap"),
    Bug("an optimizer step inside the gradient query (θ written in place)", "mutates_params",
        "2.5", SAME_THETA, method="vmap"),
    Bug("weighted mean divided by N instead of Σ c_i", "weighted_mean_over_n", "2.4",
        CH2 + "test_gradient_of_a_weighted_mean_is_the_normalised_weighted_sum"),
    Bug("per-example weights ignored", "weights_ignored", "2.3",
        CH2 + "test_gradient_of_a_weighted_sum_is_the_weighted_sum_of_gradients"),
    Bug("per-micro-batch normalisation (mean of micro-batch means)", "micro_batch_means", "2.1",
        MEAN),
    Bug("uneven-shard averaging (mean of shard means)", "uneven_shard_means", "2.1", MEAN),
    Bug("per-example gradients scaled by 1/N (κ_i g_i)", "per_example_scaled", "2.12",
        PER_EXAMPLE, method="vmap"),
    Bug("per-example gradients labelled with the wrong example", "per_example_reversed", "2.12",
        PER_EXAMPLE, method="vmap"),
    Bug("squared-error VJP missing the factor 2", "squared_error_vjp_without_2", "2.12",
        PER_EXAMPLE, method="vmap"),
    Bug("MSE `mean` divided by N instead of N·D", "mse_summed_over_outputs", "2.1",
        MEAN),
    Bug("PyTorch `mse_loss(reduction=\"sum\")` taken as Σ ℓ_i (D × too large)",
        "torch_mse_sum_over_elements", "2.2", SUM, needs="torch"),
    Bug("relu'(0) = 1", "relu_slope_one_at_zero", "1.5",
        CH1 + "test_relu_slope_at_zero_is_zero", method="vmap"),
    Bug("tanh-approximate GELU where the exact GELU is asked (jax.nn.gelu's default)",
        "gelu_tanh_for_gelu", "1.1", CH1 + "test_per_example_losses_match_the_reference",
        method="vmap"),
    Bug("TF32 matmuls in strict float32", "tf32_in_strict_mode", "2.1", MEAN,
        dtype="float32"),
    Bug("class-weighted cross-entropy `mean` divided by N instead of Σ w[y_i]",
        "class_weighted_mean_over_n", "3.3", CH3
        + "test_class_weighted_cross_entropy_mean_divides_by_the_weights_of_the_kept_labels"),
    Bug("ignored targets counted in the mean (`ignore_index` examples in the divisor)",
        "ignored_targets_counted", "3.4",
        CH3 + "test_ignored_rows_count_as_if_they_were_dropped_from_the_batch"),
    Bug("label smoothing's uniform term taken over ignored rows too (pytorch#73205)",
        "smoothing_over_ignored_rows", "3.5",
        CH3 + "test_label_smoothing_averages_its_uniform_term_over_the_kept_labels_only"),
)
"""The README's "Gallery of caught bugs", row by row; ``tests/meta/test_gallery.py`` checks it."""

PENDING: tuple[tuple[str, str], ...] = ()
"""Classic bugs that need features the reference does not have yet: no gallery backend. Empty
since chapter 5: the last one (a penalty per micro-batch) is ``faulty_accumulation`` now."""
