"""Micro-batch splits and data-parallel shards (spec chapter 5): how a batch of N examples is cut
into consecutive parts — micro-batches for gradient accumulation (``splits``, ``split_cases``),
one shard per rank for data parallelism (``equal_shards``, ``any_shards``)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from batchgrad_spec.strategies._validation import check_range
from batchgrad_spec.strategies.value import MAX_BATCH
from reference.problem import Problem

__all__ = ["MAX_PARTS", "any_shards", "equal_shards", "split_cases", "splits"]

MAX_PARTS = 4
"""Most micro-batches ``splits`` cuts a batch into by default."""


def _check_problems(problem_strategy: object) -> None:
    if not isinstance(problem_strategy, st.SearchStrategy):
        raise InvalidArgument(f"problem_strategy={problem_strategy!r} must be a strategy of "
                              f"problems, e.g. problems(min_batch=2)")


def _check_ranks(ranks: int) -> None:
    if isinstance(ranks, bool) or not isinstance(ranks, int) or not 1 <= ranks <= MAX_BATCH:
        raise InvalidArgument(f"ranks={ranks!r} must be an int in [1, {MAX_BATCH}]")


def splits(n: int, *, equal: bool = False, min_parts: int = 1,
           max_parts: int = MAX_PARTS) -> st.SearchStrategy[tuple[int, ...]]:
    """Sizes (n_1..n_K) of consecutive micro-batches of a batch of ``n``: K in
    [min_parts, max_parts] (at most n), any composition of n, or (``equal``) K dividing n with
    n_k = n/K. Shrinks towards few micro-batches, the first ones small."""
    check_range("parts", min_parts, max_parts, 1, MAX_BATCH)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_BATCH:
        raise InvalidArgument(f"n={n!r} must be an int in [1, {MAX_BATCH}] (the batch size)")
    top = min(n, max_parts)
    if n == 1:
        return st.just((1,))
    if equal:
        ks = [k for k in range(max(min_parts, 1), top + 1) if n % k == 0]
        return st.sampled_from(ks).map(lambda k: (n // k,) * k)

    @st.composite
    def build(draw: st.DrawFn) -> tuple[int, ...]:
        k = draw(st.integers(min(min_parts, top), top))
        cuts = sorted(draw(st.sets(st.integers(1, n - 1), min_size=k - 1, max_size=k - 1)))
        bounds = [0, *cuts, n]
        return tuple(b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True))

    return build()


def split_cases(problem_strategy: st.SearchStrategy[Problem], *, equal: bool = False,
                min_parts: int = 2) -> st.SearchStrategy[tuple[Problem, tuple[int, ...]]]:
    """(problem, sizes): a problem of ``problem_strategy`` and ``splits`` of its batch, as one
    strategy (for ``hypothesis.find``, which searches one). Shrinks as both do."""
    _check_problems(problem_strategy)
    check_range("parts", min_parts, MAX_PARTS, 1, MAX_BATCH)
    return problem_strategy.flatmap(lambda p: st.tuples(
        st.just(p), splits(p.batch.size, equal=equal, min_parts=min_parts)))


def _sizes(n: int, cuts: list[int]) -> tuple[int, ...]:
    bounds = [0, *sorted(cuts), n]
    return tuple(int(b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True))


def equal_shards(problem_strategy: st.SearchStrategy[Problem], *,
                 ranks: int) -> st.SearchStrategy[tuple[Problem, tuple[int, ...]]]:
    """(problem, sizes): a problem with N = ranks·n examples (the drawn batch cut to a multiple
    of ``ranks``; draw N ≥ ranks), n per rank. Shrinks as ``problem_strategy`` does."""
    _check_problems(problem_strategy)
    _check_ranks(ranks)

    @st.composite
    def build(draw: st.DrawFn) -> tuple[Problem, tuple[int, ...]]:
        p = draw(problem_strategy)
        n = p.batch.size // ranks * ranks
        return p.with_batch(p.batch.take(np.arange(n))), (n // ranks,) * ranks

    return build()


def any_shards(problem_strategy: st.SearchStrategy[Problem], *, ranks: int,
               unequal: bool = False) -> st.SearchStrategy[tuple[Problem, tuple[int, ...]]]:
    """(problem, sizes): a problem and ``ranks`` consecutive shards of any sizes ≥ 1 (draw
    N ≥ ranks); ``unequal``: not all the same (draw N > ranks; a multiple of ``ranks`` loses
    its last example). Shrinks towards the first shards small."""
    _check_problems(problem_strategy)
    _check_ranks(ranks)

    @st.composite
    def build(draw: st.DrawFn) -> tuple[Problem, tuple[int, ...]]:
        p = draw(problem_strategy)
        n = p.batch.size
        if unequal and n % ranks == 0:  # n >= 2·ranks when N > ranks, so n - 1 > ranks
            n -= 1
            p = p.with_batch(p.batch.take(np.arange(n)))
        cuts = draw(st.lists(st.integers(1, n - 1), min_size=ranks - 1, max_size=ranks - 1,
                             unique=True), label="cuts")
        return p, _sizes(n, cuts)

    return build()
