"""batchgrad-spec: the property suite of the executable specification of mini-batch gradients.

The suite's library, one import name in a checkout and installed:

* ``batchgrad_spec.strategies``  Hypothesis strategies drawing problems (public API, ``__all__``)
* ``batchgrad_spec.harness``     targets, checks against the reference, clause failures, repros
* ``batchgrad_spec.plugin``      the pytest plugin (options, parametrisation, header, summary)
* ``batchgrad_spec.report``      conformance reports, the xfails file, the merged matrix
* ``batchgrad_spec.backends``    the torch and jax adapters (``--backend torch`` / ``jax``)
* ``batchgrad_spec.distributed`` data-parallel engines (torch DDP over gloo, jax shard_map)
* ``batchgrad_spec.faults``      deliberately wrong backends: the gallery of caught bugs
* ``batchgrad_spec.cli``         the ``batchgrad-spec`` command

The numpy reference itself is the package ``reference`` (float64, no framework imports).
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["__version__"]

try:
    __version__ = metadata.version("batchgrad-spec")
except metadata.PackageNotFoundError:  # a bare checkout: nothing is installed
    __version__ = "0+checkout"
