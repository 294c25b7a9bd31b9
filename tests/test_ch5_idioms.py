"""Spec chapter 5, data parallelism: the "Realised by" code of §5.6–§5.11 runs as written.

Each test reads the fenced code blocks of its clause from
``spec/05-accumulation-and-parallelism.md`` (``batchgrad_spec.distributed.idioms``: the first
line names where a block runs and, after "→", what every rank then holds; the block leaves it
in ``grad``) — for §5.9 the rows of its table — and runs each block on the data-parallel engine
of the backend under test: the JAX blocks inside
``jax.shard_map`` over the jax engine's 3 host CPU devices (``--backend jax``), the PyTorch blocks
on the 3 gloo ranks of the torch engine (``--backend torch``); other backends skip. Every rank's
``grad`` must be what the first line says, by the float64 reference, within the suite's
tolerance of a combination of R shard gradients (``reference.parallel``) times the factor the
line names — and a block the spec warns against ("not this") must then differ from the right
gradient by more than that tolerance. So text and code cannot drift: editing a block, its
expectation or the upstream library changes what this file checks. A handful of engine calls per
test and dtype, no Hypothesis.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from batchgrad_spec.distributed import EngineError, NoEngine, engine_for, shutdown
from batchgrad_spec.distributed.idioms import (
    EXPECT,
    LAM,
    Idiom,
    expected,
    idioms,
    problem_for,
    table_idioms,
)
from batchgrad_spec.harness import Target
from reference.bounds import error_bound
from reference.numerics import REFERENCE
from reference.parallel import data_parallel, normaliser, shards

ENGINES = ("jax", "torch")


@pytest.fixture(scope="module", autouse=True)
def _stop_engines() -> Iterator[None]:
    yield
    shutdown()


def tolerance(problem, sizes, dtype: str, expect: str) -> np.ndarray:
    """|k| × the suite's tolerance of the combination the expectation names: Σ_r ∇L_r (every
    rank adding the penalty) for the ∇L terms, Σ_r ∇S_r / Ω for the ∇S_r terms, times Ω without
    "/ N"; plus the float64 reference's own bound on the whole batch (spec §5.6, §7.2)."""
    m = EXPECT.match(expect)
    assert m is not None, f"cannot read the expectation {expect!r}"
    ranks = len(sizes)
    k = {None: 1.0, "R": float(ranks), "(1/R)": 1.0}.get(m.group(1))
    k = float(m.group(1)) if k is None else k
    pen = (1.0,) * ranks
    if "S_r" in m.group(2):
        tol = data_parallel(problem, sizes, "global_normaliser", lam=LAM, penalty_ranks=pen
                            ).combination_tolerance(dtype)["0.weight"]
        if not m.group(3):
            tol = tol * sum(normaliser(p) for p in shards(problem, sizes))
    else:
        tol = data_parallel(problem, sizes, "summed", lam=LAM, penalty_ranks=pen
                            ).combination_tolerance(dtype)["0.weight"]
    whole = error_bound(problem, REFERENCE).batch_grads["0.weight"]
    return max(1.0, abs(k)) * (tol + whole)


def run_blocks(target: Target, blocks: list[Idiom], clause: str) -> None:
    """Run every block of the target's engine; each rank must hold what its first line says."""
    __tracebackhide__ = True
    assert blocks, f"§{clause}: no code blocks read from the spec"
    name, dtype = target.backend.name, target.config.dtype
    if name not in ENGINES:
        pytest.skip(f"the code of §{clause} is JAX and PyTorch code; it runs with --backend jax "
                    f"or torch")
    if target.config.precision != "strict" or target.config.device != "cpu":
        pytest.skip("the data-parallel engines run on the cpu in strict precision")
    mine = [b for b in blocks if b.engine == name]
    if not mine:
        pytest.skip(f"§{clause} has no {name} code")
    try:
        engine = engine_for(name, target.config.device)
    except NoEngine as exc:
        pytest.skip(str(exc))
    engine.reset()
    problem, sizes = problem_for(clause)
    problem = problem.rounded(dtype)
    failures = []
    for b in mine:
        try:
            got = engine.idiom(b, problem, sizes, dtype)  # type: ignore[attr-defined]
        except EngineError as exc:
            failures.append(f"{b.name} raised:\n{exc}\n{b.code}")
            engine.reset()
            continue
        want, tol = expected(b.expect, problem, sizes), tolerance(problem, sizes, dtype, b.expect)
        for r, (g, w) in enumerate(zip(got, want, strict=True)):
            if not np.all(np.abs(g - w) <= tol):
                failures.append(f"{b.name}, {dtype}: rank {r} holds {g.ravel().tolist()}, the "
                                f"spec says {b.expect} = {w.ravel().tolist()} (tolerance "
                                f"{tol.ravel().tolist()})\n{b.code}")
        if "not this" in b.code.splitlines()[0]:
            right = "∇L + λθ" if "λθ" in b.expect else "∇L"
            good = expected(right, problem, sizes)[0]
            if np.all(np.abs(want[0] - good) <= tolerance(problem, sizes, dtype, right) + tol):
                failures.append(f"{b.name}: the spec warns against it, yet {b.expect} is "
                                f"{right} within the tolerance on this problem")
    print(f"\n§{clause} on {name} {dtype}: {len(mine)} blocks run")
    assert not failures, "\n\n".join(failures)


@pytest.mark.clause("5.6")
def test_the_code_of_5_6_runs_as_written_and_gives_what_it_says(target):
    run_blocks(target, idioms("5.6"), "5.6")


@pytest.mark.clause("5.7")
def test_the_code_of_5_7_runs_as_written_and_gives_what_it_says(target):
    run_blocks(target, idioms("5.7"), "5.7")


@pytest.mark.clause("5.8")
def test_the_code_of_5_8_runs_as_written_and_gives_what_it_says(target):
    run_blocks(target, idioms("5.8"), "5.8")


@pytest.mark.clause("5.9")
def test_the_rows_of_the_5_9_table_run_as_written_and_give_what_they_say(target):
    rows = table_idioms("5.9")
    assert len(rows) == 12, f"§5.9's table: expected six rows inside the body, read {len(rows)}"
    run_blocks(target, rows, "5.9")


@pytest.mark.clause("5.10")
def test_the_code_of_5_10_runs_as_written_and_gives_what_it_says(target):
    run_blocks(target, idioms("5.10"), "5.10")


@pytest.mark.clause("5.11")
def test_the_code_of_5_11_runs_as_written_and_gives_what_it_says(target):
    run_blocks(target, idioms("5.11"), "5.11")
