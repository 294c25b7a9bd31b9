"""``library_layer_problems`` (the problems of the library × layer table, spec §9.12): keyword-only,
validated, every kind draws a problem with its layer, and it shrinks to one example."""

from __future__ import annotations

import pytest
from hypothesis import find, given, settings
from hypothesis.errors import InvalidArgument

from batchgrad_spec.strategies.library_layers import LIBRARY_LAYER_KINDS, library_layer_problems
from reference.grads import per_example_grads

pytestmark = pytest.mark.meta

NAMES = {"embedding": "Embedding(", "embedding_padding": "padding_idx=0", "conv1d": "Conv1d(",
         "attention": "SelfAttention(", "residual": "Residual(", "tied": "ties="}


@pytest.mark.clause("9.12")
def test_bad_arguments_are_rejected_with_the_value():
    with pytest.raises(InvalidArgument, match="'dense'"):
        library_layer_problems(kind="dense")
    with pytest.raises(InvalidArgument, match="max_batch=0"):
        library_layer_problems(kind="tied", max_batch=0)
    with pytest.raises(TypeError):
        library_layer_problems("tied")  # type: ignore[misc]  # keyword-only


@pytest.mark.clause("9.12")
@pytest.mark.parametrize("kind", LIBRARY_LAYER_KINDS)
def test_every_kind_draws_its_layer_and_the_reference_runs(kind):
    @settings(max_examples=10, database=None)
    @given(problem=library_layer_problems(kind=kind))
    def run(problem):
        assert NAMES[kind] in repr(problem.network), repr(problem.network)
        losses, grads = per_example_grads(problem)
        assert losses.shape == (problem.batch.size,)
    run()


@pytest.mark.clause("9.12")
def test_shrinks_to_one_example():
    p = find(library_layer_problems(kind="residual"), lambda p: True,
             settings=settings(database=None))
    assert p.batch.size == 1
