"""Spec chapter 4, normalisation layers: LayerNorm (§4.1), train-mode BatchNorm (§4.2, §4.3) and
eval-mode BatchNorm (§4.4).

Each test names its clause with ``@pytest.mark.clause``; its name is the clause's sentence. Backend
results are compared with the float64 reference under the derived tolerance of spec chapter 7
(``c.tol()``); comparisons of a backend with itself use ``twice=True``. Tests that take no
``target`` check the reference itself (§4.2, §4.3) or demonstrate a framework's own behaviour that
a clause states (§4.3: PyTorch and JAX idioms, skipped where the framework is absent). The
properties the meta-tests also run are in ``batchgrad_spec.properties.layers``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from batchgrad_spec.harness import check, reduction_identity, sub_batch_identity
from batchgrad_spec.properties.layers import (  # noqa: F401 — run here, also by the meta-tests
    ACTS,
    batch_against_reference,
    per_example_identities,
    test_per_example_gradients_through_train_mode_batchnorm_raise_undefined,
    test_train_mode_batchnorm_batch_gradient_matches_the_reference,
)
from batchgrad_spec.strategies import PER_EXAMPLE_KINDS, layer_networks, layer_problems, problems
from reference.activations import Activation
from reference.batch import Batch
from reference.bounds import error_bound, problem_tolerance
from reference.contract import BackendError
from reference.grads import batch_grad, per_example_grads, per_example_losses
from reference.layers import Dense, Network
from reference.losses import Loss, Reduction
from reference.norms import BatchNorm
from reference.numerics import REFERENCE, gamma
from reference.problem import Problem
from reference.types import Undefined

# -- §4.1 LayerNorm ------------------------------------------------------------------------------
LAYER_NORM = layer_problems(layers=PER_EXAMPLE_KINDS, require=("layer_norm",), activations=ACTS)


@pytest.mark.clause("4.1")
@given(problem=LAYER_NORM)
def test_with_layernorm_the_batch_gradient_is_the_reduction_of_the_per_example_gradients(
        target, problem):
    with check(target, problem) as c:
        reduction_identity(c)


@pytest.mark.clause("4.1")
@given(problem=LAYER_NORM)
def test_with_layernorm_per_example_gradients_match_the_reference_and_the_batch_gradient(
        target, method, problem):
    with check(target, problem) as c:
        per_example_identities(c)


# -- §4.2 train-mode BatchNorm: ∇L is defined, ℓ_i depends on the other examples ------------------
BATCH_OF_ONE_REFUSALS = {"torch": "Expected more than 1 value per channel when training"}
"""Built-in backends whose framework refuses a train-mode BatchNorm on one example (spec §4.2),
with the framework's message the backend must pass on; every other backend computes it."""


@pytest.mark.clause("4.2.4")
@given(problem=problems(nets=layer_networks(require=("batch_norm",), activations=ACTS),
                        max_batch=1))
def test_train_mode_batchnorm_on_one_example_gives_beta_or_the_frameworks_refusal(
        target, problem):
    """N = 1: v = 0, so x̂ = 0 and the BatchNorm outputs β whatever its input; L and ∇L are
    defined (nothing below the BatchNorm gets a gradient). PyTorch refuses instead."""
    refusal = BATCH_OF_ONE_REFUSALS.get(target.backend.name)
    with check(target, problem) as c:
        if refusal is None:
            batch_against_reference(c, "L (one example)", "∇L (one example)")
            return
        try:
            c.loss_and_grad()
        except BackendError as exc:
            if refusal not in str(exc):
                c.fail(f"refused one example without the framework's message {refusal!r}: {exc}")
            return
        c.fail(f"computed a train-mode BatchNorm on one example; its framework refuses that "
               f"({refusal!r}, spec §4.2): has the framework changed?")


REFERENCE_FIND = settings(database=None, derandomize=True, max_examples=1000, deadline=None,
                          suppress_health_check=list(HealthCheck))
"""``find`` over the reference: derandomised, so the counterexample quoted in the spec is stable."""


def _batch_of_one_excess(p: Problem) -> float:
    """max |∇L − (1/N) Σ_i ∇L({x_i})| / tolerance, all in the float64 reference. The tolerance
    is the reference's own bound on each side (§7.1) plus the rounding of the average."""
    n = p.batch.size
    _, full = batch_grad(p)
    ones = [p.with_batch(p.batch.take([i])) for i in range(n)]
    grads = [batch_grad(q)[1] for q in ones]
    bounds = [error_bound(q, REFERENCE).batch_grads for q in ones]
    e_full = error_bound(p, REFERENCE).batch_grads
    worst = 0.0
    for k, v in full.items():
        terms = np.stack([g[k] for g in grads]) / n
        mean = terms.sum(axis=0)
        tol = (e_full[k] + sum(b[k] for b in bounds) / n
               + gamma(n, REFERENCE.u) * np.abs(terms).sum(axis=0) + REFERENCE.u * np.abs(mean))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(np.abs(v - mean) == 0, 0.0, np.abs(v - mean) / tol)
        worst = max(worst, float(ratio.max()))
    return worst


@pytest.mark.clause("4.2.3")
def test_train_mode_batchnorm_gradient_is_not_the_mean_of_batch_of_one_gradients():
    """Hypothesis finds a problem where (1/N) Σ_i ∇L({x_i}) differs from ∇L beyond the
    reference's own error bound: with batch statistics, the examples' gradients do not add up."""
    found = find(layer_problems(require=("batch_norm",), reductions=("mean",)),
                 lambda p: _batch_of_one_excess(p) > 1, settings=REFERENCE_FIND)
    assert found.network.couples_examples
    assert _batch_of_one_excess(found) > 1, repr(found)
    print(f"\n§4.2 counterexample: {found!r}  excess {_batch_of_one_excess(found):.3g}")


@st.composite
def _another_example_changed(draw: st.DrawFn) -> tuple[Problem, int, int, np.ndarray]:
    p = draw(layer_problems(require=("batch_norm",)))
    n = p.batch.size
    i = draw(st.integers(0, n - 1))
    j = draw(st.integers(0, n - 2))
    j = j + (j >= i)  # j ≠ i
    row = draw(st.lists(st.floats(-2, 2, width=32, allow_subnormal=False),
                        min_size=p.network.in_features, max_size=p.network.in_features))
    return p, i, j, np.array(row)


def _changed(p: Problem, j: int, row: np.ndarray) -> Problem:
    x = p.batch.inputs.copy()
    x[j] = row
    b = p.batch
    return p.with_batch(Batch(x, b.targets, b.weights, b.mask, b.variances, b.dropout))


def _loss_change_excess(case: tuple[Problem, int, int, np.ndarray]) -> float:
    """|ℓ_i(x_j changed) − ℓ_i| / (the reference's bounds on both ℓ_i)."""
    p, i, j, row = case
    q = _changed(p, j, row)
    change = abs(float(per_example_losses(q)[i] - per_example_losses(p)[i]))
    tol = float(error_bound(p, REFERENCE).losses[i] + error_bound(q, REFERENCE).losses[i])
    return 0.0 if change == 0 else (np.inf if tol == 0 else change / tol)


@pytest.mark.clause("4.2.2")
def test_train_mode_batchnorm_changing_another_example_changes_an_examples_loss():
    """Hypothesis finds a batch, i ≠ j and a new x_j that change ℓ_i (computed with the batch's
    statistics) by more than the reference's error bound: ℓ_i is not a function of example i."""
    case = find(_another_example_changed(), lambda c: _loss_change_excess(c) > 1,
                settings=REFERENCE_FIND)
    p, i, j, row = case
    assert i != j and _loss_change_excess(case) > 1
    print(f"\n§4.2 counterexample: ℓ_{i} of {p!r} changes with x_{j} := {row.tolist()}")


# -- §4.3 per-example gradients through train-mode BatchNorm are undefined -------------------------
@pytest.mark.clause("4.3")
def test_reference_per_example_gradients_through_train_mode_batchnorm_raise_undefined():
    net = Network((Dense(2, 2), BatchNorm(2), Activation("relu"), Dense(2, 1)))
    p = Problem(net, Loss("squared_error"), Reduction("mean"),
                {k: np.ones(s) for k, s in net.param_shapes().items()},
                Batch(np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]]), np.zeros((3, 1))))
    with pytest.raises(Undefined, match="§4.3"):
        per_example_grads(p)
    assert error_bound(p, REFERENCE).grads == {}  # no tolerance for what is not defined
    batch_grad(p)  # ∇L itself is defined (§4.2)
    eval_mode = Network((Dense(2, 2), BatchNorm(2, False, (0.0, 0.0), (1.0, 1.0)),
                         Activation("relu"), Dense(2, 1)))
    per_example_grads(Problem(eval_mode, p.loss, p.reduction, p.params, p.batch))  # defined


def _bn_problem(n: int = 3) -> Problem:
    net = Network((Dense(2, 3), BatchNorm(3), Activation("tanh"), Dense(3, 1)))
    rng = np.random.default_rng(4)
    params = {k: rng.uniform(-1, 1, s).round(3) for k, s in net.param_shapes().items()}
    x = rng.uniform(-2, 2, (n, 2)).round(3)
    return Problem(net, Loss("squared_error"), Reduction("mean"), params,
                   Batch(x, rng.uniform(-1, 1, (n, 1)).round(3)))


@pytest.mark.clause("4.3")
def test_torch_func_refuses_per_example_gradients_through_train_mode_batchnorm():
    """torch.func.vmap(grad) through ``nn.BatchNorm1d`` in training mode raises by itself: the
    running-statistics update mutates a captured buffer; without running statistics each example
    is a batch of one, which BatchNorm refuses (spec/appendix-b-pitfalls.md#p9, functorch#115)."""
    torch = pytest.importorskip("torch")
    from torch.func import functional_call, grad, vmap

    p = _bn_problem()
    x = torch.as_tensor(p.batch.inputs)
    for track in (True, False):
        model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(
            3, track_running_stats=track), torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()
        params = {k: v.detach() for k, v in model.named_parameters()}

        def loss_one(theta, xi, model=model):
            return functional_call(model, theta, (xi.unsqueeze(0),)).pow(2).sum()

        with pytest.raises((RuntimeError, ValueError)) as info:
            vmap(grad(loss_one), in_dims=(None, 0))(params, x)
        expected = ("mutate a captured Tensor" if track
                    else "Expected more than 1 value per channel when training")
        assert expected in str(info.value), str(info.value)


@pytest.mark.clause("4.3")
def test_a_jax_vmap_of_grad_through_batch_statistics_silently_gives_batch_of_one_gradients():
    """The JAX idiom ``jax.vmap(jax.grad(loss_of_one_example))`` with a BatchNorm that takes its
    statistics over the batch axis raises nothing: inside vmap each example is a batch of one,
    so its "per-example gradient" is ∇L({x_i}) (x̂ = 0: the BatchNorm outputs β) — neither a
    per-example gradient of the batch's loss nor anything that sums to ∇L. Hence §4.3: a backend
    raises ``Undefined`` instead of returning this."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    jax.config.update("jax_enable_x64", True)
    p = _bn_problem()
    th = {k: jnp.asarray(v) for k, v in p.params.items()}

    def loss(theta, x, y):  # the network of _bn_problem on a batch x (B, 2)
        z = x @ theta["0.weight"].T + theta["0.bias"]
        mu = z.mean(axis=0)
        xhat = (z - mu) / jnp.sqrt(((z - mu) ** 2).mean(axis=0) + 1e-5)
        a = jnp.tanh(xhat * theta["1.weight"] + theta["1.bias"])
        out = a @ theta["3.weight"].T + theta["3.bias"]
        return ((out - y) ** 2).mean()

    per_ex = jax.vmap(jax.grad(lambda t, xi, yi: loss(t, xi[None], yi[None])),
                      in_axes=(None, 0, 0))(th, jnp.asarray(p.batch.inputs),
                                            jnp.asarray(p.batch.targets))
    _, full = batch_grad(p)
    for i in range(p.batch.size):
        one = p.with_batch(p.batch.take([i]))
        _, g1 = batch_grad(one)
        tol = problem_tolerance(one, "float64").batch_grads
        for k in g1:
            assert np.all(np.abs(np.asarray(per_ex[k][i]) - g1[k]) <= tol[k]), (k, i)
        assert not np.any(g1["0.weight"])  # nothing below the BatchNorm learns
    assert np.any(full["0.weight"])  # ... while the batch gradient does
    assert _batch_of_one_excess(p) > 1  # and the batch-of-one gradients do not average to ∇L


# -- §4.4 eval-mode BatchNorm is per-example again -----------------------------------------------
EVAL_BN = layer_problems(layers=PER_EXAMPLE_KINDS, require=("batch_norm_eval",),
                         activations=ACTS)


@pytest.mark.clause("4.4")
@given(problem=EVAL_BN)
def test_with_eval_mode_batchnorm_the_batch_gradient_is_the_reduction_of_the_per_example_gradients(
        target, problem):
    with check(target, problem) as c:
        reduction_identity(c)


@pytest.mark.clause("4.4")
@given(problem=EVAL_BN)
def test_with_eval_mode_batchnorm_per_example_gradients_match_the_reference_and_the_batch_gradient(
        target, method, problem):
    with check(target, problem) as c:
        per_example_identities(c)


@pytest.mark.clause("4.4")
@given(problem=layer_problems(layers=PER_EXAMPLE_KINDS, require=("batch_norm_eval",),
                              activations=ACTS, min_batch=2), data=st.data())
def test_with_eval_mode_batchnorm_a_per_example_gradient_does_not_depend_on_the_other_examples(
        target, method, problem, data):
    n = problem.batch.size
    subset = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n - 1),
                              label="subset"))
    with check(target, problem) as c:
        sub_batch_identity(c, subset)
