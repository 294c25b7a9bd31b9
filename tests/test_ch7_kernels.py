"""Spec chapter 7, §7.1 the floating-point model: its constants and assumptions, measured.

The model of ``reference/numerics.py`` assumes things about the arithmetic and the kernels a
backend calls: the curvature constants are the suprema of |σ''|, ``ELEMENTARY_ULPS`` bounds the
libraries' elementary functions (numpy, and the frameworks of the selected backends), float32
activations stay within their evaluation bound, γ_n bounds a float32 sum in any order, and each
framework's own activation kernel (value and autodiff slope) stays within what the model allows.
The tolerance built on the model is under test in ``tests/test_ch7_numerics.py``.
"""

from __future__ import annotations

import ast
import inspect
import math

import numpy as np
import pytest

import reference.activations as activations
import reference.numerics as numerics
from batchgrad_spec.session import selected_backends
from reference.activations import ACTIVATION_NAMES, CURVATURE
from reference.numerics import ELEMENTARY_ULPS, PRECISIONS, REFERENCE, R, Rounding, gamma
from reference.ops import ACTIVATIONS

U32 = PRECISIONS[("float32", "strict")].u


# -- §7.1 The floating-point model ----------------------------------------------------------------
GRID = np.linspace(-20.0, 20.0, 40_001)  # step 10⁻³
H = 1e-4  # central-difference step: truncation ~H²·|σ''''| ≈ 10⁻⁹, rounding ~u/H ≈ 10⁻¹²


@pytest.mark.clause("7.1.6")
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_curvature_is_the_supremum_of_the_second_derivative(name):
    """CURVATURE[σ] bounds |σ''| on [−20, 20] and is attained within 1%: it is the sup, not a
    loose constant (σ'' by central differences of the reference slope ACTIVATIONS[σ][1])."""
    f, slope = ACTIVATIONS[name]
    z = GRID[np.abs(GRID - activations.KINKS.get(name, (np.inf, 0))[0]) > 2 * H]  # off the kink

    def s(t: np.ndarray) -> np.ndarray:
        return slope(t, f(t))

    second = np.abs((s(z + H) - s(z - H)) / (2 * H))
    sup, m2 = float(second.max()), CURVATURE[name]
    assert sup <= m2 * (1 + 1e-6) + 1e-8, f"|{name}''| reaches {sup} > CURVATURE {m2}"
    if m2 == 0:
        assert sup <= 1e-8
    else:
        assert sup >= 0.99 * m2, f"CURVATURE[{name!r}] = {m2} but sup|{name}''| ≈ {sup}"


@pytest.mark.clause("7.1.4")
def test_elementary_ulps_is_documented():
    """ELEMENTARY_ULPS carries a docstring saying which libraries' documented accuracy it is."""
    tree = ast.parse(inspect.getsource(numerics))
    body = tree.body
    for i, node in enumerate(body):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "ELEMENTARY_ULPS" for t in node.targets):
            doc = body[i + 1]
            assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
            assert "ulp" in doc.value.value and "erf" in doc.value.value
            break
    else:
        pytest.fail("ELEMENTARY_ULPS is not assigned in reference/numerics.py")
    assert ELEMENTARY_ULPS >= 1
    assert numerics.Rounding(PRECISIONS[("float32", "strict")]).fn_rel == 2 * ELEMENTARY_ULPS * U32


def _elementary(framework: str, fn: str):
    if framework == "numpy":
        return getattr(np, fn)
    if framework == "torch":
        torch = pytest.importorskip("torch")
        return lambda x: getattr(torch, fn)(torch.from_numpy(x)).numpy()
    jax = pytest.importorskip("jax")
    f = jax.scipy.special.erf if fn == "erf" else getattr(jax.numpy, fn)
    return lambda x: np.asarray(f(jax.numpy.asarray(x)))


ELEMENTARY = [("numpy", f) for f in ("exp", "log", "log1p", "tanh")] + [
    (fw, f) for fw in ("torch", "jax") for f in ("exp", "log", "log1p", "tanh", "erf")]


@pytest.mark.clause("7.1.4")
@pytest.mark.parametrize(("framework", "fn"), ELEMENTARY, ids=[f"{a}-{b}" for a, b in ELEMENTARY])
def test_elementary_functions_meet_the_assumed_accuracy_in_float32(request, framework, fn):
    """A float32 elementary function errs by ≤ 2·ELEMENTARY_ULPS·u relative (§7.1 item 3), on a
    grid of float32 arguments; checked for the frameworks of the selected backends."""
    if framework != "numpy" and framework not in [b.name for _, b in
                                                  selected_backends(request.config)]:
        pytest.skip(f"{framework} is not a selected backend")
    x = np.linspace(-12.0, 12.0, 240_001).astype(np.float32)
    if fn in ("log", "log1p"):
        x = np.abs(x) + np.float32(2.0**-10 if fn == "log" else 0.0)
    exact = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "tanh": np.tanh,
             "erf": np.vectorize(math.erf)}[fn](x.astype(np.float64))
    got = np.asarray(_elementary(framework, fn)(x), dtype=np.float64)
    nz = exact != 0
    rel = np.abs(got[nz] - exact[nz]) / np.abs(exact[nz]) / U32
    worst = int(np.argmax(rel))
    assert rel[worst] <= 2 * ELEMENTARY_ULPS, (
        f"{framework}.{fn} float32 errs by {rel[worst]:.2f}u at x={x[nz][worst]!r}, above the "
        f"assumed {2 * ELEMENTARY_ULPS}u")


@pytest.mark.clause("7.1.6")
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_float32_activations_are_within_their_evaluation_bound(name):
    """σ and σ' evaluated in float32 by the reference formulas (the numpy backend) at exact
    float32 arguments z stay within activations.activation's bound for an exactly known z."""
    z = np.concatenate([np.linspace(-30, 30, 120_001),
                        np.random.default_rng(0).normal(0, 3, 20_000)]).astype(np.float32)
    z64 = z.astype(np.float64)
    f, slope = ACTIVATIONS[name]
    a32, a64 = f(z), f(z64)
    s32, s64 = slope(z, a32), slope(z64, a64)
    exact = R(z64, np.zeros_like(z64))
    (a_b32, s_b32), (a_b64, s_b64) = (activations.activation(name, exact, Rounding(p))
                                      for p in (PRECISIONS[("float32", "strict")], REFERENCE))
    assert np.all(np.abs(a32 - a64) <= a_b32.e + a_b64.e), name
    assert np.all(np.abs(s32 - s64) <= s_b32.e + s_b64.e), name


@pytest.mark.clause("7.1.3")
def test_gamma_is_the_sum_error_factor():
    """γ_n = nu/(1 − nu) (Higham §3.1), and it bounds float32 sums in any order."""
    for n in (1, 2, 16, 1000):
        for u in (2.0**-24, 2.0**-53):
            assert gamma(n, u) == pytest.approx(n * u / (1 - n * u), rel=1e-15)
    ns = np.array([1, 8, 64])
    np.testing.assert_allclose(gamma(ns, U32), ns * U32 / (1 - ns * U32), rtol=1e-15)
    rng = np.random.default_rng(7)
    for n in (2, 16, 1000):
        x = rng.normal(size=(200, n)).astype(np.float32)
        exact = x.astype(np.float64).sum(axis=1)
        bound = gamma(n, U32) * np.abs(x.astype(np.float64)).sum(axis=1)
        for total in (x.sum(axis=1), np.cumsum(x, axis=1)[:, -1], x[:, ::-1].sum(axis=1)):
            assert np.all(np.abs(total.astype(np.float64) - exact) <= bound)



def _framework_activation(framework: str, name: str):
    """(σ, σ') of the framework's own kernel for ``name``, float32 numpy in and out."""
    if framework == "torch":
        torch = pytest.importorskip("torch")
        from batchgrad_spec.backends.torch_backend import _activation

        module = _activation(name, "float32")

        def run(z):
            t = torch.from_numpy(z).requires_grad_(True)
            y = module(t)
            y.sum().backward()
            return y.detach().numpy(), t.grad.numpy()
        return run
    jax = pytest.importorskip("jax")
    from batchgrad_spec.backends import jax_backend

    fn = jax_backend.ACTIVATIONS[name]
    value_and_slope = jax.jit(jax.vmap(jax.value_and_grad(fn)))
    return lambda z: tuple(np.asarray(v) for v in value_and_slope(jax.numpy.asarray(z)))


KERNELS = [(fw, n) for fw in ("torch", "jax") for n in ACTIVATION_NAMES if n != "identity"]


@pytest.mark.clause("7.1.4")
@pytest.mark.parametrize(("framework", "name"), KERNELS, ids=[f"{a}-{b}" for a, b in KERNELS])
def test_activation_kernels_are_within_the_model(request, framework, name):
    """Each framework's own float32 activation kernel (value and autodiff slope) at exact float32
    z errs by no more than the §7.1 model allows: this is what checks ELEMENTARY_ULPS and
    ERF_ABSOLUTE_U against the libraries actually called (finding F1: PyTorch's GELU)."""
    if framework not in [b.name for _, b in selected_backends(request.config)]:
        pytest.skip(f"{framework} is not a selected backend")
    z = np.concatenate([np.linspace(-30, 30, 240_001),
                        np.random.default_rng(1).normal(0, 3, 20_000)]).astype(np.float32)
    if name in activations.KINKS:  # the slope *at* a kink is a convention: §1.5 and §4.6 test it
        z = z[z != activations.KINKS[name][0]]
    z64 = z.astype(np.float64)
    value, slope = _framework_activation(framework, name)(z)
    f, df = ACTIVATIONS[name]
    exact = R(z64, np.zeros_like(z64))
    (a32, s32), (a64, s64) = (activations.activation(name, exact, Rounding(p))
                              for p in (PRECISIONS[("float32", "strict")], REFERENCE))
    for what, got, want, bound in (("value", value, f(z64), a32.e + a64.e),
                                   ("slope", slope, df(z64, f(z64)), s32.e + s64.e)):
        err = np.abs(np.asarray(got, np.float64) - want)
        ratio = np.where(err == 0, 0.0, err / np.where(bound > 0, bound, np.inf))
        ratio = np.where((err > 0) & (bound == 0), np.inf, ratio)
        i = int(np.argmax(ratio))
        assert ratio[i] <= 1, (f"§7.1 {framework} float32 {name} {what} errs by "
                               f"{abs(float(got[i]) - want[i]):.3g} at z={z[i]!r}, "
                               f"{ratio[i]:.3g}× the model's bound {bound[i]:.3g}")

