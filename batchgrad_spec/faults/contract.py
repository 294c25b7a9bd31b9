"""Contract faults (spec §8.2, §8.3): answers that are not well-formed, a crash, and an object
that is not a backend at all. The contract's validation turns each into a clause failure, or
``load_backend`` refuses it; ``tests/meta/test_contract_errors.py`` checks what the user sees.

* ``wrong_shape``    the first gradient has an extra trailing axis
* ``returns_nan``    NaN in the first batch gradient
* ``raises``         ``loss_and_grad`` raises ``RuntimeError("boom")``
* ``not_a_backend``  an object lacking most of the contract (rejected at load, spec §8.2)
* ``copies_and_loop`` correct answers, but its per-example methods are ("copies", "loop"): the
  suite asks it only for those (spec §8.9) and says once that §2.12's name "vmap" is missing
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from reference.contract import Config
from reference.grads import batch_grad
from reference.problem import Problem
from reference.types import Grads

from .base import Faulty, PerExample

__all__ = ["copies_and_loop", "not_a_backend", "raises", "returns_nan", "wrong_shape"]


def _first(grads: Grads) -> str:
    return next(iter(grads))


def _extra_axis(grads: Grads) -> Grads:
    k = _first(grads)
    return {**grads, k: grads[k][..., None]}


class WrongShape(Faulty):
    """The first parameter's gradient has an extra trailing axis: (*shape, 1) from
    ``loss_and_grad`` and (N, *shape, 1) from ``per_example``. Values are right."""

    fault = "gradient with an extra axis"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = super().loss_and_grad(problem, config)
        return loss, _extra_axis(grads)

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        losses, grads = super().per_example(problem, config, method)
        return losses, _extra_axis(grads)


class ReturnsNaN(Faulty):
    """``loss_and_grad`` returns NaN as the first element of the first parameter's gradient."""

    fault = "NaN in a gradient"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        loss, grads = super().loss_and_grad(problem, config)
        k = _first(grads)
        bad = np.array(grads[k], copy=True)
        bad.flat[0] = np.nan
        return loss, {**grads, k: bad}


class Raises(Faulty):
    """``loss_and_grad`` raises ``RuntimeError("boom")`` (a crash inside the framework)."""

    fault = "loss_and_grad raises"

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        raise RuntimeError("boom")


class NotABackend:
    """Has a name, versions and loss_and_grad, but not devices, dtypes, per_example_methods or
    per_example: ``load_backend`` must refuse it, naming what is missing."""

    name = "not_a_backend"

    def versions(self) -> Mapping[str, str]:
        return {}

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Grads]:
        return batch_grad(problem)


class CopiesAndLoop(Faulty):
    """Right in every answer, but it names its vectorised method "copies" (one copy of θ per
    example, as Appendix A describes it for a framework without vmap) instead of "vmap": it
    offers ("copies", "loop"). Every test must ask it only for these two names (spec §8.9); the
    one test of §2.12's required names fails, saying that "vmap" is missing. Asked for any other
    name it raises, as an adapter does."""

    fault = "per-example methods named ('copies', 'loop')"

    def per_example_methods(self) -> tuple[str, ...]:
        return ("copies", "loop")

    def per_example(self, problem: Problem, config: Config, method: str) -> PerExample:
        if method not in self.per_example_methods():
            raise ValueError(f"unknown per-example method {method!r}; this backend has "
                             f"{self.per_example_methods()}")
        return super().per_example(problem, config, "vmap" if method == "copies" else method)


wrong_shape = WrongShape("wrong_shape")
returns_nan = ReturnsNaN("returns_nan")
raises = Raises("raises")
not_a_backend = NotABackend()
copies_and_loop = CopiesAndLoop("copies_and_loop")
