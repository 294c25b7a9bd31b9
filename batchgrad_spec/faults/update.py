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

from collections.abc import Sequence
from typing import Any

import numpy as np

from reference.batch import Batch
from reference.contract import Config
from reference.grads import per_example_grads
from reference.problem import Problem
from reference.types import Grads
from reference.update import Optimizer, State, gradient, step

from .base import Fault, Faulty, lazy_attributes

__all__ = ["adam_counter_per_example", "online_within_batch"]  # and the torch fault, lazily

Params = dict[str, np.ndarray]


class _FaultyTrain(Faulty):
    """``train`` as the reference's loop (θ and the optimiser state in the dtype, one
    ``batch_step`` per batch, θ returned in float64), with the step of a batch done wrong."""

    def batch_step(self, problem: Problem, optimizer: Optimizer, theta: Params, state: State,
                   batch: Batch, dt: np.dtype) -> tuple[Params, State]:
        raise NotImplementedError

    def train(self, problem: Problem, config: Config, optimizer: Optimizer,
              batches: Sequence[Batch]) -> Grads:
        dt = np.dtype(config.dtype)
        theta = {k: v.astype(dt) for k, v in problem.params.items()}
        state = State()
        for b in batches:
            theta, state = self.batch_step(problem, optimizer, theta, state, b, dt)
        return {k: v.astype(np.float64) for k, v in theta.items()}


class OnlineWithinBatch(_FaultyTrain):
    """One optimiser step per example, with gradient κ_i g_i(θ_i) at the running θ_i."""

    fault = "one optimiser step per example inside the batch"

    def batch_step(self, problem: Problem, optimizer: Optimizer, theta: Params, state: State,
                   batch: Batch, dt: np.dtype) -> tuple[Params, State]:
        with np.errstate(all="ignore"):
            kappa = problem.with_batch(batch).coefficients
            for i in range(batch.size):
                one = problem.with_params(theta).with_batch(batch.take([i]))
                _, g = per_example_grads(one, dt)
                share = {k: dt.type(kappa[i]) * v[0] for k, v in g.items()}
                theta, state = step(optimizer, theta, share, state, dt)
        return theta, state


class AdamCounterPerExample(_FaultyTrain):
    """The right gradient, but Adam's counter t advances by N (the batch size) per step."""

    fault = "Adam step counter advanced per example"

    def batch_step(self, problem: Problem, optimizer: Optimizer, theta: Params, state: State,
                   batch: Batch, dt: np.dtype) -> tuple[Params, State]:
        if optimizer.adam:
            state.t += batch.size - 1
        return step(optimizer, theta, gradient(problem, theta, batch, dt), state, dt)


def _torch_autocast_around_the_loop() -> Any:
    """PyTorch's backend whose ``train`` runs the whole loop inside one precision region."""
    from batchgrad_spec.backends import torch_backend as tb

    class AutocastAroundTheLoop(Fault, tb.TorchBackend):
        name = "torch_autocast_around_the_loop"
        fault = "training loop inside one autocast region"

        def train(self, problem: Problem, config: Config, optimizer: Optimizer,
                  batches: Sequence[Batch]) -> Grads:
            # autocast's weight cache lives until this region ends
            with tb.precision_region(config):
                model = tb.build_model(problem, config)
                opt = tb.torch_optimizer(model.parameters(), optimizer)
                for batch in batches:
                    x, y, c = tb.tensors(problem.with_batch(batch), config)
                    opt.zero_grad(set_to_none=True)
                    tb.reduced_loss(problem, model(x), y, c).backward()
                    opt.step()
                return {n: tb.to_numpy(p) for n, p in model.named_parameters()}

    return AutocastAroundTheLoop()


online_within_batch = OnlineWithinBatch("online_within_batch")
adam_counter_per_example = AdamCounterPerExample("adam_counter_per_example")

__getattr__ = lazy_attributes(__name__, {
    "torch_autocast_around_the_loop": _torch_autocast_around_the_loop})
