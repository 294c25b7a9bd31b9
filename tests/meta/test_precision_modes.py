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
from batchgrad_spec.faults.precision import round_to_tf32, truncate_to_tf32
from batchgrad_spec.harness import ClauseFailure, Target
from batchgrad_spec.properties import core
from reference.contract import Config
from reference.numerics import (
    BF16_U,
    ELEMENTARY_ULPS,
    ERF_ABSOLUTE_U,
    PRECISIONS,
    TF32_U,
    R,
    Rounding,
    gamma,
)

pytestmark = pytest.mark.meta

T2_1 = core.test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients
T2_12 = core.test_backend_per_example_gradients_match_the_reference
SPEC = "batchgrad_spec.faults.precision:tf32_emulation"


def _target(mode: str, clause: str, method: str | None = None) -> Target:
    return Target(SPEC, harness.load(SPEC), Config("cpu", "float32", mode), clause=clause,
                  method=method)


@pytest.mark.clause("7.4", "7.4.1")
def test_tf32_matmuls_fail_the_strict_float32_tolerance():
    out = run_property(T2_1, _target("strict", "2.1"))
    assert out.error is not None, f"TF32 emulation passed strict §2.1 ({out.calls} examples)"
    for f in leaves(out.error):
        assert isinstance(f, ClauseFailure) and f.clause == "2.1", repr(f)
        assert "precision=strict" in str(f) and "exceed the tolerance" in str(f), str(f)
    assert out.first_failure is not None and out.first_failure <= MAX_EXAMPLES
    print(f"\ntf32_emulation fails strict §2.1 at example {out.first_failure}", end="")


@pytest.mark.clause("7.4", "7.4.1")
@pytest.mark.parametrize("test,method", [(T2_1, None), (T2_12, "vmap")],
                         ids=["2.1", "2.12-vmap"])
def test_tf32_matmuls_pass_under_the_tf32_tolerance(test, method):
    clause = "2.1" if method is None else "2.12"
    out = run_property(test, _target("tf32", clause, method))
    assert out.error is None, f"TF32 emulation failed §{clause} under the tf32 tolerance: " \
                              f"{out.error}"
    assert out.calls >= MAX_EXAMPLES // 2


@pytest.mark.clause("7.4", "7.4.1")
def test_tf32_is_float32_with_matmul_operands_rounded_to_11_bits():
    p = PRECISIONS[("float32", "tf32")]
    assert (p.u, p.operand_u) == (2.0**-24, 2.0**-11) == (PRECISIONS["float32", "strict"].u,
                                                          TF32_U)
    assert PRECISIONS[("float64", "tf32")] .u == 2.0**-53  # TF32 leaves float64 alone
    x = np.float32(1 + 2.0**-11 + 2.0**-20)  # just above the tie: rounds up
    assert round_to_tf32(np.array([x]))[0] == np.float32(1 + 2.0**-10)
    assert round_to_tf32(np.array([np.float32(1 + 2.0**-11)]))[0] == np.float32(1 + 2.0**-10)
    assert round_to_tf32(np.array([np.float32(-1 - 2.0**-12)]))[0] == np.float32(-1)


@pytest.mark.clause("7.4", "7.4.1")
@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 64), data=st.data())
def test_tf32_inner_products_are_within_the_tf32_bound(n, data):
    """|fl_tf32(w·a) − w·a| ≤ (4u_t + 4u_t² + γ_n(2u)) Σ|w||a| (spec §7.4.1) for rounded
    conversion and float32 accumulation, including operands just below a rounding tie."""
    el = st.floats(-4, 4, width=32, allow_subnormal=False)
    w = data.draw(hnp.arrays(np.float32, (1, n), elements=el), label="w")
    a = data.draw(hnp.arrays(np.float32, (n,), elements=el), label="a")
    exact = float(np.dot(w.astype(np.float64)[0], a.astype(np.float64)))
    got = float((round_to_tf32(a)[None, :] @ round_to_tf32(w).T)[0, 0])
    r = Rounding(PRECISIONS[("float32", "tf32")])
    bound = r.matmul(R(a.astype(np.float64)[None, :], np.zeros((1, n))), w.astype(np.float64))
    shadow = float(np.abs(w[0]).astype(np.float64) @ np.abs(a).astype(np.float64))
    assert float(bound.e[0, 0]) >= (4 * TF32_U + 4 * TF32_U**2 + gamma(n, 2.0**-23)) * shadow
    assert abs(got - exact) <= float(bound.e[0, 0])


def _toward_zero32(x: float) -> float:
    """x (float64) rounded toward zero to float32."""
    f = np.float32(x)
    return float(np.nextafter(f, np.float32(0)) if abs(float(f)) > abs(x) else f)


def _truncated_tf32_dot(w: np.ndarray, a: np.ndarray, block: int) -> float:
    """Σ w_j a_j as tensor-core studies describe it (Fasi, Higham, Mikaitis, Pranesh 2021):
    operands truncated to TF32, exact products, added ``block`` at a time to the running sum,
    every addend of a block aligned to the block's largest exponent and truncated to 24 bits
    (an unnormalised partial sum), the block's sum truncated to float32."""
    prods = (truncate_to_tf32(w).astype(np.float64) * truncate_to_tf32(a).astype(np.float64))
    acc = 0.0
    for i in range(0, len(prods), block):
        terms = [acc, *prods[i:i + block]]
        top = max(abs(t) for t in terms)
        if top == 0:
            continue
        q = 2.0 ** (np.frexp(top)[1] - 24)  # one float32 ulp at the block's largest exponent
        acc = _toward_zero32(sum(np.trunc(t / q) * q for t in terms))
    return acc


@pytest.mark.clause("7.4.1")
@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 64), block=st.sampled_from([1, 4, 8]), data=st.data())
def test_truncated_tf32_conversion_and_accumulation_stay_within_the_tf32_bound(n, block, data):
    """Conversion toward zero (< 1 TF32 ulp, 2u_t relative) and truncated, unnormalised block
    accumulation (< 1 float32 ulp of the block's largest addend per step) stay within the tf32
    estimate; the round-to-nearest estimate of 0.1.0, (2u_t + u_t² + γ_n(u))Σ|w||a|, does not
    cover them: operands just above 1 + 2⁻¹⁰ truncate by ≈ 2u_t each."""
    el = st.floats(-4, 4, width=32, allow_subnormal=False)
    w = data.draw(hnp.arrays(np.float32, (n,), elements=el), label="w")
    a = data.draw(hnp.arrays(np.float32, (n,), elements=el), label="a")
    r = Rounding(PRECISIONS[("float32", "tf32")])
    for w_, a_ in ((w, a), (np.full(n, np.float32(1 + 2.0**-10 - 2.0**-23)),) * 2):
        exact = float(w_.astype(np.float64) @ a_.astype(np.float64))
        got = _truncated_tf32_dot(w_, a_, block)
        bound = float(r.matmul(R(a_.astype(np.float64)[None, :], np.zeros((1, n))),
                               w_.astype(np.float64)[None, :]).e[0, 0])
        assert abs(got - exact) <= bound, (got, exact, bound)
    shadow = n * float(np.float32(1 + 2.0**-10 - 2.0**-23)) ** 2
    old = (2 * TF32_U + TF32_U**2 + gamma(n, 2.0**-24)) * shadow
    assert abs(got - exact) > old  # the worst case: outside the round-to-nearest estimate


@pytest.mark.clause("7.4.2")
def test_bf16_autocast_is_every_operation_at_the_bfloat16_unit_roundoff():
    """§7.4.2: float32 under bf16_autocast is estimated with every operation at u = 2⁻⁸ (sums
    γ_n(2⁻⁸), matmul operands rounded at 2⁻⁸, elementary functions 8u, erf's absolute term
    16u), with float32's range; float64 under bf16_autocast is strict float64."""
    p = PRECISIONS[("float32", "bf16_autocast")]
    assert (p.u, p.operand_u, p.tiny, p.truncating) == (
        BF16_U, BF16_U, PRECISIONS[("float32", "strict")].tiny, False)
    assert PRECISIONS[("float64", "bf16_autocast")] == PRECISIONS[("float64", "strict")]
    r = Rounding(p)
    one = R(np.ones(3), np.zeros(3))
    assert np.allclose(r.sum(one, axis=0).e, gamma(3, BF16_U) * 3)
    assert np.allclose(r.exp(r.exact(0.0)).e, 2 * ELEMENTARY_ULPS * BF16_U + p.tiny)
    assert np.allclose(r.erf(r.exact(0.0)).e, ERF_ABSOLUTE_U * BF16_U + p.tiny)
    assert np.allclose(r.mul(r.exact(3.0), r.exact(5.0)).e, 15 * BF16_U)
    x = r.matmul(R(np.ones((1, 4)), np.zeros((1, 4))), np.ones((1, 4)))
    assert np.allclose(x.e, (gamma(4, BF16_U) + 2 * BF16_U + BF16_U**2) * 4 + 7 * p.tiny)
    # an inner product of bfloat16-rounded operands, accumulated with every partial sum rounded
    # to bfloat16, is within it
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, a = rng.uniform(-4, 4, 16), rng.uniform(-4, 4, 16)
        acc = 0.0
        for wj, aj in zip(_bf16(w), _bf16(a), strict=True):
            acc = float(_bf16(np.array([acc + wj * aj]))[0])
        bound = r.matmul(R(a[None, :], np.zeros((1, 16))), w[None, :]).e[0, 0]
        assert abs(acc - w @ a) <= bound


def _bf16(x: np.ndarray) -> np.ndarray:
    """float64 → bfloat16 (round to nearest even, via float32), held in float64."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)
