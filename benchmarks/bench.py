"""Speed of the suite: examples per second, the cost of a new shape, reference vs torch.func.

Run from a checkout (no install needed; the repository root is put on sys.path)::

    python benchmarks/bench.py            # every section, 100 examples per backend/dtype
    python benchmarks/bench.py --quick    # sections a and e, 100 examples (≤ 1 min; tox -e bench)
    python benchmarks/bench.py --sections a,c --backends numpy,torch

Sections, one module each (every table is preceded by the load average, since timings on a
shared 2-core machine are only comparable at similar load):

a  ``throughput``: examples/s of the core identity property (§2.1) per backend × dtype, and
   where one example's time goes (the share of Hypothesis's generation, the backend, the
   reference, the error bound, the comparison);
b  ``newshape``: the cost of a new shape per backend, each configuration in a fresh process
   (jax compilation, buckets, persistent cache);
c  ``torch_func``: the reference's ``per_example_grads`` against
   ``torch.func.vmap(torch.func.grad(ℓ))`` over widths × batch sizes;
d  ``growth``: one example's pieces against batch size and width, to choose profile sizes;
e  ``ci_figures``: the throughput goals (met or not), the ``ci`` profile's examples per property,
   and, in a CI run, examples and wall time per env (``reports/``).

Timing: ``time.perf_counter``; a warm-up call, then repeats of a loop long enough to be
measured, reporting the best repeat's mean per call (other processes only ever add time: on a
shared machine the minimum is the most reproducible figure). Section a reports the best of 3
runs of the whole property (1 with ``--quick``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.ci_figures import section_e  # noqa: E402
from benchmarks.common import BUILTIN, available, load  # noqa: E402
from benchmarks.growth import section_d  # noqa: E402
from benchmarks.newshape import newshape_worker, section_b  # noqa: E402
from benchmarks.throughput import section_a  # noqa: E402
from benchmarks.torch_func import reference_worker, section_c  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer examples, repeats and grid points")
    ap.add_argument("--sections", default=None,
                    help="comma-separated subset of a,b,c,d,e (default: all; quick: a,e)")
    ap.add_argument("--backends", default=",".join(BUILTIN),
                    help="comma-separated built-in backends (default: those that import)")
    ap.add_argument("--examples", type=int, default=None,
                    help="examples per backend/dtype in section a (default 100: the ci "
                         "profile's)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch.set_num_threads(N) before timing (default: torch's own)")
    ap.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    ap.add_argument("--newshape-worker", metavar="BACKEND", help=argparse.SUPPRESS)
    ap.add_argument("--reference-worker", metavar="JSON", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.newshape_worker:
        newshape_worker(args.newshape_worker)
        return
    if args.reference_worker:
        reference_worker(args.reference_worker)
        return
    backends = available([b.strip() for b in args.backends.split(",") if b.strip()])
    q = args.quick
    sections = {s.strip() for s in (args.sections or ("a,e" if q else "a,b,c,d,e")).split(",")}
    examples = args.examples or 100
    print(f"# batchgrad-spec benchmarks ({'quick' if q else 'full'})\n")
    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    for mod in ("torch", "jax", "hypothesis"):
        if importlib.util.find_spec(mod):
            versions.append(f"{mod} {__import__(mod).__version__}")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{', '.join(versions)}; backends {', '.join(backends)}")
    if "torch" in backends:
        import torch

        print(f"torch threads {torch.get_num_threads()}")
    print(load())
    out: dict[str, Any] = {"quick": q, "load_start": os.getloadavg()}
    t_start = time.perf_counter()
    if "a" in sections:
        out["a"] = section_a(backends, examples, 1 if q else 3)
    if "b" in sections:
        out["b"] = section_b(backends)
    if "c" in sections and "torch" in backends:
        grid_w = [4, 16, 64, 256]
        grid_n = [1, 16, 256] if q else [1, 16, 64, 256]
        out["c"] = section_c(grid_w, grid_n, ["tanh"] if q else ["tanh", "gelu"],
                             0.02 if q else 0.1, 3 if q else 5)
    if "d" in sections:
        out["d"] = section_d(backends, [4, 16] if q else [4, 8, 16],
                             [1, 16, 64] if q else [1, 8, 16, 64], 0.02 if q else 0.05,
                             3 if q else 5)
    if "e" in sections:
        out["e"] = section_e(out.get("a"), ROOT)
    out["load_end"] = os.getloadavg()
    print(f"\nTotal {time.perf_counter() - t_start:.0f} s; {load()}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
