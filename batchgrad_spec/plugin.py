"""pytest plugin: backend selection, parametrisation, Hypothesis profiles, header and summary.

Options::

    --backend NAME | module:attribute   repeatable; default: every built-in whose framework imports
    --device DEV                        repeatable; default: every device the backend reports
    --dtype float32|float64             repeatable; default: every dtype the backend supports
    --precision strict|tf32|bf16_autocast  precision mode the results are certified for (spec
                                        §7.2, §7.4); tf32: float32 matmuls may use TF32
    --hypothesis-profile dev|ci|thorough  Hypothesis's option; default dev (ci when CI is set)
    --conformance-report PATH           write a JSON record and a Markdown table
                                        (batchgrad_spec/report/)
    --xfails-file PATH                  known deviations: `PATTERN  # §C.N reason` per line
                                        (`PATTERN feature=NAME  # §C.N reason`: spec §8.7)
    --shape-buckets                     draw sizes from a few buckets (slow frameworks, §8.6)

A test that takes an argument ``target`` is run once per backend × device × dtype (× per-example
method when it also takes ``method``); it must carry ``@pytest.mark.clause("C.N")``. A device
that is absent here (a built-in's accelerator, or one named with ``--device``) still gets its
tests, skipped: the run header says once, per device, how many; the short test summary does not
list them one by one; the conformance report shows them as ``skip`` cells.

A test draws only the features its backend declares (spec §8.6): each test call runs inside the
draw context of its target's plan (``batchgrad_spec.declared``); a known deviation confined to a
feature (§8.7) leaves the feature out of the clause's tests and adds to each a strict-xfail
variant drawing only problems with it (test id ending in ``-deviates-<feature>``).

The session's backends and settings are read from ``batchgrad_spec.session``, the examples and
ratios the checks counted from ``batchgrad_spec.stats``.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

import pytest
from hypothesis.errors import FailedHealthCheck, Unsatisfiable

from reference.capabilities import known_deviations_of
from reference.contract import Config
from reference.problem import DTYPES

from . import declared, harness, profiles, session, stats
from .report.record import seed_text

__all__ = ["ACCELERATORS", "targets"]

# conformance reports and the xfails file (spec §8.5)
pytest_plugins = ["batchgrad_spec.report.hooks"]

profiles.load_default()  # at import, before Hypothesis reads --hypothesis-profile


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("batchgrad", "batchgrad-spec")
    g.addoption("--backend", action="append", default=[], metavar="NAME",
                help="backend to check: a built-in (numpy, torch, jax) or module:attribute; "
                     "repeatable (default: every built-in whose framework imports)")
    g.addoption("--device", action="append", default=[], metavar="DEV",
                help="device(s) to run on (default: all the backend reports)")
    g.addoption("--dtype", action="append", default=[], choices=list(DTYPES),
                help="dtype(s) to check (default: all the backend supports)")
    g.addoption("--precision", default="strict", choices=["strict", "tf32", "bf16_autocast"],
                help="precision mode results are certified for (spec §7.2, §7.4): strict IEEE, "
                     "tf32 (float32 matrix products with TF32 operands) or bf16_autocast "
                     "(bfloat16 autocast), with the tolerances of reference.numerics.PRECISIONS")
    g.addoption("--conformance-report", metavar="PATH", default=None,
                help="write a JSON record of clause x backend x device x dtype outcomes to PATH "
                     "and a Markdown table next to it (PATH with suffix .md); spec §8.5")
    g.addoption("--xfails-file", metavar="PATH", default=None,
                help="known backend deviations: per line a node-id pattern (* wildcards) and "
                     "`# §C.N reason`; 'skip PATTERN # ...' skips instead of xfail; spec §8.5; "
                     "`PATTERN feature=NAME [dtype=D] [device=V]  # §C.N reason` confines it "
                     "to a feature, spec §8.7")
    g.addoption("--shape-buckets", action="store_true", default=False,
                help="draw batch sizes, widths and sequence lengths from a few buckets (powers "
                     "of two) so that a compile-per-shape framework reuses its kernels; what "
                     "the capability shapes:bucketed asks for (spec §8.6)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "clause(id, ...): the spec clause(s) a test checks")
    config.addinivalue_line("markers", "meta: tests of the harness itself")
    session.load_backends(config)
    config.stash[_ABSENT] = AbsentDevices()
    config.pluginmanager.register(config.stash[_ABSENT], "batchgrad-absent-devices")


ACCELERATORS = {"torch": "cuda", "jax": "gpu"}
"""The accelerator device of each built-in backend: when it is absent its tests are still
generated and skipped, so that a CPU-only run says what it did not check."""

def targets(config: pytest.Config, clause: str, with_method: bool, clauses: tuple[str, ...] = (),
            nodeid: str = "") -> list[tuple[harness.Target, str | None]]:
    """(target, reason it is skipped or None) for every backend × device × dtype (× method),
    each with its draw plan, and the strict variants of the known deviations confined to a
    feature that concern the test (``clauses``, ``nodeid``: spec §8.7)."""
    out = []
    cited = clauses or (clause,)
    want_dev, want_dt = config.getoption("device"), config.getoption("dtype")
    for spec, b in session.selected_backends(config):
        present = list(b.devices())
        devices = present + [d for d in [ACCELERATORS.get(b.name), *want_dev]
                             if d and d not in present]
        for dev in dict.fromkeys(devices):
            if want_dev and dev not in want_dev:
                continue
            absent = None if dev in present else (
                f"{b.name}: device {dev!r} is not present here (devices: {', '.join(present)})")
            if absent:
                config.stash[_ABSENT].reasons[(b.name, dev)] = absent
            for dt in b.dtypes():
                if want_dt and dt not in want_dt:
                    continue
                cfg = Config(dev, dt, config.getoption("precision"))
                methods = list(b.per_example_methods()) if with_method else [None]
                for m in methods:
                    t = harness.Target(spec, b, cfg, clause, m)
                    devs = [d for d in list(known_deviations_of(b))
                            + [d.known() for d in config.stash.get(session.FEATURE_DEVIATIONS, [])
                               if d.matches(f"{nodeid}[{t.id}]")]
                            if any(d.applies(c, dev, dt) for c in cited)]
                    base, variants = declared.plans(b, devs, config.getoption("shape_buckets"))
                    out.append((harness.Target(spec, b, cfg, clause, m, plan=base), absent))
                    out += [(harness.Target(spec, b, cfg, clause, m, d.feature, plan), absent)
                            for d, plan in variants]
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("clause")
    if marker is None:
        raise pytest.UsageError(f"{metafunc.definition.nodeid} takes `target` but has no "
                                f"@pytest.mark.clause(...)")
    with_method = "method" in metafunc.fixturenames
    cited = tuple(str(a) for m in metafunc.definition.iter_markers("clause") for a in m.args)
    params = []
    for t, absent in targets(metafunc.config, marker.args[0], with_method, cited,
                             metafunc.definition.nodeid):
        marks = [pytest.mark.skip(reason=absent)] if absent else []
        if t.deviation:  # the strict variant of a known deviation confined to a feature (§8.7)
            marks.append(pytest.mark.xfail(strict=True, raises=harness.ClauseFailure, reason=(
                f"§{t.clause} known deviation: {t.deviation} ({t.backend.name})")))
        values = (t, t.method) if with_method else (t,)
        params.append(pytest.param(*values, marks=marks, id=t.id))
    metafunc.parametrize(["target", "method"] if with_method else ["target"], params)


def pytest_report_header(config: pytest.Config) -> list[str]:
    run = session.run_settings(config)  # as Hypothesis really uses them (derandomize wins)
    lines = [f"batchgrad-spec: python {platform.python_version()}, "
             f"hypothesis profile {run['profile']!r} (max_examples={run['max_examples']}, "
             f"derandomize={run['derandomize']}), seed {seed_text(run)}"]
    for b in session.backends_environment(config):  # what the conformance report records
        versions = ", ".join(f"{k} {v}" for k, v in b["versions"].items())
        lines.append(f"  backend {b['spec']}: {versions}; devices {', '.join(b['devices'])}; "
                     f"dtypes {', '.join(b['dtypes'])}; "
                     f"per-example {', '.join(b['per_example_methods'])}; "
                     f"precision {b['precision']}")
    return lines


# -- absent devices: said once, with how many tests they leave out -------------------------------
class AbsentDevices:
    """The tests of a device that is not present here are generated and skipped (a CPU-only run
    says what it did not check), but said once per device, with their number, after "collected N
    items" (the end of the run header); the short test summary lists only the skips a user can
    act on. They still count in the final "N skipped", and as ``skip`` cells in the conformance
    report. Registered by ``pytest_configure``."""

    def __init__(self) -> None:
        self.reasons: dict[tuple[str, str], str] = {}  # (backend name, device) → why skipped
        self.said = False

    def reason(self, item: pytest.Item) -> str | None:
        """Why ``item`` is skipped when its target's device is absent, else None."""
        t = session.item_target(item)
        return self.reasons.get((t.backend.name, t.config.device)) if t else None

    @staticmethod
    def lines(reasons: list[str]) -> list[str]:
        counts = {r: reasons.count(r) for r in dict.fromkeys(reasons)}
        return [f"batchgrad-spec: {r}: {n} test{'s' if n != 1 else ''} skipped"
                for r, n in counts.items()]

    def pytest_report_collectionfinish(self, items: list[pytest.Item]) -> list[str]:
        self.said = True
        return self.lines([r for r in map(self.reason, items) if r])

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item) -> object:
        """Mark the skip of an absent device's test (an attribute, which also reaches the xdist
        controller)."""
        rep = yield
        if rep.skipped and not hasattr(rep, "wasxfail"):
            reason = self.reason(item)
            if reason:
                rep.batchgrad_absent = reason
        return rep

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outside the terminal reporter's own wrapper
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter
                                ) -> Iterator[None]:
        tr = terminalreporter
        skipped = tr.stats.get("skipped", [])
        absent = [r for r in skipped if getattr(r, "batchgrad_absent", None)]
        if not self.said:  # under xdist the controller collects nothing: said here instead
            for line in self.lines([r.batchgrad_absent for r in absent]):
                tr.write_line(line)
        if absent:
            tr.stats["skipped"] = [r for r in skipped if r not in absent]
        try:
            return (yield)
        finally:
            if absent:
                tr.stats["skipped"] = skipped


_ABSENT = pytest.StashKey[AbsentDevices]()


# -- the draw context of each test call (spec §8.6, §8.7) ---------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> object:
    """Run the test inside its target's draw context; record what it left out (``stats``, and
    on the item for the conformance report). A strict variant that cannot draw its feature at
    all is skipped, not counted as the expected failure."""
    t = session.item_target(item)
    if t is None or t.plan is None:
        return (yield)
    ctx = t.plan.context()
    try:
        with declared.drawing(ctx):
            return (yield)
    except (Unsatisfiable, FailedHealthCheck):
        if not ctx.required:
            raise
        pytest.skip(f"this test draws no problem with {', '.join(sorted(ctx.required))}")
    finally:
        stats.count_excluded(t, ctx.excluded)
        item.stash[session.EXCLUDED] = ctx.excluded


# -- the run statistics of each test item --------------------------------------------------------
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    key = session.item_key(item)
    if key is not None:
        item.stash[session.BEFORE] = (key, stats.snapshot(key))


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: after the report's own wrapper
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """An expected failure (a strict xfail of a known deviation) is not counted as a failure: its
    examples are set aside (``stats.set_aside``)."""
    rep = yield
    saved = item.stash.get(session.BEFORE, None)
    if rep.when == "call" and saved is not None and hasattr(rep, "wasxfail") and rep.skipped:
        stats.set_aside(*saved)
    return rep


# -- pytest-xdist: every worker counts its own examples; the controller prints the sum ----------
def pytest_sessionfinish(session: pytest.Session) -> None:
    out = getattr(session.config, "workeroutput", None)  # set on xdist workers only
    if out is not None:
        out["batchgrad_stats"] = stats.export()


@pytest.hookimpl(optionalhook=True)  # an xdist hook: ignored when xdist is not installed
def pytest_testnodedown(node: object, error: object) -> None:
    stats.merge(getattr(node, "workeroutput", {}).get("batchgrad_stats", {}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    per = stats.totals()
    if not per:
        return
    tr = terminalreporter
    tr.section("batchgrad-spec: examples and largest error/tolerance")
    w = max([10] + [len(b) + 2 for b, *_ in per])  # a backend's name may be long
    tr.write_line(f"{'backend':<{w}}{'device':<8}{'dtype':<9}{'precision':<10}"
                  f"{'examples':>9}{'failed':>8}  max error/tolerance")
    for (b, dev, dt, prec), s in sorted(per.items()):
        tr.write_line(f"{b:<{w}}{dev:<8}{dt:<9}{prec:<10}{s.examples:>9}{s.failures:>8}  "
                      f"{s.max_ratio:.3g}")
    for (b, dev, dt, prec), n in sorted(stats.expected_failures().items()):
        tr.write_line(f"(and {n} examples of expected failures — known deviations, not counted "
                      f"above: {b} {dev} {dt} {prec})")
    for (b, dev, dt, prec), counts in sorted(stats.per_clause().items()):
        fewest = min(counts, key=lambda c: (counts[c], c))
        ordered = sorted(counts.values())
        tr.write_line(f"examples per clause for {b} {dev} {dt} {prec}: fewest {counts[fewest]} "
                      f"(§{fewest}), median {ordered[len(ordered) // 2]}, over {len(counts)} "
                      f"clauses (the conformance report gives each)")
    left: dict[stats.Column, set[str]] = {}
    for (_, *col), features in stats.excluded().items():
        left.setdefault(tuple(col), set()).update(features)  # type: ignore[arg-type]
    for (b, dev, dt, prec), features in sorted(left.items()):
        tr.write_line(f"not drawn for {b} {dev} {dt} {prec} (not declared or a known deviation, "
                      f"spec §8.6): {', '.join(sorted(features))}")
