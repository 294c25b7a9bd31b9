"""The reference's shared vocabulary, at the bottom of its imports: the array-map types and the
exceptions every other room raises or passes through. Imports nothing from ``reference``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

__all__ = ["Array", "BackendError", "DType", "Grads", "Params", "ProblemError", "Site",
           "Undefined"]

Array = np.ndarray
Grads = dict[str, np.ndarray]
"""{parameter name: array}: a gradient (or its error bound) for every parameter."""
Params = Mapping[str, np.ndarray]
"""{parameter name: array}: θ, as a problem holds it."""
DType = type[np.floating] | np.dtype
"""The float dtype a computation runs in (float64: the reference; float32: the numpy backend)."""


class ProblemError(ValueError):
    """A problem description that contradicts itself (shapes, names, label ranges)."""


class BackendError(Exception):
    """A backend could not be loaded, or broke the contract. The message says what to fix.

    ``call`` is "loss_and_grad" or "per_example" when the error came from that call. Defined here
    (and re-exported by ``reference.contract``) so that ``reference.capabilities`` can raise it.
    """

    call: str | None = None


class Undefined(Exception):
    """Raised by a backend (and the reference) when the asked quantity is not defined for the
    problem, e.g. per-example gradients through a train-mode BatchNorm (spec §4.3). The message
    names the clause. The checked calls pass it through unchanged: it is an answer, not a
    contract breach."""


class Site(NamedTuple):
    """Where a layer sits, as the generic passes hand it to the layer's rules: its index k in the
    network, θ, the dtype of the forward pass, and the batch's data for layer k (``keep``:
    ``batch.dropout[k]``, as given in the gradient passes, as rows in the bound's)."""

    k: int
    params: Params
    dtype: DType = np.float64
    keep: np.ndarray | None = None

    def param(self, name: str, dtype: DType | None = None) -> np.ndarray:
        """θ's ``k.name`` in ``dtype`` (the forward dtype by default); read only: no copy when
        the dtype is float64."""
        return self.params[f"{self.k}.{name}"].astype(self.dtype if dtype is None else dtype,
                                                      copy=False)
