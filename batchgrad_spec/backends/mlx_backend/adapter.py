"""``MLXBackend``: the backend contract (spec chapter 8) answered by MLX (Apple's array framework;
its Linux CPU wheel ``mlx[cpu]``), as MLX users write training code.

* network: ``mlx.nn.Linear`` (weight (out, in), PyTorch's layout), ``mlx.nn.LayerNorm(eps=1e-5)``
  in an ``mlx.nn.Sequential`` whose parameters are replaced by the problem's (``model.update``);
  activations ``nn.relu``, ``mx.tanh``, ``nn.sigmoid``, ``nn.softplus``, ``nn.gelu`` (exact),
  ``nn.gelu_approx`` (tanh form), ``nn.leaky_relu(negative_slope=0.01)``, ``nn.elu(alpha=1.0)``.
* losses with their ``reduction=``: ``nn.losses.mse_loss`` (mean over N·D), ``cross_entropy``
  (integer labels, ``label_smoothing=``, probability targets), ``binary_cross_entropy(
  with_logits=True)``, ``huber_loss(delta=)``, ``gaussian_nll_loss(full=False)``; per-example
  losses are ``reduction="none"`` averaged over the outputs. weighted: Σ c_i ℓ_i (/ Σ c_i).
* gradients: ``nn.value_and_grad(model, loss)``; per-example: ``mx.vmap(mx.grad(ℓ))`` over the
  examples with the parameters shared ("vmap"), or one ``value_and_grad`` per example ("loop");
  accumulation: the gradient trees added with ``tree_map`` over micro-batches ("sum");
  ``train``: ``mlx.optimizers`` SGD (``weight_decay`` is L2), Adam (``bias_correction=True``:
  MLX's default is False) and AdamW, ``optimizer.update(model, grads)``.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from reference.activations import Activation
from reference.batch import Batch
from reference.contract import Config
from reference.layers import Dense
from reference.norms import NORM_EPS, LayerNorm
from reference.problem import Problem
from reference.types import Grads

__all__ = ["ACTIVATIONS", "CAPABILITIES", "MLXBackend", "backend"]

ACTIVATIONS: dict[str, Any] = {
    "identity": lambda z: z,
    "relu": nn.relu,
    "tanh": mx.tanh,
    "sigmoid": nn.sigmoid,
    "softplus": nn.softplus,
    "gelu": nn.gelu,
    "gelu_tanh": nn.gelu_approx,
    "leaky_relu": lambda z: nn.leaky_relu(z, negative_slope=0.01),
    "elu": lambda z: nn.elu(z, alpha=1.0),
}

CAPABILITIES = frozenset(
    {"layer:dense", "layer:layernorm"} | {f"activation:{a}" for a in ACTIVATIONS}
    | {f"loss:{n}" for n in ("squared_error", "softmax_cross_entropy", "bce_with_logits",
                             "huber", "gaussian_nll")}
    | {"loss:label_smoothing", "loss:soft_targets"}
    | {f"reduction:{r}" for r in ("mean", "sum", "weighted", "weighted_mean")}
)
"""No class weights or ignore_index (MLX's ``cross_entropy`` has per-example ``weights`` only),
no BatchNorm, Dropout or sequences in this adapter."""

DT = {"float64": mx.float64, "float32": mx.float32}


class _Act(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.fn = ACTIVATIONS[name]

    def __call__(self, x: mx.array) -> mx.array:
        return self.fn(x)


def _unsupported(problem: Problem) -> str | None:
    b, loss = problem.batch, problem.loss
    for layer in problem.network.layers:
        if not isinstance(layer, (Dense, Activation, LayerNorm)):
            return f"layer {type(layer).__name__} is not implemented by this adapter"
    if b.sequence or problem.reduction.name == "sequence_mean":
        return "sequence inputs are not implemented by this adapter"
    if loss.name == "softmax_cross_entropy" and (loss.class_weights is not None
                                                 or loss.ignore_index is not None):
        return "MLX's cross_entropy has no class weights or ignore_index"
    if loss.label_smoothing and b.targets.dtype.kind == "f":
        return "MLX's cross_entropy smooths integer labels only"
    return None


def _model(problem: Problem, dt: Any) -> nn.Sequential:
    layers: list[nn.Module] = []
    for layer in problem.network.layers:
        if isinstance(layer, Dense):
            layers.append(nn.Linear(layer.in_features, layer.out_features, bias=layer.bias))
        elif isinstance(layer, LayerNorm):
            layers.append(nn.LayerNorm(layer.features, eps=NORM_EPS))
        else:
            layers.append(_Act(layer.name))
    model = nn.Sequential(*layers)
    model.update(_params(problem, dt))
    return model


def _params(problem: Problem, dt: Any) -> dict[str, Any]:
    """The problem's θ as MLX's parameter tree of ``nn.Sequential`` ("layers.k.weight")."""
    flat = [(f"layers.{name}", mx.array(v, dtype=dt)) for name, v in problem.params.items()]
    return tree_unflatten(flat)


def _to_problem(tree: Any) -> Grads:
    return {k.removeprefix("layers."): np.array(v, copy=True) for k, v in tree_flatten(tree)}


def _data(problem: Problem, dt: Any) -> tuple[mx.array, mx.array, mx.array | None,
                                              mx.array | None]:
    b = problem.batch
    y = (mx.array(b.targets.astype(np.int32)) if b.targets.dtype.kind in "iu"
         else mx.array(b.targets, dtype=dt))
    var = None if b.variances is None else mx.array(b.variances, dtype=dt)
    c = None if b.weights is None else mx.array(b.weights, dtype=dt)
    return mx.array(b.inputs, dtype=dt), y, var, c


def _loss(problem: Problem, out: mx.array, y: mx.array, var: Any, reduction: str) -> mx.array:
    """The MLX loss with ``reduction=``; "none" gives ℓ_i (elementwise losses averaged over D)."""
    loss, L = problem.loss, nn.losses
    if loss.name == "softmax_cross_entropy":
        return L.cross_entropy(out, y, label_smoothing=loss.label_smoothing, reduction=reduction)
    if loss.name == "squared_error":
        if reduction != "none":
            total = L.mse_loss(out, y, reduction=reduction)
            return total / out.shape[-1] if reduction == "sum" else total
        return L.mse_loss(out, y, reduction="none").mean(-1)
    if loss.name == "bce_with_logits":
        per = L.binary_cross_entropy(out, y, with_logits=True, reduction="none")
    elif loss.name == "huber":
        per = L.huber_loss(out, y, delta=loss.delta, reduction="none")
    else:
        per = L.gaussian_nll_loss(out, y, var, full=False, reduction="none")
    per = per.mean(-1)
    return per if reduction == "none" else per.mean() if reduction == "mean" else per.sum()


def _reduced(problem: Problem, out: mx.array, y: mx.array, var: Any, c: Any) -> mx.array:
    name = problem.reduction.name
    if name in ("mean", "sum"):
        return _loss(problem, out, y, var, name)
    weighted = (c * _loss(problem, out, y, var, "none")).sum()
    return weighted / c.sum() if name == "weighted_mean" else weighted


def _squares(m: nn.Module) -> mx.array:
    """Σ‖θ‖² over the model's parameters (the L2 penalty's sum)."""
    return sum(mx.sum(mx.square(p)) for _, p in tree_flatten(m.trainable_parameters()))


class MLXBackend:
    name = "mlx"

    def versions(self) -> Mapping[str, str]:
        return {"mlx": importlib.metadata.version("mlx")}

    def devices(self) -> Sequence[str]:
        return ("cpu",)

    def dtypes(self) -> Sequence[str]:
        return ("float64", "float32")

    def per_example_methods(self) -> Sequence[str]:
        return ("vmap", "loop")

    def capabilities(self) -> Iterable[str]:
        return CAPABILITIES

    @staticmethod
    def _setup(problem: Problem, config: Config) -> Any:
        if config.device != "cpu" or config.precision != "strict":
            raise ValueError(f"mlx backend: computes on cpu in strict IEEE arithmetic, "
                             f"not {config}")
        why = _unsupported(problem)
        if why:
            raise ValueError(f"mlx backend: not supported: {why}")
        mx.set_default_device(mx.cpu)  # float64 runs on the CPU only
        return DT[config.dtype]

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        dt = self._setup(problem, config)
        model = _model(problem, dt)
        x, y, var, c = _data(problem, dt)
        loss, grads = nn.value_and_grad(model, lambda m: _reduced(problem, m(x), y, var, c))(model)
        return float(loss.item()), _to_problem(grads)

    def per_example(self, problem: Problem, config: Config,
                    method: str) -> tuple[np.ndarray, Grads]:
        dt = self._setup(problem, config)
        model = _model(problem, dt)
        x, y, var, _ = _data(problem, dt)
        if method == "vmap":
            def one(params: Any, d: dict[str, mx.array]) -> mx.array:
                model.update(params)
                v = d["v"][None] if "v" in d else None
                return _loss(problem, model(d["x"][None]), d["y"][None], v, "none")[0]

            data = {"x": x, "y": y} | ({} if var is None else {"v": var})
            losses, grads = mx.vmap(mx.value_and_grad(one), in_axes=(None, 0))(
                model.trainable_parameters(), data)
            mx.eval(losses, grads)
            return np.array(losses), _to_problem(grads)
        if method != "loop":
            raise ValueError(f"mlx backend: unknown per-example method {method!r}")
        values, rows = [], []
        for i in range(problem.batch.size):
            v = None if var is None else var[i:i + 1]

            def loss_i(m: nn.Module, i: int = i, v: Any = v) -> mx.array:
                return _loss(problem, m(x[i:i + 1]), y[i:i + 1], v, "none")[0]

            loss, g = nn.value_and_grad(model, loss_i)(model)
            values.append(loss.item())
            rows.append(_to_problem(g))
        return np.array(values), {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def accumulation_methods(self) -> Sequence[str]:
        return ("sum",)

    def accumulate(self, problem: Problem, config: Config, plan: Any,
                   method: str = "sum") -> Grads:
        """MLX's accumulation idiom: the gradient trees of the micro-batches added with
        ``tree_map`` (no update in between); ``loss_k * s_k + t_k (l2/2) Σ‖θ‖²``."""
        from reference.accumulation import micro_batches

        if method != "sum":
            raise ValueError(f"mlx backend: accumulator {method!r}; tree_map(add) sums")
        dt = self._setup(problem, config)
        model = _model(problem, dt)
        total = None
        for part, s, t in zip(micro_batches(problem, plan), plan.scales, plan.penalty_scales,
                              strict=True):
            x, y, var, c = _data(part, dt)

            def j(m: nn.Module, part: Problem = part, x: Any = x, y: Any = y, var: Any = var,
                  c: Any = c, s: float = s, t: float = t) -> mx.array:
                loss = _reduced(part, m(x), y, var, c) * s
                if t:
                    sq = _squares(m)
                    loss = loss + t * (plan.l2 / 2) * sq
                return loss

            _, g = nn.value_and_grad(model, j)(model)
            total = g if total is None else tree_map(mx.add, total, g)
        return _to_problem(total)

    def train(self, problem: Problem, config: Config, optimizer: Any,
              batches: Sequence[Batch]) -> Grads:
        dt = self._setup(problem, config)
        model = _model(problem, dt)
        o = optimizer
        if o.name == "sgd":
            opt = optim.SGD(learning_rate=o.lr, momentum=o.momentum,
                            weight_decay=o.weight_decay)
        elif o.name == "adam":
            opt = optim.Adam(learning_rate=o.lr, betas=list(o.betas), eps=o.eps,
                             bias_correction=True)
        else:
            opt = optim.AdamW(learning_rate=o.lr, betas=list(o.betas), eps=o.eps,
                              weight_decay=o.weight_decay, bias_correction=True)
        l2 = o.weight_decay if o.name == "adam" else 0.0
        for batch in batches:
            part = problem.with_batch(batch)
            x, y, var, c = _data(part, dt)

            def f(m: nn.Module, part: Problem = part, x: Any = x, y: Any = y, var: Any = var,
                  c: Any = c) -> mx.array:
                loss = _reduced(part, m(x), y, var, c)
                if l2:
                    sq = _squares(m)
                    loss = loss + (l2 / 2) * sq
                return loss

            _, g = nn.value_and_grad(model, f)(model)
            opt.update(model, g)
            mx.eval(model.parameters(), opt.state)
        return _to_problem(model.trainable_parameters())


backend = MLXBackend()
