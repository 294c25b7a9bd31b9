"""Section c: the reference's ``per_example_grads`` against ``torch.func.vmap(torch.func.grad(ℓ))``.

The same network and batch (float64, CPU), widths × batch sizes, depth 2 (Dense(w, w), act,
Dense(w, w)), squared error. Timed for torch: the vmap(grad) call alone, on tensors and a
parameter dict prepared beforehand (no model construction, no numpy conversion, as a torch user
would call it in a training loop); for the reference: ``per_example_grads(problem)`` from the
problem's numpy arrays (nothing to convert), also in a fresh process with one BLAS thread (the
worker is ``bench.py --reference-worker JSON``). Also shown: the torch adapter's whole
``per_example(method="vmap")`` (builds the model, converts in and out).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import TORCH_DEFAULT_THREADS, fmt_t, mlp, section, table, timeit
from reference.contract import Config
from reference.grads import per_example_grads

__all__ = ["reference_worker", "section_c"]

BENCH = Path(__file__).with_name("bench.py")


def reference_worker(spec: str) -> None:
    """Run in a fresh process (OPENBLAS_NUM_THREADS=1 set by the parent): per_example_grads."""
    widths, batches, acts, min_time, repeats = json.loads(spec)
    out = {}
    for act in acts:
        for w in widths:
            for n in batches:
                p = mlp([w, w, w], act, n)
                out[f"{act}-w{w}-n{n}"] = timeit(lambda p=p: per_example_grads(p),
                                                 min_time=min_time, repeats=repeats)
    print(json.dumps(out))


def section_c(widths: list[int], batches: list[int], acts: list[str], min_time: float,
              repeats: int) -> dict[str, Any]:
    import torch

    from batchgrad_spec.backends import torch_backend as tb

    threads = sorted({1, TORCH_DEFAULT_THREADS})
    backend_threads = getattr(tb, "_THREADS", 0) or TORCH_DEFAULT_THREADS  # what the suite uses
    section(f"c. Reference per_example_grads vs torch.func.vmap(grad) (float64, CPU, depth 2: "
            f"Dense(w, w), act, Dense(w, w); torch threads {' and '.join(map(str, threads))})")
    cfg = Config("cpu", "float64")
    one_blas = {}
    spec = json.dumps([widths, batches, acts, min_time, repeats])
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH), "--reference-worker", spec], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        one_blas = json.loads(proc.stdout.strip().splitlines()[-1])
    results, rows = {}, []
    for act in acts:
        for w in widths:
            for n in batches:
                p = mlp([w, w, w], act, n)
                model = tb.build_model(p, cfg)
                x, y, _ = tb._tensors(p, cfg)
                params = {k: v.detach() for k, v in model.named_parameters()}

                def loss_one(prm, xi, yi, model=model, p=p):  # noqa: ANN001, ANN202
                    out = torch.func.functional_call(model, prm, (xi.unsqueeze(0),))
                    return tb.per_example_loss(p, out, yi.unsqueeze(0))[0]

                fn = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))
                r: dict[str, Any] = {"reference_s": timeit(lambda p=p: per_example_grads(p),
                                                 min_time=min_time, repeats=repeats)}
                for t in threads:
                    torch.set_num_threads(t)
                    r[f"torch_func_{t}t_s"] = timeit(
                        lambda fn=fn, params=params, x=x, y=y: fn(params, x, y),
                        min_time=min_time, repeats=repeats)
                torch.set_num_threads(backend_threads)
                r["torch_adapter_s"] = timeit(lambda p=p: tb.backend.per_example(p, cfg, "vmap"),
                                              min_time=min_time, repeats=repeats)
                # the same answer (a check of what is compared, not a test)
                got, ref = fn(params, x, y), per_example_grads(p)[1]
                r["max_abs_diff"] = max(float(np.max(np.abs(got[k].numpy() - ref[k]))) for k in ref)
                r["reference_1blas_s"] = one_blas.get(f"{act}-w{w}-n{n}", float("nan"))
                results[f"{act}-w{w}-n{n}"] = r
                t1, td = r["torch_func_1t_s"], r[f"torch_func_{TORCH_DEFAULT_THREADS}t_s"]
                rows.append([act, str(w), str(n),
                             fmt_t(r["reference_s"]), fmt_t(td), f"{r['reference_s'] / td:.2f}",
                             fmt_t(r["reference_1blas_s"]), fmt_t(t1),
                             f"{r['reference_1blas_s'] / t1:.2f}",
                             fmt_t(r["torch_adapter_s"]), f"{r['max_abs_diff']:.1e}"])
    torch.set_num_threads(backend_threads)
    d = TORCH_DEFAULT_THREADS
    table(["act", "width", "batch", "reference (numpy defaults)",
           f"torch.func ({d} thr.)", "ratio", "reference (1 thread)", "torch.func (1 thread)",
           "ratio", f"torch adapter per_example ({backend_threads} thr.)", "max |diff|"], rows)
    print("\nratio = reference / torch.func (≤ 1: the reference is at least as fast), each "
          "library with its default threads, and each with one thread (the reference in a fresh "
          "process with OPENBLAS_NUM_THREADS=1; its outer products, einsum, always use one).")
    for col, t in (("reference_s", d), ("reference_1blas_s", 1)):
        worst = max(r[col] / r[f"torch_func_{t}t_s"] for r in results.values())
        print(f"largest ratio, {t} thread(s) each: {worst:.2f} (goal ≤ 1)")
    return results
