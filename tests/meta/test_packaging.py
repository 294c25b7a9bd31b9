"""§8.2: the wheel carries every room of the suite (a package missing from pyproject.toml's list
would be left out of the installed suite, and only ``tox -e wheel`` would notice)."""

from __future__ import annotations

import pytest

from batchgrad_spec.resources import INSTALLED, ROOT

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")

pytestmark = [pytest.mark.meta, pytest.mark.clause("8.2")]


def test_every_package_of_the_checkout_is_listed_for_the_wheel():
    if INSTALLED:
        pytest.skip("an installed suite has no pyproject.toml")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    mapped = config["tool"]["setuptools"]["package-dir"]
    found = set()
    for top in ("reference", "batchgrad_spec"):
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    for package, folder in mapped.items():
        assert (ROOT / folder).is_dir(), f"package-dir maps {package} to missing {folder}/"
        found.add(package)
    assert not found - listed, f"packages missing from [tool.setuptools] packages: " \
                               f"{sorted(found - listed)}"
    assert not listed - found, f"listed packages that do not exist: {sorted(listed - found)}"
