"""Deliberately wrong backends, the gallery of caught bugs (``--backend
batchgrad_spec.faults:NAME``).

Every fault is an attribute of this package, whichever module defines it; a module is imported
only when one of its names is first asked for (PEP 562), so a fault that needs torch costs nothing
until it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = ("core", "losses", "layers", "update", "accumulation", "precision")


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    for module in _MODULES:
        found = getattr(importlib.import_module(f"{__name__}.{module}"), name, _MISSING)
        if found is not _MISSING:
            return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r} (faults: "
                         f"{', '.join(_MODULES)} in {__name__})")


_MISSING = object()
