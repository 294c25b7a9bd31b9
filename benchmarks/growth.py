"""Section d: cost growth — one property example's pieces against batch size and width.

Depth 4 (the strategies' largest), gelu, mean squared error, float64: the reference's
``per_example_grads``, the error bound (``tolerance``) and each backend's calls, to choose
profile sizes.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import backend_object, fmt_t, mlp, section, table, timeit
from reference.bounds import problem_tolerance
from reference.contract import Config, checked_loss_and_grad, checked_per_example
from reference.grads import per_example_grads

__all__ = ["section_d"]


def section_d(backends: list[str], widths: list[int], batches: list[int], min_time: float,
              repeats: int) -> dict[str, Any]:
    section("d. Cost growth: one example's pieces against width and batch (float64, depth 4, "
            "gelu, mean squared error)")
    cfg = Config("cpu", "float64")
    objs = {n: backend_object(n) for n in backends}
    cols = ["reference", "error bound"] + [f"{n} {m}" for n in backends
                                           for m in ("loss_and_grad", "vmap", "loop")]
    rows, results = [], {}
    for w in widths:
        for n in batches:
            p = mlp([w] * 5, "gelu", n)
            r = {"reference": timeit(lambda p=p: per_example_grads(p), min_time=min_time,
                                     repeats=repeats),
                 "error bound": timeit(lambda p=p: problem_tolerance(p, "float64"),
                                       min_time=min_time,
                                       repeats=repeats)}
            for name, b in objs.items():
                r[f"{name} loss_and_grad"] = timeit(
                    lambda p=p, b=b: checked_loss_and_grad(b, p, cfg), min_time=min_time,
                    repeats=repeats)
                for m in ("vmap", "loop"):
                    r[f"{name} {m}"] = timeit(lambda p=p, b=b, m=m: checked_per_example(
                        b, p, cfg, m), min_time=min_time, repeats=repeats)
            results[f"w{w}-n{n}"] = r
            rows.append([str(w), str(n)] + [fmt_t(r[c]) for c in cols])
    table(["width", "batch"] + cols, rows)
    print("\n(jax: the first call on each new bucket compiles; it is excluded here by the "
          "warm-up, see section b.)")
    return results
