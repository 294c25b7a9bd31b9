"""The property suite catches wrong backends, each by the clause it violates.

Every backend of ``batchgrad_spec/faults/`` is run through the property test of the clause
that
should catch it, with the ``ci`` Hypothesis profile (derandomised, so the examples — and the
numbers printed here — are the same on every run). Each case asserts that

* the property fails with ``ClauseFailure`` of the expected clause (every sub-failure, when
  Hypothesis reports several distinct ones as an ``ExceptionGroup``), whose message names the
  backend and dtype and whose note is the repro snippet;
* the first failure came within the profile's ``max_examples`` (the count is printed; run with
  ``-s`` to see it);
* every example the faulty run tried, up to and including its first failure, and every reported
  counterexample pass the same property for the correct ``numpy`` backend on the same dtype and
  method: the failure is the fault's.

The property tests are re-wrapped with ``@given`` under the ``ci`` settings rather than called as
imported: a ``@given`` test's settings are fixed when its module is imported (by whichever profile
was loaded then), and re-wrapping leaves the imported function untouched for the real suite. The
re-wrapped test has the original's source and signature, so it draws the very examples the ``ci``
profile draws for it in ``pytest --backend ... --hypothesis-profile ci``. Shrinking is skipped to
keep this module fast (the first failure is what is measured); ``test_contract_errors.py`` shows
a shrunk report end to end. The run statistics are restored after each run
(``stats.preserved``), so these deliberate failures do not appear in the session's summary of
real backends.
"""

from __future__ import annotations

import pytest

from batchgrad_spec.catching import assert_caught
from batchgrad_spec.properties import core
from batchgrad_spec.strategies import problems
from reference.numpy_backend import NumpyBackend

pytestmark = pytest.mark.meta

T2_1 = core.test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients
T2_5 = core.test_every_per_example_gradient_is_taken_at_the_same_parameters
T2_12 = core.test_backend_per_example_gradients_match_the_reference


DTYPES = ["float64", "float32"]
METHODS = list(NumpyBackend().per_example_methods())  # the faults wrap the numpy backend


COMPARISON_21 = ("\n  ∇L[", "\n  L (shape")  # the mean identity's comparison with the reference


@pytest.mark.clause("2.1")
@pytest.mark.parametrize("dtype", DTYPES)
def test_mean_over_n_minus_1_is_caught_by_the_mean_identity(dtype):
    # Hypothesis tries the smallest problem first: N = 1, where N − 1 = 0 gives inf or NaN,
    # which the contract's validation reports as a failure of the clause under test...
    assert_caught("mean_over_n_minus_1", T2_1, "2.1", dtype, None,
                  message=(f"loss_and_grad on cpu-{dtype}-strict returned non-finite ",))
    # ...and with N >= 2, where the wrong normaliser is finite, the comparison itself fails.
    assert_caught("mean_over_n_minus_1", T2_1, "2.1", dtype, None, message=COMPARISON_21,
                  problem=problems(reductions=("mean",), min_batch=2))


@pytest.mark.clause("2.1")
@pytest.mark.parametrize("dtype", DTYPES)
def test_last_example_only_is_caught_by_the_mean_identity(dtype):
    assert_caught("last_example_only", T2_1, "2.1", dtype, None, message=COMPARISON_21)


@pytest.mark.clause("2.5")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_updates_are_caught_by_the_same_parameters_clause(dtype, method):
    assert_caught("sequential_updates", T2_5, "2.5", dtype, method, message=("\n  g_i at θ[",))


@pytest.mark.clause("2.5", "8.3.2")
@pytest.mark.parametrize("method", METHODS)
def test_params_modified_in_place_are_caught_by_the_same_parameters_clause(method):
    assert_caught("mutates_params", T2_5, "2.5", "float64", method,
                  message=(f"per_example(method={method!r}) on cpu-float64-strict modified "
                           f"problem.params[",))


@pytest.mark.clause("2.12")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fault", ["sequential_updates", "per_example_scaled"])
def test_wrong_per_example_gradients_are_caught_by_the_reference_comparison(fault, dtype,
                                                                           method):
    # ℓ_i are compared before g_i: sequential updates show in the losses already.
    assert_caught(fault, T2_12, "2.12", dtype, method, message=("\n  ℓ_i (shape", "\n  g_i["))


@pytest.mark.clause("8.3.1")
@pytest.mark.parametrize("fault, test, clause, method, message", [
    ("wrong_shape", T2_1, "2.1", None,
     "loss_and_grad on cpu-float64-strict returned gradient '0.weight' of shape"),
    ("wrong_shape", T2_12, "2.12", "vmap",
     "per_example(method='vmap') on cpu-float64-strict returned gradient '0.weight' of shape"),
    ("returns_nan", T2_1, "2.1", None,
     "loss_and_grad on cpu-float64-strict returned non-finite gradient '0.weight' (NaN"),
    ("raises", T2_1, "2.1", None,
     "loss_and_grad on cpu-float64-strict raised RuntimeError: boom"),
], ids=["wrong_shape-loss_and_grad", "wrong_shape-per_example", "returns_nan", "raises"])
def test_contract_breaches_fail_the_clause_under_test(fault, test, clause, method, message):
    failures = assert_caught(fault, test, clause, "float64", method,
                             message=(f"the backend broke the contract: backend {fault!r} "
                                      f"{message}",))
    assert len(failures) == 1  # one fault, one failure: from the first example on
