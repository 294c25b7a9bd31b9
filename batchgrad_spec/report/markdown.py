"""The Markdown table of a record or matrix: each run's environment, then clauses × columns.

✅ pass with the largest error/tolerance, ❌ fail, ⚠️ xfail (a known deviation), ➖ skip; blank
where nothing ran; then the known deviations and the failures.
"""

from __future__ import annotations

import math
from typing import Any

from ..profiles import REDUCED
from .record import column_id, grid, seed_text

__all__ = ["PROVISIONAL_MARK", "SYMBOL", "fmt_ratio", "markdown"]

SYMBOL = {"pass": "✅", "fail": "❌", "xfail": "⚠️", "skip": "➖", "unsupported": "🚫"}
PROVISIONAL_MARK = "(provisional)"
"""Appended to a cell whose result is provisional (spec §8.5: the tf32 precision, §6.7 on a GPU)."""


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


def _source_line(s: dict[str, Any]) -> str:
    env = s.get("environment") or {}
    backends = "; ".join(
        f"{b['name']} ({', '.join(f'{k} {v}' for k, v in b['versions'].items())}) on "
        f"{', '.join(b['devices'])} [{', '.join(b['dtypes'])}]"
        for b in env.get("backends", [])) or "no backend"
    derand = ", derandomized" if s.get("derandomize") else ""
    reduced = ", reduced" if s.get("profile") in REDUCED else ""
    return (f"| {s['name']} | {s.get('created', '')} | `{s.get('profile')}` "
            f"({s.get('max_examples')} examples{derand}{reduced}) | "
            f"{s.get('seed_note') or seed_text(s)} | {backends} | {env.get('python', '?')} "
            f"on {env.get('platform', '?')} | {s.get('exitstatus', '')} |")


def markdown(matrix: dict[str, Any]) -> str:
    """The environment of each run, then clauses × backend-device-dtype: ✅ and the largest
    error/tolerance, ❌ fail, ⚠️ xfail (a known deviation), ➖ skip; blank where nothing ran."""
    rows, cols, cell = grid(matrix)
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
            mark = f" {PROVISIONAL_MARK}" if r.get("provisional") else ""
            if r["outcome"] == "unsupported":
                mark += " not supported"
            if r.get("deviations"):  # spec §8.7
                mark += f" known deviation: {', '.join(r['deviations'])}"
            n = f" ({r['examples']} ex.)" if r.get("examples") else ""
            cells.append(f"{SYMBOL[r['outcome']]} {ratio}".strip() + n + mark)
        out.append(f"| §{cid} {title} | " + " | ".join(cells) + " |")
    totals = []
    for c in cols:
        ex = [r["examples"] for (_, cc), r in cell.items() if cc == c and r["examples"]]
        totals.append(str(sum(ex)) if ex else "")
    out += ["| *examples checked* | " + " | ".join(totals) + " |", "",
            "✅ pass, with the largest observed error/tolerance (≤ 1; blank for tests without a "
            "tolerance) · ❌ fail · ⚠️ xfail: a known deviation (with the feature it is "
            "confined to, if any: the rest of the clause certified) · ➖ skipped · 🚫 not "
            "supported: every test needed a feature the backend does not declare · empty: not "
            "run"]
    left = sorted({(column_id(r["backend"], r["device"], r["dtype"], r["precision"]), f)
                   for r in matrix["results"] for f in r.get("not_drawn", [])})
    if left:
        out += ["", "## Not drawn", "",
                "Features the tests left out because the backend does not declare them, or "
                "deviates with them (spec §8.6, §8.7):", ""]
        cols_left = dict.fromkeys(c for c, _ in left)
        out += [f"- {c}: {', '.join(f for cc, f in left if cc == c)}" for c in cols_left]
    why = sorted({r["provisional"] for r in matrix["results"] if r.get("provisional")})
    if why:
        out += ["", "## Provisional results", "",
                f"A cell marked {PROVISIONAL_MARK} is provisional: it certifies conformance under "
                "a mode or requirement the suite has not yet checked where it applies (spec "
                "§8.5)."]
        out += [f"- {w}" for w in why]
    reduced = [(s["name"], REDUCED[s["profile"]]) for s in matrix["sources"]
               if s.get("profile") in REDUCED]
    if reduced:
        out += ["", "## Reduced certification", ""]
        out += [f"- {name}: {why}" for name, why in reduced]
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
