"""Which elementary function is less accurate than the model assumes? (spec §7.1.4, Appendix A)

The tolerance of chapter 7 assumes that a float32 computation is correctly rounded in its basic
operations and that its elementary functions (exp, expm1, log, log1p, tanh, erf, rsqrt) are
within 4 ulp. Under that assumption a correct float32 backend never fails. A framework whose
kernel is less accurate fails clauses that have nothing to do with semantics — and that failure
is a finding about the kernel's *accuracy*, not a false alarm and not a semantic deviation.

``probe(backend, config)`` tells which: one small problem per activation, per loss and per
normalisation, each exercising one elementary function in isolation (a grid of inputs through
``Dense(1, 1) → σ → Dense(1, 1)`` with unit weights, or through one loss), compared through the
checked contract with the reference under the same tolerance as the chapters. A row above 1
names the function whose kernel breaks the model; every other row stays below 1. From the
command line::

    python -m batchgrad_spec.accuracy --backend SPEC [--dtype float32] [--device cpu]

prints the table (exit status 1 if a row exceeds 1). A clause failure in float32 points here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reference.activations import ACTIVATION_NAMES, Activation
from reference.batch import Batch
from reference.bounds import problem_tolerance
from reference.contract import (
    Backend,
    BackendError,
    Config,
    Undefined,
    checked_loss_and_grad,
    checked_per_example,
)
from reference.grads import batch_grad, per_example_grads
from reference.layers import Dense, Network
from reference.losses import LOSS_NAMES, Loss, Reduction
from reference.norms import LayerNorm
from reference.problem import Problem

from .harness import ACCURACY_HINT, load, mismatch_report

__all__ = ["ELEMENTARY", "HINT", "Probe", "ProbeResult", "main", "probe", "probes"]

GRID = np.linspace(-6.0, 6.0, 49)
"""The inputs of every probe: through every activation's interesting range, kinks included."""

ELEMENTARY = {
    "identity": "—", "relu": "—", "leaky_relu": "—", "tanh": "tanh", "sigmoid": "exp",
    "softplus": "exp, log1p", "gelu": "erf, exp", "gelu_tanh": "tanh", "elu": "expm1, exp",
    "squared_error": "—", "huber": "—", "softmax_cross_entropy": "exp, log",
    "bce_with_logits": "exp, log1p", "gaussian_nll": "log", "layernorm": "rsqrt",
}
"""What each probe exercises beyond correctly rounded arithmetic."""

HINT = ACCURACY_HINT
"""The line a float32 comparison failure ends with (``harness.Check.close``)."""


@dataclass(frozen=True)
class Probe:
    name: str
    problem: Problem


@dataclass(frozen=True)
class ProbeResult:
    """The largest error/tolerance of a probe over ℓ_i, g_i, L and ∇L, or why it did not run."""

    name: str
    elementary: str
    ratio: float | None
    what: str

    def line(self) -> str:
        shown = "not run" if self.ratio is None else f"{self.ratio:10.3g}"
        flag = "  <- beyond the model" if self.ratio is not None and self.ratio > 1 else ""
        return f"{self.name:<22}{self.elementary:<12}{shown:>10}  {self.what}{flag}"


def _column(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, 1)


def probes() -> list[Probe]:
    """One problem per activation, per loss, and LayerNorm (N = 49 inputs in [−6, 6])."""
    n = len(GRID)
    out = []
    for name in ACTIVATION_NAMES:
        net = Network((Dense(1, 1, bias=False), Activation(name), Dense(1, 1, bias=False)))
        params = {"0.weight": np.ones((1, 1)), "2.weight": np.ones((1, 1))}
        batch = Batch(_column(GRID), np.zeros((n, 1)))
        out.append(Probe(name, Problem(net, Loss("squared_error"), Reduction("sum"), params,
                                       batch)))
    for name in LOSS_NAMES:
        width = 3 if name == "softmax_cross_entropy" else 1
        net = Network((Dense(1, width),))
        params = {"0.weight": np.linspace(1.0, -1.0, width).reshape(width, 1) if width > 1
                  else np.ones((1, 1)), "0.bias": np.zeros(width)}
        if name == "softmax_cross_entropy":
            targets = np.arange(n) % 3
        elif name == "bce_with_logits":
            targets = np.full((n, 1), 0.25)
        else:
            targets = np.full((n, 1), 0.5)
        variances = np.full((n, 1), 0.75) if name == "gaussian_nll" else None
        out.append(Probe(name, Problem(net, Loss(name), Reduction("sum"), params,
                                       Batch(_column(GRID), targets, variances=variances))))
    net = Network((Dense(1, 2), LayerNorm(2), Dense(2, 1, bias=False)))
    params = {"0.weight": np.array([[1.0], [0.5]]), "0.bias": np.array([0.0, 0.25]),
              "1.weight": np.ones(2), "1.bias": np.zeros(2), "2.weight": np.ones((1, 2))}
    out.append(Probe("layernorm", Problem(net, Loss("squared_error"), Reduction("sum"), params,
                                          Batch(_column(GRID), np.zeros((n, 1))))))
    return out


def _largest(results: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> tuple[float, str]:
    worst, what = 0.0, ""
    for label, observed, expected, tol in results:
        _, ratio = mismatch_report(observed, expected, tol)
        if ratio > worst:
            worst, what = ratio, label
    return worst, what


def run_probe(backend: Backend, config: Config, p: Probe, method: str) -> ProbeResult:
    problem = p.problem.rounded(config.dtype)
    try:
        loss, grads = checked_loss_and_grad(backend, problem, config)
        losses, per_ex = checked_per_example(backend, problem, config, method)
    except (BackendError, Undefined) as exc:
        return ProbeResult(p.name, ELEMENTARY[p.name], None, f"{type(exc).__name__}: {exc}")
    tol = problem_tolerance(problem, config.dtype, config.precision)
    ref_loss, ref_grads = batch_grad(problem)
    ref_losses, ref_per_ex = per_example_grads(problem)
    pairs = [("ℓ_i", losses, ref_losses, tol.losses),
             ("L", np.asarray(loss), np.asarray(ref_loss), np.asarray(tol.loss))]
    pairs += [(f"g_i[{k!r}]", per_ex[k], ref_per_ex[k], tol.grads[k]) for k in ref_per_ex]
    pairs += [(f"∇L[{k!r}]", grads[k], ref_grads[k], tol.batch_grads[k]) for k in ref_grads]
    worst, what = _largest(pairs)
    return ProbeResult(p.name, ELEMENTARY[p.name], worst, what)


def probe(backend: Backend, config: Config, method: str | None = None) -> list[ProbeResult]:
    """Every probe against ``backend`` at ``config`` (per-example ``method``: the backend's
    first by default)."""
    m = method or next(iter(backend.per_example_methods()))
    return [run_probe(backend, config, p, m) for p in probes()]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m batchgrad_spec.accuracy", description=__doc__
                                 .split("\n\n")[0])
    ap.add_argument("--backend", required=True, help="a built-in name or module:attribute")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="strict")
    ap.add_argument("--method", default=None, help="per-example method (default: the first)")
    args = ap.parse_args(argv)
    try:
        backend = load(args.backend)
    except BackendError as exc:
        print(f"--backend {args.backend}: {exc}", file=sys.stderr)
        return 4
    config = Config(args.device, args.dtype, args.precision)
    rows = probe(backend, config, args.method)
    print(f"accuracy probes of {backend.name} on {config} (largest error/tolerance; the model "
          f"allows 1):")
    print(f"{'probe':<22}{'exercises':<12}{'ratio':>10}  where")
    for r in rows:
        print(r.line())
    beyond = [r.name for r in rows if r.ratio is not None and r.ratio > 1]
    if beyond:
        print(f"beyond the model: {', '.join(beyond)} — a kernel less accurate than §7.1.4 "
              f"assumes (a finding about accuracy; report it with this table)")
    return 1 if beyond else 0


if __name__ == "__main__":
    raise SystemExit(main())
