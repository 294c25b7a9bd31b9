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


def run(profile: str) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(kind, method) → [(outcome, detail)] over the dtypes."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "run.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                        "--backend", BACKEND, f"--hypothesis-profile={profile}",
                        "-k", "gives_g_i_through", f"--junitxml={xml}",
                        "tests/test_ch9_libraries.py"], cwd=ROOT, check=False)
        tree = ET.parse(xml)
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for case in tree.iter("testcase"):
        m = NAME.search(case.get("name", ""))
        if not m:
            continue
        kind, _dtype, method = m.groups()
        outcome, detail = "agrees", ""
        for child in case:
            if child.tag == "skipped":
                msg = child.get("message", "")
                outcome = "xfail" if child.get("type") == "pytest.xfail" else "unsupported"
                detail = msg.split(": ", 2)[-1].replace(" (spec §9.12)", "")
            elif child.tag in ("failure", "error"):
                outcome, detail = "FAILS", (child.get("message") or "").splitlines()[0]
        out.setdefault((kind, method), []).append((outcome, detail))
    return out


def table(results: dict[tuple[str, str], list[tuple[str, str]]]) -> str:
    kinds = list(dict.fromkeys(k for k, _ in results))
    lines = ["| layer kind | " + " | ".join(METHODS) + " |",
             "|---|" + "---|" * len(METHODS)]
    for kind in kinds:
        cells = []
        for method in METHODS:
            got = results.get((kind, method))
            if not got:
                cells.append("not installed")
                continue
            worst = next(g for o in ("FAILS", "xfail", "unsupported", "agrees")
                          for g in got if g[0] == o)
            text = {"FAILS": "**FAILS**", "xfail": "finding (xfail)",
                    "unsupported": "unsupported", "agrees": "agrees"}[worst[0]]
            reason = worst[1].replace("|", "/")
            cells.append(f"{text}: {reason[:140]}" if worst[0] != "agrees" else text)
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="dev")
    ap.add_argument("--write", action="store_true", help="update spec/09-structured-layers.md")
    args = ap.parse_args()
    md = table(run(args.profile))
    print(md)
    if args.write:
        text = SPEC.read_text(encoding="utf-8")
        new = re.sub(r"(<!-- library-table:start -->\n).*?(<!-- library-table:end -->)",
                     lambda m: m.group(1) + md + "\n" + m.group(2), text, flags=re.S)
        SPEC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
