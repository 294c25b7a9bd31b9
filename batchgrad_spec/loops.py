"""Helpers for the training-loop properties of spec chapter 10: a strategy of ``Loop``s for a
problem, and a check that follows a backend's epoch window by window against the reference.

A backend's ``train_loop`` (optional contract method, spec §8.10) returns the parameters after
its epoch, its step counter, the windows it skipped and the losses it reported.
``LoopCheck.epoch`` asks for every prefix of the epoch — the first w windows, w = 1..W
(``reference.loop.prefix``) — and checks window w from the parameters the backend itself reached
after w − 1 windows: expected θ_w is the reference's step from θ̂_{w−1}
(``reference.loop.shadow_loop``), the tolerance is ``reference.loop_bounds.loop_tolerance``;
a skipped window must return its parameters bit for bit. As in chapter 6 this needs repeatable
runs (§6.7).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from reference.contract import BackendError, checked_train_loop
from reference.grads import batch_grad, per_example_grads
from reference.loop import (
    CLIP_EPSILON,
    Loop,
    LoopResult,
    global_norm,
    loop_batches,
    prefix,
    run_loop,
    shadow_loop,
    window_problem,
)
from reference.loop_bounds import loop_tolerance, loss_tolerance
from reference.problem import Problem
from reference.types import Grads

from .harness import Check
from .strategies import splits
from .updates import MAX_PARAM, gentle, optimizers

__all__ = ["LOSS_SCALES", "LoopCheck", "clip_epsilon", "loops", "run_of"]

LOSS_SCALES = (2.0**8, 2.0**16)
"""Loss scales drawn: powers of two, GradScaler's default initial scale 2¹⁶ among them."""


def _threshold(draw: st.DrawFn, norm: float, label: str) -> float:
    """A clipping threshold c = r·norm, r in [1/8, 2] (float32): both branches of min(1, c/‖g‖)
    occur. Shrinks towards r = 1/8 (clipping active)."""
    r = draw(st.floats(0.125, 2.0, width=32), label=label)
    return float(r * norm) if norm > 0 else float(r)


def loops(problem: Problem, *, clip_norm: bool = False, per_example_clip: bool = False,
          loss_scale: bool = False, overflow: bool = False, ranks: int = 1,
          uneven: bool | None = None, names: Sequence[str] = ("sgd", "adam", "adamw"),
          min_windows: int = 1) -> st.SearchStrategy[Loop]:
    """Loops over ``problem``'s batch (N ≥ 2): 2–4 micro-batches (``splits``, each ≥ ``ranks``),
    K micro-batches per optimizer step with at least ``min_windows`` windows, the last one
    shorter when ``uneven`` (True: always, False: never, None: either), an optimizer of ``names``
    (``batchgrad_spec.updates.optimizers``, SGD made ``gentle``), and as asked: a global-norm
    clip c and a per-example clip C (``_threshold``: relative to the first window's gradient
    norm, the median per-example norm), a loss scale of ``LOSS_SCALES``, overflowing
    micro-batches (never in the last window, so a step follows a skipped one). Shrinks towards
    few micro-batches, K = 1, SGD, active clipping."""
    n = problem.batch.size

    @st.composite
    def build(draw: st.DrawFn) -> Loop:
        low = 3 if uneven else 2
        sizes = draw(splits(n, min_parts=min(low, n // ranks), max_parts=min(4, n // ranks))
                     .filter(lambda s: min(s) >= ranks), label="micro_batches")
        m = len(sizes)
        ks = [k for k in range(1, m + 1) if -(-m // k) >= min_windows
              and (uneven is None or (m % k != 0) == uneven)]
        assume(ks)
        k = draw(st.sampled_from(ks), label="accumulation_steps")
        opt = gentle(draw(optimizers(tuple(names)), label="optimizer"), problem)
        loop = Loop(opt, sizes, k, ranks=ranks)
        first = window_problem(problem, loop_batches(problem, loop), loop.windows[0])
        kw: dict = {}
        if per_example_clip:
            norms = [global_norm({k: v[i] for k, v in per_example_grads(first)[1].items()})
                     for i in range(first.batch.size)]
            kw["per_example_clip"] = _threshold(draw, float(np.median(norms)), "C / median")
            kw["expected_batch_size"] = draw(st.sampled_from((sizes[0] * k, n)),
                                             label="expected_batch_size")
        if clip_norm:
            kw["clip_norm"] = _threshold(draw, global_norm(batch_grad(first)[1]), "c / norm")
        if loss_scale or overflow:
            kw["loss_scale"] = draw(st.sampled_from(LOSS_SCALES), label="loss_scale")
        if overflow:
            last = loop.windows[-1][0]
            kw["overflow"] = tuple(draw(st.sets(st.integers(0, last - 1), min_size=1,
                                                max_size=2), label="overflow")) if last else ()
        return Loop(opt, sizes, k, ranks=ranks, **kw)

    return build()


def stays_bounded(problem: Problem, loop: Loop) -> bool:
    """Whether the reference's epoch (float64) keeps every parameter within MAX_PARAM."""
    with np.errstate(all="ignore"):
        for w in range(1, len(loop.windows) + 1):
            theta = run_loop(*prefix(problem, loop, w)).params
            if not all(np.all(np.abs(v) <= MAX_PARAM) for v in theta.values()):
                return False
    return True


def clip_epsilon(backend: object) -> float:
    """The ε the backend declares it adds to norms before clipping (its ``clip_epsilon``
    attribute, default 0; at most ``CLIP_EPSILON``, spec §8.10)."""
    eps = getattr(backend, "clip_epsilon", 0.0)
    if not (isinstance(eps, float | int) and 0 <= eps <= CLIP_EPSILON):
        raise BackendError(f"backend {getattr(backend, 'name', backend)!r} declares "
                           f"clip_epsilon={eps!r}; allowed: a number in [0, {CLIP_EPSILON}] "
                           f"(spec §8.10)")
    return float(eps)


def run_of(w: int) -> str:
    """The repro expression of the backend's run over the first ``w`` windows."""
    return f"checked_train_loop(backend, prefix(problem, loop, {w})[0], config, prefix(problem, " \
           f"loop, {w})[1])"


class LoopCheck(Check):
    """``Check`` with the optional ``train_loop`` call and window-by-window comparison."""

    loop: Loop | None = None

    def run(self, loop: Loop, w: int) -> LoopResult:
        """The backend's epoch over the first ``w`` windows of ``loop``."""
        p, lp = prefix(self.problem, loop, w)
        out = checked_train_loop(self.target.backend, p, self.target.config, lp)
        self._made.append(out)
        self._call_of[id(out.params)] = f"{run_of(w)}.params"
        return out

    def epoch(self, loop: Loop, *, what: str = "θ", params: bool = True, steps: bool = True,
              losses: bool = False) -> list[LoopResult]:
        """Run every prefix of the epoch; check, as asked, θ̂ after each window (``params``), the
        step counter and the skipped windows (``steps``), the reported losses (``losses``).
        Returns the runs, prefix w = 1..W."""
        __tracebackhide__ = True
        self.loop = loop
        p = self.problem
        assume(stays_bounded(p, loop))
        windows = len(loop.windows)
        runs = [self.run(loop, w) for w in range(1, windows + 1)]
        full = runs[-1]
        skipped = loop.skipped()
        if steps:
            if full.skipped != skipped:
                self.fail(f"{what}: skipped windows {list(full.skipped)}, but the windows with a "
                          f"non-finite gradient are {list(skipped)}",
                          snippet=(f"{run_of(windows)}.skipped", "loop.skipped()"))
            if full.optimizer_steps != windows - len(skipped):
                self.fail(f"{what}: optimizer step counter {full.optimizer_steps} after "
                          f"{windows} windows of which {len(skipped)} skipped; expected "
                          f"{windows - len(skipped)} (a skipped step advances nothing)",
                          snippet=(f"{run_of(windows)}.optimizer_steps",
                                   "run_loop(problem, loop).optimizer_steps"))
        reached: list[Grads] = [dict(p.params)] + [r.params for r in runs]
        before = ("[problem.params] + [checked_train_loop(backend, prefix(problem, loop, j)[0], "
                  f"config, prefix(problem, loop, j)[1]).params for j in range(1, {windows})]")
        if params:
            dtype, mode = self.target.config.dtype, self.target.config.precision
            eps = clip_epsilon(self.target.backend)
            expected = shadow_loop(p, loop, reached[:-1], eps)
            tol = loop_tolerance(p, loop, reached[:-1], dtype, mode, eps)
            for w in range(windows):
                self.close(reached[w + 1], expected[w], tol[w],
                           what=f"{what} after window {w + 1} of {windows}"
                           + (" (skipped)" if w in skipped else ""),
                           expect=f"shadow_loop(problem, loop, {before}, {eps!r})[{w}]")
        if losses:
            self.reported(loop, full, reached)
        return runs

    def reported(self, loop: Loop, full: LoopResult, reached: Sequence[Grads]) -> None:
        """Each window's reported loss against L_w at θ̂_w (the mean over all its examples)."""
        __tracebackhide__ = True
        windows = len(loop.windows)
        if full.reported_losses is None:
            return
        batches = loop_batches(self.problem, loop)
        dtype, mode = self.target.config.dtype, self.target.config.precision
        for w, idx in enumerate(loop.windows):
            if w in full.skipped:
                continue
            at = window_problem(self.problem.with_params(reached[w]), batches, idx)
            theta = "problem.params" if w == 0 else f"{run_of(w)}.params"
            self.close(full.reported_losses[w], batch_grad(at)[0],
                       loss_tolerance(at, loop, idx, dtype, mode),
                       what=f"reported loss of window {w + 1} of {windows}",
                       call=f"{run_of(windows)}.reported_losses[{w}]",
                       expect=f"batch_loss(window_problem(problem.with_params({theta}), "
                              f"loop_batches(problem, loop), loop.windows[{w}]))")

    def repro(self, call: str, expect: str) -> str:
        lines = super().repro(call, expect).split("\n")
        at = next(i for i, line in enumerate(lines) if line.startswith("observed = "))
        extra = ["from reference.contract import BackendError, checked_train_loop",
                 "from reference.loop import *",
                 "from reference.update import Optimizer"]
        if self.loop is not None:
            extra.append(f"loop = {self.loop!r}")
        return "\n".join(lines[:at] + extra + lines[at:])
