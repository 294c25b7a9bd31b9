"""Conformance reports and known deviations (spec §8.5).

As a pytest plugin (registered by ``batchgrad_spec/plugin.py``):

* ``--conformance-report PATH`` writes, when the session ends, a JSON record of every clause ×
  backend × device × dtype × precision that ran: outcome (pass / fail / xfail / skip), number of
  test items, Hypothesis examples checked and the largest error/tolerance ratio (both read from
  ``harness.STATS``), with the environment (python, platform, each backend's name, framework
  versions, devices and dtypes), the Hypothesis profile and seed; and next to it (``PATH`` with
  suffix ``.md``) a Markdown table of the same.
* ``--xfails-file PATH`` marks known backend deviations: one node-id pattern per line followed by
  ``# §C.N reason``; matching tests become strict xfails (``skip PATTERN  # §C.N reason`` skips
  them instead). A line citing no clause is a usage error; a pattern that matches no collected
  test is a warning.

As a command line (needs numpy, and matplotlib for the picture; not pytest)::

    python -m batchgrad_spec.report merge reports/*.json --out reports/matrix

merges records (one per tox env) into ``matrix.json``, ``matrix.md`` and, when matplotlib
imports, ``matrix.png``: a heatmap of the outcomes, passing cells shaded by their
error/tolerance headroom.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import platform
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from reference import SPEC_VERSION

from . import harness

try:
    import pytest

    hookimpl = pytest.hookimpl
except ModuleNotFoundError:  # the merge CLI runs where pytest is not installed (tox -e report)
    pytest = None  # type: ignore[assignment]

    def hookimpl(**_: Any) -> Any:  # type: ignore[misc]
        return lambda f: f

Key = tuple[str, str, str, str, str]
"""(clause, backend, device, dtype, precision), as in ``harness.STATS``."""

OUTCOMES = ("skip", "pass", "xfail", "fail")
"""Outcomes from least to most severe: a cell shows the most severe of its test items."""
SYMBOL = {"pass": "✅", "fail": "❌", "xfail": "⚠️", "skip": "➖"}
NO_TARGET = ("reference", "-", "-", "-")
"""backend, device, dtype, precision of tests that run no backend (reference-only and meta)."""


def worse(a: str | None, b: str | None) -> str | None:
    """The more severe of two outcomes (fail > xfail > pass > skip; None is no outcome yet)."""
    if a is None or b is None:
        return a or b
    return max(a, b, key=OUTCOMES.index)


def clause_sort_key(cid: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in cid.split("."))
    except ValueError:
        return (10**6,)


def column_id(backend: str, device: str, dtype: str, precision: str) -> str:
    """A column of the matrix, named like a test id: ``torch-cpu-float32``."""
    if backend == NO_TARGET[0] and device == "-":
        return backend
    parts = [backend, device, dtype] + ([precision] if precision != "strict" else [])
    return "-".join(parts)


def _num(x: float | None) -> float | str | None:
    """JSON-safe number (non-finite as a string, which ``float()`` reads back)."""
    if x is None:
        return None
    return x if math.isfinite(x) else str(x)


def fmt_ratio(r: float | str | None) -> str:
    if r is None:
        return ""
    r = float(r)
    if math.isinf(r):
        return "∞"
    if r == 0:
        return "0"
    if r < 0.01:
        return "<0.01"
    if r < 10:  # rounded away from 1, so that a pass never reads 1.00 nor a fail 1.00
        return f"{(math.floor if r < 1 else math.ceil)(r * 100) / 100:.2f}"
    return f"{r:.3g}"


# -- the Hypothesis run settings (also printed by the header) -------------------------------------
def run_settings(config: Any) -> dict[str, Any]:
    """Profile, max_examples, derandomize and seed as Hypothesis will really use them."""
    from hypothesis import settings

    seed = config.getoption("hypothesis_seed", None)
    if seed is not None:
        try:
            seed = int(seed)
        except ValueError:
            pass
    current = settings()  # the loaded profile, as a test without its own @settings sees it
    return {"profile": settings.get_current_profile_name(),
            "max_examples": current.max_examples, "derandomize": bool(current.derandomize),
            "seed": seed}


def seed_text(run: dict[str, Any]) -> str:
    """What decides the examples: a derandomized profile wins over --hypothesis-seed."""
    if run.get("derandomize"):
        ignored = "; --hypothesis-seed ignored" if run.get("seed") is not None else ""
        return f"derandomized (fixed per test{ignored})"
    if run.get("seed") is not None:
        return str(run["seed"])
    return "random (fix it with --hypothesis-seed N)"


def backends_environment(config: Any) -> list[dict[str, Any]]:
    """Each selected backend: what --backend named, its name, framework versions, and the
    devices and dtypes this run checks (the backend's, filtered by --device/--dtype)."""
    from .plugin import selected_backends

    want_dev, want_dt = config.getoption("device"), config.getoption("dtype")
    out = []
    for spec, b in selected_backends(config):
        out.append({
            "spec": spec,
            "name": b.name,
            "versions": {str(k): str(v) for k, v in b.versions().items()},
            "devices": [d for d in b.devices() if not want_dev or d in want_dev],
            "dtypes": [d for d in b.dtypes() if not want_dt or d in want_dt],
            "per_example_methods": list(b.per_example_methods()),
            "precision": config.getoption("precision"),
        })
    return out


def environment(config: Any) -> dict[str, Any]:
    import hypothesis
    import numpy

    return {"python": platform.python_version(), "platform": platform.platform(),
            "pytest": pytest.__version__, "hypothesis": hypothesis.__version__,
            "numpy": numpy.__version__, "backends": backends_environment(config)}


# -- known deviations: the xfails file ------------------------------------------------------------
CITATION = re.compile(r"§(\d+\.\d+)")


@dataclass(frozen=True)
class Deviation:
    """One line of an xfails file: ``[skip ]PATTERN  # §C.N reason``."""

    source: str
    line: int
    pattern: str
    action: str  # "xfail" or "skip"
    clause: str
    reason: str

    def matches(self, nodeid: str) -> bool:
        """The pattern occurs in the node id; ``*`` matches any run of characters, ``?`` one
        (brackets are literal, so ``test_x[torch-cpu-float64*]`` means what it says)."""
        rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                     for c in self.pattern)
        return re.search(rx, nodeid) is not None

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "pattern": self.pattern, "action": self.action,
                "clause": self.clause, "reason": self.reason}


class XfailsError(ValueError):
    """An xfails file that cannot be used (pytest turns it into a usage error, exit status 4)."""


def parse_xfails(path: str | Path, text: str | None = None) -> list[Deviation]:
    """The entries of an xfails file. Blank lines and lines starting with ``#`` are comments;
    every other line is ``PATTERN  # §C.N reason`` (``skip PATTERN  # …`` to skip), and must
    cite a clause that exists in spec/."""
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise XfailsError(f"cannot read it: {exc.strerror or exc}") from None
    known = harness.clauses()
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, comment = line.partition("#")
        pattern, action = pattern.strip(), "xfail"
        words = pattern.split(None, 1)
        if words and words[0] in ("skip", "xfail"):
            action, pattern = words[0], words[1] if len(words) > 1 else ""
        m = CITATION.search(comment)
        if not pattern:
            raise XfailsError(f"line {n}: no test pattern before the comment: {raw!r}")
        if m is None:
            raise XfailsError(
                f"line {n}: {raw!r} cites no clause; write it as "
                f"`PATTERN  # §C.N reason` (every known deviation names the clause it breaks)")
        if m.group(1) not in known:
            raise XfailsError(f"line {n}: cites §{m.group(1)}, which is not a clause of spec/")
        out.append(Deviation(str(path), n, pattern, action, m.group(1), comment.strip()))
    return out


_DEVIATIONS = pytest.StashKey[list]() if pytest else None
_BEFORE = pytest.StashKey[tuple]() if pytest else None


def deviations(config: Any) -> list[Deviation]:
    return config.stash.get(_DEVIATIONS, [])


# -- pytest hooks (this module is registered as a plugin by batchgrad_spec/plugin.py) --------------
def pytest_configure(config: Any) -> None:
    path = config.getoption("xfails_file", None)
    if path:
        try:
            config.stash[_DEVIATIONS] = parse_xfails(path)
        except XfailsError as exc:
            raise pytest.UsageError(f"--xfails-file {path}: {exc}") from None
    out = config.getoption("conformance_report", None)
    if out and not hasattr(config, "workerinput"):  # under xdist the controller writes it
        config.pluginmanager.register(ConformanceReport(config), "batchgrad-report")


def pytest_report_header(config: Any) -> list[str]:
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


@hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Apply the xfails file to every collected test (before -k/-m deselect any), and warn about
    entries that match none."""
    devs = deviations(config)
    if not devs:
        return
    matched: set[Deviation] = set()
    for item in items:
        hits = [d for d in devs if d.matches(item.nodeid)]
        matched.update(hits)
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


def item_keys(item: Any) -> list[Key]:
    """The report cells a test item counts in: one per clause it cites, at its target's backend,
    device, dtype and precision (or ``reference`` for tests without a target)."""
    cids = list(dict.fromkeys(str(a) for m in item.iter_markers("clause") for a in m.args))
    target = getattr(item, "callspec", None) and item.callspec.params.get("target")
    if isinstance(target, harness.Target):
        c = target.config
        where = (target.backend.name, c.device, c.dtype, c.precision)
    else:
        where = NO_TARGET
    return [(cid, *where) for cid in cids or ["?"]]


def _stats_key(item: Any) -> Key | None:
    target = getattr(item, "callspec", None) and item.callspec.params.get("target")
    if not isinstance(target, harness.Target):
        return None
    c = target.config
    return (target.clause, target.backend.name, c.device, c.dtype, c.precision)


def _stat(key: Key | None) -> harness.Stat:
    return harness.STATS.get(key, harness.Stat()) if key else harness.Stat()


@hookimpl(tryfirst=True)
def pytest_runtest_setup(item: Any) -> None:
    if item.config.getoption("conformance_report", None):
        s = _stat(_stats_key(item))
        item.stash[_BEFORE] = (s.examples, s.failures)


@hookimpl(wrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    """Attach the item's cells and, after its call, what harness.STATS counted for it, to the
    report (a plain dict, so that it also reaches the xdist controller)."""
    rep = yield
    if item.config.getoption("conformance_report", None):
        info: dict[str, Any] = {"keys": [list(k) for k in item_keys(item)]}
        key = _stats_key(item)
        if rep.when == "call" and key is not None and key in harness.STATS:
            s, (ex0, f0) = harness.STATS[key], item.stash.get(_BEFORE, (0, 0))
            # max_ratio is the running maximum of the target's STATS entry on this process:
            # the largest over the items' values is the session's (every process's) maximum
            info.update(examples=s.examples - ex0, failures=s.failures - f0,
                        max_ratio=_num(s.max_ratio), worst=s.worst)
        rep.batchgrad = info
    return rep


def phase_outcome(report: Any) -> str | None:
    if report.failed:  # includes a strict XPASS
        return "fail"
    if report.skipped:
        return "xfail" if hasattr(report, "wasxfail") else "skip"
    return "pass" if report.when == "call" else None


class ConformanceReport:
    """Collects test outcomes (from reports, so it works under xdist too) and writes the record
    at the end of the session."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.items: dict[str, dict[str, Any]] = {}
        self.written: list[Path] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        info = getattr(report, "batchgrad", None)
        if info is None:
            return
        rec = self.items.setdefault(report.nodeid, {"keys": info["keys"], "outcome": None,
                                                    "examples": 0, "failures": 0,
                                                    "max_ratio": None, "worst": ""})
        rec["outcome"] = worse(rec["outcome"], phase_outcome(report))
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

    @hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: Any, exitstatus: int) -> None:
        record = self.record(int(exitstatus))
        json_path, md_path = report_paths(self.config)
        write_json(record, json_path)
        md_path.write_text(markdown(as_matrix(record, json_path.stem)), encoding="utf-8")
        self.written = [json_path, md_path]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.written:
            terminalreporter.write_line(
                "batchgrad-spec: conformance report written to "
                + " and ".join(str(p) for p in self.written))


def report_paths(config: Any) -> tuple[Path, Path]:
    path = Path(config.invocation_params.dir, config.getoption("conformance_report"))
    if path.suffix == ".md":
        path = path.with_suffix(".json")
    return path, path.with_suffix(".md")


# -- records and matrices --------------------------------------------------------------------------
def aggregate(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Results per cell from test items (``keys``, ``outcome``, ``examples``, ``max_ratio``,
    ``worst``, and optionally ``tests``): the most severe outcome, the number of items, the sum
    of examples, the largest ratio."""
    cells: dict[Key, dict[str, Any]] = {}
    titles = harness.clauses()
    for it in items:
        for key in it["keys"]:
            key = tuple(key)
            cid, b, dev, dt, prec = key
            c = cells.setdefault(key, {
                "clause": cid, "title": titles.get(cid, it.get("title", "(not in spec/)")),
                "backend": b, "device": dev, "dtype": dt, "precision": prec,
                "outcome": None, "tests": 0, "examples": None, "failures": None,
                "max_ratio": None, "worst": ""})
            c["outcome"] = worse(c["outcome"], it["outcome"])
            c["tests"] += it.get("tests", 1)
            for k in ("examples", "failures"):
                if it.get(k) is not None:
                    c[k] = (c[k] or 0) + it[k]
            r = it.get("max_ratio")
            if r is not None and (c["max_ratio"] is None or float(r) > float(c["max_ratio"])):
                c["max_ratio"], c["worst"] = r, it.get("worst", "")
    return sorted(cells.values(), key=lambda c: (clause_sort_key(c["clause"]),
                                                 column_sort_key(c)))


def column_sort_key(c: dict[str, Any]) -> tuple[Any, ...]:
    return (c["backend"] == NO_TARGET[0], c["backend"], c["device"], c["dtype"], c["precision"])


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


SOURCE_FIELDS = ("spec_version", "created", "profile", "max_examples", "derandomize", "seed",
                 "seed_note", "args", "exitstatus", "environment", "xfails")


def as_matrix(record: dict[str, Any], name: str) -> dict[str, Any]:
    """A single run's record as a matrix of one source (a matrix is returned unchanged)."""
    if "sources" in record:
        return record
    return {"spec_version": record.get("spec_version"), "created": record.get("created"),
            "sources": [{"name": name, **{k: record.get(k) for k in SOURCE_FIELDS}}],
            "results": record["results"]}


def merge(records: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One matrix from several records (or matrices): the sources side by side, and each cell
    aggregated as in a single run (a cell present in two records gets the worse outcome, the
    sum of examples and the larger ratio)."""
    sources: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for name, rec in records:
        m = as_matrix(rec, name)
        sources += m["sources"]
        results += m["results"]
    items = [{**r, "keys": [(r["clause"], r["backend"], r["device"], r["dtype"],
                             r["precision"])]} for r in results]
    versions = sorted({str(s.get("spec_version")) for s in sources})
    return {"spec_version": ", ".join(versions),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sources": sources, "results": aggregate(items)}


Column = tuple[str, str, str, str]
"""(backend, device, dtype, precision)"""


def columns(results: Sequence[dict[str, Any]]) -> list[Column]:
    cols = {(r["backend"], r["device"], r["dtype"], r["precision"]) for r in results}
    return sorted(cols, key=lambda c: column_sort_key(dict(zip(
        ("backend", "device", "dtype", "precision"), c, strict=True))))


def _grid(matrix: dict[str, Any],
          ) -> tuple[list[tuple[str, str]], list[Column], dict[tuple[str, Column], dict[str, Any]]]:
    results = matrix["results"]
    rows = sorted({(r["clause"], r["title"]) for r in results},
                  key=lambda ct: clause_sort_key(ct[0]))
    cols = columns(results)
    cell = {(r["clause"], (r["backend"], r["device"], r["dtype"], r["precision"])): r
            for r in results}
    return rows, cols, cell


def _source_line(s: dict[str, Any]) -> str:
    env = s.get("environment") or {}
    backends = "; ".join(
        f"{b['name']} ({', '.join(f'{k} {v}' for k, v in b['versions'].items())}) on "
        f"{', '.join(b['devices'])} [{', '.join(b['dtypes'])}]"
        for b in env.get("backends", [])) or "no backend"
    derand = ", derandomized" if s.get("derandomize") else ""
    return (f"| {s['name']} | {s.get('created', '')} | `{s.get('profile')}` "
            f"({s.get('max_examples')} examples{derand}) | "
            f"{s.get('seed_note') or seed_text(s)} | {backends} | {env.get('python', '?')} "
            f"on {env.get('platform', '?')} | {s.get('exitstatus', '')} |")


def markdown(matrix: dict[str, Any]) -> str:
    """The environment of each run, then clauses × backend-device-dtype: ✅ and the largest
    error/tolerance, ❌ fail, ⚠️ xfail (a known deviation), ➖ skip; blank where nothing ran."""
    rows, cols, cell = _grid(matrix)
    out = [f"# batchgrad-spec {matrix.get('spec_version')} conformance", "",
           "## Environment", "",
           "| run | created | Hypothesis profile | seed | backends (versions) on devices "
           "[dtypes] | python | exit |",
           "|---|---|---|---|---|---|---|"]
    out += [_source_line(s) for s in matrix["sources"]]
    out += ["", "## Results", "",
            "| clause | " + " | ".join(column_id(*c) for c in cols) + " |",
            "|---|" + "---|" * len(cols)]
    for cid, title in rows:
        cells = []
        for c in cols:
            r = cell.get((cid, c))
            if r is None:
                cells.append("")
                continue
            ratio = fmt_ratio(r["max_ratio"])
            cells.append(f"{SYMBOL[r['outcome']]} {ratio}".strip())
        out.append(f"| §{cid} {title} | " + " | ".join(cells) + " |")
    totals = []
    for c in cols:
        ex = [r["examples"] for (_, cc), r in cell.items() if cc == c and r["examples"]]
        totals.append(str(sum(ex)) if ex else "")
    out += ["| *examples checked* | " + " | ".join(totals) + " |", "",
            "✅ pass, with the largest observed error/tolerance (≤ 1; blank for tests without a "
            "tolerance) · ❌ fail · ⚠️ xfail: a known deviation · ➖ skipped · empty: not run"]
    devs = [(s["name"], e) for s in matrix["sources"] if s.get("xfails")
            for e in s["xfails"]["entries"]]
    if devs:
        out += ["", "## Known deviations", ""]
        out += [f"- {name}: `{e['pattern']}` ({e['action']}) — {e['reason']}" for name, e in devs]
    failing = [r for r in matrix["results"] if r["outcome"] == "fail"]
    if failing:
        out += ["", "## Failures", ""]
        for r in failing:
            col = column_id(r["backend"], r["device"], r["dtype"], r["precision"])
            worst = f" in {r['worst']}" if r["worst"] else ""
            out.append(f"- §{r['clause']} on {col}: {r['tests']} test item(s); largest "
                       f"error/tolerance {fmt_ratio(r['max_ratio'])}{worst}")
    return "\n".join(out) + "\n"


# -- the picture -----------------------------------------------------------------------------------
COLOURS = {"fail": "#d73027", "xfail": "#9e9ac8", "skip": "#bdbdbd", "pass": "#80cdc1",
           "not run": "#f4f4f4"}
HEADROOM = ["#006837", "#1a9850", "#66bd63", "#a6d96a", "#d9ef8b", "#fee08b", "#fdae61"]
"""Passing cells from ratio ≤ 1e-4 (dark green: much headroom) to 1 (orange: at the tolerance)."""


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _wrap(name: str, n: int = 13) -> str:
    """A long backend name broken after '_', '.' or ':' so that it fits its column."""
    lines, line = [], ""
    for part in filter(None, re.findall(r"[^_.:]*[_.:]?", name)):
        if line and len(line) + len(part) > n:
            lines.append(line)
            line = ""
        line += part
    return "\n".join(lines + [line])


def heatmap(matrix: dict[str, Any], path: Path) -> None:
    """A PNG of the matrix: one row per clause, one column per backend-device-dtype; passing
    cells coloured by their largest error/tolerance (log scale), with the value written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap, LogNorm
    from matplotlib.patches import Patch, Rectangle

    rows, cols, cell = _grid(matrix)
    cmap = LinearSegmentedColormap.from_list("headroom", HEADROOM)
    norm = LogNorm(vmin=1e-4, vmax=1.0, clip=True)
    # the figure holds the grid (1 in × 0.34 in a cell) and the colour bar; the labels, title
    # and legend around them are added by bbox_inches="tight"
    grid_w, grid_h = 1.05 * len(cols), 0.34 * len(rows)
    bar_h = max(grid_h, 2.2)
    width, height = grid_w + 1.0, max(grid_h, bar_h)
    fig = plt.figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes((0, (height - grid_h) / height, grid_w / width, grid_h / height))
    cax = fig.add_axes(((grid_w + 0.3) / width, (height - bar_h) / height, 0.16 / width,
                        bar_h / height))
    for i, (cid, _title) in enumerate(rows):
        for j, c in enumerate(cols):
            r = cell.get((cid, c))
            if r is None:
                ax.add_patch(Rectangle((j, i), 1, 1, facecolor=COLOURS["not run"],
                                       edgecolor="white", linewidth=1.5))
                continue
            outcome, ratio = r["outcome"], r["max_ratio"]
            colour: Any
            if outcome == "pass" and ratio is not None:
                colour = cmap(norm(max(float(ratio), 1e-4)))
                label = fmt_ratio(ratio)
            else:
                colour = COLOURS[outcome]
                label = {"fail": "FAIL", "xfail": "xfail", "skip": "skip", "pass": "pass"}[outcome]
                if outcome == "fail" and ratio is not None and float(ratio) > 1:
                    label += f" {fmt_ratio(ratio)}"
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=colour, edgecolor="white",
                                   linewidth=1.5))
            dark = outcome == "fail" or (outcome == "pass" and ratio is not None
                                         and float(ratio) < 3e-3)
            ax.text(j + 0.5, i + 0.5, label, ha="center", va="center", fontsize=8.5,
                    color="white" if dark else "black",
                    fontweight="bold" if outcome == "fail" else "normal")
    ax.set_xlim(0, len(cols))
    ax.set_ylim(len(rows), 0)
    ax.set_yticks([i + 0.5 for i in range(len(rows))])
    ax.set_yticklabels([f"§{cid}  {_short(title, 80)}" for cid, title in rows], fontsize=9)
    ax.set_xticks([j + 0.5 for j in range(len(cols))])
    examples = {c: sum(r["examples"] or 0 for (_, cc), r in cell.items() if cc == c)
                for c in cols}
    ax.set_xticklabels(["\n".join([_wrap(c[0])] + [p for p in c[1:] if p not in ("-", "strict")]
                                  + ([f"{examples[c]} examples"] if examples[c] else []))
                        for c in cols], fontsize=9)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    sources = ", ".join(s["name"] for s in matrix["sources"])
    ax.set_title(f"batchgrad-spec {matrix.get('spec_version')} conformance ({sources})\n"
                 "cell: outcome, or for a pass its largest error/tolerance",
                 fontsize=10.5, pad=12, loc="left")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(sm, cax=cax, orientation="vertical")
    bar.set_label("largest error / tolerance of a passing cell\n(1 = at the tolerance)",
                  fontsize=9)
    bar.ax.tick_params(labelsize=8)
    handles = [Patch(facecolor=COLOURS["fail"], label="fail"),
               Patch(facecolor=COLOURS["xfail"], label="xfail (known deviation)"),
               Patch(facecolor=COLOURS["skip"], label="skip"),
               Patch(facecolor=COLOURS["pass"], label="pass (no tolerance involved)"),
               Patch(facecolor=COLOURS["not run"], edgecolor="#bdbdbd", label="not run")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, 0), ncol=len(handles),
              fontsize=8.5, frameon=False, borderaxespad=0.4, handlelength=1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", dpi=100)
    plt.close(fig)


# -- command line ----------------------------------------------------------------------------------
def _inputs(args: Sequence[str], exclude: Path) -> list[Path]:
    found: list[Path] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            found += sorted(p.glob("*.json"))
        elif any(ch in a for ch in "*?["):
            found += sorted(Path(f) for f in glob.glob(a))
        else:
            found.append(p)
    return [p for p in dict.fromkeys(found) if p.resolve() != exclude.resolve()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batchgrad_spec.report",
                                     description="batchgrad-spec conformance reports")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="merge records (pytest --conformance-report) into a matrix")
    m.add_argument("records", nargs="+",
                   help="record files, directories or glob patterns (e.g. 'reports/*.json')")
    m.add_argument("--out", default="reports/matrix",
                   help="output path without suffix: writes OUT.json, OUT.md and OUT.png "
                        "(default reports/matrix)")
    m.add_argument("--no-png", action="store_true", help="do not draw the heatmap")
    ns = parser.parse_args(argv)
    out = Path(ns.out)
    if out.suffix in (".json", ".md", ".png"):
        out = out.with_suffix("")
    paths = _inputs(ns.records, out.with_suffix(".json"))
    if not paths:
        print(f"no conformance records in {' '.join(ns.records)}: run pytest with "
              f"--conformance-report (tox -e numpy,torch,jax write reports/<env>.json)",
              file=sys.stderr)
        return 2
    records = []
    for p in paths:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"{p}: not a readable conformance record: {exc}", file=sys.stderr)
            return 2
        if not isinstance(data, dict) or "results" not in data:
            print(f"{p}: not a conformance record (no 'results')", file=sys.stderr)
            return 2
        records.append((p.stem, data))
    matrix = merge(records)
    written = [out.with_suffix(".json"), out.with_suffix(".md")]
    write_json(matrix, written[0])
    written[1].write_text(markdown(matrix), encoding="utf-8")
    if not ns.no_png:
        try:
            import matplotlib  # noqa: F401
        except ModuleNotFoundError:
            print("matplotlib is not importable: no PNG (pip install 'batchgrad-spec[report]')",
                  file=sys.stderr)
        else:
            written.append(out.with_suffix(".png"))
            heatmap(matrix, written[-1])
    print(f"merged {len(records)} record(s) ({', '.join(str(p) for p in paths)}) into "
          + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
