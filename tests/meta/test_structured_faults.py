"""The chapter-9 properties catch the chapter-9 faults (``batchgrad_spec/faults/structured.py``,
and chapter 2's ``per_example_scaled`` on the structured layers).

As ``test_layer_faults.py``: each property test is re-run under the ``ci`` settings
(derandomised, at most 100 examples, no shrinking) against a faulty backend; it must fail with a
``ClauseFailure`` of its own clause, naming the backend and dtype and carrying a repro snippet;
and the correct ``numpy`` backend must pass every example the faulty run tried.
"""

from __future__ import annotations

import pytest

from batchgrad_spec.catching import assert_caught
from batchgrad_spec.properties import structured

pytestmark = pytest.mark.meta

DTYPES = ["float64", "float32"]
G_I = ("\n  g_i[",)


@pytest.mark.clause("9.1")
@pytest.mark.parametrize("dtype", DTYPES)
def test_overwriting_embedding_scatter_is_caught_by_the_scatter_add_clause(dtype):
    assert_caught("embedding_overwriting_scatter",
                  structured.test_embedding_gradients_are_scatter_adds_of_the_token_cotangents,
                  "9.1", dtype, "vmap", message=G_I)


@pytest.mark.clause("9.5")
@pytest.mark.parametrize("dtype", DTYPES)
def test_tied_gradient_from_one_use_is_caught_by_the_tie_clause(dtype):
    assert_caught("tied_one_use_only",
                  structured.test_tied_parameter_gradient_is_the_sum_over_its_uses, "9.5", dtype,
                  "vmap", message=G_I)


@pytest.mark.clause("9.2")
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_gradient_ignoring_dilation_is_caught_by_the_conv_clause(dtype):
    assert_caught("conv_ignores_dilation", structured.test_conv1d_gradients_match_the_reference,
                  "9.2", dtype, "vmap", message=G_I)


@pytest.mark.clause("9.3.2")
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_masked_attention_nan_is_caught_by_the_no_nan_clause(dtype):
    assert_caught("attention_all_masked_nan",
                  structured.test_an_all_masked_example_leaks_no_nan_into_any_gradient, "9.3.2",
                  dtype, "vmap", message=("non-finite",))


@pytest.mark.clause("9.6")
@pytest.mark.parametrize("dtype", DTYPES)
def test_per_example_gradients_scaled_by_1_over_n_are_caught_on_the_structured_layers(dtype):
    assert_caught("per_example_scaled",
                  structured.test_structured_per_example_gradients_are_g_i_not_scaled, "9.6",
                  dtype, "vmap", message=G_I)
