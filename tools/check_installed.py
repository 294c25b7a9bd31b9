"""The installed suite works outside any checkout (run by ``tox -e wheel`` and so by CI).

tox builds the wheel from this repository and installs it, with the ``[torch]`` extra, into a
fresh virtual environment; this script then runs in a temporary directory outside the checkout and
checks what a framework maintainer would do after ``pip install 'batchgrad-spec[torch]'``:

1. ``batchgrad_spec`` and ``reference`` are imported from the installed wheel, not the checkout;
2. ``batchgrad-spec --backend torch`` runs every chapter and passes, prints the run header and the
   summary table, and writes the conformance report it was asked for;
3. ``batchgrad-spec --backend batchgrad_spec.faults:mean_over_n_minus_1`` fails on §2.1 with the
   clause, backend, dtype and a repro snippet, and that snippet runs in this directory and shows the
   disagreement.

Usage: ``python tools/check_installed.py [--profile dev] [pytest options for step 2...]``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
FAULT = "batchgrad_spec.faults:mean_over_n_minus_1"
MEAN = "test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients"


def fail(message: str) -> None:
    print(f"check_installed: FAILED: {message}", file=sys.stderr)
    raise SystemExit(1)


SCRIPT = Path(sys.executable).parent / "batchgrad-spec"
"""The console script pip installed beside this python (the [project.scripts] entry)."""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not SCRIPT.exists():
        fail(f"{SCRIPT} was not installed: the wheel's console script is missing")
    command = [str(SCRIPT), *args]
    print("$", " ".join(["batchgrad-spec", *args]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1800)
    print(f"  exit {done.returncode} after {time.perf_counter() - start:.0f} s", flush=True)
    return done


def installed_not_checkout(cwd: Path) -> None:
    code = ("import batchgrad_spec, reference; "
            "print(batchgrad_spec.__file__); print(reference.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                         check=True).stdout.split()
    for path in out:
        resolved = Path(path).resolve()
        # (tox keeps its environments in the checkout's .tox/: only the source folders count)
        if any(resolved.is_relative_to(CHECKOUT / top) for top in ("batchgrad_spec", "reference")):
            fail(f"{path} is imported from the checkout {CHECKOUT}, not from the installed wheel")
        if "site-packages" not in resolved.parts:
            fail(f"{path} is not in an environment's site-packages")
    print("imported from the wheel:", *out, sep="\n  ")


def correct_backend_passes(cwd: Path, profile: str, extra: list[str]) -> None:
    report = cwd / "reports" / "torch.json"
    done = run("--backend", "torch", "--hypothesis-profile", profile, "-q",
               "--conformance-report", str(report), *extra, cwd=cwd)
    out = done.stdout + done.stderr
    print("\n".join(out.splitlines()[-8:]))
    if done.returncode != 0:
        fail(f"the torch backend did not pass (exit {done.returncode}):\n{out[-6000:]}")
    if "batchgrad-spec: examples and largest error/tolerance" not in out:
        fail("the summary table is missing from the output")
    if not re.search(r"^torch +cpu +float(32|64) ", out, re.M):  # (column widths vary)
        fail("no summary row for torch on the cpu in the output")
    record = json.loads(report.read_text(encoding="utf-8"))
    chapters = {r["clause"].split(".")[0] for r in record["results"]}
    if not {"1", "2", "3", "4", "5", "6", "7", "8"} <= chapters:
        fail(f"the report covers chapters {sorted(chapters)}, not every chapter")
    print(f"conformance report: {report} ({len(record['results'])} rows, chapters "
          f"{', '.join(sorted(chapters, key=int))})")


def faulty_backend_fails_with_a_runnable_snippet(cwd: Path) -> None:
    from batchgrad_spec.repro import reproductions

    done = run("--backend", FAULT, "--dtype", "float64", "-k", MEAN, cwd=cwd)
    out = done.stdout + done.stderr
    if done.returncode != 1:
        fail(f"the faulty backend should fail (exit 1), got exit {done.returncode}:\n{out[-4000:]}")
    for text in ("§2.1 The gradient of the mean loss is the mean of the per-example gradients",
                 "backend=mean_over_n_minus_1 ", "dtype=float64", f"backend = load({FAULT!r})"):
        if text not in out:
            fail(f"{text!r} missing from the failure report:\n{out[-4000:]}")
    snippets = [s for s in reproductions(out, "2.1") if "observed = None" not in s]
    if not snippets:
        fail(f"no repro snippet of §2.1 in the output:\n{out[-4000:]}")
    check = "\nassert not np.array_equal(np.asarray(observed), np.asarray(expected))\n"
    rerun = subprocess.run([sys.executable, "-c", snippets[0] + check], cwd=cwd,
                           capture_output=True, text=True, timeout=120)
    if rerun.returncode != 0 or not rerun.stdout.startswith("observed:"):
        fail(f"the printed snippet does not run here:\n{snippets[0]}\n{rerun.stdout}"
             f"{rerun.stderr}")
    print(f"the faulty backend fails §2.1, and its snippet runs in {cwd}:")
    print("  " + "\n  ".join(rerun.stdout.splitlines()[:4]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="dev")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="batchgrad-installed-") as tmp:
        cwd = Path(tmp)
        if cwd.resolve().is_relative_to(CHECKOUT):
            fail(f"{cwd} is inside the checkout")
        installed_not_checkout(cwd)
        faulty_backend_fails_with_a_runnable_snippet(cwd)
        correct_backend_passes(cwd, args.profile, extra)
    print("check_installed: the installed suite works outside the checkout")


if __name__ == "__main__":
    main()
