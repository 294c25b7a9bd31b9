"""The library × layer table of spec §9.12, generated from a run of tests/test_ch9_libraries.py.

    python tools/library_table.py [--profile ci] [--write]

runs the layer-kind tests (``test_every_per_example_method_gives_g_i_through_<kind>``) against
``batchgrad_spec.backends.torch_libs:backend`` in float64 and float32, reads the outcome of each
per-example method × kind from pytest's JUnit XML, and prints a Markdown table: "agrees" (passed
in both dtypes), "finding (xfail)" (a strict expected failure, §8.5), "FAILS" (a failure: a
disagreement not yet written down), "unsupported: <the library's reason>" (skipped by §9.12), or
"not installed". ``--write`` puts the table between the ``library-table`` markers of
spec/09-structured-layers.md. Run it where the libraries import (the tox envs, or a venv with
``pip install -e .[opacus,backpack]``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec" / "09-structured-layers.md"
BACKEND = "batchgrad_spec.backends.torch_libs:backend"
METHODS = ("vmap", "loop", "opacus_mean", "opacus_sum", "backpack", "expanded_weights")
NAME = re.compile(r"test_every_per_example_method_gives_g_i_through_(\w+)\[torch_libs-cpu-"
                  r"(float\d+)-(\w+)\]")


def run(profile: str, xml: Path | None = None) -> dict[tuple[str, str], list[tuple[str, str, str]]]:
    """(kind, method) → [(dtype, outcome, detail)]; reads ``xml`` instead of running if given."""
    if xml is None:
        with tempfile.TemporaryDirectory() as tmp:
            out_xml = Path(tmp) / "run.xml"
            subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                            "--backend", BACKEND, f"--hypothesis-profile={profile}",
                            "-k", "gives_g_i_through", f"--junitxml={out_xml}",
                            "--xfails-file", "batchgrad_spec/backends/torch_libs/xfails.txt",
                            "tests/test_ch9_libraries.py"], cwd=ROOT, check=False)
            tree = ET.parse(out_xml)
    else:
        tree = ET.parse(xml)
    out: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for case in tree.iter("testcase"):
        m = NAME.search(case.get("name", ""))
        if not m:
            continue
        kind, dtype, method = m.groups()
        outcome, detail = "agrees", ""
        for child in case:
            if child.tag == "skipped":
                msg = child.get("message", "")
                outcome = "xfail" if child.get("type") == "pytest.xfail" else "unsupported"
                detail = msg.split(": ", 2)[-1].replace(" (spec §9.12)", "")
            elif child.tag in ("failure", "error"):
                outcome, detail = "FAILS", (child.get("message") or "").splitlines()[0]
        out.setdefault((kind, method), []).append((dtype, outcome, detail))
    return out


def _cell(got: list[tuple[str, str, str]]) -> str:
    def one(outcome: str, detail: str) -> str:
        if outcome == "agrees":
            return "agrees"
        if outcome == "xfail":
            docs = re.findall(r"docs/findings/[\w.-]+\.md", detail)
            links = ", ".join(f"[{d.split('/')[-1][:-3]}]({'../' + d})" for d in docs[:1])
            return f"finding ({links})"
        text = detail.replace("|", "/")
        short = text if len(text) <= 90 else text[:89] + "…"
        return f"{'**FAILS**' if outcome == 'FAILS' else 'unsupported'}: {short}"
    per = {dtype: one(o, d) for dtype, o, d in got}
    if len(set(per.values())) == 1:
        return next(iter(per.values()))
    return "; ".join(f"{dtype}: {text}" for dtype, text in sorted(per.items()))


def table(results: dict[tuple[str, str], list[tuple[str, str, str]]]) -> str:
    kinds = list(dict.fromkeys(k for k, _ in results))
    lines = ["| layer kind | " + " | ".join(METHODS) + " |",
             "|---|" + "---|" * len(METHODS)]
    for kind in kinds:
        cells = [_cell(results[(kind, m)]) if (kind, m) in results else "not installed"
                 for m in METHODS]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="dev")
    ap.add_argument("--write", action="store_true", help="update spec/09-structured-layers.md")
    ap.add_argument("--xml", type=Path, default=None,
                    help="read this JUnit XML of an earlier run instead of running pytest")
    args = ap.parse_args()
    md = table(run(args.profile, args.xml))
    print(md)
    if args.write:
        text = SPEC.read_text(encoding="utf-8")
        new = re.sub(r"(<!-- library-table:start -->\n).*?(<!-- library-table:end -->)",
                     lambda m: m.group(1) + md + "\n" + m.group(2), text, flags=re.S)
        SPEC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
