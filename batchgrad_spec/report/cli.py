"""The command line: ``python -m batchgrad_spec.report merge reports/*.json --out reports/matrix``.

Merges records (one per tox env, ``pytest --conformance-report``) into ``OUT.json``, ``OUT.md``
and, when matplotlib imports, ``OUT.png``. Needs numpy (and matplotlib for the picture), not
pytest.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .heatmap import heatmap
from .markdown import markdown
from .record import merge, write_json

__all__ = ["main"]


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
