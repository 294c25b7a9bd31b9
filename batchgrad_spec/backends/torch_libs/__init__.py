"""The per-example-gradient libraries as per-example methods of a torch backend (spec §9.8–§9.12):
``--backend batchgrad_spec.backends.torch_libs:backend`` (name ``torch_libs``).

Opacus (``GradSampleModule``, ``loss_reduction`` "mean" and "sum"), BackPACK (``BatchGrad``) and
PyTorch's ExpandedWeights (``call_for_per_sample_grads``) are offered as the per-example methods
"opacus_mean", "opacus_sum", "backpack" and "expanded_weights" next to the torch backend's "vmap"
and "loop", each only where its library imports (extras ``opacus``, ``backpack``; ExpandedWeights
ships with torch). The torch backend itself never needs them.

Rooms (imports go one way, down this list):

* ``adapter``      ``TorchLibsBackend`` and ``backend``: the torch backend plus the methods
* ``libraries``    each library called as its users call it; ``LibraryUnsupported``
* ``conventions``  each library's scaling stated as data, and its float64 reference (no torch)
"""

from __future__ import annotations

from .adapter import TorchLibsBackend, backend
from .conventions import CONVENTIONS, METHODS, Convention, expected_raw, scale
from .libraries import LOSSES, LibraryUnsupported, available, library_versions, raw_per_example

__all__ = ["CONVENTIONS", "LOSSES", "METHODS", "Convention", "LibraryUnsupported",
           "TorchLibsBackend", "available", "backend", "expected_raw", "library_versions",
           "raw_per_example", "scale"]
