"""Where the suite's files are: the spec text and the chapter tests.

In a checkout they are the top-level ``spec/`` and ``tests/`` beside this package; in an installed
wheel they are carried inside the package as ``batchgrad_spec/spec`` and ``batchgrad_spec/tests``
(a setuptools package-dir mapping, see pyproject.toml). Node ids are relative to ``ROOT``, the
folder holding ``tests/``, so they read ``tests/test_ch2_core.py::...`` in both cases.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["INSTALLED", "PACKAGE", "ROOT", "SPEC", "TESTS"]

PACKAGE = Path(__file__).resolve().parent
INSTALLED = (PACKAGE / "tests").is_dir()
"""True when running from an installed wheel (the chapter tests are inside the package)."""
ROOT = PACKAGE if INSTALLED else PACKAGE.parent
SPEC = ROOT / "spec"
TESTS = ROOT / "tests"
