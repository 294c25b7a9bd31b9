"""The data-parallel clauses catch wrong all-reduces (spec §5.6, §5.7).

The property tests of ``tests/test_ch5_parallel.py`` (defined in
``batchgrad_spec.properties.parallel``) are run, under the ``ci`` profile
(derandomised; shrinking skipped), against deliberately wrong data-parallel engines:

* ``sum_without_dividing``: the rank-mean scheme all-reduces with SUM and never divides by R
  (DistributedDataParallel's averaging left out, or ``lax.psum`` where ``pmean`` was meant);
  §5.6's property must fail;
* ``unweighted_average``: the count-weighted scheme averages the ranks' means with equal
  weights 1/R, whatever the shard sizes; §5.7's property must fail.

The fault is injected into the combination step of ``batchgrad_spec.distributed.SimulatedEngine``
(the
numpy reference on each shard, combined in the dtype), so these run with the numpy backend alone
(``tox -e numpy``); where torch is installed the same faults are also injected into the real gloo
cluster, as a scheme swapped on its way to the workers. Each case asserts that the property fails
with ``ClauseFailure`` of the expected clause, naming the engine and the dtype and carrying the
repro snippet, within the examples the suite itself runs under ``ci`` (``examples(CI)``: 30),
while the correct engine passes every example the faulty run tried.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from batchgrad_spec import harness, stats
from batchgrad_spec.catching import CI, leaves, run_property
from batchgrad_spec.distributed import Engine, Job, SimulatedEngine, _scales, engine_for, shutdown
from batchgrad_spec.harness import ClauseFailure, Target
from batchgrad_spec.properties import parallel
from reference.contract import Config
from reference.parallel import rank_mean_scales, summed_scales
from reference.problem import Problem

pytestmark = pytest.mark.meta

T5_6 = parallel.test_rank_averaged_gradient_over_equal_shards_is_the_full_batch_gradient
T5_7 = parallel.test_count_weighted_all_reduce_over_any_shards_is_the_full_batch_gradient


def _sum_without_dividing(job: Job, parts: list[Problem]) -> tuple[list[float], float]:
    return summed_scales(len(parts)), 1.0


def _unweighted_average(job: Job, parts: list[Problem]) -> tuple[list[float], float]:
    return rank_mean_scales(len(parts)), 1.0 / len(parts)


SIMULATED = {
    "sum_without_dividing": ("rank_mean", _sum_without_dividing),
    "unweighted_average": ("count_weighted", _unweighted_average),
}


class SwappedScheme:
    """A real engine asked for ``scheme`` that runs ``instead`` (a fault in its all-reduce)."""

    def __init__(self, engine: Engine, name: str, scheme: str, instead: str) -> None:
        self.engine, self.name, self.scheme, self.instead = engine, name, scheme, instead
        self.world_size = engine.world_size
        self.startup_s = engine.startup_s

    def run(self, job: Job) -> list[Any]:
        if job.scheme == self.scheme:
            job = dataclasses.replace(job, scheme=self.instead)
        return self.engine.run(job)

    def reset(self) -> None:
        self.engine.reset()

    def close(self) -> None:
        pass


def _faulty_simulated(fault: str) -> Engine:
    scheme, scales = SIMULATED[fault]

    def combine(job: Job, parts: list[Problem]) -> tuple[list[float], float]:
        return (scales if job.scheme == scheme else _scales)(job, parts)

    return SimulatedEngine(f"numpy:{fault}", combine)


def _faulty_torch(fault: str) -> Engine:
    instead = {"sum_without_dividing": ("rank_mean", "summed"),
               "unweighted_average": ("count_weighted", "rank_mean")}[fault]
    return SwappedScheme(engine_for("torch"), f"torch:{fault}", *instead)


def _target(spec: str, clause: str, dtype: str) -> Target:
    return Target(spec, harness.load("numpy"), Config("cpu", dtype), clause=clause)


def assert_caught(engine: Engine, correct: Engine, test: Callable[..., Any], clause: str,
                  dtype: str) -> None:
    __tracebackhide__ = True
    spec = f"engine:{engine.name}"
    parallel.INJECTED[spec] = engine
    try:
        out = run_property(test, _target(spec, clause, dtype))
    finally:
        del parallel.INJECTED[spec]
    assert out.error is not None, f"{engine.name} passed §{clause} ({out.calls} examples)"
    for f in leaves(out.error):
        if not isinstance(f, ClauseFailure):
            raise AssertionError(f"{engine.name}: not a ClauseFailure: {f!r}") from f
        assert f.clause == clause, f"{engine.name}: failed §{f.clause}, expected §{clause}"
        text = str(f)
        assert text.startswith(f"§{clause} ") and f"dtype={dtype}" in text, text
        assert f"{engine.name} rank 0: " in text, text
        assert any(n.startswith(f"# Reproduce §{clause} ") for n in f.__notes__), f.__notes__
    limit = parallel.examples(CI)
    assert out.first_failure is not None and out.first_failure <= limit, (
        f"{engine.name} first failed §{clause} at example {out.first_failure}, beyond the "
        f"{limit} examples the suite runs under the ci profile")
    print(f"\n{engine.name:<32} {dtype:<8} caught by §{clause} at example {out.first_failure}",
          end="")
    # the same examples pass on the correct engine: the failure is the fault's
    spec = f"engine:{correct.name}"
    parallel.INJECTED[spec] = correct
    try:
        inner = test.hypothesis.inner_test  # type: ignore[attr-defined]
        with stats.preserved():
            for kwargs in out.drawn:
                inner(**{**kwargs, "target": _target(spec, clause, dtype)})
    finally:
        del parallel.INJECTED[spec]


@pytest.fixture(scope="module", autouse=True)
def _stop_engines() -> Iterator[None]:
    yield
    shutdown()


CASES = [("sum_without_dividing", T5_6, "5.6"), ("unweighted_average", T5_7, "5.7")]


@pytest.mark.clause("5.6", "5.7")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("fault, test, clause", CASES, ids=[c[0] for c in CASES])
def test_a_wrong_all_reduce_in_simulated_data_parallelism_fails_its_clause(fault, test, clause,
                                                                           dtype):
    assert_caught(_faulty_simulated(fault), SimulatedEngine(), test, clause, dtype)


@pytest.mark.clause("5.6", "5.7")
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize("fault, test, clause", CASES, ids=[c[0] for c in CASES])
def test_a_wrong_all_reduce_in_the_torch_gloo_cluster_fails_its_clause(fault, test, clause):
    assert_caught(_faulty_torch(fault), engine_for("torch"), test, clause, "float32")
