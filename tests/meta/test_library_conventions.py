"""A library's per-example field taken as it comes — BackPACK's ``grad_batch`` under a mean loss
is g_i/N (f-dangel/backpack#49), Opacus's ``grad_sample`` with ``loss_reduction="sum"`` under a
mean loss likewise — and passed off as g_i is caught by §2.12 (spec §1.4, §9.8), within the
``ci`` profile; the suite's own normalisation (``torch_libs``, the loss the convention expects)
passes the same examples."""

from __future__ import annotations

import pytest

from batchgrad_spec.catching import clause_failures, make_target, run_property
from batchgrad_spec.properties import core
from batchgrad_spec.strategies import problems

pytestmark = pytest.mark.meta

T2_12 = core.test_backend_per_example_gradients_match_the_reference
FAULTY = "batchgrad_spec.backends.torch_libs.unnormalised:backend"
CORRECT = "batchgrad_spec.backends.torch_libs:backend"


@pytest.mark.clause("9.8")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method,library", [("backpack", "backpack"), ("opacus_sum", "opacus")])
def test_a_library_field_under_a_mean_loss_passed_off_as_g_i_fails_2_12(method, library, dtype):
    pytest.importorskip("torch")
    pytest.importorskip(library)
    mean = problems(reductions=("mean",), min_batch=2)
    out = run_property(T2_12, make_target(FAULTY, "2.12", dtype, method), problem=mean)
    clause_failures(out, "libs_unnormalised", "2.12", dtype, method, message=("g_i",))
    print(f"\nunnormalised {method:<10} {dtype} caught by §2.12 at example {out.first_failure}",
          end="")
    good = run_property(T2_12, make_target(CORRECT, "2.12", dtype, method), problem=mean)
    assert good.error is None, good.error
