"""Section a: throughput of the core identity property (§2.1), and where one example's time goes.

The property is the one ``tests/test_ch2_core.py`` states for §2.1, built here from the library
(``batchgrad_spec.strategies.problems(reductions=("mean",))``, ``harness.check`` and
``harness.reduction_identity``) rather than imported from a test module, and driven by
Hypothesis (``derandomize``, no database) against each backend × dtype after one warm-up example.
examples/s is the examples the run statistics counted over wall time. Then:

* generation: the same property (same function, so the same derandomized examples) with an empty
  body: what Hypothesis's drawing of the problems costs (its share of an example is printed);
* the steps: the problems the property drew are recorded and replayed one at a time through the
  steps of ``reduction_identity`` — the backend's ``loss_and_grad`` (through the validated
  contract), the reference's ``per_example_grads``, the error bound (``tolerance``), the
  comparison — and ``rest`` is what is left (harness overhead, noise); the backend's
  ``per_example`` (vmap and loop), which the §2.5/§2.12/§2.13 properties call, is timed on the
  same problems for reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings

from batchgrad_spec import harness, stats
from batchgrad_spec.harness import Check, Target
from batchgrad_spec.strategies import problems
from benchmarks.common import DTYPES, backend_object, fmt_t, mlp, section, table
from reference.contract import Config, checked_loss_and_grad, checked_per_example
from reference.grads import combine, per_example_grads
from reference.problem import Problem

__all__ = ["CoreIdentity", "section_a"]


class CoreIdentity:
    """The §2.1 property with a replaceable body: ``check`` opens an example's check (recorded
    when wanted) and ``body`` runs on it (``harness.reduction_identity``, or nothing to measure
    generation alone). Swapping them leaves the Hypothesis test — and so the derandomized
    examples it draws — unchanged."""

    def __init__(self, examples: int) -> None:
        self.cpu = 0.0  # CPU seconds of the last run (time.process_time)
        self.check: Callable[..., Check] = harness.check
        self.body: Callable[[Check], None] = harness.reduction_identity
        me = self

        @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                  print_blob=False, suppress_health_check=list(HealthCheck))
        @given(problem=problems(reductions=("mean",)))
        def test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients(
                target: Target, problem: Problem) -> None:
            with me.check(target, problem) as c:
                me.body(c)

        self.test = test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients

    def run(self, target: Target) -> tuple[float, int]:
        """Wall seconds of one run of the property on ``target``, and the examples it checked."""
        key = stats.key(target)
        before = stats.snapshot(key)
        c0, t0 = time.process_time(), time.perf_counter()
        self.test(target=target)
        wall = time.perf_counter() - t0
        self.cpu = time.process_time() - c0
        counted = stats.since(key, before)
        return wall, counted.examples if counted else 0

    def generation(self, target: Target) -> tuple[float, int]:
        """A run with an empty body: what drawing the examples costs."""
        real = self.body
        self.body = lambda c: None
        try:
            return self.run(target)
        finally:
            self.body = real

    @contextmanager
    def recording(self) -> Iterator[list[Problem]]:
        """Record the problems the property hands to ``check``."""
        seen: list[Problem] = []
        real = self.check

        def check(target: Target, problem: Problem, override: Any = None) -> Check:
            seen.append(problem)
            return real(target, problem, override)

        self.check = check
        try:
            yield seen
        finally:
            self.check = real


def _replay(target: Target, problems: list[Problem]) -> dict[str, float]:
    """The steps of ``reduction_identity`` one at a time, summed over ``problems`` (seconds)."""
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


def section_a(backends: list[str], examples: int, repeats: int) -> dict[str, Any]:
    prop = CoreIdentity(examples)
    section(f"a. Core identity (§2.1) throughput: {prop.test.__name__}, {examples} examples per "
            f"backend/dtype (derandomized), best of {repeats} run(s)")
    rows, breakdown, results = [], [], {}
    warm = mlp([4, 8, 3], "gelu", 4)
    first = True
    with stats.preserved():  # the benchmark's examples are nobody's results
        for name in backends:
            b = backend_object(name)
            for dt in DTYPES:
                target = Target(name, b, Config("cpu", dt), "2.1")
                # warm-up: the first call of each method (jax: compile or load the programs)
                checked_loss_and_grad(b, warm.rounded(dt), target.config)
                checked_per_example(b, warm.rounded(dt), target.config, "vmap")
                checked_per_example(b, warm.rounded(dt), target.config, "loop")
                gen_walls, walls, replays, cpus = [], [], [], []
                for _ in range(repeats):
                    # generation first, so that one-time costs of a test's first run (≈ 0.2 s)
                    # fall here
                    for _ in range(2 if first else 1):
                        gen_wall, n = prop.generation(target)
                    first = False
                    gen_walls.append(gen_wall / n)
                    with prop.recording() as seen:
                        wall, n = prop.run(target)
                    walls.append(wall)
                    cpus.append(prop.cpu)
                    replays.append(_replay(target, seen))
                # best of the repeats: the least disturbed by other processes
                gen, wall = min(gen_walls), min(walls)
                parts = {k: min(r[k] for r in replays) for k in replays[0]}
                per = {k: v / len(seen) for k, v in parts.items()}
                steps = ("backend", "reference", "bound", "compare")
                rest = wall / n - gen - sum(per[k] for k in steps)
                results[f"{name}-{dt}"] = {
                    "examples": n, "wall_s": wall, "examples_per_s": n / wall,
                    "per_example_s": wall / n, "generation_s": gen,
                    "cpu_per_example_s": min(cpus) / n,
                    "generation_share": gen / (wall / n),
                    **{f"{k}_s": v for k, v in per.items()}, "rest_s": rest}
                rows.append([name, dt, str(n), f"{wall:.2f} s", f"{n / wall:.0f}",
                             fmt_t(wall / n), fmt_t(gen), f"{gen / (wall / n):.0%}",
                             fmt_t(wall / n - gen)])
                breakdown.append([name, dt, fmt_t(wall / n), fmt_t(gen)]
                                 + [fmt_t(per[k]) for k in steps]
                                 + [f"{rest * 1e3:+.2f} ms", fmt_t(per["vmap"]),
                                    fmt_t(per["loop"])])
    table(["backend", "dtype", "examples", "wall", "examples/s", "per example",
           "hypothesis generation", "generation share", "per example without generation"], rows)
    print("\nWhere the time of one example goes. `hypothesis generation`: the same property with "
          "an empty body (same derandomized examples; includes rounding the problem); the steps "
          "are replayed one at a time on the problems the property drew; `rest` = per example − "
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
