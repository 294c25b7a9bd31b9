"""Section e: the figures of a CI run that the benchmark's throughput explains, printed in the
same log so that a regression shows up there (issue #15).

* the throughput goals of §2.1 (≥ 200 examples/s for numpy and torch, ≥ 150 for jax, generation,
  reference and bound included), met or not, from section a of this run;
* the ``ci`` profile's examples per property, and per env of this CI run the tests, examples and
  the fewest examples per test of any (clause, backend, dtype) cell, from the conformance records
  ``reports/<env>.json`` that the test envs write before the ``bench`` env runs (absent when the
  benchmark runs on its own);
* the wall time per env so far, from ``reports/ci-times.txt`` (one ``<env> <seconds>`` line per
  env, written by ``.ci/run``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import section, table

__all__ = ["GOALS", "section_e"]

GOALS = {"numpy": 200.0, "torch": 200.0, "jax": 150.0}
"""examples/s of the §2.1 property per backend (issue #15), for every dtype."""


def _reports(root: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted((root / "reports").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "results" in data:
            out.append((path.stem, data))
    return out


def section_e(results: dict[str, Any] | None, root: Path) -> dict[str, Any]:
    section("e. CI figures: throughput goals, examples per env, wall time per env")
    out: dict[str, Any] = {"goals": {}, "envs": {}, "times": {}}
    if results:
        rows = []
        for key, r in results.items():
            backend, dtype = key.split("-", 1)
            goal = GOALS.get(backend)
            met = "" if goal is None else ("met" if r["examples_per_s"] >= goal else "NOT met")
            out["goals"][key] = {"examples_per_s": r["examples_per_s"], "goal": goal, "met": met}
            cpu = r.get("cpu_per_example_s")
            rows.append([backend, dtype, f"{r['examples_per_s']:.0f}",
                         "-" if not cpu else f"{1 / cpu:.0f}",
                         "-" if goal is None else f"≥ {goal:.0f}", met,
                         f"{r['generation_share']:.0%}"])
        table(["backend", "dtype", "examples/s (§2.1, wall)", "per CPU second", "goal", "",
               "generation share"], rows)
        print("\n(wall-clock figures on a machine shared with other work are lower by the load; "
              "examples per CPU second (time.process_time, torch on its own threads) is the "
              "figure that changes least with it, though contention inflates it too)")
    from hypothesis import settings

    import batchgrad_spec.profiles  # noqa: F401  (registers the profiles)

    ci = settings.get_profile("ci")
    print(f"\n`ci` profile: {ci.max_examples} examples per property and backend/dtype/device, "
          f"derandomized={ci.derandomize}")
    reports = _reports(root)
    if reports:
        rows = []
        for env, data in reports:
            cells = [c for c in data["results"] if c.get("examples")]
            tests = sum(c.get("tests", 0) for c in data["results"])
            examples = sum(c["examples"] for c in cells)
            fewest = min((c["examples"] / max(c["tests"], 1) for c in cells), default=0)
            out["envs"][env] = {"profile": data.get("profile"), "tests": tests,
                                "examples": examples, "fewest_per_test": fewest}
            rows.append([env, str(data.get("profile")), str(tests), str(examples),
                         f"{fewest:.0f}"])
        print("\nConformance records of this run (reports/*.json):\n")
        table(["env", "profile", "test items", "examples", "fewest examples per test (a cell)"],
              rows)
    else:
        print("(no reports/*.json here: run from .ci/run or tox to see examples per env)")
    times = root / "reports" / "ci-times.txt"
    if times.exists():
        lines = [ln.split() for ln in times.read_text(encoding="utf-8").splitlines()
                 if len(ln.split()) == 2]
        out["times"] = {env: int(s) for env, s in lines}
        print("\nWall time per env so far (.ci/run, install included):\n")
        table(["env", "wall"], [[env, f"{s} s"] for env, s in lines])
    return out
