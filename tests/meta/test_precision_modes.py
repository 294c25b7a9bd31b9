"""§7.4: a result is certified for the precision mode it was checked in.

``batchgrad_spec.faults.precision:tf32_emulation`` computes float32 with TF32 matrix products (what
a
GPU does with ``allow_tf32 = True``). Under the strict float32 tolerance it must fail the mean
identity §2.1 — strict mode catches TF32 — and under the ``tf32`` tolerance it must pass the
same property on the same (derandomised) examples: the tf32 bound of ``reference.numerics``
(its precision modes) covers TF32 arithmetic. The TF32 model itself is checked directly on
inner products.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from batchgrad_spec import harness
from batchgrad_spec.catching import MAX_EXAMPLES, leaves, run_property
from batchgrad_spec.faults.precision import round_to_tf32
from batchgrad_spec.harness import ClauseFailure, Target
from batchgrad_spec.properties import core
from reference.contract import Config
from reference.numerics import PRECISIONS, TF32_U, R, Rounding, gamma

pytestmark = pytest.mark.meta

T2_1 = core.test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients
T2_12 = core.test_backend_per_example_gradients_match_the_reference
SPEC = "batchgrad_spec.faults.precision:tf32_emulation"


def _target(mode: str, clause: str, method: str | None = None) -> Target:
    return Target(SPEC, harness.load(SPEC), Config("cpu", "float32", mode), clause=clause,
                  method=method)


@pytest.mark.clause("7.4")
def test_tf32_matmuls_fail_the_strict_float32_tolerance():
    out = run_property(T2_1, _target("strict", "2.1"))
    assert out.error is not None, f"TF32 emulation passed strict §2.1 ({out.calls} examples)"
    for f in leaves(out.error):
        assert isinstance(f, ClauseFailure) and f.clause == "2.1", repr(f)
        assert "precision=strict" in str(f) and "exceed the tolerance" in str(f), str(f)
    assert out.first_failure is not None and out.first_failure <= MAX_EXAMPLES
    print(f"\ntf32_emulation fails strict §2.1 at example {out.first_failure}", end="")


@pytest.mark.clause("7.4")
@pytest.mark.parametrize("test,method", [(T2_1, None), (T2_12, "vmap")],
                         ids=["2.1", "2.12-vmap"])
def test_tf32_matmuls_pass_under_the_tf32_tolerance(test, method):
    clause = "2.1" if method is None else "2.12"
    out = run_property(test, _target("tf32", clause, method))
    assert out.error is None, f"TF32 emulation failed §{clause} under the tf32 tolerance: " \
                              f"{out.error}"
    assert out.calls >= MAX_EXAMPLES // 2


@pytest.mark.clause("7.4")
def test_tf32_is_float32_with_matmul_operands_rounded_to_11_bits():
    p = PRECISIONS[("float32", "tf32")]
    assert (p.u, p.operand_u) == (2.0**-24, 2.0**-11) == (PRECISIONS["float32", "strict"].u,
                                                          TF32_U)
    assert PRECISIONS[("float64", "tf32")] .u == 2.0**-53  # TF32 leaves float64 alone
    x = np.float32(1 + 2.0**-11 + 2.0**-20)  # just above the tie: rounds up
    assert round_to_tf32(np.array([x]))[0] == np.float32(1 + 2.0**-10)
    assert round_to_tf32(np.array([np.float32(1 + 2.0**-11)]))[0] == np.float32(1 + 2.0**-10)
    assert round_to_tf32(np.array([np.float32(-1 - 2.0**-12)]))[0] == np.float32(-1)


@pytest.mark.clause("7.4")
@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 64), data=st.data())
def test_tf32_inner_products_are_within_the_tf32_bound(n, data):
    """|fl_tf32(w·a) − w·a| ≤ (2u_tf32 + u_tf32² + γ_n(u32)) Σ|w||a| (spec §7.4), including
    the worst case of operands just below a rounding tie."""
    el = st.floats(-4, 4, width=32, allow_subnormal=False)
    w = data.draw(hnp.arrays(np.float32, (1, n), elements=el), label="w")
    a = data.draw(hnp.arrays(np.float32, (n,), elements=el), label="a")
    exact = float(np.dot(w.astype(np.float64)[0], a.astype(np.float64)))
    got = float((round_to_tf32(a)[None, :] @ round_to_tf32(w).T)[0, 0])
    r = Rounding(PRECISIONS[("float32", "tf32")])
    bound = r.matmul(R(a.astype(np.float64)[None, :], np.zeros((1, n))), w.astype(np.float64))
    shadow = float(np.abs(w[0]).astype(np.float64) @ np.abs(a).astype(np.float64))
    assert float(bound.e[0, 0]) >= (2 * TF32_U + TF32_U**2 + gamma(n, 2.0**-24)) * shadow
    assert abs(got - exact) <= float(bound.e[0, 0])
