"""Spec chapter 8: the backend contract (interface, loading, validated answers)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from batchgrad_spec.harness import BUILTINS, check
from batchgrad_spec.resources import ROOT
from batchgrad_spec.worked import worked_example_problem
from reference.contract import (
    Backend,
    BackendError,
    Config,
    checked_loss_and_grad,
    checked_per_example,
    load_backend,
)
from reference.numpy_backend import NumpyBackend


@pytest.mark.clause("8.1")
def test_backend_implements_the_contract(target, method):
    b = target.backend
    assert isinstance(b, Backend)
    assert isinstance(b.name, str) and b.name
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in b.versions().items())
    assert target.config.device in b.devices()
    assert set(b.dtypes()) <= {"float64", "float32"}
    assert method in b.per_example_methods()
    with check(target, worked_example_problem()) as c:
        loss, grads = c.loss_and_grad()
        losses, per_ex = c.per_example()
    assert isinstance(loss, float) and set(grads) == {"0.weight"}
    assert losses.shape == (2,) and per_ex["0.weight"].shape == (2, 1, 5)


@pytest.mark.clause("8.2")
def test_unknown_backend_is_a_clear_error():
    with pytest.raises(BackendError, match=r"unknown backend 'nosuch'.*numpy, torch.*module:attr"):
        load_backend("nosuch", BUILTINS)
    with pytest.raises(BackendError, match=r"cannot import module 'no_such_module'"):
        load_backend("no_such_module:thing", BUILTINS)
    with pytest.raises(BackendError, match=r"has no attribute 'missing'"):
        load_backend("reference.numpy_backend:missing", BUILTINS)
    with pytest.raises(BackendError, match=r"does not implement the contract: missing .*"
                                           r"loss_and_grad"):
        load_backend("reference.activations:ACTIVATION_NAMES", BUILTINS)
    assert load_backend("reference.numpy_backend:NumpyBackend").name == "numpy"  # a class
    assert load_backend("numpy", BUILTINS).name == "numpy"


class _Broken(NumpyBackend):
    """The numpy backend with one answer broken, for §8.3."""

    def __init__(self, fault: str) -> None:
        self.fault = fault

    def loss_and_grad(self, problem, config):
        loss, grads = super().loss_and_grad(problem, config)
        if self.fault == "raises":
            raise RuntimeError("boom")
        if self.fault == "shape":
            grads = {k: v.T[None] for k, v in grads.items()}
        if self.fault == "nan":
            grads = {k: np.full_like(v, np.nan) for k, v in grads.items()}
        if self.fault == "extra":
            grads = {**grads, "9.weight": np.zeros(1)}
        if self.fault == "single":
            return loss
        if self.fault == "writes_batch":
            problem.batch.inputs[0, 0] += 1.0
        if self.fault == "writes_params":
            problem.params["0.weight"][0, 0] += 1.0
        return loss, grads

    def per_example(self, problem, config, method):
        losses, grads = super().per_example(problem, config, method)
        return (losses[:-1] if self.fault == "shape" else losses), grads


@pytest.mark.clause("8.3.1")
@pytest.mark.parametrize("fault, message", [
    ("raises", r"loss_and_grad on cpu-float64-strict raised RuntimeError: boom"),
    ("shape", r"gradient '0.weight' of shape \(1, 5, 1\), but the contract requires \(1, 5\)"),
    ("nan", r"non-finite gradient '0.weight' \(NaN or inf at \[\[0, 0\]"),
    ("extra", r"returned gradients for \['0.weight', '9.weight'\], expected exactly"),
    ("single", r"expected a pair \(loss, gradients\)"),
])
def test_contract_violations_are_clear_errors(fault, message):
    backend, problem, config = _Broken(fault), worked_example_problem(), Config()
    with pytest.raises(BackendError, match=message):
        checked_loss_and_grad(backend, problem, config)
    if fault == "shape":
        with pytest.raises(BackendError, match=r"losses of shape \(1,\).*requires \(2,\)"):
            checked_per_example(backend, problem, config, "vmap")


@pytest.mark.clause("8.3.2")
@pytest.mark.parametrize("fault, what", [("writes_batch", r"problem\.batch\.inputs"),
                                         ("writes_params", r"problem\.params\['0\.weight'\]")])
def test_a_backend_writing_into_the_problem_is_a_clear_error(fault, what):
    problem = worked_example_problem()
    before = (problem.batch.inputs.copy(), problem.params["0.weight"].copy())
    with pytest.raises(BackendError, match=r"loss_and_grad on cpu-float64-strict modified "
                                           + what + r" in place; a problem is read-only"):
        checked_loss_and_grad(_Broken(fault), problem, Config())
    # The backend wrote into a private copy: the caller's problem is untouched.
    assert np.array_equal(problem.batch.inputs, before[0])
    assert np.array_equal(problem.params["0.weight"], before[1])


@pytest.mark.clause("8.1")
def test_device_discovery_does_not_initialise_cuda():
    """Importing the torch backend and asking for its devices must not initialise CUDA."""
    pytest.importorskip("torch")
    code = ("import torch, batchgrad_spec.backends.torch_backend as t; t.backend.devices(); "
            "assert not torch.cuda.is_initialized(), 'CUDA initialised'")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.clause("8.1")
def test_an_absent_accelerator_is_skipped_with_a_one_line_reason():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: nothing is absent")
    # the suite's own command: the same in a checkout and installed (where no conftest loads
    # the plugin and the chapter tests are inside the package)
    run = subprocess.run([sys.executable, "-m", "batchgrad_spec", "-q", "-rs",
                          "-p", "no:cacheprovider", "--backend", "torch", "--dtype", "float64",
                          "-k", "worked_example", "tests/test_ch2_core.py"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "torch: device 'cuda' is not present here (devices: cpu)" in out, out
    assert "2 passed, 2 skipped" in out, out
