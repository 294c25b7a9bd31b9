"""Deliberately wrong backends: the mistakes the property suite exists to catch, and the gallery
of caught bugs (``--backend batchgrad_spec.faults:<name>``).

Each fault is a small wrapper of a real backend — the reference's ``NumpyBackend`` (fast, and
exactly right except for the one documented fault), or PyTorch's for the few that need it — that
gets one thing wrong. Rooms, one concern each (``base`` under all of them):

* ``base``          ``Faulty`` (the numpy reference under another name), ``Fault``, ``reduced``
* ``reductions``    the batch L and ∇L wrong, per-example results right (chapter 2)
* ``per_example``   ℓ_i and g_i at the wrong θ, scaled, reordered, or with a side effect (§2.5,
  §2.12)
* ``operations``    one operation of the forward/backward pass wrong (§1.1, §1.5, §2.12), on the
  hand-written pass ``MLP``
* ``precision``     TF32 matrix products: in strict mode (a fault), or as the tf32 mode (§7.4)
* ``contract``      malformed answers, a crash, not a backend (§8.2, §8.3)
* ``losses``        chapter 3's loss reductions (§3.3–§3.5)
* ``layers``        chapter 4's BatchNorm and leaky_relu (§4.2, §4.3, §4.6)
* ``accumulation``  chapter 5's gradient accumulation (§5.1–§5.4)
* ``update``        chapter 6's update steps (§6.1, §6.2, §6.6)
* ``capabilities``  declarations: a subset, a misspelt name, a deviation confined to one feature
  (§8.6, §8.7)
* ``gallery``       ``Bug``, ``GALLERY``, ``PENDING``: which property catches which classic bug

Every name of these modules is an attribute of this package, whichever module defines it: when a
name is first asked for, the modules of ``_MODULES`` are imported in order until one has it (PEP
562), and a fault that needs torch is built only when it is itself asked for, so
``--backend batchgrad_spec.faults:<name>`` costs nothing it does not use. Each fault is also
loadable from its own module,
``--backend batchgrad_spec.faults.<module>:<name>``. ``tests/meta/`` checks that each is caught by
the clause its docstring names: ``test_faulty_backends.py``, ``test_gallery.py``,
``test_contract_errors.py``, ``test_loss_faults.py``, ``test_layer_faults.py``,
``test_accumulation_faults.py``, ``test_update_faults.py``, ``test_precision_modes.py``.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = ("gallery", "reductions", "per_example", "operations", "precision", "contract",
            "losses", "layers", "accumulation", "update", "capabilities", "base")
"""The modules whose names this package resolves, searched in this order."""

_MISSING = object()


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    for module in _MODULES:
        found = getattr(importlib.import_module(f"{__name__}.{module}"), name, _MISSING)
        if found is not _MISSING:
            return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r} (faults: "
                         f"{', '.join(_MODULES)} in {__name__})")
