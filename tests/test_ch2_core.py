"""Spec chapter 2: the core identities of mini-batch gradients.

Each test names its clause with ``@pytest.mark.clause``; its name is the clause's sentence.
Every backend result is compared with the float64 reference under the derived tolerance of
spec chapter 7; comparisons of a backend with itself use ``twice=True`` (both sides at its dtype).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from batchgrad_spec.harness import ClauseFailure, check, clause_title, sub_batch_identity
from batchgrad_spec.properties.core import (  # noqa: F401 — run here, also by the meta-tests
    test_backend_per_example_gradients_match_the_reference,
    test_every_per_example_gradient_is_taken_at_the_same_parameters,
    test_gradient_of_a_weighted_mean_is_the_normalised_weighted_sum,
    test_gradient_of_a_weighted_sum_is_the_weighted_sum_of_gradients,
    test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients,
    test_gradient_of_the_summed_loss_is_the_sum_of_per_example_gradients,
)
from batchgrad_spec.strategies import problems
from batchgrad_spec.worked import WORKED_EXAMPLE, WORKED_MEAN, worked_example_problem
from reference.grads import combine, per_example_grads


@pytest.mark.clause("2.6")
@given(problem=problems(min_batch=2), data=st.data())
def test_batch_gradient_is_invariant_under_permutation_of_the_batch(target, problem, data):
    n = problem.batch.size
    perm = data.draw(st.permutations(range(n)), label="permutation")
    with check(target, problem) as c:
        permuted = c.problem.with_batch(c.problem.batch.take(perm))
        loss, grads = c.loss_and_grad()
        loss_p, grads_p = c.loss_and_grad(
            permuted, expr=f"problem.with_batch(problem.batch.take({perm}))")
        tol = c.tol(twice=True)
        c.close(loss_p, loss, tol.loss, what="L(permuted batch)",
                expect="checked_loss_and_grad(backend, problem, config)[0]")
        c.close(grads_p, grads, tol.batch_grads, what="∇L(permuted batch)",
                expect="checked_loss_and_grad(backend, problem, config)[1]")


@pytest.mark.clause("2.7")
@given(problem=problems(min_batch=2), data=st.data())
def test_per_example_gradient_does_not_depend_on_the_other_examples(target, method, problem, data):
    n = problem.batch.size
    subset = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n - 1),
                              label="subset"))
    with check(target, problem) as c:
        sub_batch_identity(c, subset)


@pytest.mark.clause("2.8")
@given(problem=problems(reductions=("mean", "sum")), data=st.data())
def test_a_batch_of_one_gives_the_single_example_gradient(target, problem, data):
    i = data.draw(st.integers(0, problem.batch.size - 1), label="i")
    with check(target, problem) as c:
        one = c.problem.with_batch(c.problem.batch.take([i]))
        _, grads = c.loss_and_grad(one, expr=f"problem.with_batch(problem.batch.take([{i}]))")
        _, ref = per_example_grads(c.problem)
        tol = c.tol(one)
        c.close(grads, {k: v[i] for k, v in ref.items()}, tol.batch_grads,
                what=f"∇L of the batch {{x_{i}}}",
                expect=f"{{k: v[{i}] for k, v in per_example_grads(problem)[1].items()}}")


@pytest.mark.clause("2.9")
@given(problem=problems(reductions=("mean", "sum")))
def test_duplicating_the_batch_keeps_the_mean_gradient_and_doubles_the_sum(target, problem):
    with check(target, problem) as c:
        n = c.problem.batch.size
        doubled = c.problem.with_batch(c.problem.batch.take(list(range(n)) * 2))
        _, grads = c.loss_and_grad()
        _, grads2 = c.loss_and_grad(
            doubled, expr=f"problem.with_batch(problem.batch.take(list(range({n})) * 2))")
        factor = 1.0 if c.problem.reduction.name == "mean" else 2.0
        tol = c.tol(doubled, twice=True)
        c.close(grads2, {k: factor * v for k, v in grads.items()}, tol.batch_grads,
                what=f"∇L(batch ++ batch) = {factor:g} × ∇L(batch)",
                expect=f"{{k: {factor} * v for k, v in "
                       f"checked_loss_and_grad(backend, problem, config)[1].items()}}")


@pytest.mark.clause("2.10")
@given(problem=problems(min_batch=2, max_batch=2, reductions=("weighted",)))
def test_a_zero_batch_loss_does_not_imply_a_zero_gradient(target, problem):
    # Weights c = (ℓ_2, −ℓ_1) make L = c_1 ℓ_1 + c_2 ℓ_2 = 0, like losses 2 and −2 in the
    # question this project started from; the gradient ℓ_2 g_1 − ℓ_1 g_2 is generally not zero.
    p64 = problem.rounded(target.config.dtype)
    losses, g = per_example_grads(p64)
    assume(np.all(losses > 0))
    w = np.array([losses[1], -losses[0]]).astype(target.config.dtype).astype(np.float64)
    weighted = p64.with_reduction("weighted", weights=w)
    expected = combine(per_example_grads(weighted)[1], w)
    with check(target, weighted) as c:
        loss, grads = c.loss_and_grad()
        tol = c.tol()
        assume(any(np.any(np.abs(v) > 2 * tol.batch_grads[k]) for k, v in expected.items()))
        c.close(loss, float(np.sum(w * losses)), tol.loss, what="L = Σ c_i ℓ_i (0 up to rounding)",
                expect="float(np.sum(problem.batch.weights * per_example_grads(problem)[0]))")
        c.close(grads, expected, tol.batch_grads, what="∇L with L = 0",
                expect="combine(per_example_grads(problem)[1], problem.batch.weights)")


@pytest.mark.clause("2.11")
def test_worked_example_gradients_average_componentwise(target, method):
    with check(target, worked_example_problem()) as c:
        tol = c.tol()
        _, per_ex = c.per_example()
        c.close(per_ex["0.weight"][:, 0, :], np.stack(WORKED_EXAMPLE), tol.grads["0.weight"][:, 0],
                what="g_1, g_2", call="checked_per_example(backend, problem, config, method)[1]"
                "['0.weight'][:, 0, :]", expect="np.stack(WORKED_EXAMPLE)")
        _, grads = c.loss_and_grad()
        c.close(grads["0.weight"][0], WORKED_MEAN, tol.batch_grads["0.weight"][0],
                what="(g_1 + g_2)/2", call="checked_loss_and_grad(backend, problem, config)[1]"
                "['0.weight'][0]", expect="WORKED_MEAN")
        # The third component is zero because the examples cancel, not because either is zero.
        assert WORKED_EXAMPLE[0][2] == -WORKED_EXAMPLE[1][2] != 0


@pytest.mark.clause("2.13")
@given(problem=problems())
def test_backend_batch_gradient_is_the_reduction_of_its_own_per_example_gradients(
        target, method, problem):
    with check(target, problem) as c:
        _, grads = c.loss_and_grad()
        _, per_ex = c.per_example()
        tol = c.tol(twice=True)
        c.close(combine(per_ex, c.problem.coefficients), grads, tol.batch_grads,
                what="Σ κ_i g_i (backend) vs ∇L (backend)",
                call="combine(checked_per_example(backend, problem, config, method)[1], "
                     "problem.coefficients)",
                expect="checked_loss_and_grad(backend, problem, config)[1]")


REQUIRED_METHODS = ("vmap", "loop")
"""The per-example method names §2.12 requires (as released in 0.1.0; §8.9 says what each
means). A backend may offer more names; every test asks only for names it lists."""


@pytest.mark.clause("2.12")
def test_backend_offers_the_vectorised_and_the_loop_method(target):
    """§2.12's required names, checked once per backend configuration and said in one line: a
    backend offering ("copies", "loop") fails here, naming "vmap", and nowhere else (§8.9)."""
    names = tuple(target.backend.per_example_methods())
    missing = [m for m in REQUIRED_METHODS if m not in names]
    if missing:
        raise ClauseFailure(
            f"{clause_title('2.12')}\n  {target.describe()}\n  per_example_methods() is "
            f"{names}: missing {', '.join(map(repr, missing))}; §2.12 requires 'vmap' (all g_i "
            f"at once, by any means, e.g. one copy of θ per example) and 'loop' (one example at "
            f"a time); rename yours or offer these names besides (§8.9)", "2.12", target)
