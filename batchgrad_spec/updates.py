"""Helpers for the update-step properties of spec chapter 6: optimiser strategies, and a check
that follows a backend's training run step by step against the reference.

A backend's ``train`` (optional contract method, spec §6.1) returns only the final parameters.
``UpdateCheck.trajectory`` asks for every prefix of the run — ``train(batches[:k])`` for
k = 1..K — and checks step k from the parameters the backend itself reported after k − 1 steps:
expected θ_k is the reference's update from θ̂_{k−1} with the reference's optimiser state
accumulated along θ̂_0..θ̂_{k−1} (``reference.update.shadow``), and the tolerance propagates the
chapter-7 gradient bounds through the update and the optimiser state, step by step
(``reference.update.update_tolerance``). This needs the backend's runs to be repeatable, so
that the θ̂_{k−1} it reports is the one its k-step run passed through: bitwise on the CPU,
checked by §6.7.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from reference.batch import Batch
from reference.contract import checked_train
from reference.grads import batch_grad
from reference.problem import Problem
from reference.types import Grads
from reference.update import Optimizer, State, gradient, shadow, step, update_tolerance

from .harness import Check

SMOOTH = ("identity", "tanh", "sigmoid", "softplus", "gelu", "gelu_tanh")
"""Activations with a continuous second derivative: every one but relu (spec §6.2)."""


def rates(*, low: float = 2.0**-10, high: float = 0.5) -> st.SearchStrategy[float]:
    """Learning rates η, float32-representable, in [low, high]; shrinks towards ``low``."""
    return st.floats(low, high, width=32)


def optimizers(names: Sequence[str] = ("sgd", "adam", "adamw")) -> st.SearchStrategy[Optimizer]:
    """Optimisers of ``reference.update`` with float32-representable hyperparameters: η in
    [2⁻¹⁰, ½] (Adam: [2⁻¹⁰, 2⁻⁴]), momentum 0 or in [½, 1 − 2⁻⁶], PyTorch's default betas or
    β₁ in [½, 1 − 2⁻⁴], β₂ in [1 − 2⁻³, 1 − 2⁻¹¹], ε of 10⁻⁸, 10⁻⁶ or 10⁻³, weight decay 0 or in
    [2⁻¹⁰, ½]."""
    decay = st.one_of(st.just(0.0), st.floats(2.0**-10, 0.5, width=32))

    @st.composite
    def build(draw: st.DrawFn) -> Optimizer:
        name = draw(st.sampled_from(tuple(names)))
        if name == "sgd":
            momentum = draw(st.one_of(st.just(0.0), st.floats(0.5, 1 - 2.0**-6, width=32)))
            return Optimizer("sgd", draw(rates()), momentum=momentum, weight_decay=draw(decay))
        betas = draw(st.one_of(st.just((0.9, 0.999)), st.tuples(
            st.floats(0.5, 1 - 2.0**-4, width=32), st.floats(1 - 2.0**-3, 1 - 2.0**-11, width=32))))
        eps = draw(st.sampled_from((1e-8, 1e-6, 1e-3)))
        return Optimizer(name, draw(rates(high=2.0**-4)), betas=betas, eps=eps,
                         weight_decay=draw(decay))

    return build()


MAX_PARAM = 8.0
"""Multi-step runs are checked where the reference's parameters stay within |θ| ≤ 8 (4× the
strategies' bound on θ₀): there every activation stays far from float32 overflow (spec §7.1), and
an SGD rate that makes the run diverge is not a question about the update rule."""


def stays_bounded(problem: Problem, opt: Optimizer, batches: Sequence[Batch]) -> bool:
    """Whether the reference run (float64) keeps every parameter finite and within MAX_PARAM."""
    theta, state = dict(problem.params), State()
    with np.errstate(all="ignore"):
        for b in batches:
            theta, state = step(opt, theta, gradient(problem, theta, b), state)
            if not all(np.all(np.abs(v) <= MAX_PARAM) for v in theta.values()):
                return False
    return True


def gentle(opt: Optimizer, problem: Problem) -> Optimizer:
    """SGD at rate η / max(1, G), G the largest element of ∇L at θ₀, so that a step moves no
    parameter by more than η (Adam's steps are ≈ η per element already)."""
    if opt.name != "sgd":
        return opt
    g = largest(batch_grad(problem)[1])
    return replace(opt, lr=opt.lr / max(1.0, g))


def whole(problem: Problem, k: int) -> tuple[list[Batch], str]:
    """The problem's batch, k times: (batches, the Python expression for them)."""
    return [problem.batch] * k, f"[problem.batch] * {k}"


def singles(problem: Problem) -> tuple[list[Batch], str]:
    """One batch per example, in order: (batches, the Python expression for them)."""
    n = problem.batch.size
    return ([problem.batch.take([i]) for i in range(n)],
            f"[problem.batch.take([i]) for i in range({n})]")


class UpdateCheck(Check):
    """``Check`` with the optional ``train`` call and step-by-step comparison (spec §6.1)."""

    optimizer: Optimizer | None = None
    batches_src = "[problem.batch]"

    def train(self, optimizer: Optimizer, batches: Sequence[Batch], *,
              expr: str = "batches") -> Grads:
        """The backend's θ after training on ``batches`` (written ``expr`` in the repro snippet,
        with the snippet's ``optimizer``); the check remembers the call, for ``close``."""
        theta = checked_train(self.target.backend, self.problem, self.target.config, optimizer,
                              batches)
        self._made.append(theta)  # as Check._remember, for a call that returns one value
        self._call_of[id(theta)] = f"checked_train(backend, problem, config, optimizer, {expr})"
        return theta

    def trajectory(self, optimizer: Optimizer, batches: Sequence[Batch], src: str,
                   what: str = "θ") -> list[Grads]:
        """θ̂_1..θ̂_K of the backend's run (one call per prefix), each checked against the
        reference's step from the backend's previous parameters. ``src`` is the Python
        expression of ``batches`` in terms of ``problem`` (for the repro snippet). Returns
        [θ̂_0, …, θ̂_K]."""
        __tracebackhide__ = True
        p = self.problem
        self.optimizer, self.batches_src = optimizer, src
        if len(batches) > 1:
            assume(stays_bounded(p, optimizer, batches))
        reached: list[Grads] = [dict(p.params)]
        for k in range(1, len(batches) + 1):
            reached.append(self.train(optimizer, batches[:k], expr=f"batches[:{k}]"))
        expected = shadow(p, optimizer, batches, reached[:-1])
        tol = update_tolerance(p, optimizer, batches, reached[:-1], self.target.config.dtype,
                               self.target.config.precision)
        for k in range(len(batches)):
            before = ("[problem.params] + [checked_train(backend, problem, config, optimizer, "
                      f"batches[:j]) for j in range(1, {k + 1})]")
            self.close(reached[k + 1], expected[k], tol[k], what=f"{what} after step {k + 1}",
                       expect=f"shadow(problem, optimizer, batches[:{k + 1}], {before})[{k}]")
        return reached

    def repro(self, call: str, expect: str) -> str:
        lines = super().repro(call, expect).split("\n")
        at = next(i for i, line in enumerate(lines) if line.startswith("observed = "))
        extra = ["from reference.contract import checked_train",
                 "from reference.update import Optimizer, shadow, sgd_decoupled_step"]
        if self.optimizer is not None:
            extra.append(f"optimizer = {self.optimizer!r}")
        extra.append(f"batches = {self.batches_src}")
        return "\n".join(lines[:at] + extra + lines[at:])


def largest(grads: Grads) -> float:
    """max |x| over every parameter."""
    return max(float(np.max(np.abs(v))) if v.size else 0.0 for v in grads.values())
