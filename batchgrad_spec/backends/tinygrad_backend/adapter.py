"""``TinygradBackend``: the backend contract (spec chapter 8) answered by tinygrad: gradients by
``Tensor.gradient`` / ``backward()``, per-example gradients by per-example parameter copies
("vmap": tinygrad has no vmap; Appendix A §6's trick) or a loop, accumulation into ``.grad``
over micro-batches, and ``tinygrad.nn.optim`` SGD, Adam and AdamW for ``train``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tinygrad
from tinygrad import Context, Device, Tensor, nn

from reference.batch import Batch
from reference.contract import Config
from reference.problem import Problem
from reference.types import Grads

from .model import ACTIVATIONS, DTYPES, forward, per_example_losses, reduced_loss, targets
from .model import unsupported as _unsupported

__all__ = ["CAPABILITIES", "TinygradBackend", "backend"]

CAPABILITIES = frozenset(
    {"layer:dense", "layer:layernorm"} | {f"activation:{a}" for a in ACTIVATIONS}
    | {"loss:squared_error", "loss:softmax_cross_entropy", "loss:bce_with_logits",
       "loss:class_weights", "loss:ignore_index", "loss:label_smoothing", "loss:soft_targets"}
    | {f"reduction:{r}" for r in ("mean", "sum", "weighted", "weighted_mean")}
)
"""What this adapter implements (spec §8.6): no BatchNorm, Dropout or sequences; no huber or
gaussian_nll (tinygrad has neither)."""


def _default_float(dtype: Any) -> Context:
    """``Context(DEFAULT_FLOAT=...)``: tinygrad's default float set to the run's dtype, the
    tinygrad way to compute in float64 (``DEFAULT_FLOAT=float64`` in the environment); an
    optimiser's learning rate is stored in at least the default float."""
    return Context(DEFAULT_FLOAT=dtype.name)


class TinygradBackend:
    name = "tinygrad"

    def versions(self) -> Mapping[str, str]:
        import importlib.metadata

        return {"tinygrad": importlib.metadata.version("tinygrad"),
                "tinygrad device": str(Device.DEFAULT)}

    def devices(self) -> Sequence[str]:
        return ("cpu",)

    def dtypes(self) -> Sequence[str]:
        return ("float64", "float32")

    def per_example_methods(self) -> Sequence[str]:
        return ("vmap", "loop")

    def capabilities(self) -> Iterable[str]:
        return CAPABILITIES

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _setup(problem: Problem, config: Config) -> Any:
        if config.device != "cpu" or config.precision != "strict":
            raise ValueError(f"tinygrad backend: computes on cpu in strict IEEE arithmetic, "
                             f"not {config}")
        why = _unsupported(problem)
        if why:
            raise ValueError(f"tinygrad backend: not supported: {why}")
        return DTYPES[config.dtype]

    @staticmethod
    def _params(problem: Problem, dt: Any, lead: int = 0) -> dict[str, Tensor]:
        out = {}
        for k, v in problem.params.items():
            a = np.repeat(v[None], lead, axis=0) if lead else v
            out[k] = Tensor(np.ascontiguousarray(a, dtype=np.dtype(dt.fmt)), dtype=dt)
        return out

    @staticmethod
    def _weights(problem: Problem, dt: Any) -> Tensor | None:
        w = problem.batch.weights
        return None if w is None else Tensor(w.astype(np.dtype(dt.fmt)), dtype=dt)

    # -- the contract ------------------------------------------------------------------------
    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        dt = self._setup(problem, config)
        with _default_float(dt):
            params = self._params(problem, dt)
            x = Tensor(problem.batch.inputs.astype(np.dtype(dt.fmt)), dtype=dt)
            loss = reduced_loss(problem, forward(problem, params, x), targets(problem, dt),
                                self._weights(problem, dt))
            names = list(params)
            grads = loss.gradient(*[params[n] for n in names])
            return float(loss.numpy()), {n: g.numpy() for n, g in zip(names, grads, strict=True)}

    def per_example(self, problem: Problem, config: Config,
                    method: str) -> tuple[np.ndarray, Grads]:
        dt = self._setup(problem, config)
        n = problem.batch.size
        x_np = problem.batch.inputs.astype(np.dtype(dt.fmt))
        with _default_float(dt):
            if method == "vmap":  # per-example copies: ∂/∂θ_i of Σ_j ℓ_j(θ_j) is g_i
                params = self._params(problem, dt, lead=n)
                out = forward(problem, params, Tensor(x_np, dtype=dt), copies=True)
                losses = per_example_losses(problem, out, targets(problem, dt))
                names = list(params)
                grads = losses.sum().gradient(*[params[k] for k in names])
                return losses.numpy(), {k: g.numpy() for k, g in zip(names, grads, strict=True)}
            if method != "loop":
                raise ValueError(f"tinygrad backend: unknown per-example method {method!r}")
            rows, values = [], []
            for i in range(n):
                one = problem.with_batch(problem.batch.take([i]))
                params = self._params(one, dt)
                loss = per_example_losses(one, forward(one, params, Tensor(x_np[i:i + 1],
                                                                           dtype=dt)),
                                          targets(one, dt))[0]
                names = list(params)
                grads = loss.gradient(*[params[k] for k in names])
                values.append(float(loss.numpy()))
                rows.append({k: g.numpy() for k, g in zip(names, grads, strict=True)})
            return np.array(values), {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def accumulation_methods(self) -> Sequence[str]:
        return ("sum",)

    def accumulate(self, problem: Problem, config: Config, plan: Any,
                   method: str = "sum") -> Grads:
        """``backward()`` per micro-batch, tinygrad adding into each parameter's ``.grad``: a
        summing accumulator (spec §5.5); ``loss_k * s_k + t_k (l2/2) Σ‖θ‖²`` at the same θ."""
        from reference.accumulation import micro_batches

        if method != "sum":
            raise ValueError(f"tinygrad backend: accumulator {method!r}; .grad sums ('sum')")
        dt = self._setup(problem, config)
        with _default_float(dt):
            params = self._params(problem, dt)
            for t in params.values():
                t.requires_grad = True
            for part, s, t in zip(micro_batches(problem, plan), plan.scales,
                                  plan.penalty_scales, strict=True):
                x = Tensor(part.batch.inputs.astype(np.dtype(dt.fmt)), dtype=dt)
                loss = reduced_loss(part, forward(part, params, x), targets(part, dt),
                                    self._weights(part, dt)) * s
                if t:
                    penalty = sum((p.square().sum() for p in params.values()),
                                  Tensor(0.0, dtype=dt))
                    loss = loss + t * (plan.l2 / 2) * penalty
                loss.backward()
            return {k: p.grad.numpy() for k, p in params.items()}

    def train(self, problem: Problem, config: Config, optimizer: Any,
              batches: Sequence[Batch]) -> Grads:
        """One ``tinygrad.nn.optim`` step per batch (``Tensor.train()`` mode): SGD (its
        ``weight_decay`` is L2 in the gradient), Adam, AdamW (decoupled ``weight_decay``);
        tinygrad's Adam has no L2, so it is added to the loss for "adam"."""
        dt = self._setup(problem, config)
        with _default_float(dt), Tensor.train():
            params = self._params(problem, dt)
            names = list(params)
            for p in params.values():
                p.requires_grad = True
            plist = [params[k] for k in names]
            o = optimizer
            if o.name == "sgd":
                opt = nn.optim.SGD(plist, lr=o.lr, momentum=o.momentum,
                                   weight_decay=o.weight_decay)
            elif o.name == "adam":
                opt = nn.optim.Adam(plist, lr=o.lr, b1=o.betas[0], b2=o.betas[1], eps=o.eps)
            else:
                opt = nn.optim.AdamW(plist, lr=o.lr, b1=o.betas[0], b2=o.betas[1], eps=o.eps,
                                     weight_decay=o.weight_decay)
            for batch in batches:
                part = problem.with_batch(batch)
                opt.zero_grad()
                x = Tensor(batch.inputs.astype(np.dtype(dt.fmt)), dtype=dt)
                loss = reduced_loss(part, forward(part, params, x), targets(part, dt),
                                    self._weights(part, dt))
                if o.name == "adam" and o.weight_decay:
                    loss = loss + (o.weight_decay / 2) * sum(
                        (p.square().sum() for p in plist), Tensor(0.0, dtype=dt))
                loss.backward()
                opt.step()
            return {k: params[k].numpy() for k in names}


backend = TinygradBackend()
_ = tinygrad  # the package is imported for its version and device selection
