"""Backends that test what the suite *reports* (spec §8.8), not what it checks:

* ``interrupts``          the third ``loss_and_grad`` call raises ``KeyboardInterrupt`` (Ctrl-C in
  the middle of a clause): the clause must be reported "interrupted", never "skip"
* ``undefined_answer``    ``loss_and_grad`` raises ``reference.contract.Undefined`` where every
  quantity is defined: the checked calls pass it through (an answer, not a contract breach), so
  the test ends in an error, which must be reported "error", never "pass" or "skip"
* ``error_grows_with_inputs``  ∇L errs by a relative 10⁻⁶·e^{4 max|x|} (at most 10⁶) whenever
  an input exceeds ½ in magnitude: Hypothesis's search meets large errors, its shrinking ends just
  above ½ with a small one, so the largest ratio of the run is not the printed counterexample's
"""

from __future__ import annotations

import numpy as np

from reference.contract import Config, Undefined
from reference.problem import Problem
from reference.types import Grads

from .base import Faulty

__all__ = ["error_grows_with_inputs", "interrupts", "undefined_answer"]


class Interrupts(Faulty):
    """Right answers, until the third ``loss_and_grad`` call raises ``KeyboardInterrupt``."""

    fault = "Ctrl-C during the third loss_and_grad call"
    calls = 0

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return super().loss_and_grad(problem, config)


class UndefinedAnswer(Faulty):
    """``loss_and_grad`` says the batch gradient is undefined (``Undefined``), for every
    problem: not a malformed answer the contract's checks turn into a clause failure, but an
    exception the test does not expect."""

    fault = "loss_and_grad raises Undefined"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        raise Undefined("undefined_answer: no batch gradient (deliberately, for every problem)")


class ErrorGrowsWithInputs(Faulty):
    """∇L times 1 + 10⁻⁶·min(e^{4 max|x|}, 10¹²) when max|x| > ½, else right."""

    fault = "∇L errs by a relative 1e-6·exp(4 max|x|) above |x| = 1/2"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = super().loss_and_grad(problem, config)
        top = float(np.max(np.abs(problem.batch.inputs)))
        if top <= 0.5:
            return loss, grads
        err = 1e-6 * min(float(np.exp(4.0 * top)), 1e12)
        return loss, {k: v * v.dtype.type(1.0 + err) for k, v in grads.items()}


interrupts = Interrupts("interrupts")
undefined_answer = UndefinedAnswer("undefined_answer")
error_grows_with_inputs = ErrorGrowsWithInputs("error_grows_with_inputs")
