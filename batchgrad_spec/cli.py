"""``batchgrad-spec``: run every chapter of the suite against a backend, wherever it is installed.

    batchgrad-spec --backend mypkg.adapter:backend [pytest options...]

is ``python -m pytest -p batchgrad_spec.plugin <the chapter tests> [options...]`` with the test
directory, the rootdir and the settings of this project's pyproject.toml (strict xfails, no cache
written into the installed package) filled in. Every pytest option passes through (``-k``, ``-x``,
``--hypothesis-profile``, ``--dtype``, ``--device``, ``--conformance-report PATH``,
``--xfails-file``); the exit status is pytest's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from .resources import INSTALLED, ROOT, TESTS

__all__ = ["main", "pytest_args"]

SETTINGS = (
    "-o", "xfail_strict=true",
    "-o", "filterwarnings=error::hypothesis.errors.HypothesisDeprecationWarning",
    "-o", "python_files=test_*.py",
)


def _is_test_path(arg: str) -> bool:
    path = arg.split("::")[0]
    return (path.startswith("tests") and not Path(path).exists()
            and (ROOT / path).exists() and (ROOT / path).resolve().is_relative_to(TESTS))


def _within_tests(arg: str) -> bool:
    path = Path(arg.split("::")[0])
    return not arg.startswith("-") and path.exists() and path.resolve().is_relative_to(TESTS)


def pytest_args(argv: Sequence[str]) -> list[str]:
    """The pytest command line the ``batchgrad-spec`` command runs for ``argv``."""
    # a test path may be given as its node id (``tests/test_ch2_core.py::test_...``): it is
    # found under ROOT, where the chapter tests are, whatever the current directory (only a
    # path that names a test file or folder there and nothing here: not an option's value)
    argv = [str(ROOT / a) if _is_test_path(a) else a for a in argv]
    selects = any(_within_tests(a) for a in argv)
    where = [] if selects else [str(TESTS)]
    if INSTALLED:
        # installed: no ini file of ours is found next to the tests, so give its settings; the
        # meta-tests of the harness are not shipped (they need the checkout)
        head = ["-p", "batchgrad_spec.plugin", "--rootdir", str(ROOT), "--confcutdir", str(ROOT),
                "-p", "no:cacheprovider", *SETTINGS]
    else:
        head = ["--rootdir", str(ROOT)]  # the checkout's conftest.py loads the plugin
    return [*head, *where, *argv]


def main(argv: Sequence[str] | None = None) -> int:
    import pytest

    return int(pytest.main(pytest_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    raise SystemExit(main())
