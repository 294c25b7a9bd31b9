"""The report's pytest hooks: the xfails file applied to a session, and the conformance record
collected from its test reports and written when it ends (spec §8.5).

Registered as a plugin by ``batchgrad_spec.plugin``:

* ``--xfails-file PATH``: matching tests become strict xfails (or skips); an entry that matches
  no collected test is a warning; a file that cannot be used is a usage error.
* ``--conformance-report PATH``: every test report carries the cells its item counts in and what
  the run statistics counted for it (a plain dict, so that it also reaches the pytest-xdist
  controller); the controller aggregates them and writes ``PATH`` (JSON) and ``PATH`` with
  suffix ``.md`` at the end of the session.
"""

from __future__ import annotations

import platform
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from reference import SPEC_VERSION

from .. import stats
from ..session import (
    BEFORE,
    EXCLUDED,
    FEATURE_DEVIATIONS,
    backends_environment,
    item_target,
    run_settings,
)
from .markdown import markdown
from .record import NO_TARGET, aggregate, as_matrix, json_number, seed_text, worse, write_json
from .xfails import Deviation, XfailsError, parse_xfails

__all__ = ["ConformanceReport", "deviations", "item_keys", "report_paths"]

_DEVIATIONS = pytest.StashKey[list[Deviation]]()


def deviations(config: pytest.Config) -> list[Deviation]:
    """The entries of this session's xfails file (none without one)."""
    return config.stash.get(_DEVIATIONS, [])


def report_paths(config: pytest.Config) -> tuple[Path, Path]:
    """Where the record (JSON) and its Markdown table are written."""
    path = Path(config.invocation_params.dir, config.getoption("conformance_report"))
    if path.suffix == ".md":
        path = path.with_suffix(".json")
    return path, path.with_suffix(".md")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("xfails_file", None)
    if path:
        try:
            config.stash[_DEVIATIONS] = parse_xfails(path)
            config.stash[FEATURE_DEVIATIONS] = [d for d in config.stash[_DEVIATIONS]
                                                if d.feature]  # the plugin's, §8.7
        except XfailsError as exc:
            raise pytest.UsageError(f"--xfails-file {path}: {exc}") from None
    out = config.getoption("conformance_report", None)
    if out and not hasattr(config, "workerinput"):  # under xdist the controller writes it
        config.pluginmanager.register(ConformanceReport(config), "batchgrad-report")


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    devs = deviations(config)
    if config.getoption("xfails_file", None):
        n_skip = sum(d.action == "skip" for d in devs)
        lines.append(f"  known deviations: {config.getoption('xfails_file')} "
                     f"({len(devs) - n_skip} xfail, {n_skip} skip)")
    if config.getoption("conformance_report", None):
        json_path, md_path = report_paths(config)
        lines.append(f"  conformance report: {json_path} and {md_path}")
    return lines


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Apply the xfails file to every collected test (before -k/-m deselect any), and warn about
    entries that match none."""
    devs = deviations(config)
    if not devs:
        return
    matched: set[Deviation] = set()
    for item in items:
        hits = [d for d in devs if d.matches(item.nodeid)]
        matched.update(hits)
        hits = [d for d in hits if d.feature is None]  # a feature's: at generation (§8.7)
        if hits:
            d = hits[0]
            reason = f"{d.reason} ({d.where})"
            item.add_marker(pytest.mark.skip(reason=reason) if d.action == "skip"
                            else pytest.mark.xfail(reason=reason, strict=True))
    for d in devs:
        if d not in matched:
            # attributed to the file's line, which the warnings summary then quotes
            warnings.warn_explicit(pytest.PytestWarning(
                f"--xfails-file {d.where}: {d.pattern!r} matches no collected test"),
                category=None, filename=d.source, lineno=d.line)


def item_keys(item: pytest.Item) -> list[stats.Key]:
    """The report cells a test item counts in: one per clause it cites, at its target's backend,
    device, dtype and precision (or ``reference`` for tests without a target)."""
    cids = list(dict.fromkeys(str(a) for m in item.iter_markers("clause") for a in m.args))
    target = item_target(item)
    where = stats.key(target)[1:] if target is not None else NO_TARGET
    return [(cid, *where) for cid in cids or ["?"]]  # type: ignore[misc]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the item's cells and, after its call, what the run statistics counted for it, to
    the report (a plain dict, so that it also reaches the xdist controller)."""
    rep = yield
    if item.config.getoption("conformance_report", None):
        info: dict[str, Any] = {"keys": [list(k) for k in item_keys(item)]}
        key, before = item.stash.get(BEFORE, (None, None))  # the plugin's snapshot at setup
        counted = stats.since(key, before) if rep.when == "call" else None
        target = item_target(item)
        if target is not None and target.deviation:  # a strict variant (spec §8.7)
            info["deviation"] = target.deviation
        left = item.stash.get(EXCLUDED, None)
        if left and rep.when == "call":  # features not drawn (spec §8.6)
            info["not_drawn"] = sorted(left)
        if counted is not None:
            # max_ratio is the running maximum of the target's entry on this process: the
            # largest over the items' values is the session's (every process's) maximum
            info.update(examples=counted.examples, failures=counted.failures,
                        max_ratio=json_number(counted.max_ratio), worst=counted.worst)
        rep.batchgrad = info
    return rep


UNSUPPORTED = "not supported:"
"""How the skip reason of a test that needs an undeclared feature begins (spec §8.6)."""


def skip_reason(report: pytest.TestReport) -> str:
    """The reason of a skipped report ("" when it has none)."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return ""


def phase_outcome(report: pytest.TestReport) -> str | None:
    if report.failed:  # includes a strict XPASS
        return "fail"
    if report.skipped:
        if hasattr(report, "wasxfail"):
            return "xfail"
        return "unsupported" if skip_reason(report).startswith(UNSUPPORTED) else "skip"
    return "pass" if report.when == "call" else None


def environment(config: pytest.Config) -> dict[str, Any]:
    import hypothesis
    import numpy

    return {"python": platform.python_version(), "platform": platform.platform(),
            "pytest": pytest.__version__, "hypothesis": hypothesis.__version__,
            "numpy": numpy.__version__, "backends": backends_environment(config)}


class ConformanceReport:
    """Collects test outcomes (from reports, so it works under xdist too) and writes the record
    at the end of the session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.items: dict[str, dict[str, Any]] = {}
        self.written: list[Path] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        info = getattr(report, "batchgrad", None)
        if info is None:
            return
        rec = self.items.setdefault(report.nodeid, {"keys": info["keys"], "outcome": None,
                                                    "examples": 0, "failures": 0,
                                                    "max_ratio": None, "worst": ""})
        rec["outcome"] = worse(rec["outcome"], phase_outcome(report))
        for k in ("not_drawn",):
            if info.get(k):
                rec[k] = sorted(set(rec.get(k, [])) | set(info[k]))
        if info.get("deviation"):
            rec["deviations"] = [info["deviation"]]
        if "examples" in info:
            rec["examples"] += info["examples"]
            rec["failures"] += info["failures"]
            rec["max_ratio"], rec["worst"] = info["max_ratio"], info["worst"]

    def record(self, exitstatus: int | None = None) -> dict[str, Any]:
        config = self.config
        run = run_settings(config)
        items = [{**rec, "outcome": rec["outcome"] or "skip"} for rec in self.items.values()]
        devs = deviations(config)
        return {
            "spec_version": SPEC_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **run,
            "seed_note": seed_text(run),
            "args": list(config.invocation_params.args),
            "exitstatus": exitstatus,
            "environment": environment(config),
            "xfails": ({"file": config.getoption("xfails_file"),
                        "entries": [d.as_json() for d in devs]}
                       if config.getoption("xfails_file", None) else None),
            "results": aggregate(items),
        }

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        record = self.record(int(exitstatus))
        json_path, md_path = report_paths(self.config)
        write_json(record, json_path)
        md_path.write_text(markdown(as_matrix(record, json_path.stem)), encoding="utf-8")
        self.written = [json_path, md_path]

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.written:
            terminalreporter.write_line(
                "batchgrad-spec: conformance report written to "
                + " and ".join(str(p) for p in self.written))
