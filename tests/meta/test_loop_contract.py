"""§8.10: the optional ``train_loop`` — its answer validated like every other, the loop's own
arguments checked with one-line errors, the clipping ε a backend declares bounded."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchgrad_spec.loops import clip_epsilon
from reference import Batch, Dense, Loss, Network, Problem, Reduction
from reference.contract import OPTIONAL, BackendError, Config, checked_train_loop
from reference.loop import Loop, LoopError, LoopResult, loop_batches, prefix, run_loop
from reference.numpy_backend import NumpyBackend
from reference.update import Optimizer

pytestmark = [pytest.mark.meta, pytest.mark.clause("8.10")]

PROBLEM = Problem(network=Network((Dense(2, 1),)), loss=Loss("squared_error"),
                  reduction=Reduction("mean"),
                  params={"0.weight": np.array([[0.5, -1.0]]), "0.bias": np.array([0.25])},
                  batch=Batch(np.arange(10.0).reshape(5, 2) / 4, np.arange(5.0).reshape(5, 1)))
SGD = Optimizer("sgd", 0.125)
LOOP = Loop(SGD, (2, 2, 1), accumulation_steps=2, loss_scale=4.0, overflow=(0,))
CONFIG = Config(dtype="float64")


class Answer(NumpyBackend):
    """The numpy backend whose ``train_loop`` answer is replaced by ``change(answer)``."""

    name = "answer"

    def __init__(self, change) -> None:
        self.change = change

    def train_loop(self, problem, config, loop, batches):
        out = super().train_loop(problem, config, loop, batches)
        return self.change({"params": dict(out.params), "optimizer_steps": out.optimizer_steps,
                            "skipped": out.skipped, "reported_losses": out.reported_losses})


def test_train_loop_is_an_optional_method_and_the_numpy_backend_runs_the_reference():
    assert "train_loop" in OPTIONAL
    out = checked_train_loop(NumpyBackend(), PROBLEM, CONFIG, LOOP)
    ref = run_loop(PROBLEM, LOOP)
    assert out.skipped == (0,) and out.optimizer_steps == 1
    assert all(np.array_equal(out.params[k], ref.params[k]) for k in ref.params)
    assert math.isnan(out.reported_losses[0]) and math.isfinite(out.reported_losses[1])


@pytest.mark.parametrize("change, message", [
    (lambda a: {**a, "params": {"0.weight": a["params"]["0.weight"]}}, "expected exactly"),
    (lambda a: {**a, "params": {**a["params"], "0.bias": np.array([np.nan])}}, "non-finite"),
    (lambda a: {**a, "optimizer_steps": 1.5}, "optimizer_steps=1.5"),
    (lambda a: {**a, "skipped": (7,)}, "skipped=(7,)"),
    (lambda a: {**a, "reported_losses": (1.0,)}, "one per window"),
    (lambda a: {**a, "reported_losses": (0.0, math.inf)}, "non-finite reported losses"),
    (lambda a: LoopResult(a["params"], a["optimizer_steps"], a["skipped"], None), None),
])
def test_a_malformed_answer_is_a_contract_failure_that_says_what_is_wrong(change, message):
    backend = Answer(change)
    if message is None:  # no reported losses: allowed (a trainer that logs none)
        assert checked_train_loop(backend, PROBLEM, CONFIG, LOOP).reported_losses is None
        return
    with pytest.raises(BackendError, match="train_loop") as info:
        checked_train_loop(backend, PROBLEM, CONFIG, LOOP)
    assert message in str(info.value) and info.value.call == "train_loop"


def test_a_backend_that_writes_into_its_batches_or_raises_fails_with_the_call_named():
    class Writes(NumpyBackend):
        name = "writes"

        def train_loop(self, problem, config, loop, batches):
            batches[1].inputs[0, 0] = 99.0
            return super().train_loop(problem, config, loop, batches)

    class Raises(NumpyBackend):
        name = "raises"

        def train_loop(self, problem, config, loop, batches):
            raise RuntimeError("no GPU")

    with pytest.raises(BackendError, match=r"modified batches\[1\]\.inputs in place"):
        checked_train_loop(Writes(), PROBLEM, CONFIG, LOOP)
    with pytest.raises(BackendError, match="raised RuntimeError: no GPU"):
        checked_train_loop(Raises(), PROBLEM, CONFIG, LOOP)
    with pytest.raises(BackendError, match="does not implement the optional train_loop"):
        checked_train_loop(type("Plain", (), {"name": "plain"})(), PROBLEM, CONFIG, LOOP)


@pytest.mark.parametrize("kwargs, message", [
    ({"micro_batches": ()}, "micro_batches must be one or more sizes"),
    ({"accumulation_steps": 0}, "accumulation_steps must be an integer >= 1"),
    ({"clip_norm": -1.0}, "clip_norm must be None or finite and > 0"),
    ({"per_example_clip": 1.0}, "per_example_clip and expected_batch_size go together"),
    ({"loss_scale": 3.0}, "power of two"),
    ({"overflow": (0,)}, "overflow needs loss_scale"),
    ({"loss_scale": 2.0, "overflow": (5,)}, "overflow indices must name micro-batches"),
    ({"ranks": 3}, "ranks must be an integer in 1..min(micro_batches)"),
])
def test_a_loop_that_cannot_be_is_refused_with_a_one_line_error(kwargs, message):
    args = {"optimizer": SGD, "micro_batches": (2, 2, 1), **kwargs}
    with pytest.raises(LoopError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        Loop(**args)
    assert "\n" not in str(info.value)


def test_a_loop_that_does_not_fit_its_problem_is_refused():
    with pytest.raises(LoopError, match="micro_batches sum to 4, but the batch has N = 5"):
        loop_batches(PROBLEM, Loop(SGD, (2, 2)))


def test_windows_prefixes_and_overflow_batches():
    loop = Loop(SGD, (2, 2, 1), accumulation_steps=2, loss_scale=2.0, overflow=(2,))
    assert loop.windows == [(0, 1), (2,)] and loop.skipped() == (1,)
    p1, l1 = prefix(PROBLEM, loop, 1)
    assert p1.batch.size == 4 and l1.micro_batches == (2, 2) and l1.overflow == ()
    batches = loop_batches(PROBLEM, loop)
    assert np.all(np.isnan(batches[2].inputs)) and not np.any(np.isnan(batches[0].inputs))
    assert loop.features() == {"loop:loss_scale"}
    assert eval(repr(loop), {"Loop": Loop, "Optimizer": Optimizer}) == loop


def test_the_declared_clipping_epsilon_is_bounded():
    assert clip_epsilon(NumpyBackend()) == 0.0
    assert clip_epsilon(type("T", (), {"clip_epsilon": 1e-6})()) == 1e-6
    with pytest.raises(BackendError, match=r"clip_epsilon=0.001; allowed: a number in \[0, "):
        clip_epsilon(type("T", (), {"name": "t", "clip_epsilon": 1e-3})())
