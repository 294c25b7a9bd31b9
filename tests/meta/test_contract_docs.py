"""Chapter 8 and Appendix A document everything a backend can receive (spec §8.1, issue #18):
every field of every type crossing the contract, every name a field can hold, every member and
optional method — so that an adapter can be written without reading the reference's source.

The fields are enumerated from the reference itself (dataclass fields of ``Problem``, ``Network``,
every layer type of ``reference.layers.Layer``, ``Loss``, ``Reduction``, ``Batch``,
``Optimizer``, ``Accumulation``, ``Config``), the names from its vocabularies
(``ACTIVATION_NAMES``, ``LOSS_NAMES``, ``REDUCTION_NAMES``, ``OPTIMIZER_NAMES``, ``MODES``,
``DTYPES``), the members from ``reference.contract``: a field, name or member the reference gains
fails here until a row documents it. A row is a Markdown table row whose first cell is the
backticked name (`` | `Batch.mask` | … ``) in Appendix A, chapter 8, or any chapter of ``spec/``
(a chapter that adds a layer may document its fields itself).
"""

from __future__ import annotations

import dataclasses
import re
import typing

import pytest

from batchgrad_spec.resources import ROOT, SPEC
from reference.accumulation import Accumulation
from reference.activations import ACTIVATION_NAMES
from reference.batch import Batch
from reference.contract import CONTRACT, OPTIONAL, Config
from reference.layers import Layer, Network
from reference.losses import LOSS_NAMES, REDUCTION_NAMES, Loss, Reduction
from reference.numerics import MODES
from reference.problem import DTYPES, Problem
from reference.update import OPTIMIZER_NAMES, Optimizer

pytestmark = pytest.mark.meta

TYPES = (Problem, Network, *typing.get_args(Layer), Loss, Reduction, Batch, Optimizer,
         Accumulation, Config)
VOCABULARIES = {"Activation.name": ACTIVATION_NAMES, "Loss.name": LOSS_NAMES,
                "Reduction.name": REDUCTION_NAMES, "Optimizer.name": OPTIMIZER_NAMES,
                "Config.precision": MODES, "Config.dtype": DTYPES}
MEMBERS = (*CONTRACT, *OPTIONAL, "accumulation_methods", "Undefined")
ROW = re.compile(r"^\|\s*`([^`]+)`", re.MULTILINE)


def fields() -> list[str]:
    return [f"{t.__name__}.{f.name}" for t in TYPES for f in dataclasses.fields(t)
            if not f.name.startswith("_")]


def documented() -> set[str]:
    """The first cells of every table row of the spec (backticked names)."""
    return {m.group(1).strip() for p in SPEC.glob("*.md")
            for m in ROW.finditer(p.read_text(encoding="utf-8"))}


@pytest.mark.clause("8.1")
def test_every_field_a_backend_receives_is_documented():
    missing = [f for f in fields() if f not in documented()]
    assert not missing, (f"{len(missing)} fields have no row in spec/appendix-a-writing-a-"
                         f"backend.md (first cell `Class.field`): {missing}")


@pytest.mark.clause("8.1")
@pytest.mark.parametrize("field", sorted(VOCABULARIES))
def test_every_name_a_field_can_hold_is_documented(field):
    rows = documented()
    missing = [n for n in VOCABULARIES[field] if n not in rows]
    assert not missing, f"{field}: no row for {missing} in spec/appendix-a-writing-a-backend.md"


@pytest.mark.clause("8.1")
def test_every_member_and_optional_method_is_documented():
    rows = documented()
    missing = [m for m in MEMBERS if m not in rows and f"{m}()" not in rows
               and not any(r.startswith(f"{m}(") for r in rows)]
    assert not missing, f"no row for the members {missing} (chapter 8 or Appendix A)"


@pytest.mark.clause("8.1")
def test_the_vocabulary_table_is_the_vocabulary():
    """Appendix A §8 holds exactly the table ``tools/vocabulary_table.py`` makes from
    ``reference.capabilities.VOCABULARY``: every capability name, its description, and whether a
    backend without a declaration is assumed to support it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vocabulary_table",
                                                  ROOT / "tools" / "vocabulary_table.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    text = (SPEC / "appendix-a-writing-a-backend.md").read_text(encoding="utf-8")
    assert text == tool.replaced(text), ("Appendix A's vocabulary table is not VOCABULARY's: "
                                         "run `python tools/vocabulary_table.py --write`")
    from reference.capabilities import VOCABULARY

    assert all(f"| `{name}` |" in text for name in VOCABULARY)


@pytest.mark.clause("8.1")
def test_the_check_sees_what_it_counts():
    """The enumeration is not empty and catches an undocumented field (a mutation of the docs)."""
    assert len(fields()) > 30 and "Batch.mask" in fields() and "BatchNorm.running_var" in fields()
    text = (SPEC / "appendix-a-writing-a-backend.md").read_text(encoding="utf-8")
    assert "| `Batch.mask` |" in text
    rows = {m.group(1) for m in ROW.finditer(text.replace("| `Batch.mask` |", "| mask |"))}
    assert "Batch.mask" not in rows


@pytest.mark.clause("8.1")
def test_an_adapter_written_from_the_docs_certifies_what_it_declares_and_skips_the_rest(
        tmp_path):
    """``examples/docs_adapter.py`` (PyTorch, written from Appendix A alone) declares the
    chapter-1/2 vocabulary: chapter 2's mean identity passes on it, and chapter 3's Huber test
    is skipped with the reason (§8.6), shown as "unsupported" in the report."""
    pytest.importorskip("torch")
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "CI")}
    report = tmp_path / "docs.json"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "--dtype", "float64",
         "--backend", "examples.docs_adapter:backend", "--conformance-report", str(report),
         "tests/test_ch2_core.py", "tests/test_ch3_loss_kinds.py", "-k",
         "gradient_of_the_mean_loss or huber"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "not supported: docs_adapter does not declare loss:huber" in out, out
    cells = {r["clause"]: r["outcome"] for r in json.loads(report.read_text())["results"]
             if r["backend"] == "docs_adapter"}
    assert cells.get("2.1") == "pass" and "unsupported" in cells.values(), cells
