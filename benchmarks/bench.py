"""Speed of the suite: examples per second, the cost of a new shape, reference vs torch.func.

Run from a checkout (no install needed; the repository root is put on sys.path)::

    python benchmarks/bench.py            # every section, ~100 examples per backend/dtype
    python benchmarks/bench.py --quick    # fewer examples and repeats, smaller grids (< 1 min)
    python benchmarks/bench.py --sections a,c --backends numpy,torch

Sections (each prints a table; every table is preceded by the load average, since timings on a
shared 2-core machine are only comparable at similar load):

a  throughput of the core identity property (§2.1, ``test_gradient_of_the_mean_loss_is_the_mean_
   of_per_example_gradients``): the real test function is driven by Hypothesis (``derandomize``,
   no database) against each backend × dtype, after one warm-up example, and examples/s is
   examples counted by the harness over wall time. The problems it drew are recorded and
   replayed through the same steps one at a time to split the time per example into: rounding
   the problem to the dtype, the backend's ``loss_and_grad`` (through the validated contract),
   the reference's ``per_example_grads``, the error bound (``tolerance``: two ``error_bound``
   runs), the comparison, and what is left (Hypothesis generation and harness overhead). The
   backend's ``per_example`` (vmap and loop), which the §2.5/§2.12/§2.13 properties call, is
   timed on the same problems for reference.
b  the cost of a new shape, per backend, each in a fresh process: the first call of a process,
   the steady state, the first call on a new shape that fits the same jax bucket, and on a shape
   that needs a new bucket; jax with buckets and no persistent cache (a real compilation), with
   a warm persistent cache, and with ``BATCHGRAD_JAX_BUCKETS=0`` (a compilation per shape).
c  the reference's ``per_example_grads`` against ``torch.func.vmap(torch.func.grad(ℓ))`` on the
   same network and batch (float64, CPU), widths × batch sizes, depth 2 (Dense(w, w), act,
   Dense(w, w)), squared error. Timed for torch: the vmap(grad) call alone, on tensors and a
   parameter dict prepared beforehand (no model construction, no numpy conversion, as a torch
   user would call it in a training loop); for the reference: ``per_example_grads(problem)``
   from the problem's numpy arrays (nothing to convert). Also shown: the torch adapter's whole
   ``per_example(method="vmap")`` (builds the model, converts in and out).
d  cost growth: one property example's pieces against batch size and width (depth 4, the
   strategies' largest), for the reference, the error bound and each backend — to choose
   profile sizes.

Timing: ``time.perf_counter``; a warm-up call, then repeats of a loop long enough to be
measured, reporting the best repeat's mean per call (other processes only ever add time: on a
shared machine the minimum is the most reproducible figure). Section a reports the best of 3
runs of the whole property (1 with ``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from reference.activations import Activation  # noqa: E402
from reference.batch import Batch  # noqa: E402
from reference.bounds import problem_tolerance  # noqa: E402
from reference.contract import Config, checked_loss_and_grad, checked_per_example  # noqa: E402
from reference.grads import combine, per_example_grads  # noqa: E402
from reference.layers import Dense, Network  # noqa: E402
from reference.losses import Loss, Reduction  # noqa: E402
from reference.problem import Problem  # noqa: E402

BUILTIN = ("numpy", "torch", "jax")
TORCH_DEFAULT_THREADS = (__import__("torch").get_num_threads()
                         if importlib.util.find_spec("torch") else 1)
"""torch's own default, read before the torch backend (which sets 1 thread) is imported."""
DTYPES = ("float64", "float32")


# -- helpers ---------------------------------------------------------------------------------------
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


def backend_object(name: str):  # noqa: ANN201
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


# -- a: throughput of the core identity property ---------------------------------------------------
def _hypothesis_profile(examples: int) -> None:
    from hypothesis import HealthCheck, settings

    settings.register_profile("bench", max_examples=examples, derandomize=True, database=None,
                              deadline=None, print_blob=False,
                              suppress_health_check=list(HealthCheck))
    settings.load_profile("bench")


@contextlib.contextmanager
def _recording(module) -> Iterator[list[Problem]]:  # noqa: ANN001
    """Record the problems the property hands to ``check`` (the test's module-global)."""
    seen: list[Problem] = []
    real = module.check

    def check(target, problem, override=None):  # noqa: ANN001, ANN202
        seen.append(problem)
        return real(target, problem, override)

    module.check = check
    try:
        yield seen
    finally:
        module.check = real


def _replay(target, problems: list[Problem]) -> dict[str, float]:  # noqa: ANN001
    """The steps of ``_reduction_identity`` one at a time, summed over ``problems`` (seconds)."""
    from batchgrad_spec.harness import Check

    pc = time.perf_counter
    cfg = target.config
    out = dict.fromkeys(("round", "backend", "reference", "bound", "compare", "vmap", "loop"),
                        0.0)
    for problem in problems:
        t0 = pc()
        c = Check(target, problem)
        t1 = pc()
        loss, grads = c.loss_and_grad()
        t2 = pc()
        ref_losses, ref_grads = per_example_grads(c.problem)
        t3 = pc()
        tol = c.tol()
        t4 = pc()
        kappa = c.problem.coefficients
        c.close(loss, float(np.sum(kappa * ref_losses)), tol.loss, what="L", call="", expect="")
        c.close(grads, combine(ref_grads, kappa), tol.batch_grads, what="∇L", call="", expect="")
        t5 = pc()
        checked_per_example(target.backend, c.problem, cfg, "vmap")
        t6 = pc()
        checked_per_example(target.backend, c.problem, cfg, "loop")
        t7 = pc()
        for key, dt in zip(out, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6),
                           strict=True):
            out[key] += dt
    return out


def section_a(backends: list[str], examples: int, repeats: int) -> dict:
    _hypothesis_profile(examples)  # before the import: @given takes the default settings then
    from batchgrad_spec import harness
    from tests import test_ch2_core as ch2

    test = ch2.test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients
    section(f"a. Core identity (§2.1) throughput: {test.__name__}, {examples} examples per "
            f"backend/dtype (derandomized), best of {repeats} runs")
    rows, breakdown, results = [], [], {}
    warm = mlp([4, 8, 3], "gelu", 4)
    first = True
    for name in backends:
        b = backend_object(name)
        for dt in DTYPES:
            target = harness.Target(name, b, Config("cpu", dt), "2.1")
            # warm-up: the first call of each method (jax: compile or load the programs)
            checked_loss_and_grad(b, warm.rounded(dt), target.config)
            checked_per_example(b, warm.rounded(dt), target.config, "vmap")
            checked_per_example(b, warm.rounded(dt), target.config, "loop")
            key = ("2.1", b.name, "cpu", dt, "strict")

            def run(n_before: int, target=target, key=key) -> tuple[float, int]:  # noqa: ANN001
                t0 = time.perf_counter()
                test(target=target)
                return time.perf_counter() - t0, harness.STATS[key].examples - n_before

            gen_walls, walls, replays = [], [], []
            for _ in range(repeats):
                # the same test (same derandomized examples) with an empty body: generation.
                # First, so that one-time costs of a test's first run (≈ 0.2 s) fall here.
                real_body = ch2._reduction_identity
                ch2._reduction_identity = lambda c: None
                try:
                    for _ in range(2 if first else 1):
                        gen_wall, n = run(harness.STATS.get(key, harness.Stat()).examples)
                    first = False
                finally:
                    ch2._reduction_identity = real_body
                gen_walls.append(gen_wall / n)
                with _recording(ch2) as seen:
                    wall, n = run(harness.STATS[key].examples)
                walls.append(wall)
                replays.append(_replay(target, seen))
            # best of the repeats: the least disturbed by other processes
            gen, wall = min(gen_walls), min(walls)
            parts = {k: min(r[k] for r in replays) for k in replays[0]}
            per = {k: v / len(seen) for k, v in parts.items()}
            steps = ("backend", "reference", "bound", "compare")
            rest = wall / n - gen - sum(per[k] for k in steps)
            results[f"{name}-{dt}"] = {"examples": n, "wall_s": wall, "per_example_s": wall / n,
                                       "generation_s": gen,
                                       **{f"{k}_s": v for k, v in per.items()}, "rest_s": rest}
            rows.append([name, dt, str(n), f"{wall:.2f} s", f"{n / wall:.0f}",
                         fmt_t(wall / n), fmt_t(wall / n - gen)])
            breakdown.append([name, dt, fmt_t(wall / n), fmt_t(gen)]
                             + [fmt_t(per[k]) for k in steps]
                             + [f"{rest * 1e3:+.2f} ms", fmt_t(per["vmap"]), fmt_t(per["loop"])])
    table(["backend", "dtype", "examples", "wall", "examples/s", "per example",
           "per example without generation"], rows)
    print("\nWhere the time of one example goes. `hypothesis generation`: the same test with an "
          "empty body (same derandomized examples; includes rounding the problem); the steps "
          "are replayed one at a time on the problems the test drew; `rest` = per example − "
          "generation − steps (measurement noise and harness overhead):\n")
    table(["backend", "dtype", "per example", "hypothesis generation", "backend loss_and_grad",
           "reference", "error bound", "compare", "rest", "(per_example vmap)",
           "(per_example loop)"], breakdown)
    if "torch" in backends and "jax" in backends:
        print()
        for dt in DTYPES:
            j, t = results[f"jax-{dt}"], results[f"torch-{dt}"]
            ratio = j["per_example_s"] / t["per_example_s"]
            print(f"jax / torch time per example, {dt}: {ratio:.2f}×"
                  f" (goal ≤ 3×); backend call alone: {j['backend_s'] / t['backend_s']:.2f}×")
    if "jax" in backends:
        from batchgrad_spec.backends import jax_backend

        print(f"\njax programs traced in this process: {jax_backend.backend.trace_counts()}")
    return results


# -- b: the cost of a new shape (subprocess per configuration) -------------------------------------
SHAPES = {
    "first": ([8, 16, 16, 4], "gelu", 8, "squared_error", "mean"),
    "same bucket": ([5, 7, 3], "relu", 3, "softmax_cross_entropy", "sum"),
    "new bucket": ([32, 32, 32], "tanh", 32, "squared_error", "mean"),
}


def newshape_worker(name: str) -> None:
    """Run in a fresh process: print one JSON object of timings (seconds)."""
    t0 = time.perf_counter()
    b = backend_object(name)
    res: dict = {"import_s": time.perf_counter() - t0}
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


def section_b(backends: list[str]) -> dict:
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
        proc = subprocess.run([sys.executable, __file__, "--newshape-worker", name],
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


# -- c: reference vs torch.func.vmap(grad) ---------------------------------------------------------
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
              repeats: int) -> dict:
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
    proc = subprocess.run([sys.executable, __file__, "--reference-worker", spec], env=env,
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
                r: dict = {"reference_s": timeit(lambda p=p: per_example_grads(p),
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


# -- d: cost growth --------------------------------------------------------------------------------
def section_d(backends: list[str], widths: list[int], batches: list[int], min_time: float,
              repeats: int) -> dict:
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
                                       min_time=min_time, repeats=repeats)}
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


# -- main ------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer examples, repeats and grid points")
    ap.add_argument("--sections", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    ap.add_argument("--backends", default=",".join(BUILTIN),
                    help="comma-separated built-in backends (default: those that import)")
    ap.add_argument("--examples", type=int, default=None,
                    help="examples per backend/dtype in section a (default 100, quick 20)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch.set_num_threads(N) before timing (default: torch's own)")
    ap.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    ap.add_argument("--newshape-worker", metavar="BACKEND", help=argparse.SUPPRESS)
    ap.add_argument("--reference-worker", metavar="JSON", help=argparse.SUPPRESS)
    args = ap.parse_args()
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
    sections = {s.strip() for s in args.sections.split(",")}
    q = args.quick
    examples = args.examples or (20 if q else 100)
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
    out: dict = {"quick": q, "load_start": os.getloadavg()}
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
    out["load_end"] = os.getloadavg()
    print(f"\nTotal {time.perf_counter() - t_start:.0f} s; {load()}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
