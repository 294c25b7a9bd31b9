"""Running a chapter's property against a (deliberately wrong) backend: does the suite catch it?

The meta-tests (``tests/meta/``) and ``examples/gallery_sizes.py`` share this machinery. A
property test is re-wrapped with ``@given`` under the ``ci`` settings rather than called as
imported: a ``@given`` test's settings are fixed when its module is imported (by whichever profile
was loaded then), and re-wrapping leaves the imported function untouched for the real suite. The
re-wrapped test has the original's source and signature, so it draws the very examples the ``ci``
profile draws for it in ``pytest --backend ... --hypothesis-profile ci``. Shrinking is skipped
(the first failure is what is measured). The run statistics are restored after each run, so
deliberate failures do not appear in the session's summary of real backends
(``batchgrad_spec.stats.preserved``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import Phase, example, given, settings
from hypothesis.errors import UnsatisfiedAssumption

from reference.contract import Config
from reference.problem import Problem

from . import harness, profiles, stats  # noqa: F401  (registers the ci profile)
from .harness import ClauseFailure, Target

__all__ = ["CI", "MAX_EXAMPLES", "Outcome", "assert_caught", "assert_caught_by_a_rerun",
           "assert_correct_backend_passes", "clause_failures", "leaves", "make_target",
           "run_property"]

CI = settings(settings.get_profile("ci"), database=None,
              phases=[Phase.explicit, Phase.reuse, Phase.generate])
MAX_EXAMPLES = CI.max_examples

@dataclass
class Outcome:
    """A property run: what it raised, and after how many examples it first failed."""

    error: BaseException | None
    first_failure: int | None = None  # 1-based index of the first example that failed
    calls: int = 0  # calls of the test body
    stats_examples: int = 0  # what the run statistics counted for this target in the run
    tried: list[Problem] = field(default_factory=list)  # up to and including the first failure
    failing: list[Problem] = field(default_factory=list)  # every failing example, in order
    drawn: list[dict[str, Any]] = field(default_factory=list)  # every argument, as in ``tried``


def make_target(spec: str, clause: str, dtype: str, method: str | None) -> Target:
    return Target(spec, harness.load(spec), Config("cpu", dtype), clause=clause, method=method)


def run_property(test: Callable[..., Any], target: Target, *, profile: settings = CI,
                 **strategies: Any) -> Outcome:
    """Run the @given property ``test`` against ``target`` under the ``ci`` settings (or
    ``profile``, e.g. with shrinking), with its own strategies unless ``strategies`` replaces
    some."""
    inner = test.hypothesis.inner_test  # type: ignore[attr-defined]
    strategies = {**test.hypothesis._given_kwargs, **strategies}  # type: ignore[attr-defined]
    out = Outcome(None)

    @functools.wraps(inner)  # same source and signature: the same derandomised examples
    def counted(**kwargs: Any) -> Any:
        problem = kwargs.get("problem")  # (a data-parallel property draws its problem in a case)
        try:
            result = inner(**kwargs)
        except UnsatisfiedAssumption:  # rejected by ``assume``: neither tried nor failed
            raise
        except Exception:
            out.calls += 1
            if out.first_failure is None:
                out.first_failure = out.calls
                out.drawn.append(kwargs)
                if problem is not None:
                    out.tried.append(problem)
            if problem is not None:
                out.failing.append(problem)
            raise
        out.calls += 1
        if out.first_failure is None:
            out.drawn.append(kwargs)
            if problem is not None:
                out.tried.append(problem)
        return result

    prop = given(**strategies)(profile(counted))
    kwargs: dict[str, Any] = {"target": target}
    if target.method is not None:
        kwargs["method"] = target.method
    key = stats.key(target)
    with stats.preserved():
        before = stats.snapshot(key)
        try:
            prop(**kwargs)
        except BaseException as exc:  # noqa: B036  (an ExceptionGroup included; inspected below)
            out.error = exc
        counted = stats.since(key, before)
        out.stats_examples = counted.examples if counted else 0
    return out


def leaves(exc: BaseException) -> list[BaseException]:
    """The individual failures of a (possibly nested) exception group (3.10: the backport)."""
    if isinstance(getattr(exc, "exceptions", None), tuple):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def assert_correct_backend_passes(test: Callable[..., Any], faulty: Target,
                                  problems: list[Problem]) -> None:
    """The property holds for the numpy backend on each of ``problems`` (same dtype, method),
    replayed as explicit examples of the property (so that an ``assume`` in it runs inside
    Hypothesis)."""
    __tracebackhide__ = True
    control = make_target("numpy", faulty.clause, faulty.config.dtype, faulty.method)
    inner = test.hypothesis.inner_test  # type: ignore[attr-defined]

    @functools.wraps(inner)
    def prop(**kwargs: Any) -> Any:
        return inner(**kwargs)

    prop.hypothesis_explicit_examples = []  # type: ignore[attr-defined]  (not inner's list)
    for problem in problems:
        prop = example(problem=problem)(prop)
    prop = settings(CI, phases=[Phase.explicit])(
        given(**test.hypothesis._given_kwargs)(prop))  # type: ignore[attr-defined]
    kwargs: dict[str, Any] = {"target": control}
    if control.method is not None:
        kwargs["method"] = control.method
    with stats.preserved():
        prop(**kwargs)


def clause_failures(out: Outcome, fault: str, clause: str, dtype: str, method: str | None = None,
                    message: tuple[str, ...] = (), repro: str = "") -> list[ClauseFailure]:
    """The failures of a run against the faulty backend ``fault``: it failed, within MAX_EXAMPLES,
    and only with §``clause`` failures naming the backend and dtype, each with a repro note
    (containing ``repro``); one of them contains one of ``message``."""
    __tracebackhide__ = True
    assert out.error is not None, (
        f"{fault} passed §{clause} on {dtype} {method or ''} ({out.calls} examples)")
    failures = leaves(out.error)
    for f in failures:
        if not isinstance(f, ClauseFailure):
            raise AssertionError(f"{fault}: not a ClauseFailure: {f!r}") from f
        assert f.clause == clause, f"{fault}: failed §{f.clause}, expected §{clause}"
        text = str(f)
        assert text.startswith(f"§{clause} "), text
        assert f"backend={fault} " in text and f"dtype={dtype}" in text, text
        assert any(n.startswith(f"# Reproduce §{clause} ") and repro in n
                   for n in f.__notes__), f.__notes__
    if message:
        assert any(m in str(f) for f in failures for m in message), (
            f"no failure of {fault} says any of {message}: {[str(f) for f in failures]}")
    assert out.first_failure is not None and out.first_failure <= MAX_EXAMPLES
    return failures  # type: ignore[return-value]


def assert_caught(fault: str, test: Callable[..., Any], clause: str, dtype: str,
                  method: str | None, message: tuple[str, ...] = (),
                  **strategies: Any) -> list[ClauseFailure]:
    """Run ``test`` against ``batchgrad_spec.faults:<fault>``: it must fail with §``clause``, and
    one of the failures must contain one of ``message``."""
    __tracebackhide__ = True
    target = make_target(f"batchgrad_spec.faults:{fault}", clause, dtype, method)
    out = run_property(test, target, **strategies)
    failures = clause_failures(out, fault, clause, dtype, method, message)
    assert out.stats_examples >= out.first_failure  # the run statistics counted them too
    where = " (N >= 2)" if strategies else ""
    print(f"\n{fault + where:<29} {dtype:<8} {method or '-':<5} caught by §{clause:<4} at example "
          f"{out.first_failure:>3} of <= {MAX_EXAMPLES} ({len(failures)} distinct "
          f"failure{'s' if len(failures) > 1 else ''})", end="")
    assert_correct_backend_passes(test, target, out.tried + out.failing[-len(failures):])
    return failures  # type: ignore[return-value]


def assert_caught_by_a_rerun(spec: str, test: Callable[..., Any], clause: str, dtype: str, *,
                             precision: str = "strict", control: str = "numpy",
                             message: tuple[str, ...] = (), repro: str = "") -> int:
    """Run ``test`` against the faulty backend ``spec`` (a ``module:attribute``) in ``precision``:
    it must fail as ``clause_failures`` says; then the whole property, rerun against the correct
    backend ``control`` in the same configuration, must pass at least as many examples (the same
    derandomised examples, which do not depend on the backend). For properties that draw more
    than a problem (``st.data()``, a rate), whose examples ``assert_caught`` cannot replay one by
    one. Returns the example that first failed."""
    __tracebackhide__ = True
    target = make_target(spec, clause, dtype, None)
    target = replace(target, config=replace(target.config, precision=precision))
    fault = target.backend.name
    out = run_property(test, target)
    clause_failures(out, fault, clause, dtype, None, message, repro)
    assert out.first_failure is not None
    right = replace(make_target(control, clause, dtype, None), config=target.config)
    passed = run_property(test, right)
    assert passed.error is None, f"{control} fails §{clause} too: {passed.error}"
    assert passed.calls >= out.first_failure
    print(f"\n{fault:<27} {dtype:<8} caught by §{clause} at example {out.first_failure}", end="")
    return out.first_failure
