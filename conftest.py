# The suite runs from a bare checkout: this file puts the repository root on sys.path (pytest's
# rootdir conftest) and loads the batchgrad-spec plugin (options, profiles, header, summary).
# Installed, the `batchgrad-spec` command loads the same plugin with `-p batchgrad_spec.plugin`.
pytest_plugins = ["batchgrad_spec.plugin"]

import pytest  # noqa: E402

# Open false alarms of the suite's own error model (not deviations of a backend: those go in an
# xfails file with their clause). Each is a failure whose cause is not yet classified; it is
# marked xfail (not strict: the derandomized examples move when module text changes, so a strict
# mark could flip on an unrelated edit) until the model is fixed or the failure is shown to be a
# finding. Listed in the README ("Open problems of the suite") and spec §7 (informative).
OPEN = {
    "tests/test_ch3_loss_kinds.py::test_bce_huber_and_gaussian_nll_per_example_losses_and_"
    "gradients_match_the_reference[jax-cpu-float32-":
        "open (§7.1.2 model gap): per-example gradients of ~4·tiny (float32 underflow) through "
        "gelu_tanh on jax exceed the tolerance by 1.3x; XLA may form ḡ·σ′'s partial products "
        "so that two of them flush, which the any-order rule does not cover for activations",
    "tests/test_ch10_loops.py::test_the_last_shorter_window_is_one_step_over_its_own_examples"
    "[jax-cpu-float32]":
        "open (§10.5 tolerance on jax float32 Adam): optax.MultiSteps + adam is 7 float32 ulp "
        "from the reference on a Dense(1,1) chain (ratio 1.14) where torch and numpy float32 "
        "are 0.2 ulp; not yet classified as a jax accuracy finding or a gap of the loop bound",
    "tests/test_ch10_last_window.py::test_dp_sgd_divides_a_shorter_last_window_by_the_expected_"
    "batch_size[jax-cpu-float32]":
        "open (§10.2 tolerance on jax float32 Adam with L2 decay): ratio 1.44, as for §10.5",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for prefix, reason in OPEN.items():
            if item.nodeid.startswith(prefix):
                item.add_marker(pytest.mark.xfail(strict=False, reason=reason))
