"""A third-party backend: HIPS autograd, plugged in only through ``--backend module:attribute``.

    python -m pytest --backend examples.autograd_backend:backend

This module is what a framework author writes to check a framework against the specification
(guide: ``spec/appendix-a-writing-a-backend.md``). It is *not* a built-in
(``batchgrad_spec/harness.py``
does not know it): the suite loads it by name like any other plugged-in backend (spec §8.2).

autograd (https://github.com/HIPS/autograd) differentiates code written with ``autograd.numpy``;
it has no layers or losses of its own, so the network is written here with its array ops, and
what is tested is autograd's reverse mode (its VJPs of ``dot``, ``einsum``, products, ``tanh``,
``logaddexp``, indexing, ``scipy.special.erf``/``expit``/``logsumexp``, …) and numpy's arithmetic
in the requested dtype:

* forward: Dense ``z = a Wᵀ + b`` with ``np.dot``; activations as frameworks write them (exact
  GELU ``½z(1 + erf(z/√2))``, which needs ``autograd.scipy.special.erf``, so **scipy is a
  dependency**; sigmoid ``scipy.special.expit``; softplus ``logaddexp(0, z)``);
* losses: per-example squared error (mean over the D outputs) and softmax cross-entropy
  ``logsumexp(z) − z_y``; reductions ``mean``/``sum``/``weighted``/``weighted_mean`` of spec §1.2;
* ``loss_and_grad``: ``autograd.value_and_grad`` of the reduced loss;
* ``per_example(method="vmap")``: vectorised per-example gradients by the standard trick: give
  every example its own copy of θ (arrays with a leading batch axis, ``einsum`` instead of
  ``dot``), and differentiate Σ_i ℓ_i(θ_i) with respect to the copies; its gradient for copy i is
  ∇ℓ_i(θ) = g_i, in one backward pass (``autograd.grad_and_aux``);
* ``per_example(method="loop")``: one ``value_and_grad`` per example.

Two autograd behaviours this adapter works around (both found while writing it; see the guide):

* ``np.maximum(z, 0.0)`` as relu has slope ½ at z = 0: autograd's VJP of ``maximum`` splits
  the cotangent evenly between tied arguments. The spec says relu'(0) = 0 (§1.5), what PyTorch
  and JAX use; with ``maximum`` this backend fails §1.5. relu here is ``z * (z > 0)``.
* some VJPs promote float32 cotangents to float64 under NumPy ≥ 2: ``np.mean``'s divides by the
  repetition count as an ``np.int64`` (NEP 50: float32 / int64 is float64), ``np.where``'s and
  ``np.maximum``'s build float64 zeros or masks. From there on the "float32" backward pass runs
  in float64, and it does not show: ``np.dot``'s VJP casts its result back to the operand's
  dtype, so the gradients come back float32. Means are therefore written as ``np.sum(x) / n``
  with a Python int ``n``, and relu as a product with a mask; instrumenting autograd's
  ``backward_pass`` confirms every cotangent of a float32 run is float32, for every activation,
  loss, reduction and method. Each answer is also checked to come back in the dtype asked for.

autograd's VJP of ``tanh`` is g / cosh(x)², which overflows to g / inf = 0 — the right limit —
for |x| ≳ 45 (float32) or 355 (float64); the backend's calls run under
``np.errstate(over="ignore")`` so that this expected overflow does not warn. A NaN or inf that
reached an answer would still be reported by the contract (spec §8.3).
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import autograd.numpy as anp
import numpy as np
from autograd import grad_and_aux, value_and_grad
from autograd.scipy.special import erf, expit, logsumexp

from reference.contract import Config
from reference.layers import Dense
from reference.problem import Problem

Arrays = dict[str, Any]

SQRT_HALF = math.sqrt(0.5)
GELU_TANH_K = math.sqrt(2.0 / math.pi)
GELU_TANH_C = 0.044715


def relu(z: Any) -> Any:
    """max(z, 0) with slope 0 at z = 0 (spec §1.5): z times the constant mask z > 0, whose VJP
    g ⊙ mask stays in z's dtype. ``anp.maximum(z, 0.0)`` would give slope ½ at 0, and
    ``anp.where(z > 0, z, 0.0)`` a float64 cotangent (its VJP pads with ``np.zeros``)."""
    return z * (z > 0)


ACTIVATIONS: dict[str, Callable[[Any], Any]] = {
    "identity": lambda z: z,
    "relu": relu,
    "tanh": anp.tanh,
    "sigmoid": expit,
    "softplus": lambda z: anp.logaddexp(0.0, z),
    "gelu": lambda z: 0.5 * z * (1.0 + erf(z * SQRT_HALF)),
    "gelu_tanh": lambda z: 0.5 * z * (1.0 + anp.tanh(GELU_TANH_K * (z + GELU_TANH_C * z**3))),
}


def forward(problem: Problem, params: Arrays, x: Any, *, per_example_params: bool) -> Any:
    """f_θ(x) for the batch x (N, n_in). With ``per_example_params`` every array of ``params``
    has a leading batch axis (example i uses θ_i): ``einsum`` replaces ``dot``."""
    a = x
    for k, layer in enumerate(problem.network.layers):
        if isinstance(layer, Dense):
            w = params[f"{k}.weight"]
            a = anp.einsum("noi,ni->no", w, a) if per_example_params else anp.dot(a, w.T)
            if layer.bias:
                a = a + params[f"{k}.bias"]
        else:
            a = ACTIVATIONS[layer.name](a)
    return a


def per_example_losses(problem: Problem, out: Any, y: np.ndarray) -> Any:
    """ℓ_i (N,): squared error averaged over the D outputs, or softmax cross-entropy (§1.1)."""
    if problem.loss.name == "squared_error":
        return anp.sum((out - y) ** 2, axis=1) / out.shape[1]  # not anp.mean: see above
    return logsumexp(out, axis=1) - out[np.arange(out.shape[0]), y]


def reduce(problem: Problem, losses: Any, c: np.ndarray | None) -> Any:
    """L = Σ κ_i ℓ_i for the problem's reduction (§1.2)."""
    name = problem.reduction.name
    if name == "mean":
        return anp.sum(losses) / losses.shape[0]
    if name == "sum":
        return anp.sum(losses)
    assert c is not None
    weighted = anp.sum(c * losses)
    return weighted / anp.sum(c) if name == "weighted_mean" else weighted


def _arrays(problem: Problem, dtype: np.dtype) -> tuple[Arrays, np.ndarray, np.ndarray,
                                                       np.ndarray | None]:
    """θ, inputs, targets and weights cast to ``dtype`` (integer labels stay integers)."""
    b = problem.batch
    params = {k: v.astype(dtype) for k, v in problem.params.items()}
    y = b.targets if problem.loss.name == "softmax_cross_entropy" else b.targets.astype(dtype)
    c = None if b.weights is None else b.weights.astype(dtype)
    return params, b.inputs.astype(dtype), y, c


def _same_dtype(dtype: np.dtype, **arrays: Any) -> None:
    """Every answer must have been computed in ``dtype``, not promoted on the way."""
    for what, a in arrays.items():
        if np.asarray(a).dtype != dtype:
            raise TypeError(f"autograd returned {what} as {np.asarray(a).dtype}, asked for "
                            f"{dtype}: some operation promoted the computation")


def _expected_overflow(method: Any) -> Any:
    """Run ``method`` with numpy's overflow warning off (the tanh VJP above)."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(over="ignore"):
            return method(*args, **kwargs)

    return run


class AutogradBackend:
    name = "autograd"

    def versions(self) -> Mapping[str, str]:
        return {lib: importlib.metadata.version(lib) for lib in ("autograd", "numpy", "scipy")}

    def devices(self) -> Sequence[str]:
        return ("cpu",)

    def dtypes(self) -> Sequence[str]:
        return ("float64", "float32")

    def per_example_methods(self) -> Sequence[str]:
        return ("vmap", "loop")

    def capabilities(self) -> tuple[str, ...]:
        """What this adapter implements (spec §8.6): Dense layers, the seven activations of
        ``ACTIVATIONS``, squared error and cross-entropy without options, the four reductions
        of ``reduce``. The suite draws nothing else for it and skips what needs more."""
        return ("layer:dense", *(f"activation:{a}" for a in ACTIVATIONS),
                "loss:squared_error", "loss:softmax_cross_entropy",
                "reduction:mean", "reduction:sum", "reduction:weighted",
                "reduction:weighted_mean")

    @staticmethod
    def _dtype(config: Config) -> np.dtype:
        if config.device != "cpu" or config.precision != "strict":
            raise ValueError(f"autograd backend: computes on cpu in strict IEEE arithmetic, "
                             f"not {config}")
        return np.dtype(config.dtype)

    @_expected_overflow
    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Arrays]:
        dtype = self._dtype(config)
        params, x, y, c = _arrays(problem, dtype)

        def batch_loss(theta: Arrays) -> Any:
            out = forward(problem, theta, x, per_example_params=False)
            return reduce(problem, per_example_losses(problem, out, y), c)

        loss, grads = value_and_grad(batch_loss)(params)
        _same_dtype(dtype, loss=loss, **grads)
        return float(loss), grads

    @_expected_overflow
    def per_example(self, problem: Problem, config: Config,
                    method: str) -> tuple[np.ndarray, Arrays]:
        dtype = self._dtype(config)
        params, x, y, _ = _arrays(problem, dtype)
        n = problem.batch.size
        if method == "vmap":
            copies = {k: np.repeat(v[None], n, axis=0) for k, v in params.items()}

            def total(theta: Arrays) -> tuple[Any, Any]:
                out = forward(problem, theta, x, per_example_params=True)
                losses = per_example_losses(problem, out, y)
                return anp.sum(losses), losses  # ∂/∂θ_i of Σ_j ℓ_j(θ_j) is g_i

            grads, losses = grad_and_aux(total)(copies)
        elif method == "loop":
            rows = []
            for i in range(n):
                def one(theta: Arrays, i: int = i) -> Any:
                    out = forward(problem, theta, x[i:i + 1], per_example_params=False)
                    return per_example_losses(problem, out, y[i:i + 1])[0]

                rows.append(value_and_grad(one)(params))
            losses = np.stack([loss for loss, _ in rows])
            grads = {k: np.stack([g[k] for _, g in rows]) for k in params}
        else:
            raise ValueError(f"autograd backend: unknown per-example method {method!r}; "
                             f"it has {self.per_example_methods()}")
        _same_dtype(dtype, losses=losses, **grads)
        return np.asarray(losses), grads


backend = AutogradBackend()
