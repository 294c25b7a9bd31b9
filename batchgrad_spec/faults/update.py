"""Deliberately wrong ``train`` implementations: the update-step bugs chapter 6 exists to catch.

Each wraps the numpy reference backend (``reference.update`` in the dtype), wrong in one way:

* ``online_within_batch``       inside every batch, one SGD/Adam step per example with that
  example's share κ_i g_i of the gradient, each at the parameters the previous example's step
  left: the batch gradient taken at N different θ (§2.5 at the update level), caught by §6.1
* ``adam_counter_per_example``  Adam's step counter advanced once per example instead of once per
  optimiser step (bias corrections 1 − βᵗ with t = k·N): caught by §6.6
* ``torch_autocast_around_the_loop``  PyTorch's backend with the whole training loop inside one
  ``torch.autocast(dtype=torch.bfloat16)`` region (precision ``bf16_autocast``): autocast caches
  its bfloat16 copy of each weight until the region ends, so every step's forward pass uses the
  first step's weights; caught by §6.2 (needs torch; correct in the other precision modes)

Loadable as ``--backend batchgrad_spec.faults.update:<name>``; ``tests/meta/test_update_faults.py``
checks that each is caught by its clause.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from reference.batch import Batch
from reference.contract import Config
from reference.grads import per_example_grads
from reference.numpy_backend import NumpyBackend
from reference.problem import Problem
from reference.types import Grads
from reference.update import Optimizer, State, gradient, step


class _FaultyTrain(NumpyBackend):
    fault = ""

    def __init__(self, name: str) -> None:
        self.name = name

    def versions(self) -> Mapping[str, str]:
        return {**super().versions(), "fault": self.fault}


class OnlineWithinBatch(_FaultyTrain):
    """One optimiser step per example, with gradient κ_i g_i(θ_i) at the running θ_i."""

    fault = "one optimiser step per example inside the batch"

    def train(self, problem: Problem, config: Config, optimizer: Optimizer,
              batches: Sequence[Batch]) -> Grads:
        dt = np.dtype(config.dtype)
        theta = {k: v.astype(dt) for k, v in problem.params.items()}
        state = State()
        with np.errstate(all="ignore"):
            for b in batches:
                kappa = problem.with_batch(b).coefficients
                for i in range(b.size):
                    one = problem.with_params(theta).with_batch(b.take([i]))
                    _, g = per_example_grads(one, dt)
                    share = {k: dt.type(kappa[i]) * v[0] for k, v in g.items()}
                    theta, state = step(optimizer, theta, share, state, dt)
        return {k: v.astype(np.float64) for k, v in theta.items()}


class AdamCounterPerExample(_FaultyTrain):
    """The right gradient, but Adam's counter t advances by N (the batch size) per step."""

    fault = "Adam step counter advanced per example"

    def train(self, problem: Problem, config: Config, optimizer: Optimizer,
              batches: Sequence[Batch]) -> Grads:
        dt = np.dtype(config.dtype)
        theta = {k: v.astype(dt) for k, v in problem.params.items()}
        state = State()
        for b in batches:
            if optimizer.adam:
                state.t += b.size - 1
            theta, state = step(optimizer, theta, gradient(problem, theta, b, dt), state, dt)
        return {k: v.astype(np.float64) for k, v in theta.items()}


def _torch_autocast_around_the_loop() -> Any:
    """PyTorch's backend whose ``train`` runs the whole loop inside one precision region."""
    from batchgrad_spec.backends import torch_backend as tb

    class AutocastAroundTheLoop(tb.TorchBackend):
        name = "torch_autocast_around_the_loop"

        def versions(self) -> Mapping[str, str]:
            return {**super().versions(), "fault": "training loop inside one autocast region"}

        def train(self, problem: Problem, config: Config, optimizer: Optimizer,
                  batches: Sequence[Batch]) -> Grads:
            with tb._strict(config):  # autocast's weight cache lives until this region ends
                model = tb.build_model(problem, config)
                opt = tb.torch_optimizer(model.parameters(), optimizer)
                for batch in batches:
                    x, y, c = tb._tensors(problem.with_batch(batch), config)
                    opt.zero_grad(set_to_none=True)
                    tb.reduced_loss(problem, model(x), y, c).backward()
                    opt.step()
                return {n: tb._numpy(p) for n, p in model.named_parameters()}

    return AutocastAroundTheLoop()


online_within_batch = OnlineWithinBatch("online_within_batch")
adam_counter_per_example = AdamCounterPerExample("adam_counter_per_example")

_LAZY: dict[str, Callable[[], Any]] = {
    "torch_autocast_around_the_loop": _torch_autocast_around_the_loop}
_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """Backends that need an optional framework, built when first asked for (PEP 562)."""
    if name in _LAZY:
        if name not in _built:
            _built[name] = _LAZY[name]()
        return _built[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
