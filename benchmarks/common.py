"""What every benchmark section uses: timing, tables, the load average, deterministic problems.

Imported by ``benchmarks/bench.py`` (which puts the repository root on ``sys.path``) and its
section modules.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Callable

import numpy as np

from reference.activations import Activation
from reference.batch import Batch
from reference.contract import Backend
from reference.layers import Dense, Network
from reference.losses import Loss, Reduction
from reference.problem import Problem

__all__ = ["BUILTIN", "DTYPES", "TORCH_DEFAULT_THREADS", "available", "backend_object", "fmt_t",
           "load", "mlp", "section", "table", "timeit"]

BUILTIN = ("numpy", "torch", "jax")
TORCH_DEFAULT_THREADS = (__import__("torch").get_num_threads()
                         if importlib.util.find_spec("torch") else 1)
"""torch's own default, read before the torch backend (which sets 1 thread) is imported."""
DTYPES = ("float64", "float32")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def available(names: list[str]) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is not None]


def timeit(fn: Callable[[], object], *, min_time: float = 0.05, repeats: int = 5,
           warmup: int = 1) -> float:
    """Best (least disturbed) over ``repeats`` of the mean seconds per call, each repeat
    looping for ≥ ``min_time``."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    loops = max(1, int(min_time / once))
    results = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        results.append((time.perf_counter() - t0) / loops)
    return min(results)


def fmt_t(seconds: float) -> str:
    if seconds != seconds:  # NaN: not measured
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |")
    sys.stdout.flush()


def section(title: str) -> None:
    print(f"\n## {title}\n\n_{load()}_\n", flush=True)


def backend_object(name: str) -> Backend:
    from batchgrad_spec.harness import load as load_backend

    return load_backend(name)


def mlp(widths: list[int], act: str, n: int, *, loss: str = "squared_error",
        reduction: str = "mean", seed: int = 0) -> Problem:
    """A deterministic problem: Dense layers of the given widths, ``act`` between them."""
    rng = np.random.default_rng(seed)
    layers: list = []
    for i in range(len(widths) - 1):
        layers.append(Dense(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(Activation(act))
    net = Network(tuple(layers))
    params = {}
    for k, d in net.dense_layers():
        scale = 1.0 / np.sqrt(d.in_features)
        params[f"{k}.weight"] = rng.uniform(-scale, scale, (d.out_features, d.in_features))
        params[f"{k}.bias"] = rng.uniform(-scale, scale, d.out_features)
    x = rng.uniform(-2, 2, (n, widths[0]))
    if loss == "squared_error":
        y = rng.uniform(-2, 2, (n, widths[-1]))
    else:
        y = rng.integers(0, widths[-1], n)
    w = rng.uniform(0.1, 2, n) if reduction in ("weighted", "weighted_mean") else None
    return Problem(net, Loss(loss), Reduction(reduction), params, Batch(x, y, w))
