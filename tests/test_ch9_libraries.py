"""Spec chapter 9, §9.8–§9.12: the per-example-gradient libraries (Opacus, BackPACK, PyTorch's
ExpandedWeights) and their conventions.

Run against the libraries with ``--backend batchgrad_spec.backends.torch_libs:backend`` (tox envs
``opacus``, ``backpack``, ``expanded_weights``). The layer-kind tests run on that backend only,
for every per-example method (vmap and loop are the control columns of the table; on another
backend they are skipped with the reason); the convention tests need the library and are
skipped, with the reason, where it does not import.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from batchgrad_spec.harness import check
from batchgrad_spec.properties.core import per_example_against_reference
from batchgrad_spec.strategies import layer_problems, loss_problems, problems
from batchgrad_spec.strategies.library_layers import LIBRARY_LAYER_KINDS, library_layer_problems
from reference.contract import Config
from reference.grads import per_example_grads

LIBS = "batchgrad_spec.backends.torch_libs"
CORE_LOSSES = ("squared_error", "softmax_cross_entropy")

SMOOTH = ("identity", "tanh")
"""Activations of the layer kinds' networks: without kinks, so that a cell is about the layer
(the kinks' conventions are §4.6's)."""

KINDS = {
    "mlp": problems(),
    "sequence": loss_problems(losses=CORE_LOSSES, sequences=True),
    "layer_norm": layer_problems(layers=("layer_norm",), require=("layer_norm",),
                                 activations=SMOOTH),
    "batch_norm_eval": layer_problems(layers=("batch_norm_eval",), require=("batch_norm_eval",),
                                      activations=SMOOTH),
    "dropout": layer_problems(layers=("dropout",), require=("dropout",), activations=SMOOTH),
    **{kind: library_layer_problems(kind=kind) for kind in LIBRARY_LAYER_KINDS},
}
"""The layer kinds of the library × layer table (§9.12): problems that contain the kind."""


LIBRARY_BACKEND = "torch_libs"
ONLY_LIBRARIES = (f"the library × layer tests (§9.8, §9.12) run on the {LIBRARY_BACKEND} backend; "
                  f"vmap and loop through these layers are §2.12's, §4's and §9.1–§9.6's tests")


@pytest.fixture(autouse=True)
def _libraries_only(request: pytest.FixtureRequest) -> None:
    """The layer-kind tests run on ``torch_libs`` (its vmap and loop are the table's control
    columns); on any other backend they would repeat chapter 4's and §9.1–§9.6's tests."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    target = params.get("target")
    if target is not None and target.backend.name != LIBRARY_BACKEND:
        pytest.skip(ONLY_LIBRARIES)


def _kind_test(kind: str):  # type: ignore[no-untyped-def]
    @pytest.mark.clause("9.8")
    @given(problem=KINDS[kind])
    def test(target, method, problem):  # type: ignore[no-untyped-def]
        with check(target, problem) as c:
            per_example_against_reference(c)
    test.__name__ = f"test_every_per_example_method_gives_g_i_through_{kind}"
    test.__doc__ = (f"Every per-example method — a library's included — returns g_i on problems "
                    f"with {kind}, or the library's refusal is reported as a skip (§9.8, §9.12).")
    return test


test_every_per_example_method_gives_g_i_through_mlp = _kind_test("mlp")
test_every_per_example_method_gives_g_i_through_sequence = _kind_test("sequence")
test_every_per_example_method_gives_g_i_through_layer_norm = _kind_test("layer_norm")
test_every_per_example_method_gives_g_i_through_batch_norm_eval = _kind_test("batch_norm_eval")
test_every_per_example_method_gives_g_i_through_dropout = _kind_test("dropout")
test_every_per_example_method_gives_g_i_through_embedding = _kind_test("embedding")
test_every_per_example_method_gives_g_i_through_embedding_padding = _kind_test(
    "embedding_padding")
test_every_per_example_method_gives_g_i_through_conv1d = _kind_test("conv1d")
test_every_per_example_method_gives_g_i_through_attention = _kind_test("attention")
test_every_per_example_method_gives_g_i_through_residual = _kind_test("residual")
test_every_per_example_method_gives_g_i_through_tied = _kind_test("tied")


# -- the conventions: the library's raw field under the problem's own reduced loss --------------
def _libs(library: str):  # type: ignore[no-untyped-def]
    pytest.importorskip("torch", reason="the per-example libraries need torch")
    libs = pytest.importorskip(LIBS)
    if not libs.available(library):
        pytest.skip(f"{library} does not import here (pip install 'batchgrad-spec[{library}]')")
    return libs


def _convention(libs, method: str, dtype: str, problem) -> None:  # type: ignore[no-untyped-def]
    """raw_i = s · κ_i · g_i (§9.8) for the problem's own reduced loss, within the bound of the
    one-example problem seeded with s·κ_i plus the computed κ_i's error (``scaled_grads_bound``)."""
    from reference.bounds import scaled_grads_bound
    target = make_target(method, dtype)
    with check(target, problem) as c:
        _, raw = libs.raw_per_example(c.problem, target.config, method, "problem")
        _, g = per_example_grads(c.problem)
        factors = libs.scale(c.problem, method)
        tol = scaled_grads_bound(c.problem, factors, g, dtype)
        c.close(raw, libs.expected_raw(c.problem, method), tol,
                what=f"{method} raw per-example field under the problem's reduced loss",
                call=f"__import__({LIBS!r}, fromlist=['*']).raw_per_example(problem, config, "
                     f"{method!r}, 'problem')[1]",
                expect=f"__import__({LIBS!r}, fromlist=['*']).expected_raw(problem, {method!r})")


def make_target(method: str, dtype: str):  # type: ignore[no-untyped-def]
    from batchgrad_spec.catching import make_target as mk
    clause = {"opacus": "9.9", "backpack": "9.10", "expanded_weights": "9.11"}
    library = method.split("_mean")[0].split("_sum")[0]
    return mk(f"{LIBS}:backend", clause[library], dtype, method)


CONVENTION_PROBLEMS = loss_problems(losses=CORE_LOSSES, max_batch=6)
"""Every reduction of the core losses, sequences too: κ_i is 1/N, 1, c_i, c_i/Σc, the token
mean's m_i/Σm or the class weights' w[y_i]/Σw — where the conventions differ from g_i."""


@pytest.mark.clause("9.9")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("setting", ["mean", "sum"])
@given(problem=CONVENTION_PROBLEMS)
def test_opacus_grad_sample_is_n_kappa_g_under_mean_and_kappa_g_under_sum(setting, dtype,
                                                                         problem):
    _convention(_libs("opacus"), f"opacus_{setting}", dtype, problem)


@pytest.mark.clause("9.10")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@given(problem=CONVENTION_PROBLEMS)
def test_backpack_grad_batch_is_kappa_g_so_g_over_n_under_mean(dtype, problem):
    _convention(_libs("backpack"), "backpack", dtype, problem)


@pytest.mark.clause("9.11")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method", ["expanded_weights_mean", "expanded_weights"])
@given(problem=CONVENTION_PROBLEMS)
def test_expanded_weights_grad_sample_is_n_kappa_g_under_mean_and_kappa_g_under_sum(method,
                                                                                    dtype, problem):
    _convention(_libs("expanded_weights"), method, dtype, problem)


@pytest.mark.clause("9.12")
@pytest.mark.parametrize("library", ["opacus", "backpack", "expanded_weights"])
def test_a_train_mode_batchnorm_is_refused_or_warned_never_silently_computed(library):
    """Per-example gradients through a train-mode BatchNorm are undefined (§4.3): Opacus and
    ExpandedWeights refuse, BackPACK warns and computes (its documented convention); the suite
    turns either into ``LibraryUnsupported`` with the library's words."""
    libs = _libs(library)
    from reference import BatchNorm, Dense, Loss, Network, Problem, Reduction
    from reference.batch import Batch
    net = Network((Dense(1, 1), BatchNorm(1, training=True)))
    problem = Problem(net, Loss("squared_error"), Reduction("mean"),
                      {"0.weight": np.array([[1.0]]), "0.bias": np.array([0.0]),
                       "1.weight": np.array([1.0]), "1.bias": np.array([0.0])},
                      Batch(np.array([[1.0], [2.0]]), np.array([[0.0], [1.0]])))
    method = {"opacus": "opacus_sum", "backpack": "backpack",
              "expanded_weights": "expanded_weights"}[library]
    with pytest.raises(libs.LibraryUnsupported) as info:
        libs.raw_per_example(problem, Config("cpu", "float64"), method, "sum")
    said = {"opacus": "buffers", "backpack": "BatchNorm module in training mode",
            "expanded_weights": "cannot handle function batch_norm"}[library]
    assert said in str(info.value), str(info.value)
