"""Measure the README's "Gallery of caught bugs" table: ``python -m examples.gallery_sizes``.

For every bug of ``batchgrad_spec.faults.GALLERY`` this runs the property test of its clause against
its faulty backend twice under the ``ci`` profile (derandomised, ``max_examples`` 100), with the
machinery of ``tests/meta/test_gallery.py`` (``batchgrad_spec.catching``): once without
shrinking, counting the examples up to the first failure (what the meta-test asserts), and once
with shrinking, describing the counterexample(s) Hypothesis reports — N, the Dense widths,
activations, loss (``batchgrad_spec.faults.gallery.describe``). It prints the
table as Markdown on stdout, to paste into README.md (timings go to stderr). The figures depend
on the strategies in ``batchgrad_spec/strategies/`` and on Hypothesis's version (it prints which).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import hypothesis
from hypothesis import Phase, settings

from batchgrad_spec.catching import CI, Outcome, leaves, make_target, run_property
from batchgrad_spec.faults.gallery import GALLERY, PENDING, Bug, describe, property_test
from batchgrad_spec.harness import ClauseFailure

SHRINKING = settings(CI, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])


def catch(bug: Bug, profile: settings = CI) -> tuple[Outcome, list[Any]]:
    """Run ``bug``'s property against its backend; stop unless it fails with its clause only."""
    target = make_target(f"batchgrad_spec.faults:{bug.backend}", bug.clause, bug.dtype, bug.method)
    out = run_property(property_test(bug), target, profile=profile)
    failures = [] if out.error is None else leaves(out.error)
    if not failures or any(not isinstance(f, ClauseFailure) or f.clause != bug.clause
                           for f in failures):
        raise SystemExit(f"{bug.backend}: not caught by §{bug.clause} alone: {failures!r}")
    return out, failures


def main() -> None:
    print(f"<!-- python -m examples.gallery_sizes; hypothesis {hypothesis.__version__} -->")
    print("| bug | faulty backend | caught by clause | examples needed (ci profile) "
          "| shrunk counterexample (N, layers) |")
    print("|---|---|---|---|---|")
    total = time.perf_counter()
    for bug in GALLERY:
        start = time.perf_counter()
        first, _ = catch(bug)
        shrunk, failures = catch(bug, profile=SHRINKING)
        sizes = "; ".join(dict.fromkeys(describe(p) for p in shrunk.failing[-len(failures):]))
        dtype = "" if bug.dtype == "float64" else f" ({bug.dtype})"
        print(f"| {bug.bug} | `{bug.backend}` | §{bug.clause}{dtype} | {first.first_failure} "
              f"| {sizes} |", flush=True)
        print(f"{bug.backend}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    for bug, where in PENDING:
        print(f"| {bug} | — | pending: {where} | — | — |")
    print(f"total {time.perf_counter() - total:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
