"""Section b: the cost of a new shape, per backend, each configuration in a fresh process.

The first call of a process, the steady state, the first call on a new shape that fits the same
jax bucket, and on a shape that needs a new bucket; jax with buckets and no persistent cache (a
real compilation), with a cold and with a warm persistent cache, and with
``BATCHGRAD_JAX_BUCKETS=0`` (a compilation per shape). The worker is ``bench.py
--newshape-worker BACKEND``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import backend_object, fmt_t, mlp, section, table, timeit
from reference.contract import Config, checked_loss_and_grad, checked_per_example

__all__ = ["SHAPES", "newshape_worker", "section_b"]

BENCH = Path(__file__).with_name("bench.py")

SHAPES = {
    "first": ([8, 16, 16, 4], "gelu", 8, "squared_error", "mean"),
    "same bucket": ([5, 7, 3], "relu", 3, "softmax_cross_entropy", "sum"),
    "new bucket": ([32, 32, 32], "tanh", 32, "squared_error", "mean"),
}


def newshape_worker(name: str) -> None:
    """Run in a fresh process: print one JSON object of timings (seconds)."""
    t0 = time.perf_counter()
    b = backend_object(name)
    res: dict[str, Any] = {"import_s": time.perf_counter() - t0}
    cfg = Config("cpu", "float64")
    calls = {
        "loss_and_grad": lambda p: checked_loss_and_grad(b, p, cfg),
        "vmap": lambda p: checked_per_example(b, p, cfg, "vmap"),
        "loop": lambda p: checked_per_example(b, p, cfg, "loop"),
    }
    for method, call in calls.items():
        r = {}
        for label, (w, act, n, loss, red) in SHAPES.items():
            p = mlp(w, act, n, loss=loss, reduction=red)
            t0 = time.perf_counter()
            call(p)
            r[label] = time.perf_counter() - t0
            r[label + " steady"] = timeit(lambda p=p, call=call: call(p), min_time=0.02,
                                          repeats=3, warmup=0)
        res[method] = r
    if name == "jax":
        res["traces"] = b.trace_counts()
    print(json.dumps(res))


def section_b(backends: list[str]) -> dict[str, Any]:
    section("b. The cost of a new shape (float64, CPU; each configuration in a fresh process)")
    shapes = "; ".join(f"{k}: widths {w} {act}, N={n}, {loss}"
                       for k, (w, act, n, loss, _) in SHAPES.items())
    print(f"Shapes: {shapes}.\n")
    configs: list[tuple[str, str, dict]] = []
    for name in backends:
        if name != "jax":
            configs.append((name, "", {}))
    if "jax" in backends:
        cache = tempfile.mkdtemp(prefix="batchgrad-bench-jax-cache-")
        configs += [
            ("jax", "buckets, no persistent cache (compiles)",
             {"BATCHGRAD_JAX_CACHE": "0"}),
            ("jax", "buckets, cold persistent cache (compiles, writes)",
             {"BATCHGRAD_JAX_CACHE": cache}),
            ("jax", "buckets, warm persistent cache (loads)", {"BATCHGRAD_JAX_CACHE": cache}),
            ("jax", "BATCHGRAD_JAX_BUCKETS=0 (a compilation per shape)",
             {"BATCHGRAD_JAX_CACHE": "0", "BATCHGRAD_JAX_BUCKETS": "0"}),
        ]
    rows, results = [], {}
    for name, label, env in configs:
        proc = subprocess.run([sys.executable, str(BENCH), "--newshape-worker", name],
                              env={**os.environ, **env}, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            print(f"{name} {label}: worker failed:\n{proc.stderr[-2000:]}")
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results[f"{name} {label}".strip()] = res
        for method in ("loss_and_grad", "vmap", "loop"):
            r = res[method]
            rows.append([name, label, method, fmt_t(r["first"]), fmt_t(r["first steady"]),
                         fmt_t(r["same bucket"]), fmt_t(r["same bucket steady"]),
                         fmt_t(r["new bucket"]), fmt_t(r["new bucket steady"])])
        if "traces" in res:
            rows.append([name, label, "traced programs", str(sum(res["traces"].values())),
                         "", "", "", "", ""])
    table(["backend", "configuration", "call", "first call of process", "steady",
           "new shape (same bucket)", "steady", "new bucket", "steady"], rows)
    return results
