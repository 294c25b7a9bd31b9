"""The test harness: which backend runs where, how results are compared, how failures read.

A property test receives a ``Target`` (backend × device × dtype × precision [× method], plus the
clause it checks, taken from its ``@pytest.mark.clause`` marker) and a drawn ``Problem``; inside
``with check(target, problem) as c:`` it calls the backend through the contract and compares
with ``c.close(...)``. A mismatch raises ``ClauseFailure`` whose message names the clause,
backend, device, dtype, parameter, observed error and tolerance, and whose note is a runnable
snippet reproducing the counterexample.
"""

from __future__ import annotations

import importlib.util
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from reference.bounds import Bound, Override, problem_tolerance
from reference.contract import (
    Backend,
    BackendError,
    Config,
    checked_loss_and_grad,
    checked_per_example,
    load_backend,
)
from reference.grads import combine, per_example_grads
from reference.problem import Problem
from reference.types import Grads

from . import stats
from .declared import Plan, admit
from .resources import SPEC

BUILTINS: dict[str, str] = {
    "numpy": "reference.numpy_backend:backend",
    "torch": "batchgrad_spec.backends.torch_backend:backend",
    "jax": "batchgrad_spec.backends.jax_backend:backend",
}
FRAMEWORK = {"numpy": "numpy", "torch": "torch", "jax": "jax"}


def available_builtins() -> list[str]:
    """Built-in backends whose framework is importable here (no import is performed)."""
    return [n for n in BUILTINS if importlib.util.find_spec(FRAMEWORK[n]) is not None]


def load(spec: str) -> Backend:
    """A built-in backend by name, or any 'module:attribute' (raises BackendError)."""
    return load_backend(spec, BUILTINS)


# -- the spec's clauses ---------------------------------------------------------------------------
CLAUSE_HEADING = re.compile(r"^#{2,4}\s+§(\d+\.\d+(?:\.\d+)*)\s+(.+?)\s*$")


@cache
def clauses() -> dict[str, str]:
    """Clause id → title, parsed from spec/*.md headings ``### §2.1 Title`` and sub-clause
    headings ``#### §4.2.1 Title``."""
    found: dict[str, str] = {}
    for path in sorted(SPEC.glob("*.md")):
        for line in path.read_text(encoding="utf-8").splitlines():
            m = CLAUSE_HEADING.match(line)
            if m:
                found[m.group(1)] = m.group(2)
    return found


def clause_title(cid: str) -> str:
    return f"§{cid} {clauses().get(cid, '(clause not found in spec/)')}"


# -- targets and results --------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One backend configuration a test runs against, and the clause the test checks."""

    spec: str  # what --backend named: "torch" or "pkg.mod:attr"
    backend: Backend = field(compare=False, repr=False)
    config: Config
    clause: str = ""
    method: str | None = None
    deviation: str | None = None
    """The feature of a known deviation from the clause (spec §8.7): this target is its strict
    variant, drawing only problems with that feature."""
    plan: Plan | None = field(default=None, compare=False, repr=False)
    """What its tests may draw (``declared.Plan``; set by the plugin, None: all it declares)."""

    @property
    def id(self) -> str:
        parts = [self.backend.name, self.config.device, self.config.dtype]
        if self.config.precision != "strict":
            parts.append(self.config.precision)
        if self.method:
            parts.append(self.method)
        if self.deviation:
            parts.append(f"deviates-{self.deviation.replace(':', '.')}")
        return "-".join(parts)

    def describe(self) -> str:
        versions = ", ".join(f"{k} {v}" for k, v in self.backend.versions().items())
        method = f"  method={self.method}" if self.method else ""
        dev = (f"  known deviation: {self.deviation} (its strict variant, §8.7)"
               if self.deviation else "")
        return (f"backend={self.backend.name} ({versions})  device={self.config.device}  "
                f"dtype={self.config.dtype}  precision={self.config.precision}{method}{dev}")


class ClauseFailure(AssertionError):
    """A backend disagreed with the spec. ``clause`` is the clause id it violated."""

    def __init__(self, message: str, clause: str, target: Target | None = None) -> None:
        super().__init__(message)
        self.clause = clause
        self.target = target


def _fmt_index(ix: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, ix)) + "]" if ix else "[]"


def mismatch_report(observed: np.ndarray, expected: np.ndarray, tol: np.ndarray,
                    ) -> tuple[str, float]:
    """numpy-style layered report of |observed − expected| > tol, and the largest ratio."""
    observed, expected = np.asarray(observed, float), np.asarray(expected, float)
    tol = np.broadcast_to(np.asarray(tol, float), expected.shape)
    if observed.shape != expected.shape:
        return f"shape mismatch: observed {observed.shape}, expected {expected.shape}", np.inf
    err = np.abs(observed - expected)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / tol)
    worst = float(ratio.max()) if ratio.size else 0.0
    bad = ratio > 1.0
    if not bad.any():
        return "", worst
    idx = [tuple(int(i) for i in ix) for ix in np.argwhere(bad)]
    first = idx[0]
    big = tuple(int(i) for i in np.unravel_index(np.argmax(np.where(bad, err, -1)), err.shape))
    rat = tuple(int(i) for i in np.unravel_index(np.argmax(ratio), ratio.shape))
    shown = ", ".join(_fmt_index(i) for i in idx[:5]) + (" …" if len(idx) > 5 else "")
    lines = [
        f"{len(idx)} of {err.size} elements exceed the tolerance, at {shown}",
        f"first at {_fmt_index(first)}: observed={observed[first]!r}, but should be "
        f"expected={expected[first]!r} (|error| {err[first]:.3g} > tolerance {tol[first]:.3g})",
        f"largest |error| {err[big]:.3g} at {_fmt_index(big)} (tolerance {tol[big]:.3g}); "
        f"largest error/tolerance {ratio[rat]:.3g} at {_fmt_index(rat)}",
    ]
    return "\n    ".join(lines), worst


CALLS = {
    "loss_and_grad": ("checked_loss_and_grad(backend, problem, config)", "batch_grad(problem)"),
    "per_example": ("checked_per_example(backend, problem, config, method)",
                    "per_example_grads(problem)"),
}


def _origin(exc: BaseException) -> str:
    """Where inside the backend an exception was raised (its innermost frame), if it raised."""
    cause = exc.__cause__
    if cause is None or cause.__traceback__ is None:
        return ""
    frame = traceback.extract_tb(cause.__traceback__)[-1]
    return f"\n  raised at {frame.filename}:{frame.lineno} in {frame.name}: {frame.line}"


class Check:
    """The context of one Hypothesis example: target, (rounded) problem, comparisons."""

    def __init__(self, target: Target, problem: Problem, override: Override = None) -> None:
        self.target = target
        self.problem = problem.rounded(target.config.dtype)
        self.override = override
        self._tol: dict[tuple[int, bool], Bound] = {}
        self._made: list[object] = []  # what the backend returned, kept alive so ids stay unique
        self._call_of: dict[int, str] = {}  # id of a returned value → the expression that made it

    def __enter__(self) -> Check:
        admit(self.target, self.problem)  # only what the backend declares (spec §8.6, §8.7)
        stats.count_example(self.target)
        return self

    def __exit__(self, typ: type | None, exc: BaseException | None, tb: object) -> None:
        __tracebackhide__ = True
        if isinstance(exc, BackendError):
            stats.count_failure(self.target)
            self.fail(f"the backend broke the contract: {exc}{_origin(exc)}",
                      snippet=CALLS.get(exc.call or ""))

    # backend calls through the validated contract ------------------------------------------
    # Each call remembers the expression that made its results (``expr`` is how the repro snippet
    # writes ``problem``), so ``close`` derives the snippet's ``observed = ...`` line from the call
    # that was made instead of a string typed beside it.
    def loss_and_grad(self, problem: Problem | None = None, *,
                      expr: str = "problem") -> tuple[float, Grads]:
        if problem is not None:
            admit(self.target, problem)
        out = checked_loss_and_grad(self.target.backend, problem or self.problem,
                                    self.target.config)
        return self._remember(out, f"checked_loss_and_grad(backend, {expr}, config)")

    def per_example(self, problem: Problem | None = None, method: str | None = None, *,
                    expr: str = "problem") -> tuple[np.ndarray, Grads]:
        m = method or self.target.method
        assert m is not None, "this test is not parametrised by method; pass method="
        if problem is not None:
            admit(self.target, problem)
        out = checked_per_example(self.target.backend, problem or self.problem,
                                  self.target.config, m)
        how = "method" if m == self.target.method else repr(m)
        return self._remember(out, f"checked_per_example(backend, {expr}, config, {how})")

    def _remember(self, out: tuple, call: str) -> tuple:  # type: ignore[type-arg]
        self._made.append(out)
        for i, part in enumerate(out):
            self._call_of[id(part)] = f"{call}[{i}]"
        return out

    def call_of(self, observed: object) -> str:
        """The expression of a backend call of this check that returned ``observed``."""
        try:
            return self._call_of[id(observed)]
        except KeyError:
            raise TypeError("Check.close: `observed` is not a value a backend call of this check "
                            "returned (it was derived from one): pass call=... with the "
                            "expression that computes it") from None

    def tol(self, problem: Problem | None = None, *, twice: bool = False) -> Bound:
        """Tolerance for ``problem`` (default: the check's) at the target's dtype (spec §7.2)."""
        p = problem or self.problem
        key = (id(p), twice)
        if key not in self._tol:
            self._tol[key] = problem_tolerance(p, self.target.config.dtype,
                                               self.target.config.precision,
                                               override=self.override, twice=twice)
        return self._tol[key]

    # comparison -----------------------------------------------------------------------------
    def close(self, observed: Mapping[str, np.ndarray] | np.ndarray | float,
              expected: Mapping[str, np.ndarray] | np.ndarray | float,
              tol: Mapping[str, np.ndarray] | np.ndarray | float, *,
              what: str, expect: str, call: str | None = None) -> None:
        """Assert |observed − expected| ≤ tol elementwise, per parameter when given mappings.

        ``call`` and ``expect`` are Python expressions (in terms of ``backend``, ``config`` and
        ``problem``) that produce observed and expected: they make the repro snippet. ``call``
        defaults to the backend call of this check that returned ``observed``; it is needed only
        for a value derived from what a call returned.
        """
        __tracebackhide__ = True
        if call is None:
            call = self.call_of(observed)
        if isinstance(observed, Mapping):
            assert isinstance(expected, Mapping) and isinstance(tol, Mapping)
            for name in expected:
                self.close(observed[name], expected[name], tol[name], what=f"{what}[{name!r}]",
                           call=f"{call}[{name!r}]", expect=f"{expect}[{name!r}]")
            return
        report, worst = mismatch_report(np.asarray(observed), np.asarray(expected),
                                        np.asarray(tol))
        stats.count_ratio(self.target, worst, what)
        if report:
            stats.count_failure(self.target)
            self.fail(f"{what} (shape {np.shape(expected)}): {report}\n"
                      f"  [{call}] vs reference [{expect}]",
                      snippet=(call, expect))

    def fail(self, detail: str, snippet: tuple[str, str] | None = None) -> None:
        __tracebackhide__ = True
        t = self.target
        err = ClauseFailure(f"{clause_title(t.clause)}\n  {t.describe()}\n  {detail}",
                            t.clause, t)
        if snippet:
            err.add_note(self.repro(*snippet))
        raise err from None

    def repro(self, call: str, expect: str) -> str:
        t = self.target
        return "\n".join([
            f"# Reproduce §{t.clause} on {t.id}: run from the repository root",
            "from reference import *",
            "from reference.contract import checked_loss_and_grad, checked_per_example",
            "from batchgrad_spec.harness import load",
            f"backend = load({t.spec!r})",
            f"config = Config(device={t.config.device!r}, dtype={t.config.dtype!r}, "
            f"precision={t.config.precision!r})",
            f"method = {t.method!r}",
            f"problem = {self.problem!r}",
            f"observed = {call}",
            f"expected = {expect}",
            "print('observed:', observed, 'expected:', expected, sep='\\n')",
        ])


def check(target: Target, problem: Problem, override: Override = None) -> Check:
    """``with check(target, problem) as c:`` counts one example for the target's clause and
    turns a contract violation inside the block into a clause failure (spec §8.3)."""
    return Check(target, problem, override)


# -- identities several chapters check with the same comparison ----------------------------------
BATCH_CALL = "checked_loss_and_grad(backend, problem, config)"
PER_EXAMPLE_CALL = "checked_per_example(backend, problem, config, method)"


def reduction_identity(c: Check) -> None:
    """Backend L and ∇L against Σ κ_i ℓ_i and Σ κ_i g_i from the reference's per-example path
    (spec §2.1–§2.4; the same comparison serves every reduction of chapters 3 and 4)."""
    __tracebackhide__ = True
    loss, grads = c.loss_and_grad()
    ref_losses, ref_grads = per_example_grads(c.problem)
    kappa = c.problem.coefficients
    tol = c.tol()
    c.close(loss, float(np.sum(kappa * ref_losses)), tol.loss, what="L",
            expect="float(np.sum(problem.coefficients * per_example_grads(problem)[0]))")
    c.close(grads, combine(ref_grads, kappa), tol.batch_grads, what="∇L",
            expect="combine(per_example_grads(problem)[1], problem.coefficients)")


def sub_batch_identity(c: Check, subset: list[int]) -> None:
    """The backend's g_i computed within the sub-batch ``subset`` equal its g_i computed within
    the whole batch (spec §2.7, §4.4): a per-example gradient ignores the other examples."""
    __tracebackhide__ = True
    sub = c.problem.with_batch(c.problem.batch.take(subset))
    _, full = c.per_example()
    _, part = c.per_example(sub, expr=f"problem.with_batch(problem.batch.take({subset}))")
    tol = c.tol(twice=True)
    c.close(part, {k: v[subset] for k, v in full.items()},
            {k: v[subset] for k, v in tol.grads.items()}, what="g_i within a sub-batch",
            expect=f"{{k: v[{subset}] for k, v in {PER_EXAMPLE_CALL}[1].items()}}")
