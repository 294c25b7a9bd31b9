"""The run record (JSON) and the matrix merged from several: cells, outcomes, aggregation.

A record (``pytest --conformance-report PATH``) has one result per cell — clause × backend ×
device × dtype × precision — with its most severe outcome, the number of test items, the
Hypothesis examples checked, the largest error/tolerance and, where spec §8.5 says so (the
``tf32`` precision, §6.7 off the CPU), why it is provisional; a matrix (``merge``) puts the
sources of several records side by side and aggregates their cells the same way. Needs neither
pytest nor matplotlib.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import harness
from ..stats import Column, Key

__all__ = ["NO_TARGET", "OUTCOMES", "PROVISIONAL_CLAUSES_OFF_CPU", "PROVISIONAL_PRECISIONS",
           "aggregate", "as_matrix", "clause_sort_key", "column_id",
           "columns", "grid", "json_number", "merge", "provisional", "seed_text", "worse",
           "write_json"]

OUTCOMES = ("skip", "unsupported", "pass", "xfail", "fail")
"""Outcomes from least to most severe: a cell shows the most severe of its test items
("unsupported": skipped for want of a declared feature, spec §8.6)."""
NO_TARGET = ("reference", "-", "-", "-")
"""backend, device, dtype, precision of tests that run no backend (reference-only and meta)."""
PROVISIONAL_PRECISIONS = {
    "tf32": "§7.4.1: the tf32 certification rests on assumptions about tensor-core arithmetic "
            "that no GPU run has checked"}
"""Precision modes whose results are provisional (spec §8.5), with why."""
PROVISIONAL_CLAUSES_OFF_CPU = {
    "6.7": "§6.7: bitwise repeatability on a GPU has never been run"}
"""Clauses whose results on a device other than the CPU are provisional (spec §8.5)."""


def provisional(clause: str, device: str, precision: str) -> str | None:
    """Why a result of ``clause`` on ``device`` under ``precision`` is provisional (spec §8.5,
    §7.4.1, §6.7), or None when it is not."""
    if precision in PROVISIONAL_PRECISIONS:
        return PROVISIONAL_PRECISIONS[precision]
    if device not in ("cpu", "-") and clause in PROVISIONAL_CLAUSES_OFF_CPU:
        return PROVISIONAL_CLAUSES_OFF_CPU[clause]
    return None


def worse(a: str | None, b: str | None) -> str | None:
    """The more severe of two outcomes (fail > xfail > pass > unsupported > skip; None is no
    outcome yet)."""
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


def column_sort_key(c: dict[str, Any]) -> tuple[Any, ...]:
    return (c["backend"] == NO_TARGET[0], c["backend"], c["device"], c["dtype"], c["precision"])


def json_number(x: float | None) -> float | str | None:
    """JSON-safe number (non-finite as a string, which ``float()`` reads back)."""
    if x is None:
        return None
    return x if math.isfinite(x) else str(x)


def seed_text(run: dict[str, Any]) -> str:
    """What decides the examples: a derandomized profile wins over --hypothesis-seed."""
    if run.get("derandomize"):
        ignored = "; --hypothesis-seed ignored" if run.get("seed") is not None else ""
        return f"derandomized (fixed per test{ignored})"
    if run.get("seed") is not None:
        return str(run["seed"])
    return "random (fix it with --hypothesis-seed N)"


# -- cells -----------------------------------------------------------------------------------------
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
                "max_ratio": None, "worst": "", "provisional": provisional(cid, dev, prec)})
            c["outcome"] = worse(c["outcome"], it["outcome"])
            for k in ("not_drawn", "deviations"):  # spec §8.6, §8.7
                if it.get(k):
                    c[k] = sorted(set(c.get(k, [])) | set(it[k]))
            c["tests"] += it.get("tests", 1)
            for k in ("examples", "failures"):
                if it.get(k) is not None:
                    c[k] = (c[k] or 0) + it[k]
            r = it.get("max_ratio")
            if r is not None and (c["max_ratio"] is None or float(r) > float(c["max_ratio"])):
                c["max_ratio"], c["worst"] = r, it.get("worst", "")
    return sorted(cells.values(), key=lambda c: (clause_sort_key(c["clause"]),
                                                 column_sort_key(c)))


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# -- matrices ----------------------------------------------------------------------------------
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


def columns(results: Sequence[dict[str, Any]]) -> list[Column]:
    cols = {(r["backend"], r["device"], r["dtype"], r["precision"]) for r in results}
    return sorted(cols, key=lambda c: column_sort_key(dict(zip(
        ("backend", "device", "dtype", "precision"), c, strict=True))))


def grid(matrix: dict[str, Any],
         ) -> tuple[list[tuple[str, str]], list[Column], dict[tuple[str, Column], dict[str, Any]]]:
    """The matrix as (clause, title) rows, columns, and the result of each (clause, column)."""
    results = matrix["results"]
    rows = sorted({(r["clause"], r["title"]) for r in results},
                  key=lambda ct: clause_sort_key(ct[0]))
    cols = columns(results)
    cell = {(r["clause"], (r["backend"], r["device"], r["dtype"], r["precision"])): r
            for r in results}
    return rows, cols, cell
