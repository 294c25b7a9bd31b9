"""pytest plugin: backend selection, parametrisation, Hypothesis profiles, header and summary.

Options::

    --backend NAME | module:attribute   repeatable; default: every built-in whose framework imports
    --device DEV                        repeatable; default: every device the backend reports
    --dtype float32|float64             repeatable; default: every dtype the backend supports
    --precision strict|tf32|bf16_autocast  precision mode the results are certified for (spec
                                        §7.2, §7.4); tf32: float32 matmuls may use TF32
    --hypothesis-profile dev|ci|thorough  Hypothesis's option; default dev (ci when CI is set)
    --conformance-report PATH           write a JSON record and a Markdown table
    (batchgrad_spec/report.py)
    --xfails-file PATH                  known deviations: `PATTERN  # §C.N reason` per line

A test that takes an argument ``target`` is run once per backend × device × dtype (× per-example
method when it also takes ``method``); it must carry ``@pytest.mark.clause("C.N")``.
"""

from __future__ import annotations

import copy
import platform

import pytest

from reference.contract import BackendError, Config
from reference.problem import DTYPES

from . import harness, profiles  # noqa: F401  (profiles: registered on import)

pytest_plugins = ["batchgrad_spec.report"]  # conformance reports and the xfails file (spec §8.5)

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
                     "`# §C.N reason`; 'skip PATTERN # ...' skips instead of xfail; spec §8.5")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "clause(id, ...): the spec clause(s) a test checks")
    config.addinivalue_line("markers", "meta: tests of the harness itself")
    names = config.getoption("backend") or harness.available_builtins()
    backends = []
    for name in names:
        try:
            backends.append((name, harness.load(name)))
        except BackendError as exc:
            raise pytest.UsageError(f"--backend {name}: {exc}") from None
    config.stash[_BACKENDS] = backends


_BACKENDS = pytest.StashKey[list]()


def selected_backends(config: pytest.Config) -> list:
    return config.stash[_BACKENDS]


ACCELERATORS = {"torch": "cuda", "jax": "gpu"}
"""The accelerator device of each built-in backend: when it is absent its tests are still
generated and skipped with a one-line reason, so a CPU-only run says what it did not check."""


def targets(config: pytest.Config, clause: str,
            with_method: bool) -> list[tuple[harness.Target, str | None]]:
    """(target, reason it is skipped or None) for every backend × device × dtype (× method)."""
    out = []
    want_dev, want_dt = config.getoption("device"), config.getoption("dtype")
    for spec, b in selected_backends(config):
        present = list(b.devices())
        devices = present + [d for d in [ACCELERATORS.get(b.name), *want_dev]
                             if d and d not in present]
        for dev in dict.fromkeys(devices):
            if want_dev and dev not in want_dev:
                continue
            absent = None if dev in present else (
                f"{b.name}: device {dev!r} is not present here (devices: {', '.join(present)})")
            for dt in b.dtypes():
                if want_dt and dt not in want_dt:
                    continue
                cfg = Config(dev, dt, config.getoption("precision"))
                methods = list(b.per_example_methods()) if with_method else [None]
                out += [(harness.Target(spec, b, cfg, clause, m), absent) for m in methods]
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("clause")
    if marker is None:
        raise pytest.UsageError(f"{metafunc.definition.nodeid} takes `target` but has no "
                                f"@pytest.mark.clause(...)")
    with_method = "method" in metafunc.fixturenames
    params = []
    for t, absent in targets(metafunc.config, marker.args[0], with_method):
        marks = [pytest.mark.skip(reason=absent)] if absent else []
        values = (t, t.method) if with_method else (t,)
        params.append(pytest.param(*values, marks=marks, id=t.id))
    metafunc.parametrize(["target", "method"] if with_method else ["target"], params)


def pytest_report_header(config: pytest.Config) -> list[str]:
    from . import report  # registered above as a plugin (imported by pytest, not here)

    run = report.run_settings(config)  # as Hypothesis really uses them (derandomize wins)
    lines = [f"batchgrad-spec: python {platform.python_version()}, "
             f"hypothesis profile {run['profile']!r} (max_examples={run['max_examples']}, "
             f"derandomize={run['derandomize']}), seed {report.seed_text(run)}"]
    for b in report.backends_environment(config):  # what the conformance report records
        versions = ", ".join(f"{k} {v}" for k, v in b["versions"].items())
        lines.append(f"  backend {b['spec']}: {versions}; devices {', '.join(b['devices'])}; "
                     f"dtypes {', '.join(b['dtypes'])}; "
                     f"per-example {', '.join(b['per_example_methods'])}; "
                     f"precision {b['precision']}")
    return lines


# -- an expected failure (a strict xfail of a known deviation) is not counted as a failure -----
_STATS_BEFORE = pytest.StashKey[tuple]()
XFAIL_EXAMPLES: dict[tuple[str, str, str, str], int] = {}
"""(backend, device, dtype, precision) → examples run by tests that ended as expected failures:
shown beside the summary, kept out of its examples, failures and largest ratio."""


def _item_key(item: pytest.Item) -> tuple | None:
    t = getattr(item, "callspec", None) and item.callspec.params.get("target")
    if not isinstance(t, harness.Target):
        return None
    return (t.clause, t.backend.name, t.config.device, t.config.dtype, t.config.precision)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    key = _item_key(item)
    if key is not None:
        item.stash[_STATS_BEFORE] = (key, copy.copy(harness.STATS.get(key)))


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: after the report's own wrapper
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    rep = yield
    saved = item.stash.get(_STATS_BEFORE, None)
    if rep.when == "call" and saved is not None and hasattr(rep, "wasxfail") and rep.skipped:
        key, before = saved
        now = harness.STATS.get(key)
        ran = (now.examples if now else 0) - (before.examples if before else 0)
        XFAIL_EXAMPLES[key[1:]] = XFAIL_EXAMPLES.get(key[1:], 0) + ran
        if before is None:
            harness.STATS.pop(key, None)
        else:
            harness.STATS[key] = before
    return rep


# -- pytest-xdist: every worker counts its own examples; the controller prints the sum ----------
def pytest_sessionfinish(session: pytest.Session) -> None:
    out = getattr(session.config, "workeroutput", None)  # set on xdist workers only
    if out is not None:
        out["batchgrad_stats"] = [[list(k), vars(s)] for k, s in harness.STATS.items()]


@pytest.hookimpl(optionalhook=True)  # an xdist hook: ignored when xdist is not installed
def pytest_testnodedown(node: object, error: object) -> None:
    for key, s in getattr(node, "workeroutput", {}).get("batchgrad_stats", []):
        agg = harness.STATS.setdefault(tuple(key), harness.Stat())
        agg.examples += s["examples"]
        agg.failures += s["failures"]
        if s["max_ratio"] > agg.max_ratio:
            agg.max_ratio, agg.worst = s["max_ratio"], s["worst"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not harness.STATS:
        return
    tr = terminalreporter
    tr.section("batchgrad-spec: examples and largest error/tolerance")
    per: dict[tuple[str, str, str, str], harness.Stat] = {}
    for (_, b, dev, dt, prec), s in harness.STATS.items():
        agg = per.setdefault((b, dev, dt, prec), harness.Stat())
        agg.examples += s.examples
        agg.failures += s.failures
        agg.max_ratio = max(agg.max_ratio, s.max_ratio)
    w = max([10] + [len(b) + 2 for b, *_ in per])  # a backend's name may be long
    tr.write_line(f"{'backend':<{w}}{'device':<8}{'dtype':<9}{'precision':<10}"
                  f"{'examples':>9}{'failed':>8}  max error/tolerance")
    for (b, dev, dt, prec), s in sorted(per.items()):
        tr.write_line(f"{b:<{w}}{dev:<8}{dt:<9}{prec:<10}{s.examples:>9}{s.failures:>8}  "
                      f"{s.max_ratio:.3g}")
    for (b, dev, dt, prec), n in sorted(XFAIL_EXAMPLES.items()):
        tr.write_line(f"(and {n} examples of expected failures — known deviations, not counted "
                      f"above: {b} {dev} {dt} {prec})")
