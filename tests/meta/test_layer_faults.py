"""The chapter-4 properties catch the chapter-4 faults (``batchgrad_spec/faults/layers.py``).

As ``test_faulty_backends.py`` does for chapter 2 (``batchgrad_spec.catching``): each property
test is re-run under the ``ci`` settings (derandomised, at most 100 examples, no shrinking)
against a faulty backend; it must fail with a ``ClauseFailure`` of its own clause, naming the
backend and dtype and carrying a repro snippet, within the profile; and the correct ``numpy``
backend must pass every example the faulty run tried, on the same dtype and method. Unlike
chapter 2's, some of these properties keep only the examples where the clause has something to
say (``assume``): examples Hypothesis rejects count neither as tried nor as failed.
"""

from __future__ import annotations

import pytest

from batchgrad_spec.catching import assert_caught
from batchgrad_spec.properties import layers
from reference.numpy_backend import NumpyBackend

pytestmark = pytest.mark.meta

DTYPES = ["float64", "float32"]
METHODS = list(NumpyBackend().per_example_methods())  # the faults wrap the numpy backend


@pytest.mark.clause("4.2.1")
@pytest.mark.parametrize("dtype", DTYPES)
def test_detached_batchnorm_statistics_are_caught_by_the_train_mode_batch_gradient(dtype):
    assert_caught("bn_detached_statistics",
                  layers.test_train_mode_batchnorm_batch_gradient_matches_the_reference, "4.2.1",
                  dtype, None, message=("\n  ∇L through the batch statistics[",))


@pytest.mark.clause("4.3")
@pytest.mark.parametrize("method", METHODS)
def test_batch_of_one_per_example_gradients_are_caught_by_the_undefined_clause(method):
    assert_caught("bn_batch_of_one_per_example",
                  layers.test_per_example_gradients_through_train_mode_batchnorm_raise_undefined,
                  "4.3", "float64", method,
                  message=("returned per-example gradients through a train-mode BatchNorm",))


@pytest.mark.clause("4.6")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_leaky_relu_slope_one_at_zero_is_caught_by_the_kink_clause(dtype, method):
    assert_caught("leaky_relu_slope_one_at_zero",
                  layers.test_leaky_relu_slope_at_an_exact_zero_preactivation_is_the_negative_slope,
                  "4.6", dtype, method, message=("\n  g_i with z = 0 at the first leaky_relu[",))
