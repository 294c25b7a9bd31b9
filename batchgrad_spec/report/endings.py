"""How a test item ended, in the words of the conformance report and the summary (spec §8.5,
§8.8): a clause *fails* when the backend disagreed with it; a test that raised anything else
ended in an *error*, and one that was running when the run was interrupted (Ctrl-C) ended
*interrupted*. Neither certifies its clause, and neither is ever shown as ``skip`` or ``pass``.

A failure is a ``ClauseFailure`` or any other ``AssertionError`` (a test's own ``assert`` on the
backend's answer), a broken contract that escaped a check (``BackendError``), ``pytest.fail``,
or a group of these (Hypothesis reports several distinct failures as an ``ExceptionGroup``); a
strict XPASS is a failure too (the deviation it declared is gone). Everything else — a
``TypeError`` in a test, ``reference.contract.Undefined`` where the problem is defined, a
failed health check — is an error: the suite could not decide.
"""

from __future__ import annotations

from typing import Any

import pytest

from reference.contract import BackendError

__all__ = ["ERROR", "INTERRUPTED", "ending", "is_failure"]

ERROR, INTERRUPTED = "error", "interrupted"

_FAILURES: tuple[type[BaseException], ...] = (AssertionError, BackendError,
                                              pytest.fail.Exception)


def is_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the backend disagreed with a clause (not that the test broke)."""
    group = getattr(exc, "exceptions", None)  # an (exception)group, also on Python 3.10
    if isinstance(group, tuple) and group:
        return all(is_failure(e) for e in group)
    return isinstance(exc, _FAILURES)


def ending(report: pytest.TestReport, call: pytest.CallInfo[Any]) -> str | None:
    """``ERROR`` when the phase of ``report`` failed with something that is not a failure of a
    clause (any failed setup or teardown: a fixture broke), else None."""
    if not report.failed:
        return None
    if report.when != "call":
        return ERROR
    excinfo = call.excinfo
    if excinfo is None or hasattr(report, "wasxfail"):  # a strict XPASS: a failure
        return None
    return None if is_failure(excinfo.value) else ERROR
