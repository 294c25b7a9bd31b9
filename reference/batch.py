"""The batch: N examples' inputs and targets, and the data some problems need (spec §1.1, §3.7,
§4.5), as a frozen dataclass whose ``repr`` is a runnable snippet."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .capabilities import register

__all__ = ["MASK", "SEQUENCE", "Batch", "array_repr"]

SEQUENCE = register("input:sequence", "sequence batches: inputs (N, T, d), one prediction per "
                    "token, ℓ_i summed over the valid tokens (§3.7)")
MASK = register("input:mask", "batch.mask (N, T) bool of a sequence batch: which tokens count "
                "(§3.7)")


def array_repr(a: np.ndarray) -> str:
    kind = {"i": "np.int64", "u": "np.int64", "b": "bool"}.get(a.dtype.kind, "np.float64")
    return f"np.array({a.tolist()!r}, dtype={kind})"


@dataclass(frozen=True, eq=False)
class Batch:
    """N examples: inputs, targets, and the data some problems need.

    inputs      (N, d) or, for sequences, (N, T, d)
    targets     int labels (N,) / (N, T), or float (N, D) / (N, T, D) (soft targets: (N, C))
    weights     (N,) the c_i of the weighted reductions
    mask        (N, T) bool, sequences only: which tokens count (default: all)
    variances   float, the shape of targets: the v of gaussian_nll
    dropout     {layer index k: keep-mask m ∈ {0, 1} of the shape of layer k's input}
    """

    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray | None = None
    mask: np.ndarray | None = None
    variances: np.ndarray | None = None
    dropout: Mapping[int, np.ndarray] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", np.asarray(self.inputs, dtype=np.float64))
        t = np.asarray(self.targets)
        t = t.astype(np.int64) if t.dtype.kind in "iu" else t.astype(np.float64)
        object.__setattr__(self, "targets", t)
        for name, dt in (("weights", np.float64), ("mask", bool), ("variances", np.float64)):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dt))
        if self.dropout is not None:
            object.__setattr__(self, "dropout", {int(k): np.asarray(v, dtype=np.float64)
                                                 for k, v in self.dropout.items()})

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def sequence(self) -> bool:
        """True for (N, T, d) inputs: one prediction per token (spec §3.7)."""
        return self.inputs.ndim == 3

    def features(self) -> frozenset[str]:
        """``input:sequence`` for (N, T, d) inputs, ``input:mask`` when a mask is given (the
        data of a loss, reduction or layer comes with that unit's own name)."""
        return frozenset(([SEQUENCE] if self.sequence else [])
                         + ([MASK] if self.mask is not None else []))

    @property
    def token_mask(self) -> np.ndarray:
        """(N, T) bool: the given mask, or every token valid."""
        if self.mask is not None:
            return self.mask
        return np.ones(self.inputs.shape[:2], dtype=bool)

    def take(self, index: np.ndarray | list[int]) -> Batch:
        """The examples at ``index``, in that order (repeats allowed)."""
        idx = np.asarray(index, dtype=np.int64)

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        drop = None if self.dropout is None else {k: v[idx] for k, v in self.dropout.items()}
        return Batch(self.inputs[idx], self.targets[idx], pick(self.weights), pick(self.mask),
                     pick(self.variances), drop)

    def __repr__(self) -> str:
        out = f"Batch(inputs={array_repr(self.inputs)}, targets={array_repr(self.targets)}"
        for name in ("weights", "mask", "variances"):
            if getattr(self, name) is not None:
                out += f", {name}={array_repr(getattr(self, name))}"
        if self.dropout is not None:
            masks = ", ".join(f"{k}: {array_repr(v)}" for k, v in self.dropout.items())
            out += f", dropout={{{masks}}}"
        return out + ")"
