"""The layer contract, written once (after jax's ``stax``: a layer is a small unit; and HIPS
autograd's ``numpy_vjps``: one backward rule beside each forward rule).

Every layer type is a frozen dataclass whose fields, ``repr`` (a runnable snippet) and equality
describe it, and whose methods are its rules; ``reference.grads`` and ``reference.bounds`` only
iterate over the layers:

    param_shapes()          {local name: shape}: θ's ``k.weight``, ``k.bias`` of layer k
    out_width(width)        the width of its output, given that of its input
    check_width(width)      whether it accepts an input of that width
    takes_sequences         whether it is defined for sequence batches (N, T, d)
    check_data(k, batch, lead, width)   raises ProblemError when the batch lacks its data
    rounded(dtype)          the layer with its own data rounded to dtype (``Problem.rounded``)
    couples_examples        whether ℓ_i depends on the other examples through it (§4.2)
    features()              the capability names it uses (``reference.capabilities``, §8.6);
                            read through ``unit_features()``, which the norms override instead
                            (their width field is called ``features``, spec 0.2.0)
    forward(a, site)        (output, saved): its value on a batch, and what its backward needs
    backward(g, a, out, saved, site, rule, need_input)
                            ({local name: gradient}, input cotangent): its VJP; ``rule`` turns a
                            cotangent and an input into (W̄, b̄), per example or summed
    bound_forward(x, site, r)                 (output, saved) in R arithmetic (spec §7.1)
    bound_backward(g, x, saved, site, r, per_example, need_input)
                            ({local name: (error, |value|) per example}, input cotangent) in R
                            arithmetic

``site`` (``reference.types.Site``) says where the layer sits: its index k, θ, the forward dtype
and the batch's data for it. The layer types: ``Dense`` and ``Dropout`` (``reference.layers``),
``Activation`` (``reference.activations``), ``LayerNorm`` and ``BatchNorm`` (``reference.norms``).

``LayerUnit`` holds the defaults of a layer without parameters that keeps its input's width;
each layer type overrides what it knows differently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .batch import Batch
from .numerics import R, Rounding
from .types import Array, Grads, Site

__all__ = ["LayerUnit"]


class LayerUnit:
    """Defaults of the layer contract (see the module docstring): no parameters, the output as
    wide as the input, any input width accepted, examples not coupled, sequences accepted, no data
    of its own."""

    @property
    def couples_examples(self) -> bool:
        return False

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def out_width(self, width: int) -> int:
        return width

    def check_width(self, width: int) -> bool:
        return True

    @property
    def takes_sequences(self) -> bool:
        return True

    def check_data(self, k: int, batch: Batch, lead: tuple[int, ...], width: int) -> None:
        """Layer k's data in ``batch`` (``lead``: (N,) or (N, T)); none by default."""

    def rounded(self, dtype: str) -> Any:
        return self

    def unit_features(self) -> frozenset[str]:
        """The capability names this layer uses (spec §8.6), what callers read: the layer
        type's own ``features()`` method (LayerNorm and BatchNorm override this instead, since
        their field ``features`` is their width)."""
        return self.features()  # type: ignore[attr-defined]

    def forward(self, a: Array, site: Site) -> tuple[Array, Any]:
        raise NotImplementedError

    def backward(self, g: Array, a: Array, out: Array, saved: Any, site: Site,
                 rule: Callable, need_input: bool) -> tuple[Grads, Array]:
        raise NotImplementedError

    def bound_forward(self, a: R, site: Site, r: Rounding) -> tuple[R, Any]:
        raise NotImplementedError

    def bound_backward(self, g: R, x: R, saved: Any, site: Site, r: Rounding,
                       per_example: Callable, need_input: bool) -> tuple[dict, R]:
        raise NotImplementedError
