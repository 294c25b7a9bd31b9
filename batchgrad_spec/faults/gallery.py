"""The gallery of caught bugs: each classic bug, the faulty backend that reproduces it (an
attribute of ``batchgrad_spec.faults``, loadable as ``--backend batchgrad_spec.faults:<name>``),
and the property of the clause that catches it. ``tests/meta/test_gallery.py`` runs every entry
and checks the README table "Gallery of caught bugs" against ``GALLERY``;
``python -m examples.gallery_sizes`` measures the table's figures; ``describe`` states a
counterexample's size as the table does.

The backends and property tests are named, not imported (``property_test`` imports a test
module when asked).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reference.layers import Dense
from reference.problem import Problem

__all__ = ["CH1", "CH2", "CH3", "GALLERY", "PENDING", "Bug", "describe", "property_test"]

CH1 = "tests/test_ch1_definitions.py::"
CH2 = "tests/test_ch2_core.py::"
CH3 = "tests/test_ch3_loss_options.py::"


@dataclass(frozen=True)
class Bug:
    """One gallery entry: ``backend`` (an attribute of ``batchgrad_spec.faults``) reproduces
    ``bug``, and the property ``test`` of §``clause`` catches it on ``dtype`` (per-example
    ``method`` when the property takes one). ``needs`` names an optional framework the backend
    imports."""

    bug: str
    backend: str
    clause: str
    test: str
    dtype: str = "float64"
    method: str | None = None
    needs: str | None = None


MEAN = CH2 + "test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients"
SUM = CH2 + "test_gradient_of_the_summed_loss_is_the_sum_of_per_example_gradients"
PER_EXAMPLE = CH2 + "test_backend_per_example_gradients_match_the_reference"
SAME_THETA = CH2 + "test_every_per_example_gradient_is_taken_at_the_same_parameters"

GALLERY: tuple[Bug, ...] = (
    Bug("sum instead of mean", "sum_instead_of_mean", "2.1", MEAN),
    Bug("mean over N − 1", "mean_over_n_minus_1", "2.1", MEAN),
    Bug("gradient of only the last example", "last_example_only", "2.1", MEAN),
    Bug("a dropped example (off-by-one loop over the batch)", "dropped_example", "2.2", SUM),
    Bug("weights updated between examples", "sequential_updates", "2.5", SAME_THETA,
        method="vmap"),
    Bug("an optimizer step inside the gradient query (θ written in place)", "mutates_params",
        "2.5", SAME_THETA, method="vmap"),
    Bug("weighted mean divided by N instead of Σ c_i", "weighted_mean_over_n", "2.4",
        CH2 + "test_gradient_of_a_weighted_mean_is_the_normalised_weighted_sum"),
    Bug("per-example weights ignored", "weights_ignored", "2.3",
        CH2 + "test_gradient_of_a_weighted_sum_is_the_weighted_sum_of_gradients"),
    Bug("per-micro-batch normalisation (mean of micro-batch means)", "micro_batch_means", "2.1",
        MEAN),
    Bug("uneven-shard averaging (mean of shard means)", "uneven_shard_means", "2.1", MEAN),
    Bug("per-example gradients scaled by 1/N (κ_i g_i)", "per_example_scaled", "2.12",
        PER_EXAMPLE, method="vmap"),
    Bug("per-example gradients labelled with the wrong example", "per_example_reversed", "2.12",
        PER_EXAMPLE, method="vmap"),
    Bug("squared-error VJP missing the factor 2", "squared_error_vjp_without_2", "2.12",
        PER_EXAMPLE, method="vmap"),
    Bug("MSE `mean` divided by N instead of N·D", "mse_summed_over_outputs", "2.1",
        MEAN),
    Bug("PyTorch `mse_loss(reduction=\"sum\")` taken as Σ ℓ_i (D × too large)",
        "torch_mse_sum_over_elements", "2.2", SUM, needs="torch"),
    Bug("relu'(0) = 1", "relu_slope_one_at_zero", "1.5",
        CH1 + "test_relu_slope_at_zero_is_zero", method="vmap"),
    Bug("tanh-approximate GELU where the exact GELU is asked (jax.nn.gelu's default)",
        "gelu_tanh_for_gelu", "1.1", CH1 + "test_per_example_losses_match_the_reference",
        method="vmap"),
    Bug("TF32 matmuls in strict float32", "tf32_in_strict_mode", "2.1", MEAN,
        dtype="float32"),
    Bug("class-weighted cross-entropy `mean` divided by N instead of Σ w[y_i]",
        "class_weighted_mean_over_n", "3.3", CH3
        + "test_class_weighted_cross_entropy_mean_divides_by_the_weights_of_the_kept_labels"),
    Bug("ignored targets counted in the mean (`ignore_index` examples in the divisor)",
        "ignored_targets_counted", "3.4",
        CH3 + "test_ignored_rows_count_as_if_they_were_dropped_from_the_batch"),
    Bug("label smoothing's uniform term taken over ignored rows too (pytorch#73205)",
        "smoothing_over_ignored_rows", "3.5",
        CH3 + "test_label_smoothing_averages_its_uniform_term_over_the_kept_labels_only"),
)
"""The README's "Gallery of caught bugs", row by row; ``tests/meta/test_gallery.py`` checks it."""

PENDING: tuple[tuple[str, str], ...] = ()
"""Classic bugs that need features the reference does not have yet: no gallery backend. Empty
since chapter 5: the last one (a penalty per micro-batch) is
``batchgrad_spec.faults.accumulation:penalty_per_micro_batch`` now."""


PROPERTIES = ("definitions", "core", "losses", "layers", "structured")
"""The modules of ``batchgrad_spec.properties`` the gallery's properties come from."""


def property_test(bug: Bug) -> Callable[..., Any]:
    """The @given property named by ``bug.test`` ("tests/…py::name"): it is library code, defined
    in a module of ``batchgrad_spec.properties`` and imported by name into that chapter test
    module (``tests/meta/test_gallery.py`` checks the import)."""
    _, _, name = bug.test.partition("::")
    modules = [importlib.import_module(f"batchgrad_spec.properties.{m}") for m in PROPERTIES]
    found = [getattr(m, name) for m in modules if hasattr(m, name)]
    if len(found) != 1:
        raise LookupError(f"{bug.test}: {len(found)} properties named {name} in "
                          f"batchgrad_spec.properties.{{{', '.join(PROPERTIES)}}}")
    return found[0]


def describe(problem: Problem) -> str:
    """A problem's size as the README states it: N, the Dense widths, activations, loss."""
    net = problem.network
    widths = [d.in_features for _, d in net.dense_layers()] + [net.out_features]
    acts = [layer.name for layer in net.layers if not isinstance(layer, Dense)]
    extra = [", ".join(acts)] if acts else []
    extra += ["cross-entropy"] if problem.loss.name == "softmax_cross_entropy" else []
    return (f"N={problem.batch.size}, {'→'.join(map(str, widths))}"
            + (f" ({'; '.join(extra)})" if extra else ""))
